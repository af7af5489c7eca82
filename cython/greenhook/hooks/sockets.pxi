# Included by _hooks.pyx: the receive and send families, connect, accept.
#
# Each family is one loop: try with MSG_DONTWAIT; on "would block" go through
# _would_block_again (park, or switch to the real blocking call when this greenlet cannot
# switch); finish through _done/_error/_fail.  Flags the kernel answers without ever waiting
# (MSG_DONTWAIT, MSG_ERRQUEUE, MSG_OOB) never get here: the entry points pass them through.

cdef size_t _iov_total(const iovec *iov, size_t cnt) noexcept nogil:
    cdef size_t i, total = 0
    if iov == NULL:
        return 0
    for i in range(cnt):
        total += iov[i].iov_len
    return total


# --- receive family -------------------------------------------------------------------------

cdef ssize_t _recv(gh_thread_t *t, int sym, int fd, char *buf, size_t n, int flags,
                   sockaddr *addr, socklen_t *alen, bint from_read) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, got = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT, stream = -1
    if (flags & (MSG_WAITALL | MSG_PEEK)) == (MSG_WAITALL | MSG_PEEK):
        return _recv_peek_all(t, sym, fd, buf, n, flags, addr, alen)
    if from_read and not gh_fd_socket_hint(fd):
        # Not a socket, by the per-fd hint: one read that never waits, whatever the fd is
        # (preadv2 RWF_NOWAIT), instead of a recvfrom that fails with ENOTSOCK first.  "Would
        # block" (or a file that cannot say) goes on below, where recvfrom tells a socket (park)
        # from anything else (the real read): a stale hint costs a syscall, never a wrong wait.
        r = gh_read_nowait(fd, buf, n)
        if r >= 0 or not gh_nowait_unsupported(gh_get_errno()):
            t.counters[sym].passthrough += 1
            return r
        gh_set_errno(e0)
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_recvfrom(fd, buf + got, n - got, flags | dontwait, addr, alen)
        if not dontwait:
            _unblocked(t)
        if r > 0:
            got += r
            # MSG_WAITALL waits for the rest on a stream only; a datagram is one message.
            if (flags & MSG_WAITALL) and <size_t>got < n and dontwait and _waitall_goes_on(fd, &stream):
                continue
            return _done(t, sym, how, got, e0)
        if r == 0:
            return _done(t, sym, how, got, e0)
        e = gh_get_errno()
        if e == ENOTSOCK and from_read:
            t.counters[sym].passthrough += 1
            gh_set_errno(e0)    # the real call sets errno only if it fails
            return real_read(fd, buf, n)
        if not _would_block(e):
            return _error(t, sym, how, got, e)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, got, e0)


cdef int _peek_more(gh_thread_t *t, int sym, int fd, ssize_t r, size_t n, int64_t *deadline,
                    int *naps, int *how, int *dontwait, int *stream) noexcept nogil:
    """A MSG_PEEK|MSG_WAITALL read peeked ``r`` of ``n`` bytes.  The kernel returns that at
    once on AF_UNIX, at EOF, on an error, on an O_NONBLOCK fd, or when the socket's timeout
    has passed; on TCP it waits for the whole length.  Readiness cannot say "more data than
    before", so the greenlet naps (1 ms doubling to 64 ms) before peeking again.
    GH_READY: peek again; GH_CANCELLED: fail; anything else: return the partial peek."""
    cdef int rc, fl
    if r == 0 or <size_t>r >= n or not dontwait[0] or not _waitall_goes_on(fd, stream) \
            or _sock_domain(fd) == AF_UNIX or _peer_done(fd):
        return GH_TIMEDOUT
    if deadline[0] == GH_UNSET:
        fl = fcntl(fd, F_GETFL)
        if fl >= 0 and (fl & O_NONBLOCK):
            return GH_NONBLOCKING
        deadline[0] = _sock_deadline(fd, SO_RCVTIMEO)
    if deadline[0] >= 0 and gh_now_ns() >= deadline[0]:
        return GH_TIMEDOUT
    naps[0] += 1
    rc = gh_wait(t, NULL, 0, _nap_until(deadline[0], naps[0] + 3), sym)
    if rc == GH_BLOCK:
        t.counters[sym].blocked += 1
        how[0] = GH_HOW_BLOCKED
        dontwait[0] = 0
        return GH_READY
    if rc == GH_CANCELLED:
        return rc
    how[0] = GH_HOW_GREEN
    return GH_READY


cdef bint _peer_done(int fd) noexcept nogil:
    """The peer shut its side down (EOF after what is queued)."""
    cdef pollfd p
    p.fd = fd
    p.events = POLLRDHUP
    p.revents = 0
    return real_poll(&p, 1, 0) < 0 or (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0


cdef ssize_t _recv_peek_all(gh_thread_t *t, int sym, int fd, char *buf, size_t n, int flags,
                            sockaddr *addr, socklen_t *alen) noexcept nogil:
    """MSG_PEEK|MSG_WAITALL (see _peek_more)."""
    cdef int e0 = gh_get_errno()
    cdef ssize_t r
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT, stream = -1, naps = 0
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_recvfrom(fd, buf, n, flags | dontwait, addr, alen)
        if not dontwait:
            _unblocked(t)
        if r >= 0:
            rc = _peek_more(t, sym, fd, r, n, &deadline, &naps, &how, &dontwait, &stream)
            if rc == GH_READY:
                continue
            if rc == GH_CANCELLED:
                return _fail(t, sym, rc, 0, e0)
            if rc == GH_NONBLOCKING:
                t.counters[sym].passthrough += 1
                return r
            return _done(t, sym, how, r, e0)
        e = gh_get_errno()
        if not _would_block(e):
            return _error(t, sym, how, 0, e)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, 0, e0)


cdef ssize_t _recvmsg(gh_thread_t *t, int sym, int fd, msghdr *msg, int flags, bint from_readv) noexcept nogil:
    """recvmsg/readv.  MSG_WAITALL on a stream socket waits for every byte, as the kernel does:
    the first read fills the caller's msghdr (address, ancillary data, flags); the rest is
    read into the remaining buffer space."""
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, got = 0
    cdef size_t total = 0, skip
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT, stream = -1, naps = 0
    cdef msghdr m
    cdef msghdr *cur = msg
    cdef iovec *iov = NULL
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_recvmsg(fd, cur, flags | dontwait)
        if not dontwait:
            _unblocked(t)
        if r >= 0 and (flags & (MSG_WAITALL | MSG_PEEK)) == (MSG_WAITALL | MSG_PEEK):
            if total == 0:
                total = _iov_total(msg.msg_iov, msg.msg_iovlen)
            rc = _peek_more(t, sym, fd, r, total, &deadline, &naps, &how, &dontwait, &stream)
            if rc == GH_READY:
                continue
            if rc == GH_CANCELLED:
                return _fail(t, sym, rc, 0, e0)
            if rc == GH_NONBLOCKING:
                t.counters[sym].passthrough += 1
                return r
            return _done(t, sym, how, r, e0)
        if r > 0 and (flags & MSG_WAITALL) and dontwait:
            if cur == msg:
                total = _iov_total(msg.msg_iov, msg.msg_iovlen)  # checked by the kernel now
            got += r
            if <size_t>got < total and _waitall_goes_on(fd, &stream):
                if iov == NULL:
                    iov = <iovec *>malloc(msg.msg_iovlen * sizeof(iovec))
                    if iov == NULL:
                        return _done(t, sym, how, got, e0)
                    memcpy(iov, msg.msg_iov, msg.msg_iovlen * sizeof(iovec))
                    memcpy(&m, msg, sizeof(msghdr))
                    m.msg_iov = iov
                    m.msg_name = NULL
                    m.msg_namelen = 0
                    m.msg_control = NULL
                    m.msg_controllen = 0
                    cur = &m
                skip = <size_t>r
                while m.msg_iovlen and skip >= m.msg_iov[0].iov_len:
                    skip -= m.msg_iov[0].iov_len
                    m.msg_iov += 1
                    m.msg_iovlen -= 1
                if m.msg_iovlen:
                    m.msg_iov[0].iov_base = <char *>m.msg_iov[0].iov_base + skip
                    m.msg_iov[0].iov_len -= skip
                continue
            free(iov)
            return _done(t, sym, how, got, e0)
        if r >= 0:
            free(iov)
            return _done(t, sym, how, got + r, e0)
        e = gh_get_errno()
        if e == ENOTSOCK and from_readv:
            t.counters[sym].passthrough += 1
            gh_set_errno(e0)
            return real_readv(fd, msg.msg_iov, <int>msg.msg_iovlen)
        if not _would_block(e):
            free(iov)
            return _error(t, sym, how, got, e)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            free(iov)
            return _fail(t, sym, rc, got, e0)


# --- send family: a blocking send on a stream socket returns only when everything is queued ---

cdef ssize_t _send(gh_thread_t *t, int sym, int fd, const char *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t alen, bint from_write) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, sent = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT
    if from_write and not gh_fd_socket_hint(fd):
        # As in _recv: one write that never waits (pwritev2 RWF_NOWAIT) for a non-socket.
        r = gh_write_nowait(fd, buf, n)
        if r >= 0 and <size_t>r < n:
            # Part of it went (a pipe near full, or a socket after all): the rest as below.
            sent = r
        elif r >= 0 or not gh_nowait_unsupported(gh_get_errno()):
            t.counters[sym].passthrough += 1
            return r
        gh_set_errno(e0)
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_sendto(fd, buf + sent, n - sent, flags | dontwait, addr, alen)
        if not dontwait:
            _unblocked(t)
        if r >= 0:
            sent += r
            if <size_t>sent >= n or not dontwait:
                return _done(t, sym, how, sent, e0)
            continue
        e = gh_get_errno()
        if e == ENOTSOCK and from_write:
            t.counters[sym].passthrough += 1
            gh_set_errno(e0)
            r = real_write(fd, buf + sent, n - sent)
            if r < 0 and sent > 0:
                gh_set_errno(e0)
                return sent
            return r if r < 0 else sent + r
        if not _would_block(e):
            return _error(t, sym, how, sent, e)
        rc = _would_block_again(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, sent, e0)


cdef ssize_t _sendmsg(gh_thread_t *t, int sym, int fd, const msghdr *msg, int flags, bint from_writev) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, sent = 0
    cdef size_t total = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT
    cdef msghdr m
    cdef iovec *iov = NULL
    cdef size_t skip
    memcpy(&m, msg, sizeof(msghdr))
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_sendmsg(fd, &m, flags | dontwait)
        if not dontwait:
            _unblocked(t)
        if r >= 0:
            if sent == 0:
                total = _iov_total(msg.msg_iov, msg.msg_iovlen)  # the kernel has checked it now
            sent += r
            if <size_t>sent >= total or not dontwait:
                free(iov)
                return _done(t, sym, how, sent, e0)
            # Partial: continue with the rest of the data; ancillary data went with the first part.
            if iov == NULL:
                iov = <iovec *>malloc(msg.msg_iovlen * sizeof(iovec))
                if iov == NULL:
                    return _done(t, sym, how, sent, e0)
                memcpy(iov, msg.msg_iov, msg.msg_iovlen * sizeof(iovec))
                m.msg_iov = iov
            skip = <size_t>r
            while m.msg_iovlen and skip >= m.msg_iov[0].iov_len:
                skip -= m.msg_iov[0].iov_len
                m.msg_iov += 1
                m.msg_iovlen -= 1
            if m.msg_iovlen:
                m.msg_iov[0].iov_base = <char *>m.msg_iov[0].iov_base + skip
                m.msg_iov[0].iov_len -= skip
            m.msg_control = NULL
            m.msg_controllen = 0
            continue
        e = gh_get_errno()
        if e == ENOTSOCK and from_writev and sent == 0:
            t.counters[sym].passthrough += 1
            free(iov)
            gh_set_errno(e0)
            return real_writev(fd, msg.msg_iov, <int>msg.msg_iovlen)
        if not _would_block(e):
            free(iov)
            return _error(t, sym, how, sent, e)
        rc = _would_block_again(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            free(iov)
            return _fail(t, sym, rc, sent, e0)


# --- connect / accept: the only hooks that toggle O_NONBLOCK, and only between two syscalls
#     of the same greenlet (never across a wait), so no other greenlet can observe it ----------

cdef int _connect(gh_thread_t *t, int fd, const sockaddr *addr, socklen_t alen) noexcept nogil:
    cdef int fl, r, e, rc, err, e0 = gh_get_errno()
    cdef socklen_t el = sizeof(int)
    cdef int64_t deadline = GH_UNSET
    cdef pollfd p
    fl = fcntl(fd, F_GETFL)
    if fl < 0 or (fl & O_NONBLOCK):
        t.counters[GH_SYM_CONNECT].passthrough += 1
        return real_connect(fd, addr, alen)
    fcntl(fd, F_SETFL, fl | O_NONBLOCK)
    r = real_connect(fd, addr, alen)
    e = gh_get_errno()
    fcntl(fd, F_SETFL, fl)
    if r == 0 or (e != EINPROGRESS and e != EAGAIN):
        t.counters[GH_SYM_CONNECT].fast += 1
        gh_set_errno(e)
        return r
    if e == EAGAIN:
        # AF_UNIX with a full backlog: a blocking connect would wait for room.  There is no
        # readiness event for that, so retry with short green sleeps until SO_SNDTIMEO.
        return _connect_unix_retry(t, fd, fl, addr, alen, e0)
    deadline = _sock_deadline(fd, SO_SNDTIMEO)  # the fd is known to be blocking: skip F_GETFL
    while True:
        rc = _park_fd(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, GH_SYM_CONNECT)
        if rc == GH_READY:
            p.fd = fd
            p.events = POLLOUT
            p.revents = 0
            if real_poll(&p, 1, 0) == 0:
                continue  # spurious wake
            err = 0
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el)
            t.counters[GH_SYM_CONNECT].green += 1
            if err:
                gh_set_errno(err)
                return -1
            gh_set_errno(e0)
            return 0
        if rc == GH_BLOCK:
            _blocking(t, GH_SYM_CONNECT)
            p.fd = fd
            p.events = POLLOUT
            p.revents = 0
            r = real_poll(&p, 1, _remaining_ms(deadline))
            _unblocked(t)
            if r == 0:
                gh_set_errno(EINPROGRESS)
                return -1
            err = 0
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el)
            if err:
                gh_set_errno(err)
                return -1
            gh_set_errno(e0)
            return 0
        if rc == GH_CANCELLED:
            t.counters[GH_SYM_CONNECT].cancelled += 1
            gh_set_errno(ETIMEDOUT)
            return -1
        # SO_SNDTIMEO expired: Linux's blocking connect reports EINPROGRESS then.
        t.counters[GH_SYM_CONNECT].timeouts += 1
        gh_set_errno(EINPROGRESS)
        return -1


cdef int _connect_unix_retry(gh_thread_t *t, int fd, int fl, const sockaddr *addr, socklen_t alen,
                             int e0) noexcept nogil:
    cdef int r, e, rc
    cdef int64_t step = 1000000
    cdef int64_t deadline = _sock_deadline(fd, SO_SNDTIMEO)
    while True:
        rc = gh_wait(t, NULL, 0, gh_now_ns() + step, GH_SYM_CONNECT)
        if rc == GH_CANCELLED:
            t.counters[GH_SYM_CONNECT].cancelled += 1
            gh_set_errno(ETIMEDOUT)
            return -1
        if rc == GH_BLOCK:
            _blocking(t, GH_SYM_CONNECT)
            r = real_connect(fd, addr, alen)
            _unblocked(t)
            return r
        fcntl(fd, F_SETFL, fl | O_NONBLOCK)
        r = real_connect(fd, addr, alen)
        e = gh_get_errno()
        fcntl(fd, F_SETFL, fl)
        if r == 0 or e != EAGAIN:
            t.counters[GH_SYM_CONNECT].green += 1
            gh_set_errno(e0 if r == 0 else e)
            return r
        if deadline >= 0 and gh_now_ns() >= deadline:
            t.counters[GH_SYM_CONNECT].timeouts += 1
            gh_set_errno(EAGAIN)
            return -1
        if step < 50000000:
            step *= 2


cdef bint _listener_shut(int fd) noexcept nogil:
    cdef pollfd p
    p.fd = fd
    p.events = POLLRDHUP
    p.revents = 0
    return real_poll(&p, 1, 0) > 0 and (p.revents & POLLRDHUP) != 0


cdef inline int _accept_call(int fd, sockaddr *addr, socklen_t *alen, int flags, bint four) noexcept nogil:
    return real_accept4(fd, addr, alen, flags) if four else real_accept(fd, addr, alen)


cdef int _accept(gh_thread_t *t, int sym, int fd, sockaddr *addr, socklen_t *alen, int flags, bint four) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef int fl, r, e, rc, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT
    cdef int64_t deadline = GH_UNSET
    fl = fcntl(fd, F_GETFL)
    if fl < 0 or (fl & O_NONBLOCK):
        t.counters[sym].passthrough += 1
        return _accept_call(fd, addr, alen, flags, four)
    while True:
        if dontwait:
            fcntl(fd, F_SETFL, fl | O_NONBLOCK)
            r = _accept_call(fd, addr, alen, flags, four)
            e = gh_get_errno()
            fcntl(fd, F_SETFL, fl)
        else:
            _in_flight(t, sym)
            r = _accept_call(fd, addr, alen, flags, four)
            e = gh_get_errno()
            _unblocked(t)
        if r >= 0:
            return <int>_done(t, sym, how, r, e0)
        if not _would_block(e):
            return <int>_error(t, sym, how, 0, e)
        if how == GH_HOW_GREEN and _listener_shut(fd):
            # An AF_UNIX listener shut down: non-blocking accept keeps saying EAGAIN, the
            # blocking one the caller asked for returns EINVAL.
            return <int>_error(t, sym, how, 0, EINVAL)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return <int>_fail(t, sym, rc, 0, e0)
