# Included by _hooks.pyx: name resolution on the resolver pool (includes/gh_dns.h).
#
# glibc's stub resolver lives inside libc itself, so there is no socket call of its own to
# green: the whole lookup runs, as the real libc function, on a worker OS thread of a small
# native pool, while the calling greenlet parks on the job's eventfd through gh_wait.  The
# answer is glibc's own (same function, same /etc files); the caller gets memory from the
# same allocator (freeaddrinfo needs no hook).  What needs no network is answered inline:
# NULL or literal hosts, AI_NUMERICHOST, NI_NUMERICHOST.
#
# Cancellation returns at once with a failure the caller gives up on rather than retries:
# getaddrinfo/getnameinfo EAI_SYSTEM with errno ETIMEDOUT (EAI_AGAIN would invite a retry
# loop; EAI_SYSTEM is the one code that carries an errno), the gethostby* family no answer with
# h_errno NO_RECOVERY (not TRY_AGAIN, for the same reason) and errno ETIMEDOUT, res_query -1
# likewise.  The job keeps running into its own buffers; the worker frees it and its late
# result.

cdef extern from "netdb.h" nogil:
    struct addrinfo:
        int ai_flags
        int ai_family
        int ai_socktype
        int ai_protocol
        socklen_t ai_addrlen
        sockaddr *ai_addr
        char *ai_canonname
        addrinfo *ai_next
    struct hostent:
        char *h_name
        char **h_aliases
        int h_addrtype
        int h_length
        char **h_addr_list
    enum:
        AI_NUMERICHOST, NI_NUMERICHOST, EAI_SYSTEM, EAI_MEMORY, NO_RECOVERY, NETDB_INTERNAL

cdef extern from "string.h" nogil:
    char *strdup(const char *s)

cdef extern from "errno.h" nogil:
    enum:
        ERANGE

cdef extern from "gh_dns.h" nogil:
    enum:
        GH_DNS_GETADDRINFO, GH_DNS_GETNAMEINFO, GH_DNS_GETHOSTBYNAME_R, GH_DNS_GETHOSTBYNAME2_R
        GH_DNS_GETHOSTBYADDR_R, GH_DNS_RES_QUERY, GH_DNS_RES_SEARCH
        GH_DNS_HOSTENT_BUF
    ctypedef struct gh_dns_job:
        int kind, efd, grow
        char *name
        char *service
        addrinfo hints
        int has_hints
        sockaddr_storage sa
        socklen_t salen
        int flags, af, cls, type
        char addr[16]
        socklen_t addrlen
        int rc, err, herr, therr
        addrinfo *res
        hostent he
        hostent *result
        char *buf
        char *buf2
        size_t buflen, buf2len
    ctypedef int (*gh_getaddrinfo_t)(const char *, const char *, const addrinfo *, addrinfo **) noexcept nogil
    ctypedef int (*gh_getnameinfo_t)(const sockaddr *, socklen_t, char *, socklen_t, char *, socklen_t, int) noexcept nogil
    ctypedef int (*gh_ghbn_r_t)(const char *, hostent *, char *, size_t, hostent **, int *) noexcept nogil
    ctypedef int (*gh_ghbn2_r_t)(const char *, int, hostent *, char *, size_t, hostent **, int *) noexcept nogil
    ctypedef int (*gh_ghba_r_t)(const void *, socklen_t, int, hostent *, char *, size_t, hostent **, int *) noexcept nogil
    ctypedef int (*gh_res_query_t)(const char *, int, int, unsigned char *, int) noexcept nogil
    ctypedef hostent *(*gh_ghbn_t)(const char *) noexcept nogil
    ctypedef hostent *(*gh_ghbn2_t)(const char *, int) noexcept nogil
    ctypedef hostent *(*gh_ghba_t)(const void *, socklen_t, int) noexcept nogil
    gh_getaddrinfo_t gh_real_getaddrinfo
    gh_getnameinfo_t gh_real_getnameinfo
    gh_ghbn_r_t gh_real_gethostbyname_r
    gh_ghbn2_r_t gh_real_gethostbyname2_r
    gh_ghba_r_t gh_real_gethostbyaddr_r
    gh_res_query_t gh_real_res_query
    gh_res_query_t gh_real_res_search
    gh_ghbn_t gh_real_gethostbyname
    gh_ghbn2_t gh_real_gethostbyname2
    gh_ghba_t gh_real_gethostbyaddr
    gh_dns_job *gh_dns_new(int kind)
    void gh_dns_free(gh_dns_job *j)
    void gh_dns_run(gh_dns_job *j)
    int gh_dns_submit(gh_dns_job *j)
    int gh_dns_take(gh_dns_job *j)
    int gh_dns_abandon(gh_dns_job *j)
    int gh_dns_set_max(int n)
    void gh_dns_counts(int *threads, int *idle, int *queued, int *live, int *max)
    int gh_dns_init()
    int gh_dns_key_init()
    void gh_dns_copy_hostent(hostent *dst, const hostent *src, const char *frm, size_t len, char *to)
    hostent *gh_dns_to_static(const hostent *src, const char *frm, size_t length)
    int gh_get_h_errno()
    void gh_set_h_errno(int e)
    int gh_dns_numeric(const char *name)

cdef extern from "gh_thread.h" nogil:
    enum:
        GH_SYM_GETADDRINFO, GH_SYM_GETNAMEINFO, GH_SYM_GETHOSTBYNAME, GH_SYM_GETHOSTBYNAME_R
        GH_SYM_GETHOSTBYNAME2, GH_SYM_GETHOSTBYNAME2_R, GH_SYM_GETHOSTBYADDR
        GH_SYM_GETHOSTBYADDR_R, GH_SYM_RES_QUERY, GH_SYM_RES_SEARCH

if gh_dns_init() != 0 or gh_dns_key_init() != 0:
    raise ImportError("greenhook: could not set up the resolver pool (pthread_atfork/key)")


# --- the one way a lookup waits ----------------------------------------------------------------

cdef int _dns_await(gh_thread_t *t, int sym, gh_dns_job *j) noexcept nogil:
    """Run ``j`` on the pool and park until it is done.  Returns GH_HOW_GREEN or GH_HOW_BLOCKED
    (the job is the caller's again: read it, then gh_dns_free it), or -1 when the greenlet
    was cancelled (the job is gone: the worker frees it, or it was freed here)."""
    cdef pollfd p
    cdef int rc, how = GH_HOW_GREEN
    if j.efd < 0 or gh_dns_submit(j) != 0:
        # No eventfd or no worker thread to be had: the lookup blocks this thread instead.
        t.counters[sym].blocked += 1
        _in_flight(t, sym)
        gh_dns_run(j)
        _unblocked(t)
        return GH_HOW_BLOCKED
    p.fd = j.efd
    p.events = POLLIN
    while True:
        p.revents = 0
        if how == GH_HOW_BLOCKED:
            real_poll(&p, 1, -1)
            rc = GH_READY
        else:
            rc = gh_wait(t, &p, 1, -1, sym)
        if rc == GH_CANCELLED:
            if not gh_dns_abandon(j):
                gh_dns_free(j)      # it was done already: its result goes now
            t.counters[sym].cancelled += 1
            return -1
        if rc == GH_BLOCK and how != GH_HOW_BLOCKED:
            # This greenlet cannot switch (the hub itself, no hub): wait on the OS thread.
            how = GH_HOW_BLOCKED
            t.counters[sym].blocked += 1
            _in_flight(t, sym)
        if gh_dns_take(j):
            break
    if how == GH_HOW_BLOCKED:
        _unblocked(t)
    else:
        t.counters[sym].green += 1
    return how


cdef inline void _dns_cancelled(int *h_errnop) noexcept nogil:
    """errno/h_errno of a cancelled lookup (see the top of this file)."""
    gh_set_h_errno(NO_RECOVERY)
    if h_errnop != NULL:
        h_errnop[0] = NO_RECOVERY
    gh_set_errno(ETIMEDOUT)


cdef inline void _dns_errnos(gh_dns_job *j) noexcept nogil:
    """Hand the worker's errno and h_errno to the calling thread, as if it had run the call."""
    gh_set_h_errno(j.therr)
    gh_set_errno(j.err)


cdef gh_dns_job *_dns_job(int kind, const char *name) noexcept nogil:
    """A job for ``kind`` with a copy of ``name`` and the caller's errno/h_errno; NULL: ENOMEM."""
    cdef gh_dns_job *j = gh_dns_new(kind)
    if j == NULL:
        return NULL
    j.err = gh_get_errno()
    j.therr = gh_get_h_errno()
    if name != NULL:
        j.name = strdup(name)
        if j.name == NULL:
            gh_dns_free(j)
            return NULL
    return j


# --- getaddrinfo, getnameinfo ----------------------------------------------------------------

cdef int _getaddrinfo(gh_thread_t *t, const char *node, const char *service, const addrinfo *hints,
                      addrinfo **res) noexcept nogil:
    cdef gh_dns_job *j
    cdef int rc
    if node == NULL or (hints != NULL and hints.ai_flags & AI_NUMERICHOST) or gh_dns_numeric(node):
        t.counters[GH_SYM_GETADDRINFO].passthrough += 1
        return gh_real_getaddrinfo(node, service, hints, res)
    j = _dns_job(GH_DNS_GETADDRINFO, node)
    if j == NULL:
        return EAI_MEMORY
    if service != NULL:
        j.service = strdup(service)
        if j.service == NULL:
            gh_dns_free(j)
            return EAI_MEMORY
    if hints != NULL:
        j.has_hints = 1
        j.hints.ai_flags = hints.ai_flags
        j.hints.ai_family = hints.ai_family
        j.hints.ai_socktype = hints.ai_socktype
        j.hints.ai_protocol = hints.ai_protocol
    if _dns_await(t, GH_SYM_GETADDRINFO, j) < 0:
        _dns_cancelled(NULL)
        return EAI_SYSTEM
    rc = j.rc
    if rc == 0:
        res[0] = j.res      # (on failure glibc leaves *res alone)
        j.res = NULL        # the caller's now: freed by its freeaddrinfo (the same libc)
    _dns_errnos(j)
    gh_dns_free(j)
    return rc


cdef int _getnameinfo(gh_thread_t *t, const sockaddr *sa, socklen_t salen, char *host,
                      socklen_t hostlen, char *serv, socklen_t servlen, int flags) noexcept nogil:
    cdef gh_dns_job *j
    cdef int rc, e
    if host == NULL or hostlen == 0 or flags & NI_NUMERICHOST or sa == NULL \
            or salen > sizeof(sockaddr_storage):
        # No name to look up (a service name comes from local files), or glibc refuses the
        # arguments by itself.
        t.counters[GH_SYM_GETNAMEINFO].passthrough += 1
        return gh_real_getnameinfo(sa, salen, host, hostlen, serv, servlen, flags)
    j = _dns_job(GH_DNS_GETNAMEINFO, NULL)
    if j == NULL:
        return EAI_MEMORY
    memcpy(&j.sa, sa, salen)
    j.salen = salen
    j.flags = flags
    # Job-owned copies of the output buffers (the caller's may be gone after a cancellation);
    # they start as the caller's contents, so bytes glibc does not write come back unchanged.
    j.buflen = hostlen
    j.buf = <char *>malloc(hostlen)
    if serv != NULL and servlen > 0:
        j.buf2len = servlen
        j.buf2 = <char *>malloc(servlen)
    if j.buf == NULL or (j.buf2len and j.buf2 == NULL):
        gh_dns_free(j)
        return EAI_MEMORY
    memcpy(j.buf, host, hostlen)
    if j.buf2len:
        memcpy(j.buf2, serv, servlen)
    if _dns_await(t, GH_SYM_GETNAMEINFO, j) < 0:
        _dns_cancelled(NULL)
        return EAI_SYSTEM
    rc = j.rc
    memcpy(host, j.buf, hostlen)
    if j.buf2len:
        memcpy(serv, j.buf2, servlen)
    _dns_errnos(j)
    gh_dns_free(j)
    return rc


# --- the gethostby* family --------------------------------------------------------------------

cdef gh_dns_job *_hostent_job(int kind, const char *name, int af, const void *addr, socklen_t alen,
                              char *buf, size_t buflen, int *h_errnop) noexcept nogil:
    """A gethostby*_r job.  ``buf`` NULL: a non-reentrant caller (the job's buffer grows on
    ERANGE); else the worker fills a copy of ``buf`` of the same size (same ERANGE answer)."""
    cdef gh_dns_job *j = _dns_job(kind, name)
    if j == NULL:
        return NULL
    j.af = af
    if addr != NULL:
        if alen > sizeof(j.addr):
            alen = sizeof(j.addr)   # glibc answers such lengths itself, without reading them
        memcpy(j.addr, addr, alen)
    j.addrlen = alen
    if h_errnop != NULL:
        j.herr = h_errnop[0]
    if buf == NULL:
        j.grow = 1
        j.buflen = GH_DNS_HOSTENT_BUF
    else:
        j.buflen = buflen if buflen > 0 else 1
    j.buf = <char *>malloc(j.buflen)
    if j.buf == NULL:
        gh_dns_free(j)
        return NULL
    if buf != NULL and buflen > 0:
        memcpy(j.buf, buf, buflen)
    return j


cdef int _hostent_r(gh_thread_t *t, int sym, gh_dns_job *j, hostent *ret, char *buf, size_t buflen,
                    hostent **result, int *h_errnop) noexcept nogil:
    """Finish a gethostby*_r call: copy the job's answer into the caller's storage."""
    cdef int rc
    if j == NULL:
        result[0] = NULL
        h_errnop[0] = NETDB_INTERNAL
        return ENOMEM
    if _dns_await(t, sym, j) < 0:
        result[0] = NULL
        _dns_cancelled(h_errnop)
        return ETIMEDOUT
    rc = j.rc
    if j.result != NULL:
        gh_dns_copy_hostent(ret, &j.he, j.buf, buflen, buf)   # pointers moved to ``buf``
        result[0] = ret
    else:
        if buflen > 0:
            memcpy(buf, j.buf, buflen)
        result[0] = NULL
    h_errnop[0] = j.herr
    _dns_errnos(j)
    gh_dns_free(j)
    return rc


cdef hostent *_hostent_static(gh_thread_t *t, int sym, gh_dns_job *j, bint inline) noexcept nogil:
    """Finish a non-reentrant gethostby* call: the answer goes to this OS thread's own storage
    (never storage a worker may rewrite for another caller)."""
    cdef hostent *out = NULL
    if j == NULL:
        gh_set_h_errno(NETDB_INTERNAL)
        gh_set_errno(ENOMEM)
        return NULL
    if inline:
        t.counters[sym].passthrough += 1
        gh_dns_run(j)
    elif _dns_await(t, sym, j) < 0:
        _dns_cancelled(NULL)
        return NULL
    if j.result != NULL:
        out = gh_dns_to_static(&j.he, j.buf, j.buflen)
    _dns_errnos(j)
    if j.result == NULL:
        gh_set_h_errno(j.herr)          # the non-reentrant calls report through h_errno
    elif out == NULL:
        gh_set_h_errno(NETDB_INTERNAL)
        gh_set_errno(ENOMEM)
    gh_dns_free(j)
    return out


# --- res_query, res_search ----------------------------------------------------------------------

cdef int _res_query(gh_thread_t *t, int sym, int kind, const char *dname, int cls, int type,
                    unsigned char *answer, int anslen) noexcept nogil:
    """res_query/res_search on a worker, with the worker's default resolver state (read from
    /etc/resolv.conf like the caller's): changes a caller made to its own ``_res`` are not
    seen (use res_nquery, which passes through)."""
    cdef gh_dns_job *j
    cdef int rc
    if dname == NULL or answer == NULL or anslen <= 0:
        t.counters[sym].passthrough += 1
        if kind == GH_DNS_RES_QUERY:
            return gh_real_res_query(dname, cls, type, answer, anslen)
        return gh_real_res_search(dname, cls, type, answer, anslen)
    j = _dns_job(kind, dname)
    if j != NULL:
        j.buf = <char *>malloc(anslen)
        if j.buf == NULL:
            gh_dns_free(j)
            j = NULL
    if j == NULL:
        gh_set_h_errno(NETDB_INTERNAL)
        gh_set_errno(ENOMEM)
        return -1
    j.buflen = anslen
    j.cls = cls
    j.type = type
    memcpy(j.buf, answer, anslen)
    if _dns_await(t, sym, j) < 0:
        _dns_cancelled(NULL)
        return -1
    rc = j.rc
    memcpy(answer, j.buf, anslen)
    _dns_errnos(j)
    gh_dns_free(j)
    return rc


# --- the pool's Python face ----------------------------------------------------------------------

def set_resolver_threads(int n):
    """At most ``n`` worker threads run lookups (>= 1); returns the previous bound."""
    if n < 1:
        raise ValueError("the resolver pool needs at least one thread, got %d" % n)
    return gh_dns_set_max(n)


def resolver_pool():
    """{threads, idle, queued, live, max}: the pool now (``live``: jobs not yet freed)."""
    cdef int threads, idle, queued, live, mx
    gh_dns_counts(&threads, &idle, &queued, &live, &mx)
    return {"threads": threads, "idle": idle, "queued": queued, "live": live, "max": mx}
