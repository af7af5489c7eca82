# Included by _hooks.pyx: the entry points, with the exact libc signatures.

# === the hooks: exact libc signatures =======================================================

cdef int gh_connect(int fd, const sockaddr *addr, socklen_t alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_CONNECT)
        return real_connect(fd, addr, alen)
    return _connect(t, fd, addr, alen)


cdef int gh_accept(int fd, sockaddr *addr, socklen_t *alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int r
    if t == NULL:
        gh_count_unbound(GH_SYM_ACCEPT)
        r = real_accept(fd, addr, alen)
    elif _fair_cancelled(t, GH_SYM_ACCEPT, fd):
        return -1
    else:
        r = _accept(t, GH_SYM_ACCEPT, fd, addr, alen, 0, False)
    if r >= 0:
        gh_fd_forget(r)     # a new socket: nothing cached for its number may apply
    return r


cdef int gh_accept4(int fd, sockaddr *addr, socklen_t *alen, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int r
    if t == NULL:
        gh_count_unbound(GH_SYM_ACCEPT4)
        r = real_accept4(fd, addr, alen, flags)
    elif _fair_cancelled(t, GH_SYM_ACCEPT4, fd):
        return -1
    else:
        r = _accept(t, GH_SYM_ACCEPT4, fd, addr, alen, flags, True)
    if r >= 0:
        gh_fd_forget(r)
    return r


cdef ssize_t gh_read(int fd, void *buf, size_t n) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_READ)
        return real_read(fd, buf, n)
    if n == 0 or n > GH_MAX_RW:
        # The kernel answers these before the socket is asked (0 at once; EFAULT unless the
        # whole huge range is mapped): the real call, never a recv that would consume data.
        t.counters[GH_SYM_READ].passthrough += 1
        return real_read(fd, buf, n)
    if _fair_cancelled(t, GH_SYM_READ, fd):
        return -1
    return _recv(t, GH_SYM_READ, fd, <char *>buf, n, 0, NULL, NULL, True)


cdef ssize_t gh_write(int fd, const void *buf, size_t n) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_WRITE)
        return real_write(fd, buf, n)
    if n == 0 or n > GH_MAX_RW:
        t.counters[GH_SYM_WRITE].passthrough += 1
        return real_write(fd, buf, n)
    if _fair_cancelled(t, GH_SYM_WRITE, fd):
        return -1
    return _send(t, GH_SYM_WRITE, fd, <const char *>buf, n, 0, NULL, 0, True)


cdef ssize_t gh_readv(int fd, const iovec *iov, int cnt) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef msghdr m
    if t == NULL or cnt < 0 or cnt > IOV_MAX or (cnt > 0 and iov == NULL) \
            or _iov_total(iov, <size_t>cnt) == 0:
        # The kernel answers these itself: EINVAL for out-of-range counts, EFAULT for a NULL
        # vector, 0 at once for zero bytes (before the socket is asked: no empty datagram).
        if t == NULL:
            gh_count_unbound(GH_SYM_READV)
        else:
            t.counters[GH_SYM_READV].passthrough += 1
        return real_readv(fd, iov, cnt)
    if _fair_cancelled(t, GH_SYM_READV, fd):
        return -1
    m.msg_name = NULL
    m.msg_namelen = 0
    m.msg_iov = <iovec *>iov
    m.msg_iovlen = cnt
    m.msg_control = NULL
    m.msg_controllen = 0
    m.msg_flags = 0
    return _recvmsg(t, GH_SYM_READV, fd, &m, 0, True)


cdef ssize_t gh_writev(int fd, const iovec *iov, int cnt) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef msghdr m
    if t == NULL or cnt < 0 or cnt > IOV_MAX or (cnt > 0 and iov == NULL) \
            or _iov_total(iov, <size_t>cnt) == 0:
        # The kernel answers these itself: EINVAL for out-of-range counts, EFAULT for a NULL
        # vector, 0 at once for zero bytes (before the socket is asked: no empty datagram).
        if t == NULL:
            gh_count_unbound(GH_SYM_WRITEV)
        else:
            t.counters[GH_SYM_WRITEV].passthrough += 1
        return real_writev(fd, iov, cnt)
    if _fair_cancelled(t, GH_SYM_WRITEV, fd):
        return -1
    m.msg_name = NULL
    m.msg_namelen = 0
    m.msg_iov = <iovec *>iov
    m.msg_iovlen = cnt
    m.msg_control = NULL
    m.msg_controllen = 0
    m.msg_flags = 0
    return _sendmsg(t, GH_SYM_WRITEV, fd, &m, 0, True)


cdef ssize_t gh_recv(int fd, void *buf, size_t n, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RECV)
        return real_recv(fd, buf, n, flags)
    # Counted even when non-blocking: libmariadb reads and writes with MSG_DONTWAIT.
    if _fair_cancelled(t, GH_SYM_RECV, fd):
        return -1
    if flags & (MSG_DONTWAIT | MSG_ERRQUEUE | MSG_OOB):
        # The kernel answers these without waiting (the error queue and urgent data never
        # block; EAGAIN/EINVAL come back as they are).
        t.counters[GH_SYM_RECV].passthrough += 1
        return real_recv(fd, buf, n, flags)
    return _recv(t, GH_SYM_RECV, fd, <char *>buf, n, flags, NULL, NULL, False)


cdef ssize_t gh_send(int fd, const void *buf, size_t n, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_SEND)
        return real_send(fd, buf, n, flags)
    if _fair_cancelled(t, GH_SYM_SEND, fd):
        return -1
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_SEND].passthrough += 1
        return real_send(fd, buf, n, flags)
    return _send(t, GH_SYM_SEND, fd, <const char *>buf, n, flags, NULL, 0, False)


cdef ssize_t gh_recvfrom(int fd, void *buf, size_t n, int flags, sockaddr *addr, socklen_t *alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RECVFROM)
        return real_recvfrom(fd, buf, n, flags, addr, alen)
    if _fair_cancelled(t, GH_SYM_RECVFROM, fd):
        return -1
    if flags & (MSG_DONTWAIT | MSG_ERRQUEUE | MSG_OOB):
        # The kernel answers these without waiting (the error queue and urgent data never
        # block; EAGAIN/EINVAL come back as they are).
        t.counters[GH_SYM_RECVFROM].passthrough += 1
        return real_recvfrom(fd, buf, n, flags, addr, alen)
    return _recv(t, GH_SYM_RECVFROM, fd, <char *>buf, n, flags, addr, alen, False)


cdef ssize_t gh_sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr, socklen_t alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_SENDTO)
        return real_sendto(fd, buf, n, flags, addr, alen)
    if _fair_cancelled(t, GH_SYM_SENDTO, fd):
        return -1
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_SENDTO].passthrough += 1
        return real_sendto(fd, buf, n, flags, addr, alen)
    return _send(t, GH_SYM_SENDTO, fd, <const char *>buf, n, flags, addr, alen, False)


cdef ssize_t gh_recvmsg(int fd, msghdr *msg, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RECVMSG)
        return real_recvmsg(fd, msg, flags)
    if _fair_cancelled(t, GH_SYM_RECVMSG, fd):
        return -1
    if flags & (MSG_DONTWAIT | MSG_ERRQUEUE | MSG_OOB) or msg == NULL:
        # The kernel answers these without waiting (the error queue and urgent data never
        # block; EAGAIN/EINVAL/EFAULT come back as they are).
        t.counters[GH_SYM_RECVMSG].passthrough += 1
        return real_recvmsg(fd, msg, flags)
    return _recvmsg(t, GH_SYM_RECVMSG, fd, msg, flags, False)


cdef ssize_t gh_sendmsg(int fd, const msghdr *msg, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_SENDMSG)
        return real_sendmsg(fd, msg, flags)
    if _fair_cancelled(t, GH_SYM_SENDMSG, fd):
        return -1
    if flags & MSG_DONTWAIT or msg == NULL:
        t.counters[GH_SYM_SENDMSG].passthrough += 1
        return real_sendmsg(fd, msg, flags)
    return _sendmsg(t, GH_SYM_SENDMSG, fd, msg, flags, False)


cdef int gh_poll(pollfd *fds, nfds_t nfds, int timeout) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int r
    if t == NULL:
        gh_count_unbound(GH_SYM_POLL)
        return real_poll(fds, nfds, timeout)
    if _fair_cancelled_poll(t, GH_SYM_POLL, fds, nfds):
        return -1
    if timeout == 0:
        t.counters[GH_SYM_POLL].passthrough += 1
        return real_poll(fds, nfds, 0)
    r = real_poll(fds, nfds, 0)
    if r != 0:
        t.counters[GH_SYM_POLL].fast += 1
        return r
    return _poll(t, GH_SYM_POLL, fds, nfds, _deadline_ms(timeout), NULL, False)


cdef int gh_ppoll(pollfd *fds, nfds_t nfds, const timespec *tmo, const sigset_t *mask) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef timespec zero
    cdef int r
    if t == NULL:
        gh_count_unbound(GH_SYM_PPOLL)
        return real_ppoll(fds, nfds, tmo, mask)
    if _fair_cancelled_poll(t, GH_SYM_PPOLL, fds, nfds):
        return -1
    if tmo != NULL and (tmo.tv_sec < 0 or tmo.tv_nsec < 0 or tmo.tv_nsec >= 1000000000 or
                        (tmo.tv_sec == 0 and tmo.tv_nsec == 0)):
        t.counters[GH_SYM_PPOLL].passthrough += 1
        return real_ppoll(fds, nfds, tmo, mask)  # a probe, or EINVAL from the kernel
    zero.tv_sec = 0
    zero.tv_nsec = 0
    r = real_ppoll(fds, nfds, &zero, mask)
    if r != 0:
        t.counters[GH_SYM_PPOLL].fast += 1
        return r
    return _poll(t, GH_SYM_PPOLL, fds, nfds, _deadline_ts(tmo), mask, True)


cdef int gh_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, timeval *tv) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef fd_set srd, swr, sex
    cdef timeval zero
    cdef int64_t deadline, start
    cdef int r, e
    if t == NULL:
        gh_count_unbound(GH_SYM_SELECT)
        return real_select(nfds, rd, wr, ex, tv)
    if (tv != NULL and ((tv.tv_sec == 0 and tv.tv_usec == 0) or tv.tv_sec < 0 or tv.tv_usec < 0)) \
            or nfds < 0 or nfds > FD_SETSIZE:
        t.counters[GH_SYM_SELECT].passthrough += 1
        return real_select(nfds, rd, wr, ex, tv)
    if _fair_cancelled_select(t, GH_SYM_SELECT, nfds, rd, wr, ex, tv):
        return -1
    start = gh_now_ns()
    deadline = -1 if tv == NULL else _deadline_after(tv.tv_sec, <int64_t>tv.tv_usec * 1000)
    if rd != NULL:
        memcpy(&srd, rd, sizeof(fd_set))
    if wr != NULL:
        memcpy(&swr, wr, sizeof(fd_set))
    if ex != NULL:
        memcpy(&sex, ex, sizeof(fd_set))
    zero.tv_sec = 0
    zero.tv_usec = 0
    r = real_select(nfds, rd, wr, ex, &zero)
    if r != 0:
        t.counters[GH_SYM_SELECT].fast += 1
        return r
    if rd != NULL:
        memcpy(rd, &srd, sizeof(fd_set))
    if wr != NULL:
        memcpy(wr, &swr, sizeof(fd_set))
    if ex != NULL:
        memcpy(ex, &sex, sizeof(fd_set))
    r = _select(t, GH_SYM_SELECT, nfds, rd, wr, ex, deadline, NULL, False)
    if tv != NULL:
        # Linux select() reports the time not slept.
        e = gh_get_errno()
        if deadline >= 0:
            deadline -= gh_now_ns()
            if deadline < 0:
                deadline = 0
            tv.tv_sec = deadline // 1000000000
            tv.tv_usec = (deadline % 1000000000) // 1000
        else:   # a timeout too large for a deadline: subtract the time slept
            start = gh_now_ns() - start
            tv.tv_sec -= start // 1000000000
            tv.tv_usec -= (start % 1000000000) // 1000
            if tv.tv_usec < 0:
                tv.tv_usec += 1000000
                tv.tv_sec -= 1
        gh_set_errno(e)
    return r


cdef int gh_pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const timespec *ts, const sigset_t *mask) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef fd_set srd, swr, sex
    cdef timespec zero
    cdef int r
    if t == NULL:
        gh_count_unbound(GH_SYM_PSELECT)
        return real_pselect(nfds, rd, wr, ex, ts, mask)
    if (ts != NULL and ((ts.tv_sec == 0 and ts.tv_nsec == 0) or ts.tv_sec < 0 or ts.tv_nsec < 0
                        or ts.tv_nsec >= 1000000000)) or nfds < 0 or nfds > FD_SETSIZE:
        t.counters[GH_SYM_PSELECT].passthrough += 1
        return real_pselect(nfds, rd, wr, ex, ts, mask)
    if _fair_cancelled_select(t, GH_SYM_PSELECT, nfds, rd, wr, ex, NULL):
        return -1
    if rd != NULL:
        memcpy(&srd, rd, sizeof(fd_set))
    if wr != NULL:
        memcpy(&swr, wr, sizeof(fd_set))
    if ex != NULL:
        memcpy(&sex, ex, sizeof(fd_set))
    zero.tv_sec = 0
    zero.tv_nsec = 0
    r = real_pselect(nfds, rd, wr, ex, &zero, mask)
    if r != 0:
        t.counters[GH_SYM_PSELECT].fast += 1
        return r
    if rd != NULL:
        memcpy(rd, &srd, sizeof(fd_set))
    if wr != NULL:
        memcpy(wr, &swr, sizeof(fd_set))
    if ex != NULL:
        memcpy(ex, &sex, sizeof(fd_set))
    return _select(t, GH_SYM_PSELECT, nfds, rd, wr, ex, _deadline_ts(ts), mask, True)


cdef unsigned int gh_sleep(unsigned int seconds) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int64_t deadline, left
    cdef int rc
    if t == NULL or seconds == 0:
        if t == NULL:
            gh_count_unbound(GH_SYM_SLEEP)
        else:
            t.counters[GH_SYM_SLEEP].passthrough += 1
        return real_sleep(seconds)
    deadline = gh_now_ns() + <int64_t>seconds * 1000000000
    rc = _sleep_until(t, GH_SYM_SLEEP, deadline)
    if rc == GH_TIMEDOUT:
        t.counters[GH_SYM_SLEEP].green += 1
        return 0
    if rc == GH_BLOCK:
        _blocking(t, GH_SYM_SLEEP)
        seconds = real_sleep(seconds)
        _unblocked(t)
        return seconds
    t.counters[GH_SYM_SLEEP].cancelled += 1
    left = deadline - gh_now_ns()
    gh_set_errno(ETIMEDOUT)
    return <unsigned int>((left + 999999999) // 1000000000) if left > 0 else 1


cdef int gh_usleep(useconds_t usec) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int rc, r
    if t == NULL or usec == 0:
        if t == NULL:
            gh_count_unbound(GH_SYM_USLEEP)
        else:
            t.counters[GH_SYM_USLEEP].passthrough += 1
        return real_usleep(usec)
    rc = _sleep_until(t, GH_SYM_USLEEP, gh_now_ns() + <int64_t>usec * 1000)
    if rc == GH_TIMEDOUT:
        t.counters[GH_SYM_USLEEP].green += 1
        return 0
    if rc == GH_BLOCK:
        _blocking(t, GH_SYM_USLEEP)
        r = real_usleep(usec)
        _unblocked(t)
        return r
    t.counters[GH_SYM_USLEEP].cancelled += 1
    gh_set_errno(ETIMEDOUT)
    return -1


cdef inline bint _valid_ts(const timespec *ts) noexcept nogil:
    return ts != NULL and ts.tv_sec >= 0 and ts.tv_nsec >= 0 and ts.tv_nsec < 1000000000


cdef int gh_nanosleep(const timespec *req, timespec *rem) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int64_t deadline
    cdef int rc, r
    if t == NULL:
        gh_count_unbound(GH_SYM_NANOSLEEP)
        return real_nanosleep(req, rem)
    if not _valid_ts(req) or (req.tv_sec == 0 and req.tv_nsec == 0):
        t.counters[GH_SYM_NANOSLEEP].passthrough += 1
        return real_nanosleep(req, rem)  # EFAULT / EINVAL / no-op from the real call
    deadline = _deadline_ts(req)
    rc = _sleep_until(t, GH_SYM_NANOSLEEP, deadline)
    if rc == GH_TIMEDOUT:
        t.counters[GH_SYM_NANOSLEEP].green += 1
        return 0
    if rc == GH_BLOCK:
        _blocking(t, GH_SYM_NANOSLEEP)
        r = real_nanosleep(req, rem)
        _unblocked(t)
        return r
    t.counters[GH_SYM_NANOSLEEP].cancelled += 1
    _fill_rem(rem, deadline)
    gh_set_errno(ETIMEDOUT)
    return -1


cdef int gh_clock_nanosleep(clockid_t clk, int flags, const timespec *req, timespec *rem) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int64_t deadline
    cdef int rc, r
    if t == NULL:
        gh_count_unbound(GH_SYM_CLOCK_NANOSLEEP)
        return real_clock_nanosleep(clk, flags, req, rem)
    if (flags & TIMER_ABSTIME) or not _valid_ts(req) or (req.tv_sec == 0 and req.tv_nsec == 0) \
            or (clk != CLOCK_MONOTONIC and clk != CLOCK_REALTIME):
        t.counters[GH_SYM_CLOCK_NANOSLEEP].passthrough += 1
        return real_clock_nanosleep(clk, flags, req, rem)
    deadline = _deadline_ts(req)
    rc = _sleep_until(t, GH_SYM_CLOCK_NANOSLEEP, deadline)
    if rc == GH_TIMEDOUT:
        t.counters[GH_SYM_CLOCK_NANOSLEEP].green += 1
        return 0
    if rc == GH_BLOCK:
        _blocking(t, GH_SYM_CLOCK_NANOSLEEP)
        r = real_clock_nanosleep(clk, flags, req, rem)
        _unblocked(t)
        return r
    t.counters[GH_SYM_CLOCK_NANOSLEEP].cancelled += 1
    _fill_rem(rem, deadline)
    return ETIMEDOUT  # clock_nanosleep returns the error number


# _FORTIFY_SOURCE twins: a size check, then the plain hook.  An overflow goes to the real
# function, which aborts exactly as it would have.

cdef ssize_t gh___read_chk(int fd, void *buf, size_t n, size_t buflen) noexcept nogil:
    if n > buflen:
        return real_read_chk(fd, buf, n, buflen)
    return gh_read(fd, buf, n)


cdef ssize_t gh___recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags) noexcept nogil:
    if n > buflen:
        return real_recv_chk(fd, buf, n, buflen, flags)
    return gh_recv(fd, buf, n, flags)


cdef ssize_t gh___recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                               sockaddr *addr, socklen_t *alen) noexcept nogil:
    if n > buflen:
        return real_recvfrom_chk(fd, buf, n, buflen, flags, addr, alen)
    return gh_recvfrom(fd, buf, n, flags, addr, alen)


cdef int gh___poll_chk(pollfd *fds, nfds_t nfds, int timeout, size_t fdslen) noexcept nogil:
    if fdslen // sizeof(pollfd) < nfds:
        return real_poll_chk(fds, nfds, timeout, fdslen)
    return gh_poll(fds, nfds, timeout)


cdef int gh___ppoll_chk(pollfd *fds, nfds_t nfds, const timespec *tmo, const sigset_t *mask,
                        size_t fdslen) noexcept nogil:
    if fdslen // sizeof(pollfd) < nfds:
        return real_ppoll_chk(fds, nfds, tmo, mask, fdslen)
    return gh_ppoll(fds, nfds, tmo, mask)


# --- name resolution (resolve.pxi): the lookup runs on the resolver pool ----------------------

cdef int gh_getaddrinfo(const char *node, const char *service, const addrinfo *hints,
                        addrinfo **res) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_GETADDRINFO)
        return gh_real_getaddrinfo(node, service, hints, res)
    return _getaddrinfo(t, node, service, hints, res)


cdef int gh_getnameinfo(const sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                        char *serv, socklen_t servlen, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_GETNAMEINFO)
        return gh_real_getnameinfo(sa, salen, host, hostlen, serv, servlen, flags)
    return _getnameinfo(t, sa, salen, host, hostlen, serv, servlen, flags)


cdef hostent *gh_gethostbyname(const char *name) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_GETHOSTBYNAME)
        return gh_real_gethostbyname(name)
    return _hostent_static(t, GH_SYM_GETHOSTBYNAME,
                           _hostent_job(GH_DNS_GETHOSTBYNAME_R, name, 0, NULL, 0, NULL, 0, NULL),
                           gh_dns_numeric(name))


cdef hostent *gh_gethostbyname2(const char *name, int af) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_GETHOSTBYNAME2)
        return gh_real_gethostbyname2(name, af)
    return _hostent_static(t, GH_SYM_GETHOSTBYNAME2,
                           _hostent_job(GH_DNS_GETHOSTBYNAME2_R, name, af, NULL, 0, NULL, 0, NULL),
                           gh_dns_numeric(name))


cdef hostent *gh_gethostbyaddr(const void *addr, socklen_t alen, int af) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL or addr == NULL:
        if t == NULL:
            gh_count_unbound(GH_SYM_GETHOSTBYADDR)
        else:
            t.counters[GH_SYM_GETHOSTBYADDR].passthrough += 1
        return gh_real_gethostbyaddr(addr, alen, af)
    return _hostent_static(t, GH_SYM_GETHOSTBYADDR,
                           _hostent_job(GH_DNS_GETHOSTBYADDR_R, NULL, af, addr, alen, NULL, 0, NULL),
                           False)


cdef int gh_gethostbyname_r(const char *name, hostent *ret, char *buf, size_t buflen,
                            hostent **result, int *h_errnop) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL or gh_dns_numeric(name):
        if t == NULL:
            gh_count_unbound(GH_SYM_GETHOSTBYNAME_R)
        else:
            t.counters[GH_SYM_GETHOSTBYNAME_R].passthrough += 1
        return gh_real_gethostbyname_r(name, ret, buf, buflen, result, h_errnop)
    return _hostent_r(t, GH_SYM_GETHOSTBYNAME_R,
                      _hostent_job(GH_DNS_GETHOSTBYNAME_R, name, 0, NULL, 0, buf, buflen, h_errnop),
                      ret, buf, buflen, result, h_errnop)


cdef int gh_gethostbyname2_r(const char *name, int af, hostent *ret, char *buf, size_t buflen,
                             hostent **result, int *h_errnop) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL or gh_dns_numeric(name):
        if t == NULL:
            gh_count_unbound(GH_SYM_GETHOSTBYNAME2_R)
        else:
            t.counters[GH_SYM_GETHOSTBYNAME2_R].passthrough += 1
        return gh_real_gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop)
    return _hostent_r(t, GH_SYM_GETHOSTBYNAME2_R,
                      _hostent_job(GH_DNS_GETHOSTBYNAME2_R, name, af, NULL, 0, buf, buflen, h_errnop),
                      ret, buf, buflen, result, h_errnop)


cdef int gh_gethostbyaddr_r(const void *addr, socklen_t alen, int af, hostent *ret, char *buf,
                            size_t buflen, hostent **result, int *h_errnop) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL or addr == NULL:
        if t == NULL:
            gh_count_unbound(GH_SYM_GETHOSTBYADDR_R)
        else:
            t.counters[GH_SYM_GETHOSTBYADDR_R].passthrough += 1
        return gh_real_gethostbyaddr_r(addr, alen, af, ret, buf, buflen, result, h_errnop)
    return _hostent_r(t, GH_SYM_GETHOSTBYADDR_R,
                      _hostent_job(GH_DNS_GETHOSTBYADDR_R, NULL, af, addr, alen, buf, buflen, h_errnop),
                      ret, buf, buflen, result, h_errnop)


cdef int gh_res_query(const char *dname, int cls, int type, unsigned char *answer,
                      int anslen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RES_QUERY)
        return gh_real_res_query(dname, cls, type, answer, anslen)
    return _res_query(t, GH_SYM_RES_QUERY, GH_DNS_RES_QUERY, dname, cls, type, answer, anslen)


cdef int gh_res_search(const char *dname, int cls, int type, unsigned char *answer,
                       int anslen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RES_SEARCH)
        return gh_real_res_search(dname, cls, type, answer, anslen)
    return _res_query(t, GH_SYM_RES_SEARCH, GH_DNS_RES_SEARCH, dname, cls, type, answer, anslen)
