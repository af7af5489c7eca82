# Included by _hooks.pyx: gh_wait (the one function that runs Python) and the shared pieces of
# the hook shape -- deadlines, the park/retry tail, counters.

include "fdstate.pxi"

# --- the one waiting function -------------------------------------------------------------

cdef dict _gen_ok = {}      # backend class -> whether its wait_fd_gen may stand in for wait_fd


cdef object _defining(object cls, str name):
    for k in cls.__mro__:
        if name in k.__dict__:
            return k
    return None


cdef object _gen_waiter(object backend):
    """``backend.wait_fd_gen`` (one watcher kept per fd across waits), when the class that
    defines it also defines the ``wait_fd`` in use: a subclass that overrides ``wait_fd`` alone
    keeps getting every wait through its own ``wait_fd``."""
    cls = type(backend)
    ok = _gen_ok.get(cls)
    if ok is None:
        where = _defining(cls, "wait_fd_gen")
        ok = where is not None and where is _defining(cls, "wait_fd")
        _gen_ok[cls] = ok
    return backend.wait_fd_gen if ok else None


# The backend whose C face (includes/gh_backend.h) was looked up last, and that face (NULL:
# it has none, or a subclass overrides in Python what the face stands in for).  Read and
# written with the GIL held.
cdef object _api_backend = None
cdef object _api_capsule = None
cdef const gh_backend_api_t *_api = NULL


cdef inline const gh_backend_api_t *_c_api(object backend) except? NULL:
    """The C face of ``backend``'s class, if the class that offers it (``c_api``) is also the
    one that defines ``can_switch``, ``wait_fd`` and ``wait_fd_gen``."""
    if backend is _api_backend:
        return _api
    return _c_api_lookup(backend)


cdef const gh_backend_api_t *_c_api_lookup(object backend) except? NULL:
    # Apart from _c_api: the generator expression's closure would be allocated on every call.
    global _api_backend, _api_capsule, _api
    cdef const gh_backend_api_t *api = NULL
    cls = type(backend)
    cap = getattr(cls, "c_api", None)
    if cap is not None and PyCapsule_IsValid(cap, GH_BACKEND_CAPSULE):
        where = _defining(cls, "c_api")
        if all(_defining(cls, name) in (None, where)
               for name in ("can_switch", "wait_fd", "wait_fd_gen")):
            api = <const gh_backend_api_t *>PyCapsule_GetPointer(cap, GH_BACKEND_CAPSULE)
            if api.abi != GH_BACKEND_ABI:
                api = NULL
    _api_backend = backend
    _api_capsule = cap
    _api = api
    return api


cdef inline int _timed_out_or_early(bint ok, int64_t deadline) noexcept nogil:
    """A backend's answer to an fd wait as a GH_* code.  A timeout that comes before the
    deadline (gevent's libuv loop counts whole milliseconds from a clock cached at the start
    of its iteration: up to ~1 ms early) is a spurious wake: the hook probes and waits again
    for the rest, so a call never times out earlier than the kernel would."""
    if ok:
        return GH_READY
    if deadline >= 0 and gh_now_ns() < deadline:
        return GH_READY
    return GH_TIMEDOUT


cdef object _pinned_backend(_ThreadState st):
    """The backend this thread waits on, or None (no hub anywhere yet).  The first wait (or
    fairness yield) of a thread bound without an explicit backend pins the one whose hub runs
    here, so importing gevent later cannot move the thread."""
    backend = st.backend
    if backend is None and _backend_resolver is not None:
        backend = _backend_resolver()
        if backend is not None:
            st.backend = backend
    return backend


cdef int _wait_with_gil(gh_thread_t *t, pollfd *fds, int nfds, int64_t deadline, int sym,
                        uint32_t gen) noexcept:
    cdef _ThreadState st = <_ThreadState>t.state
    cdef int i
    if st.pending and st._cancelled_here():
        return GH_CANCELLED  # unwinding after a cancellation: never park again
    cdef const gh_backend_api_t *api = NULL
    cdef double secs = -1.0
    try:
        backend = _pinned_backend(st)
        if backend is None:
            return GH_BLOCK
        api = _c_api(backend)
        if api != NULL:
            if not api.can_switch(backend):
                return GH_BLOCK
        elif not backend.can_switch():
            return GH_BLOCK
    except BaseException as exc:
        _report(exc, "greenhook: choosing a hub for %s (the call blocks the thread instead)"
                % SYMBOL_NAMES[sym])
        return GH_BLOCK
    if deadline >= 0:
        secs = (deadline - gh_now_ns()) / 1e9
        if secs <= 0:
            return GH_TIMEDOUT
    t.counters[sym].waits += 1
    try:
        if nfds == 1 and fds[0].fd >= 0 and api != NULL:
            # The backend's C face: no Python call, no boxed arguments.
            ok = api.wait_fd(backend, fds[0].fd, fds[0].events, secs, gen)
            return _timed_out_or_early(ok, deadline)
        timeout = None if secs < 0 else secs
        if nfds == 0:
            backend.sleep(timeout)
            return GH_TIMEDOUT
        if nfds == 1 and fds[0].fd >= 0:
            wait_fd_gen = _gen_waiter(backend) if gen != 0 else None
            if wait_fd_gen is not None:
                # The fd still names the file its table entry was filled for (fdstate.pxi):
                # the backend may keep one watcher per fd across waits.
                ok = wait_fd_gen(fds[0].fd, fds[0].events, timeout, gen)
            else:
                ok = backend.wait_fd(fds[0].fd, fds[0].events, timeout)
        else:
            wanted = {}
            for i in range(nfds):
                if fds[i].fd >= 0:
                    wanted[fds[i].fd] = wanted.get(fds[i].fd, 0) | fds[i].events
            if not wanted:
                backend.sleep(timeout)
                return GH_TIMEDOUT
            ok = backend.wait_fds(list(wanted.items()), timeout)
        return _timed_out_or_early(ok, deadline)
    except BackendError as exc:
        # The backend could not set the wait up: report it, never disguise it as a cancel.
        _report(exc, "greenhook: the %s backend could not wait for %s (the call blocks the "
                "thread instead)" % (backend.name, SYMBOL_NAMES[sym]))
        return GH_BLOCK
    except BaseException as exc:
        # Thrown into the parked greenlet: a kill or a timeout.
        st._cancel(exc)
        return GH_CANCELLED_NOW


cdef bint _shutdown_on_cancel = True   # greenhook.configure(shutdown_cancelled_sockets=...)


cdef void _kill_connection(int fd) noexcept nogil:
    """Make a connected stream socket whose call was cancelled mid-protocol dead for good.

    The driver's conversation with its server is in an unknown state; the server's late answer
    must never be read as the answer to the next request.  ``shutdown`` alone is not enough:
    Linux keeps input queued before it readable (libpq read exactly that).  So the fd number is
    pointed at a socket whose peer is gone (``dup3`` of one end of a closed socketpair, keeping
    the fd's close-on-exec and O_NONBLOCK): the driver reads EOF, sends fail with EPIPE, poll
    reports it readable and hung up at once, and the real connection is closed (an RST
    for anything unread).  Nothing of the cancelled request can be read through this fd."""
    cdef int kind = 0, e = gh_get_errno(), fdflags, flflags
    cdef socklen_t kl = sizeof(int)
    cdef sockaddr_storage peer
    cdef socklen_t pl = sizeof(sockaddr_storage)
    cdef int sv[2]
    if getsockopt(fd, SOL_SOCKET, SO_TYPE, &kind, &kl) != 0 or kind != SOCK_STREAM:
        return
    if getpeername(fd, <sockaddr *>&peer, &pl) != 0:
        return  # listening, or still connecting
    shutdown(fd, SHUT_RDWR)
    if socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0:
        close(sv[1])
        fdflags = fcntl(fd, F_GETFD)
        flflags = fcntl(fd, F_GETFL)
        if flflags >= 0 and (flflags & O_NONBLOCK):
            fcntl(sv[0], F_SETFL, O_NONBLOCK)
        dup3(sv[0], fd, O_CLOEXEC if fdflags >= 0 and (fdflags & FD_CLOEXEC) else 0)
        close(sv[0])
    gh_set_errno(e)


cdef inline int gh_wait(gh_thread_t *t, pollfd *fds, int nfds, int64_t deadline, int sym) noexcept nogil:
    return gh_wait_gen(t, fds, nfds, deadline, sym, 0)


cdef int gh_wait_gen(gh_thread_t *t, pollfd *fds, int nfds, int64_t deadline, int sym,
                     uint32_t gen) noexcept nogil:
    """Park the current greenlet until one of ``fds`` may be ready or ``deadline`` (monotonic ns,
    -1 = none) passes; ``nfds == 0`` is a sleep.  Returns a GH_* code; errno is not preserved.

    The C caller may hold the GIL or not, and may have a Python exception set (psycopg2 keeps
    calling libpq after setting its error): that exception is put aside while the wait runs
    Python, and put back before returning to C.  ``gen``: for one fd, its generation in the
    per-fd table when this wait has just checked that the fd names the same file (0: unknown)."""
    cdef int rc
    cdef PyObject *et
    cdef PyObject *ev
    cdef PyObject *etb
    with gil:
        PyErr_Fetch(&et, &ev, &etb)
        _loads_check_with_gil()   # auto mode: objects loaded by unpatched code (loader.pxi)
        rc = _wait_with_gil(t, fds, nfds, deadline, sym, gen)
        PyErr_Restore(et, ev, etb)
    if rc == GH_CANCELLED_NOW:
        if _shutdown_on_cancel and nfds == 1 and fds[0].fd >= 0:
            _kill_connection(fds[0].fd)
        rc = GH_CANCELLED
    return rc


# --- deadlines ----------------------------------------------------------------------------------

cdef inline int64_t _deadline_after(int64_t sec, int64_t nsec) noexcept nogil:
    """Monotonic deadline ``sec`` s + ``nsec`` ns from now; -1 (none) when so far away that it
    would overflow (the kernel treats such timeouts as infinite too)."""
    if sec >= GH_FOREVER_SEC:
        return -1
    return gh_now_ns() + sec * 1000000000 + nsec


cdef inline int64_t _deadline_ms(int timeout_ms) noexcept nogil:
    if timeout_ms < 0:
        return -1
    return gh_now_ns() + <int64_t>timeout_ms * 1000000


cdef inline int64_t _deadline_ts(const timespec *ts) noexcept nogil:
    if ts == NULL:
        return -1
    return _deadline_after(ts.tv_sec, ts.tv_nsec)


cdef inline int _remaining_ms(int64_t deadline) noexcept nogil:
    """Milliseconds left, rounded up, for a real blocking poll; -1 = infinite."""
    cdef int64_t left
    if deadline < 0:
        return -1
    left = deadline - gh_now_ns()
    if left <= 0:
        return 0
    left = (left + 999999) // 1000000
    return <int>left if left < 0x7fffffff else 0x7fffffff


cdef inline void _ns_to_ts(int64_t ns, timespec *ts) noexcept nogil:
    if ns < 0:
        ns = 0
    ts.tv_sec = ns // 1000000000
    ts.tv_nsec = ns % 1000000000


cdef int64_t _sock_deadline(int fd, int timeo_opt) noexcept nogil:
    """Deadline from the socket's SO_RCVTIMEO/SO_SNDTIMEO (0 = none: -1)."""
    cdef timeval tv
    cdef socklen_t tl = sizeof(tv)
    if getsockopt(fd, SOL_SOCKET, timeo_opt, &tv, &tl) == 0 and (tv.tv_sec or tv.tv_usec):
        return _deadline_after(tv.tv_sec, <int64_t>tv.tv_usec * 1000)
    return -1


# --- the park/retry tail shared by the socket families ------------------------------------------

cdef int _park_fd(gh_thread_t *t, int fd, short events, int timeo_opt, int64_t *deadline, int sym) noexcept nogil:
    """A socket call would block.  Unless the fd is O_NONBLOCK (then the caller wants EAGAIN),
    wait for ``events`` until the socket's SO_RCVTIMEO/SO_SNDTIMEO deadline."""
    cdef pollfd p
    cdef int nonblock
    cdef int64_t timeo
    cdef uint32_t gen = 0
    if deadline[0] == GH_UNSET:
        gh_fd_wait_state(fd, timeo_opt, &nonblock, &timeo, &gen)
        if nonblock:
            return GH_NONBLOCKING
        deadline[0] = _deadline_after(timeo // 1000000000, timeo % 1000000000) if timeo > 0 else -1
    else:
        gen = gh_fd_identity(fd)
    p.fd = fd
    p.events = events
    p.revents = 0
    return gh_wait_gen(t, &p, 1, deadline[0], sym, gen)


cdef inline int _would_block_again(gh_thread_t *t, int fd, short events, int timeo_opt,
                                   int64_t *deadline, int sym, int *how, int *dontwait) noexcept nogil:
    """The try said "would block".  GH_READY: try again (after a green wait; or, when this
    greenlet cannot switch, as the real blocking call: ``dontwait`` becomes 0).  Anything else
    ends the call (``_fail``)."""
    cdef int rc
    if dontwait[0] == 0:
        return GH_KERNEL    # the real blocking call itself timed out (SO_RCVTIMEO/SO_SNDTIMEO)
    rc = _park_fd(t, fd, events, timeo_opt, deadline, sym)
    if rc == GH_READY:
        how[0] = GH_HOW_GREEN
    elif rc == GH_BLOCK:
        t.counters[sym].blocked += 1
        how[0] = GH_HOW_BLOCKED
        dontwait[0] = 0
        rc = GH_READY
    return rc


cdef inline void _in_flight(gh_thread_t *t, int sym) noexcept nogil:
    """This OS thread is about to block for real in ``sym`` (the detector shows it)."""
    t.in_flight = sym
    t.since_ns = gh_now_ns()


cdef inline void _unblocked(gh_thread_t *t) noexcept nogil:
    t.in_flight = -1


cdef inline void _blocking(gh_thread_t *t, int sym) noexcept nogil:
    t.counters[sym].blocked += 1
    _in_flight(t, sym)


cdef inline ssize_t _done(gh_thread_t *t, int sym, int how, ssize_t result, int e0) noexcept nogil:
    """The call succeeded.  After a wait, errno is put back to ``e0`` (its value when the call
    began): the try that said EAGAIN and the hub's own syscalls changed it, and the real call
    leaves errno alone on success."""
    if how == GH_HOW_FAST:
        t.counters[sym].fast += 1
        return result
    if how == GH_HOW_GREEN:
        t.counters[sym].green += 1
    gh_set_errno(e0)
    return result


cdef inline ssize_t _error(gh_thread_t *t, int sym, int how, ssize_t progress, int e) noexcept nogil:
    """The call failed with ``e``: after partial progress the count is the answer."""
    _done(t, sym, how, 0, e)
    if progress > 0:
        return progress
    gh_set_errno(e)
    return -1


cdef inline ssize_t _fail(gh_thread_t *t, int sym, int rc, ssize_t progress, int e0) noexcept nogil:
    """Finish a socket call whose wait did not end in readiness.  After partial progress the
    count is the answer and errno is left as the call found it (``e0``)."""
    if rc == GH_CANCELLED:
        t.counters[sym].cancelled += 1
        if progress > 0:
            gh_set_errno(e0)
            return progress
        gh_set_errno(ETIMEDOUT)
        return -1
    if rc == GH_NONBLOCKING:
        t.counters[sym].passthrough += 1
    elif rc == GH_TIMEDOUT:
        t.counters[sym].timeouts += 1
    if progress > 0:
        gh_set_errno(e0)
        return progress
    gh_set_errno(EAGAIN)  # what the kernel returns when SO_RCVTIMEO/SO_SNDTIMEO expires
    return -1


cdef inline bint _would_block(int e) noexcept nogil:
    if e == EAGAIN:
        return True
    return e == EWOULDBLOCK  # the same value on Linux; kept for clarity


cdef inline bint _is_stream(int fd, int *cache) noexcept nogil:
    """SOCK_STREAM?  Asked once per call, only when a partial MSG_WAITALL read needs it."""
    cdef int kind = 0
    cdef socklen_t kl = sizeof(int)
    if cache[0] < 0:
        cache[0] = 1 if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &kind, &kl) == 0
                         and kind == SOCK_STREAM) else 0
    return cache[0] == 1


cdef bint _waitall_goes_on(int fd, int *stream) noexcept nogil:
    """After a partial MSG_WAITALL read: would the kernel keep waiting for the rest?  Only on
    a stream socket, and not when an error is pending (the kernel returns the count and
    leaves the error for the next call -- reading on would consume it) or when TCP reached the
    urgent mark (it stops there).  Costs a zero-timeout poll, on this path only."""
    cdef pollfd p
    cdef int atmark = 0
    if not _is_stream(fd, stream):
        return False
    p.fd = fd
    p.events = POLLPRI
    p.revents = 0
    if real_poll(&p, 1, 0) > 0:
        if p.revents & (POLLERR | POLLNVAL):
            return False
        if (p.revents & POLLPRI) and ioctl(fd, SIOCATMARK, &atmark) == 0 and atmark:
            return False
    return True


cdef inline int _sock_domain(int fd) noexcept nogil:
    cdef int domain = -1
    cdef socklen_t dl = sizeof(int)
    if getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0:
        return -1
    return domain


cdef inline int64_t _nap_until(int64_t deadline, int spurious) noexcept nogil:
    """After repeated wakes that the probe does not confirm (the hub reports readiness poll
    does not, e.g. plain data while only POLLPRI was asked), sleep in growing naps instead of
    spinning: 1 ms doubling to 64 ms, never past the deadline."""
    cdef int shift = spurious - 3
    cdef int64_t until
    if shift < 0:
        shift = 0
    if shift > 6:
        shift = 6
    until = gh_now_ns() + (<int64_t>1000000 << shift)
    if deadline >= 0 and until > deadline:
        return deadline
    return until
