# Included by _hooks.pyx: dlopen and dlmopen, so that auto mode (greenhook.patch_all) patches
# what C code loads after it started -- the ODBC driver unixODBC opens at the first connect,
# the SASL plugins of libldap, OpenSSL's providers.
#
# These hooks never wait and never switch: they call the real function, then, when auto mode
# is on and the loader's count of added objects (dl_iterate_phdr's dlpi_adds) moved, run the
# load callback (greenhook._patch) as a guest: GIL taken with PyGILState_Ensure, the caller's
# pending Python exception put aside and back, errno and the dlerror() state as they were.

cdef extern from "link.h" nogil:
    ctypedef struct gh_phdr_info "struct dl_phdr_info":
        unsigned long long dlpi_adds
    ctypedef int (*gh_phdr_cb)(gh_phdr_info *, size_t, void *) noexcept nogil
    int dl_iterate_phdr(gh_phdr_cb cb, void *data)

cdef extern from *:
    """
    #include <dlfcn.h>
    /* Nesting depth of hooked dlopen/dlmopen calls in this thread: the callback runs only at
       the outermost one (an inner call, from a library constructor, runs with the loader's
       lock held, where taking the GIL could deadlock against a thread importing a module). */
    static __thread int gh_dl_depth;
    static int gh_dl_enter(void) { return gh_dl_depth++; }
    static void gh_dl_leave(void) { gh_dl_depth--; }
    /* Python can host the callback: initialised and not finalizing. */
    static int gh_py_alive(void) {
    #if PY_VERSION_HEX >= 0x030D0000
        return Py_IsInitialized() && !Py_IsFinalizing();
    #else
        return Py_IsInitialized() && !_Py_IsFinalizing();
    #endif
    }
    typedef long gh_lmid_t;
    /* The link-map namespace of the object mapped at addr (0: the base one), -1 if unknown. */
    static long gh_namespace_of(uintptr_t addr) {
        Dl_info info;
        void *lm = NULL;
        Lmid_t lmid = -1;
        if (!dladdr1((void *)addr, &info, &lm, RTLD_DL_LINKMAP) || lm == NULL)
            return -1;
        if (dlinfo(lm, RTLD_DI_LMID, &lmid) != 0)
            return -1;
        return (long)lmid;
    }
    /* The address a hook returns to, in the object that called it: evaluated in the hook's
       own frame (a macro, so no helper frame sits in between). */
    #define gh_caller_address() __builtin_return_address(0)
    /* "$ORIGIN" / "${ORIGIN}" in a dlopen name stand for the directory of the object that
       called dlopen.  Through a hooked slot the loader would see greenhook as the caller, so
       the hook expands them for the real caller, as the loader would (only where the name
       goes on with "/" or ends).  A malloc'ed name, or NULL to pass the name on as it is (no
       $ORIGIN, the caller unknown, out of memory). */
    static char *gh_expand_origin(const char *file, const void *caller) {
        static const char *const tokens[2] = {"$ORIGIN", "${ORIGIN}"};
        Dl_info info;
        const char *p, *slash;
        char *out, *o;
        size_t dlen, n = 0, len, k;
        int t, e = errno;
        if (file == NULL || strchr(file, '$') == NULL) return NULL;
        if (!dladdr(caller, &info) || info.dli_fname == NULL
                || (slash = strrchr(info.dli_fname, '/')) == NULL) {
            errno = e;
            return NULL;
        }
        dlen = (size_t)(slash - info.dli_fname);
        for (p = file; *p; p++) {
            for (t = 0; t < 2; t++) {
                k = strlen(tokens[t]);
                if (strncmp(p, tokens[t], k) == 0 && (p[k] == '/' || p[k] == 0)) { n++; break; }
            }
        }
        if (n == 0) return NULL;
        len = strlen(file) + n * dlen + 1;
        out = (char *)malloc(len);
        if (out == NULL) { errno = e; return NULL; }
        for (p = file, o = out; *p; ) {
            for (t = 0; t < 2; t++) {
                k = strlen(tokens[t]);
                if (strncmp(p, tokens[t], k) == 0 && (p[k] == '/' || p[k] == 0)) break;
            }
            if (t < 2) {
                memcpy(o, info.dli_fname, dlen);
                o += dlen;
                p += strlen(tokens[t]);
            } else {
                *o++ = *p++;
            }
        }
        *o = 0;
        errno = e;
        return out;
    }
    """
    void *gh_caller_address() nogil
    char *gh_expand_origin(const char *file, const void *caller) nogil
    long gh_namespace_of(uintptr_t addr) nogil
    int gh_dl_enter() nogil
    void gh_dl_leave() nogil
    int gh_py_alive() nogil
    ctypedef long gh_lmid_t
    char *dlerror() nogil

ctypedef void *(*dlopen_t)(const char *, int) noexcept nogil
ctypedef void *(*dlmopen_t)(gh_lmid_t, const char *, int) noexcept nogil

cdef dlopen_t real_dlopen = <dlopen_t>dlsym(RTLD_DEFAULT, "dlopen")
cdef dlmopen_t real_dlmopen = <dlmopen_t>dlsym(RTLD_DEFAULT, "dlmopen")

cdef object _load_callback = None      # set_load_callback(): "patch what is new"
cdef bint _watch_loads = False
cdef unsigned long long _seen_adds = 0  # dlpi_adds when the callback last ran


cdef int _adds_of_first(gh_phdr_info *info, size_t size, void *data) noexcept nogil:
    (<unsigned long long *>data)[0] = info.dlpi_adds   # the same in every entry: stop at once
    return 1


cdef inline unsigned long long _load_count() noexcept nogil:
    """How many objects the loader has added since start-up (never decreases)."""
    cdef unsigned long long adds = 0
    dl_iterate_phdr(_adds_of_first, &adds)
    return adds


cdef void _run_load_callback() noexcept:
    """GIL held.  Run the callback if objects were added since it last ran; the caller's
    pending exception is put aside and back."""
    global _seen_adds
    cdef PyObject *et
    cdef PyObject *ev
    cdef PyObject *etb
    cdef unsigned long long adds = _load_count()
    cb = _load_callback
    if cb is None or adds == _seen_adds:
        return
    _seen_adds = adds
    PyErr_Fetch(&et, &ev, &etb)
    try:
        cb()
    except BaseException as exc:
        _report(exc, "greenhook: patching libraries loaded after patch_all()")
    PyErr_Restore(et, ev, etb)


cdef inline void _loads_check_with_gil() noexcept:
    """The cheap check at each wait of a hooked call (GIL held): catches objects loaded by
    code greenhook did not patch (an unpatched dlopen, the interpreter's own)."""
    if _watch_loads and _load_count() != _seen_adds:
        _run_load_callback()


cdef void _after_dlopen(void *handle) noexcept nogil:
    cdef int e
    if handle == NULL or not _watch_loads or _load_count() == _seen_adds or not gh_py_alive():
        return
    e = gh_get_errno()
    with gil:
        _run_load_callback()
    # A successful dl* call leaves no error pending; the callback may have left one (a dlsym
    # that found nothing): clear it, so the caller's dlerror() answers as without us.
    dlerror()
    gh_set_errno(e)


cdef inline void _count_loader(int sym) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(sym)
    else:
        t.counters[sym].passthrough += 1


cdef inline void _free_keep_errno(char *p) noexcept nogil:
    cdef int e = gh_get_errno()
    free(p)
    gh_set_errno(e)


cdef void *gh_dlopen(const char *file, int mode) noexcept nogil:
    cdef void *h
    cdef char *expanded = gh_expand_origin(file, gh_caller_address())
    if expanded != NULL:
        file = expanded
    _count_loader(GH_SYM_DLOPEN)
    if gh_dl_enter() != 0:
        h = real_dlopen(file, mode)
        gh_dl_leave()
    else:
        h = real_dlopen(file, mode)
        gh_dl_leave()
        _after_dlopen(h)
    if expanded != NULL:
        _free_keep_errno(expanded)
    return h


cdef void *gh_dlmopen(gh_lmid_t lmid, const char *file, int mode) noexcept nogil:
    cdef void *h
    cdef char *expanded = gh_expand_origin(file, gh_caller_address())
    if expanded != NULL:
        file = expanded
    _count_loader(GH_SYM_DLMOPEN)
    if gh_dl_enter() != 0:
        h = real_dlmopen(lmid, file, mode)
        gh_dl_leave()
    else:
        h = real_dlmopen(lmid, file, mode)
        gh_dl_leave()
        _after_dlopen(h)
    if expanded != NULL:
        _free_keep_errno(expanded)
    return h



def set_load_callback(callback):
    """Call ``callback()`` (GIL held, never from a hub switch) after a hooked dlopen/dlmopen
    or at the next wait of a hooked call, whenever the loader added objects since it last ran;
    None turns it off.  Returns the previous callback."""
    global _load_callback, _watch_loads, _seen_adds
    old = _load_callback
    _load_callback = callback
    _seen_adds = _load_count()
    _watch_loads = callback is not None
    return old


def check_loads():
    """Run the load callback now if the loader added objects since it last ran."""
    if _watch_loads:
        _run_load_callback()


def load_count():
    """The loader's count of objects added since start-up (``dlpi_adds``)."""
    return _load_count()


def namespace_of(uintptr_t address):
    """The link-map namespace (``Lmid_t``; 0 = the base one) of the object mapped at
    ``address``, or -1 when the loader does not know it.  Clears any ``dlerror()`` it caused."""
    cdef long lmid = gh_namespace_of(address)
    dlerror()
    return lmid
