# Included by _hooks.pyx: poll, ppoll, select, pselect (slow paths; entry points in entry.pxi).

# --- readiness waits --------------------------------------------------------------------------

cdef inline uint32_t _one_socket_gen(pollfd *fds, int n) noexcept nogil:
    """A wait on one fd (libpq's and libmariadb's poll) keeps the backend's watcher for it, as a
    socket call's wait does, when the fd is a socket the per-fd table vouches for (one fstat:
    its generation); 0 (a watcher of its own) for anything else."""
    if n == 1 and fds[0].fd >= 0:
        return gh_fd_identity(fds[0].fd)
    return 0


cdef int _poll(gh_thread_t *t, int sym, pollfd *fds, nfds_t nfds, int64_t deadline,
               const sigset_t *mask, bint is_ppoll) noexcept nogil:
    """Slow path of poll/ppoll after a zero-timeout probe found nothing ready."""
    cdef int r, rc, spurious = 0, e0 = gh_get_errno()
    cdef timespec zero, left
    zero.tv_sec = 0
    zero.tv_nsec = 0
    while True:
        if spurious >= 3:
            rc = gh_wait(t, NULL, 0, _nap_until(deadline, spurious), sym)
        else:
            rc = gh_wait_gen(t, fds, <int>nfds, deadline, sym, _one_socket_gen(fds, <int>nfds))
        if rc == GH_BLOCK:
            _blocking(t, sym)
            if is_ppoll:
                if deadline < 0:
                    r = real_ppoll(fds, nfds, NULL, mask)
                else:
                    _ns_to_ts(deadline - gh_now_ns(), &left)
                    r = real_ppoll(fds, nfds, &left, mask)
            else:
                r = real_poll(fds, nfds, _remaining_ms(deadline))
            _unblocked(t)
            return r
        if rc == GH_CANCELLED:
            t.counters[sym].cancelled += 1
            gh_set_errno(ETIMEDOUT)
            return -1
        # Ready or timed out: the answer comes from a final non-blocking probe.
        r = real_ppoll(fds, nfds, &zero, mask) if is_ppoll else real_poll(fds, nfds, 0)
        if r != 0:
            t.counters[sym].green += 1
            if r > 0:
                gh_set_errno(e0)    # the hub's syscalls changed it; poll leaves it on success
            return r
        if deadline >= 0 and gh_now_ns() >= deadline:
            t.counters[sym].timeouts += 1
            gh_set_errno(e0)
            return 0  # never earlier than asked
        spurious += 1


cdef int _select(gh_thread_t *t, int sym, int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
                 int64_t deadline, const sigset_t *mask, bint is_pselect) noexcept nogil:
    """select/pselect after a zero-timeout probe found nothing ready (the sets were restored)."""
    cdef int e0 = gh_get_errno()
    cdef fd_set srd, swr, sex
    cdef pollfd stackfds[64]
    cdef pollfd *fds = stackfds
    cdef int i, n = 0, r, rc, spurious = 0
    cdef short ev
    cdef timespec zts
    cdef timeval ztv
    if rd != NULL:
        memcpy(&srd, rd, sizeof(fd_set))
    if wr != NULL:
        memcpy(&swr, wr, sizeof(fd_set))
    if ex != NULL:
        memcpy(&sex, ex, sizeof(fd_set))
    for i in range(nfds):
        if (rd != NULL and FD_ISSET(i, rd)) or (wr != NULL and FD_ISSET(i, wr)) or (ex != NULL and FD_ISSET(i, ex)):
            n += 1
    if n > 64:
        fds = <pollfd *>malloc(n * sizeof(pollfd))
        if fds == NULL:
            gh_set_errno(ENOMEM)
            return -1
    n = 0
    for i in range(nfds):
        ev = 0
        if rd != NULL and FD_ISSET(i, rd):
            ev |= POLLIN
        if wr != NULL and FD_ISSET(i, wr):
            ev |= POLLOUT
        if ex != NULL and FD_ISSET(i, ex):
            ev |= POLLPRI
        if ev:
            fds[n].fd = i
            fds[n].events = ev
            fds[n].revents = 0
            n += 1
    while True:
        if spurious >= 3:
            rc = gh_wait(t, NULL, 0, _nap_until(deadline, spurious), sym)
        else:
            rc = gh_wait_gen(t, fds, n, deadline, sym, _one_socket_gen(fds, n))
        if rc == GH_CANCELLED:
            t.counters[sym].cancelled += 1
            r = -2
            break
        if rc == GH_BLOCK:
            _blocking(t, sym)
            r = _select_real(nfds, rd, wr, ex, deadline, mask, is_pselect)
            _unblocked(t)
            break
        zts.tv_sec = 0
        zts.tv_nsec = 0
        ztv.tv_sec = 0
        ztv.tv_usec = 0
        r = real_pselect(nfds, rd, wr, ex, &zts, mask) if is_pselect else real_select(nfds, rd, wr, ex, &ztv)
        if r != 0:
            t.counters[sym].green += 1
            break
        if deadline >= 0 and gh_now_ns() >= deadline:
            t.counters[sym].timeouts += 1
            break
        # Nothing ready: select cleared the sets; put the caller's back and wait again.
        spurious += 1
        if rd != NULL:
            memcpy(rd, &srd, sizeof(fd_set))
        if wr != NULL:
            memcpy(wr, &swr, sizeof(fd_set))
        if ex != NULL:
            memcpy(ex, &sex, sizeof(fd_set))
    if fds != stackfds:
        free(fds)
    if r == -2:
        gh_set_errno(ETIMEDOUT)
        return -1
    if r >= 0 and rc != GH_BLOCK:
        gh_set_errno(e0)    # the hub's syscalls changed it; select leaves it on success
    return r


cdef int _select_real(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int64_t deadline,
                      const sigset_t *mask, bint is_pselect) noexcept nogil:
    cdef int64_t ns
    cdef timespec ts
    cdef timeval tv
    if deadline < 0:
        return real_pselect(nfds, rd, wr, ex, NULL, mask) if is_pselect else real_select(nfds, rd, wr, ex, NULL)
    ns = deadline - gh_now_ns()
    if ns < 0:
        ns = 0
    if is_pselect:
        ts.tv_sec = ns // 1000000000
        ts.tv_nsec = ns % 1000000000
        return real_pselect(nfds, rd, wr, ex, &ts, mask)
    tv.tv_sec = ns // 1000000000
    tv.tv_usec = (ns % 1000000000) // 1000
    return real_select(nfds, rd, wr, ex, &tv)
