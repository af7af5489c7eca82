# Included by _hooks.pyx: the receive and send families, connect, accept.
#
# Each family is one loop: try with MSG_DONTWAIT; on "would block" go through
# _would_block_again (park, or switch to the real blocking call when this greenlet cannot
# switch); finish through _done/_error/_fail.  Flags the kernel answers without ever waiting
# (MSG_DONTWAIT, MSG_ERRQUEUE, MSG_OOB) never get here: the entry points pass them through.

# --- receive family -------------------------------------------------------------------------

cdef ssize_t _recv(gh_thread_t *t, int sym, int fd, char *buf, size_t n, int flags,
                   sockaddr *addr, socklen_t *alen, bint from_read) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, got = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT, stream = -1
    if (flags & (MSG_WAITALL | MSG_PEEK)) == (MSG_WAITALL | MSG_PEEK):
        return _recv_peek_all(t, sym, fd, buf, n, flags, addr, alen)
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_recvfrom(fd, buf + got, n - got, flags | dontwait, addr, alen)
        if not dontwait:
            _unblocked(t)
        if r > 0:
            got += r
            # MSG_WAITALL waits for the rest on a stream only; a datagram is one message.
            if (flags & MSG_WAITALL) and <size_t>got < n and dontwait and _is_stream(fd, &stream):
                continue
            return _done(t, sym, how, got, e0)
        if r == 0:
            return _done(t, sym, how, got, e0)
        e = gh_get_errno()
        if e == ENOTSOCK and from_read:
            t.counters[sym].passthrough += 1
            return real_read(fd, buf, n)
        if not _would_block(e):
            return _error(t, sym, how, got, e)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, got)


cdef ssize_t _recv_peek_all(gh_thread_t *t, int sym, int fd, char *buf, size_t n, int flags,
                            sockaddr *addr, socklen_t *alen) noexcept nogil:
    """MSG_PEEK|MSG_WAITALL: the kernel waits until ``n`` bytes can be peeked from the start of
    the queue (or EOF, an error, the socket's timeout).  Readiness cannot tell "more data than
    before", so after a partial peek the greenlet naps (1 ms doubling to 64 ms) and peeks again."""
    cdef int e0 = gh_get_errno()
    cdef ssize_t r
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT, stream = -1, naps = 0, fl
    cdef pollfd p
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_recvfrom(fd, buf, n, flags | dontwait, addr, alen)
        if not dontwait:
            _unblocked(t)
        if r >= 0:
            if r == 0 or <size_t>r >= n or not dontwait or not _is_stream(fd, &stream):
                return _done(t, sym, how, r, e0)
            # A partial peek: the kernel returns it at EOF or on an error, else keeps waiting.
            p.fd = fd
            p.events = POLLRDHUP
            p.revents = 0
            if real_poll(&p, 1, 0) < 0 or (p.revents & (POLLRDHUP | POLLHUP | POLLERR)):
                return _done(t, sym, how, r, e0)
            if deadline == GH_UNSET:
                fl = fcntl(fd, F_GETFL)
                if fl >= 0 and (fl & O_NONBLOCK):
                    t.counters[sym].passthrough += 1
                    return r
                deadline = _sock_deadline(fd, SO_RCVTIMEO)
            if deadline >= 0 and gh_now_ns() >= deadline:
                t.counters[sym].timeouts += 1
                return r
            naps += 1
            rc = gh_wait(t, NULL, 0, _nap_until(deadline, naps + 3), sym)
            if rc == GH_BLOCK:
                t.counters[sym].blocked += 1
                how = GH_HOW_BLOCKED
                dontwait = 0
            elif rc == GH_CANCELLED:
                return _fail(t, sym, rc, 0)
            else:
                how = GH_HOW_GREEN
            continue
        e = gh_get_errno()
        if not _would_block(e):
            return _error(t, sym, how, 0, e)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, 0)


cdef ssize_t _recvmsg(gh_thread_t *t, int sym, int fd, msghdr *msg, int flags, bint from_readv) noexcept nogil:
    cdef int e0 = gh_get_errno()
    # MSG_WAITALL is passed to the kernel but a partial result is returned as is (see README).
    cdef ssize_t r
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT
    while True:
        if not dontwait:
            _in_flight(t, sym)
        r = real_recvmsg(fd, msg, flags | dontwait)
        if not dontwait:
            _unblocked(t)
        if r >= 0:
            return _done(t, sym, how, r, e0)
        e = gh_get_errno()
        if e == ENOTSOCK and from_readv:
            t.counters[sym].passthrough += 1
            return real_readv(fd, msg.msg_iov, <int>msg.msg_iovlen)
        if not _would_block(e):
            return _error(t, sym, how, 0, e)
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, 0)


# --- send family: a blocking send on a stream socket returns only when everything is queued ---

cdef ssize_t _send(gh_thread_t *t, int sym, int fd, const char *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t alen, bint from_write) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, sent = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e, how = GH_HOW_FAST, dontwait = MSG_DONTWAIT
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
            return real_write(fd, buf, n)
        if not _would_block(e):
            return _error(t, sym, how, sent, e)
        rc = _would_block_again(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return _fail(t, sym, rc, sent)


cdef size_t _iov_total(const iovec *iov, size_t cnt) noexcept nogil:
    cdef size_t i, total = 0
    for i in range(cnt):
        total += iov[i].iov_len
    return total


cdef ssize_t _sendmsg(gh_thread_t *t, int sym, int fd, const msghdr *msg, int flags, bint from_writev) noexcept nogil:
    cdef int e0 = gh_get_errno()
    cdef ssize_t r, sent = 0
    cdef size_t total = _iov_total(msg.msg_iov, msg.msg_iovlen)
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
            return real_writev(fd, msg.msg_iov, <int>msg.msg_iovlen)
        if not _would_block(e):
            free(iov)
            return _error(t, sym, how, sent, e)
        rc = _would_block_again(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            free(iov)
            return _fail(t, sym, rc, sent)


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
        return _connect_unix_retry(t, fd, fl, addr, alen)
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


cdef int _connect_unix_retry(gh_thread_t *t, int fd, int fl, const sockaddr *addr, socklen_t alen) noexcept nogil:
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
            gh_set_errno(e)
            return r
        if deadline >= 0 and gh_now_ns() >= deadline:
            t.counters[GH_SYM_CONNECT].timeouts += 1
            gh_set_errno(EAGAIN)
            return -1
        if step < 50000000:
            step *= 2


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
        rc = _would_block_again(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym, &how, &dontwait)
        if rc != GH_READY:
            return <int>_fail(t, sym, rc, 0)
