# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Green replacements for blocking libc calls, with the exact libc signatures.

Every hook has one shape:

1. pass straight through when this OS thread has no backend bound, or the caller asked for
   non-blocking behaviour;
2. try the operation without blocking (``MSG_DONTWAIT``, a zero-timeout probe) — success returns
   at once, with no GIL, no Python and no extra syscall;
3. on "would block", park the greenlet through ``gh_wait`` (the one function that takes the GIL
   and talks to a backend), then retry with the remaining time.

This module knows libc semantics only: it asks the backend bound to the OS thread to wait and
never names a hub.  Cancellation (a kill or timeout thrown into the parked greenlet) makes the
hook return -1/``ETIMEDOUT``; the exception itself is re-raised in the Python frame that called
into C by a one-shot trace function (see ``_ThreadState``).
"""

cimport cython
from cpython.ref cimport PyObject, Py_XINCREF, Py_XDECREF
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from libc_io cimport *

import threading
from greenlet import getcurrent

cdef extern from "frameobject.h":
    ctypedef struct PyFrameObject:
        pass

cdef extern from "gh_thread.h" nogil:
    enum:
        GH_SYM_CONNECT, GH_SYM_ACCEPT, GH_SYM_ACCEPT4, GH_SYM_READ, GH_SYM_WRITE, GH_SYM_READV
        GH_SYM_WRITEV, GH_SYM_RECV, GH_SYM_SEND, GH_SYM_RECVFROM, GH_SYM_SENDTO, GH_SYM_RECVMSG
        GH_SYM_SENDMSG, GH_SYM_POLL, GH_SYM_PPOLL, GH_SYM_SELECT, GH_SYM_PSELECT, GH_SYM_SLEEP
        GH_SYM_USLEEP, GH_SYM_NANOSLEEP, GH_SYM_CLOCK_NANOSLEEP, GH_NSYM
    ctypedef struct gh_counter_t:
        uint64_t passthrough, fast, green, timeouts, cancelled, blocked, waits
    ctypedef struct gh_thread_t:
        PyObject *state
        int in_flight
        int64_t since_ns
        gh_counter_t counters[GH_NSYM]
    gh_thread_t *gh_self()
    void gh_set_self(gh_thread_t *t)
    void gh_count_unbound(int sym)
    uint64_t gh_unbound(int sym)
    void gh_reset_unbound()
    int64_t gh_now_ns()
    int gh_get_errno()
    void gh_set_errno(int e)

cdef extern from "Python.h":
    ctypedef int (*Py_tracefunc)(PyObject *, PyFrameObject *, int, PyObject *)
    Py_tracefunc gh_get_tracefunc()
    PyObject *gh_get_traceobj()
    void PyEval_SetTrace(Py_tracefunc func, PyObject *obj)
    PyFrameObject *PyEval_GetFrame()
    PyFrameObject *PyFrame_GetBack(PyFrameObject *frame)
    void PyErr_SetObject(PyObject *type, PyObject *value)
    enum:
        PyTrace_CALL, PyTrace_EXCEPTION, PyTrace_LINE, PyTrace_RETURN, PyTrace_OPCODE

SYMBOL_NAMES = (
    "connect", "accept", "accept4", "read", "write", "readv", "writev", "recv", "send",
    "recvfrom", "sendto", "recvmsg", "sendmsg", "poll", "ppoll", "select", "pselect", "sleep",
    "usleep", "nanosleep", "clock_nanosleep",
)

# Results of gh_wait.
cdef enum:
    GH_READY = 0        # an fd may be ready: probe again
    GH_TIMEDOUT = 1     # the deadline passed
    GH_CANCELLED = 2    # an exception was thrown into the greenlet; it is delivered later
    GH_BLOCK = 3        # this greenlet cannot switch: block the OS thread with the real call
    GH_NONBLOCKING = 4  # the fd is O_NONBLOCK: the caller wants EAGAIN back
    GH_CANCELLED_NOW = 5  # (internal) this wait itself was cancelled, not a later one

cdef enum:
    GH_UNSET = -2       # deadline not computed yet (-1 means no deadline)
    ENOMEM_ = 12

# errno a cancelled call returns.  Not EINTR: libpq and others retry EINTR forever.
CANCEL_ERRNO = ETIMEDOUT

# --- the real functions, from dlsym (never from a saved GOT slot: under lazy binding that is
#     the resolver stub) ---------------------------------------------------------------------

ctypedef int (*connect_t)(int, const sockaddr *, socklen_t) noexcept nogil
ctypedef int (*accept_t)(int, sockaddr *, socklen_t *) noexcept nogil
ctypedef int (*accept4_t)(int, sockaddr *, socklen_t *, int) noexcept nogil
ctypedef ssize_t (*read_t)(int, void *, size_t) noexcept nogil
ctypedef ssize_t (*write_t)(int, const void *, size_t) noexcept nogil
ctypedef ssize_t (*readv_t)(int, const iovec *, int) noexcept nogil
ctypedef ssize_t (*recv_t)(int, void *, size_t, int) noexcept nogil
ctypedef ssize_t (*send_t)(int, const void *, size_t, int) noexcept nogil
ctypedef ssize_t (*recvfrom_t)(int, void *, size_t, int, sockaddr *, socklen_t *) noexcept nogil
ctypedef ssize_t (*sendto_t)(int, const void *, size_t, int, const sockaddr *, socklen_t) noexcept nogil
ctypedef ssize_t (*recvmsg_t)(int, msghdr *, int) noexcept nogil
ctypedef ssize_t (*sendmsg_t)(int, const msghdr *, int) noexcept nogil
ctypedef int (*poll_t)(pollfd *, nfds_t, int) noexcept nogil
ctypedef int (*ppoll_t)(pollfd *, nfds_t, const timespec *, const sigset_t *) noexcept nogil
ctypedef int (*select_t)(int, fd_set *, fd_set *, fd_set *, timeval *) noexcept nogil
ctypedef int (*pselect_t)(int, fd_set *, fd_set *, fd_set *, const timespec *, const sigset_t *) noexcept nogil
ctypedef unsigned int (*sleep_t)(unsigned int) noexcept nogil
ctypedef int (*usleep_t)(useconds_t) noexcept nogil
ctypedef int (*nanosleep_t)(const timespec *, timespec *) noexcept nogil
ctypedef int (*clock_nanosleep_t)(clockid_t, int, const timespec *, timespec *) noexcept nogil
ctypedef ssize_t (*read_chk_t)(int, void *, size_t, size_t) noexcept nogil
ctypedef ssize_t (*recv_chk_t)(int, void *, size_t, size_t, int) noexcept nogil
ctypedef ssize_t (*recvfrom_chk_t)(int, void *, size_t, size_t, int, sockaddr *, socklen_t *) noexcept nogil
ctypedef int (*poll_chk_t)(pollfd *, nfds_t, int, size_t) noexcept nogil
ctypedef int (*ppoll_chk_t)(pollfd *, nfds_t, const timespec *, const sigset_t *, size_t) noexcept nogil

cdef connect_t real_connect = <connect_t>dlsym(RTLD_DEFAULT, "connect")
cdef accept_t real_accept = <accept_t>dlsym(RTLD_DEFAULT, "accept")
cdef accept4_t real_accept4 = <accept4_t>dlsym(RTLD_DEFAULT, "accept4")
cdef read_t real_read = <read_t>dlsym(RTLD_DEFAULT, "read")
cdef write_t real_write = <write_t>dlsym(RTLD_DEFAULT, "write")
cdef readv_t real_readv = <readv_t>dlsym(RTLD_DEFAULT, "readv")
cdef readv_t real_writev = <readv_t>dlsym(RTLD_DEFAULT, "writev")
cdef recv_t real_recv = <recv_t>dlsym(RTLD_DEFAULT, "recv")
cdef send_t real_send = <send_t>dlsym(RTLD_DEFAULT, "send")
cdef recvfrom_t real_recvfrom = <recvfrom_t>dlsym(RTLD_DEFAULT, "recvfrom")
cdef sendto_t real_sendto = <sendto_t>dlsym(RTLD_DEFAULT, "sendto")
cdef recvmsg_t real_recvmsg = <recvmsg_t>dlsym(RTLD_DEFAULT, "recvmsg")
cdef sendmsg_t real_sendmsg = <sendmsg_t>dlsym(RTLD_DEFAULT, "sendmsg")
cdef poll_t real_poll = <poll_t>dlsym(RTLD_DEFAULT, "poll")
cdef ppoll_t real_ppoll = <ppoll_t>dlsym(RTLD_DEFAULT, "ppoll")
cdef select_t real_select = <select_t>dlsym(RTLD_DEFAULT, "select")
cdef pselect_t real_pselect = <pselect_t>dlsym(RTLD_DEFAULT, "pselect")
cdef sleep_t real_sleep = <sleep_t>dlsym(RTLD_DEFAULT, "sleep")
cdef usleep_t real_usleep = <usleep_t>dlsym(RTLD_DEFAULT, "usleep")
cdef nanosleep_t real_nanosleep = <nanosleep_t>dlsym(RTLD_DEFAULT, "nanosleep")
cdef clock_nanosleep_t real_clock_nanosleep = <clock_nanosleep_t>dlsym(RTLD_DEFAULT, "clock_nanosleep")
cdef read_chk_t real_read_chk = <read_chk_t>dlsym(RTLD_DEFAULT, "__read_chk")
cdef recv_chk_t real_recv_chk = <recv_chk_t>dlsym(RTLD_DEFAULT, "__recv_chk")
cdef recvfrom_chk_t real_recvfrom_chk = <recvfrom_chk_t>dlsym(RTLD_DEFAULT, "__recvfrom_chk")
cdef poll_chk_t real_poll_chk = <poll_chk_t>dlsym(RTLD_DEFAULT, "__poll_chk")
cdef ppoll_chk_t real_ppoll_chk = <ppoll_chk_t>dlsym(RTLD_DEFAULT, "__ppoll_chk")


# --- per-thread state, cancellation delivery ---------------------------------------------

cdef object _backend_resolver = None   # set by the public API: returns the backend to use


cdef class _Pending:
    cdef object greenlet
    cdef object exc
    cdef object frame     # the Python frame that called into C; identity is what matters
    cdef bint had_local_trace


def _local_trace(frame, event, arg):
    # A frame-local trace function is what makes the interpreter report opcode events for the
    # frame; the events themselves are handled by the C-level tracer.
    return _local_trace


cdef class _ThreadState:
    """What greenhook keeps for one OS thread: its backend, counters, undelivered exceptions."""

    cdef gh_thread_t c
    cdef public object backend      # a Backend, or None to ask the resolver each time
    cdef readonly object thread_ident
    cdef list pending               # _Pending exceptions waiting for their frame
    cdef Py_tracefunc prev_func       # the tracer found when arming, chained to and
    cdef PyObject *prev_obj           # restored afterwards
    cdef bint armed

    def __cinit__(self):
        cdef int i
        self.c.state = <PyObject *>self
        self.c.in_flight = -1
        self.c.since_ns = 0
        for i in range(GH_NSYM):
            self.c.counters[i].passthrough = 0
            self.c.counters[i].fast = 0
            self.c.counters[i].green = 0
            self.c.counters[i].timeouts = 0
            self.c.counters[i].cancelled = 0
            self.c.counters[i].blocked = 0
            self.c.counters[i].waits = 0
        self.pending = []
        self.armed = False
        self.prev_func = NULL
        self.prev_obj = NULL
        self.thread_ident = threading.get_ident()

    @property
    def in_flight(self):
        """(symbol, seconds) of a hooked call blocking this OS thread for real, or None."""
        cdef int sym = self.c.in_flight
        if sym < 0:
            return None
        return SYMBOL_NAMES[sym], (gh_now_ns() - self.c.since_ns) / 1e9

    cdef bint _cancelled_here(self):
        cur = getcurrent()
        for p in self.pending:
            if (<_Pending>p).greenlet is cur:
                return True
        return False

    cdef void _cancel(self, exc):
        """Remember ``exc`` for the calling Python frame and arm the one-shot tracer."""
        cdef PyFrameObject *frame = PyEval_GetFrame()
        cdef _Pending p
        if frame == NULL:
            return  # called from C with no Python caller: nobody to deliver to
        p = _Pending()
        p.greenlet = getcurrent()
        p.exc = exc
        p.frame = <object><PyObject *>frame
        self.pending.append(p)
        self._watch_opcodes(p)
        if not self.armed:
            self.prev_func = gh_get_tracefunc()
            self.prev_obj = gh_get_traceobj()
            Py_XINCREF(self.prev_obj)
            self.armed = True
            PyEval_SetTrace(<Py_tracefunc>_trace, <PyObject *>self)

    cdef void _watch_opcodes(self, _Pending p):
        """Ask for an event at the frame's next opcode, i.e. right after the C call returns, so
        that a call that returns normally (rather than raising) is interrupted before the rest
        of its line runs.  Where an interpreter ignored it, the next line event would do."""
        frame = p.frame
        try:
            p.had_local_trace = frame.f_trace is not None
            if not p.had_local_trace:
                frame.f_trace = _local_trace
            frame.f_trace_opcodes = True
        except Exception:
            pass

    cdef void _unwatch_opcodes(self, _Pending p):
        frame = p.frame
        try:
            frame.f_trace_opcodes = False
            if not p.had_local_trace and frame.f_trace is _local_trace:
                frame.f_trace = None
        except Exception:
            pass

    cdef void _disarm(self):
        cdef PyObject *obj = self.prev_obj
        self.armed = False
        self.prev_obj = NULL
        PyEval_SetTrace(self.prev_func, obj)
        Py_XDECREF(obj)
        self.prev_func = NULL

    cdef object _on_trace(self, PyFrameObject *frame, int what, PyObject *arg):
        """The exception to raise in ``frame`` now, or None."""
        cdef _Pending p
        cdef PyFrameObject *back
        cdef Py_ssize_t i
        for i in range(len(self.pending)):
            p = <_Pending>self.pending[i]
            if <PyObject *>p.frame != <PyObject *>frame:
                continue
            if what == PyTrace_EXCEPTION or what == PyTrace_LINE or what == PyTrace_OPCODE:
                del self.pending[i]
                self._unwatch_opcodes(p)
                if not self.pending:
                    self._disarm()
                if what == PyTrace_EXCEPTION and arg != NULL:
                    try:
                        p.exc.__context__ = (<object>arg)[1]  # the driver's own error
                    except Exception:
                        pass
                return p.exc
            if what == PyTrace_RETURN:
                # The C call returned normally and so did its frame: deliver in the caller.
                back = PyFrame_GetBack(frame)
                if back == NULL:
                    self._unwatch_opcodes(p)
                    del self.pending[i]
                    if not self.pending:
                        self._disarm()
                else:
                    self._unwatch_opcodes(p)
                    p.frame = <object><PyObject *>back
                    Py_XDECREF(<PyObject *>back)
                    self._watch_opcodes(p)
            return None
        return None


cdef int _trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) noexcept:
    cdef _ThreadState st = <_ThreadState>obj
    cdef int r
    if st.prev_func != NULL:
        r = st.prev_func(st.prev_obj, frame, what, arg)
        if r != 0:
            return r
    try:
        exc = st._on_trace(frame, what, arg)
    except BaseException:
        return 0
    if exc is None:
        return 0
    exc_type = type(exc)
    PyErr_SetObject(<PyObject *>exc_type, <PyObject *>exc)
    return -1


cdef list _all_states = []          # every _ThreadState ever bound (keeps counters of dead threads)


# --- the one waiting function -------------------------------------------------------------

cdef int _wait_with_gil(gh_thread_t *t, pollfd *fds, int nfds, int64_t deadline, int sym) noexcept:
    cdef _ThreadState st = <_ThreadState>t.state
    cdef int i
    try:
        if st.pending and st._cancelled_here():
            return GH_CANCELLED  # unwinding after a cancellation: never park again
        backend = st.backend
        if backend is None:
            backend = _backend_resolver() if _backend_resolver is not None else None
        if backend is None or not backend.can_switch():
            return GH_BLOCK
        if deadline < 0:
            timeout = None
        else:
            timeout = (deadline - gh_now_ns()) / 1e9
            if timeout <= 0:
                return GH_TIMEDOUT
        t.counters[sym].waits += 1
        if nfds == 0:
            backend.sleep(timeout)
            return GH_TIMEDOUT
        if nfds == 1 and fds[0].fd >= 0:
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
        return GH_READY if ok else GH_TIMEDOUT
    except BaseException as exc:
        try:
            st._cancel(exc)
        except BaseException:
            pass
        return GH_CANCELLED_NOW


cdef bint _shutdown_on_cancel = True   # greenhook.configure(shutdown_cancelled_sockets=...)


cdef void _drop_connection(int fd) noexcept nogil:
    """Shut down a connected stream socket whose call was cancelled mid-protocol.

    The driver's conversation with its server is now in an unknown state; left open, the
    server's late answer would be read as the answer to the next request (libpq does exactly
    that).  Shut down, the driver sees a dead connection and fails or reconnects."""
    cdef int kind = 0
    cdef socklen_t kl = sizeof(int)
    cdef sockaddr_storage peer
    cdef socklen_t pl = sizeof(sockaddr_storage)
    if getsockopt(fd, SOL_SOCKET, SO_TYPE, &kind, &kl) != 0 or kind != SOCK_STREAM:
        return
    if getpeername(fd, <sockaddr *>&peer, &pl) != 0:
        return  # listening, or still connecting
    shutdown(fd, SHUT_RDWR)


cdef int gh_wait(gh_thread_t *t, pollfd *fds, int nfds, int64_t deadline, int sym) noexcept nogil:
    """Park the current greenlet until one of ``fds`` may be ready or ``deadline`` (monotonic ns,
    -1 = none) passes; ``nfds == 0`` is a sleep.  Returns a GH_* code; errno is not preserved."""
    cdef int rc
    with gil:
        rc = _wait_with_gil(t, fds, nfds, deadline, sym)
    if rc == GH_CANCELLED_NOW:
        if _shutdown_on_cancel and nfds == 1 and fds[0].fd >= 0:
            _drop_connection(fds[0].fd)
        rc = GH_CANCELLED
    return rc


# --- shared pieces of the hook shape --------------------------------------------------------

cdef inline int64_t _deadline_ms(int timeout_ms) noexcept nogil:
    if timeout_ms < 0:
        return -1
    return gh_now_ns() + <int64_t>timeout_ms * 1000000


cdef inline int64_t _deadline_ts(const timespec *ts) noexcept nogil:
    if ts == NULL:
        return -1
    return gh_now_ns() + <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int _remaining_ms(int64_t deadline) noexcept nogil:
    """Milliseconds left, rounded up, for a real blocking poll; -1 = infinite."""
    cdef int64_t left
    if deadline < 0:
        return -1
    left = deadline - gh_now_ns()
    if left <= 0:
        return 0
    return <int>((left + 999999) // 1000000)


cdef int64_t _sock_deadline(int fd, int timeo_opt) noexcept nogil:
    """Deadline from the socket's SO_RCVTIMEO/SO_SNDTIMEO (0 = none: -1)."""
    cdef timeval tv
    cdef socklen_t tl = sizeof(tv)
    if getsockopt(fd, SOL_SOCKET, timeo_opt, &tv, &tl) == 0 and (tv.tv_sec or tv.tv_usec):
        return gh_now_ns() + <int64_t>tv.tv_sec * 1000000000 + <int64_t>tv.tv_usec * 1000
    return -1


cdef int _park_fd(gh_thread_t *t, int fd, short events, int timeo_opt, int64_t *deadline, int sym) noexcept nogil:
    """A socket call would block.  Unless the fd is O_NONBLOCK (then the caller wants EAGAIN),
    wait for ``events`` until the socket's SO_RCVTIMEO/SO_SNDTIMEO deadline."""
    cdef pollfd p
    cdef int fl
    if deadline[0] == GH_UNSET:
        fl = fcntl(fd, F_GETFL)
        if fl >= 0 and (fl & O_NONBLOCK):
            return GH_NONBLOCKING
        deadline[0] = _sock_deadline(fd, timeo_opt)
    p.fd = fd
    p.events = events
    p.revents = 0
    return gh_wait(t, &p, 1, deadline[0], sym)


cdef inline ssize_t _fail(gh_thread_t *t, int sym, int rc, ssize_t progress) noexcept nogil:
    """Finish a socket call whose wait did not end in readiness."""
    if rc == GH_CANCELLED:
        t.counters[sym].cancelled += 1
        if progress > 0:
            return progress
        gh_set_errno(ETIMEDOUT)
        return -1
    if rc == GH_NONBLOCKING:
        t.counters[sym].passthrough += 1
    else:
        t.counters[sym].timeouts += 1
    if progress > 0:
        return progress
    gh_set_errno(EAGAIN)  # what the kernel returns when SO_RCVTIMEO/SO_SNDTIMEO expires
    return -1


cdef inline void _done(gh_thread_t *t, int sym, bint waited) noexcept nogil:
    if waited:
        t.counters[sym].green += 1
    else:
        t.counters[sym].fast += 1


cdef inline void _blocking(gh_thread_t *t, int sym) noexcept nogil:
    t.counters[sym].blocked += 1
    t.in_flight = sym
    t.since_ns = gh_now_ns()


cdef inline void _unblocked(gh_thread_t *t) noexcept nogil:
    t.in_flight = -1


cdef inline bint _would_block(int e) noexcept nogil:
    if e == EAGAIN:
        return True
    return e == EWOULDBLOCK  # the same value on Linux; kept for clarity


# --- receive family -------------------------------------------------------------------------

cdef ssize_t _recv(gh_thread_t *t, int sym, int fd, char *buf, size_t n, int flags,
                   sockaddr *addr, socklen_t *alen, bint from_read) noexcept nogil:
    cdef ssize_t r, got = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e
    cdef bint waited = False
    while True:
        r = real_recvfrom(fd, buf + got, n - got, flags | MSG_DONTWAIT, addr, alen)
        if r > 0:
            got += r
            if (flags & MSG_WAITALL) and <size_t>got < n:
                continue
            _done(t, sym, waited)
            return got
        if r == 0:
            _done(t, sym, waited)
            return got
        e = gh_get_errno()
        if e == ENOTSOCK and from_read:
            t.counters[sym].passthrough += 1
            return real_read(fd, buf, n)
        if not _would_block(e):
            _done(t, sym, waited)
            if got:
                return got
            gh_set_errno(e)
            return -1
        rc = _park_fd(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym)
        if rc == GH_READY:
            waited = True
            continue
        if rc == GH_BLOCK:
            _blocking(t, sym)
            r = real_recvfrom(fd, buf + got, n - got, flags, addr, alen)
            _unblocked(t)
            if r < 0:
                return got if got else -1
            return got + r
        return _fail(t, sym, rc, got)


cdef ssize_t _recvmsg(gh_thread_t *t, int sym, int fd, msghdr *msg, int flags, bint from_readv) noexcept nogil:
    # MSG_WAITALL is passed to the kernel but a partial result is returned as is (see README).
    cdef ssize_t r
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e
    cdef bint waited = False
    while True:
        r = real_recvmsg(fd, msg, flags | MSG_DONTWAIT)
        if r >= 0:
            _done(t, sym, waited)
            return r
        e = gh_get_errno()
        if e == ENOTSOCK and from_readv:
            t.counters[sym].passthrough += 1
            return real_readv(fd, msg.msg_iov, <int>msg.msg_iovlen)
        if not _would_block(e):
            _done(t, sym, waited)
            gh_set_errno(e)
            return -1
        rc = _park_fd(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym)
        if rc == GH_READY:
            waited = True
            continue
        if rc == GH_BLOCK:
            _blocking(t, sym)
            r = real_recvmsg(fd, msg, flags)
            _unblocked(t)
            return r
        return _fail(t, sym, rc, 0)


# --- send family: a blocking send on a stream socket returns only when everything is queued ---

cdef ssize_t _send(gh_thread_t *t, int sym, int fd, const char *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t alen, bint from_write) noexcept nogil:
    cdef ssize_t r, sent = 0
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e
    cdef bint waited = False
    while True:
        r = real_sendto(fd, buf + sent, n - sent, flags | MSG_DONTWAIT, addr, alen)
        if r >= 0:
            sent += r
            if <size_t>sent >= n:
                _done(t, sym, waited)
                return sent
            continue
        e = gh_get_errno()
        if e == ENOTSOCK and from_write:
            t.counters[sym].passthrough += 1
            return real_write(fd, buf, n)
        if not _would_block(e):
            _done(t, sym, waited)
            if sent:
                return sent
            gh_set_errno(e)
            return -1
        rc = _park_fd(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, sym)
        if rc == GH_READY:
            waited = True
            continue
        if rc == GH_BLOCK:
            _blocking(t, sym)
            r = real_sendto(fd, buf + sent, n - sent, flags, addr, alen)
            _unblocked(t)
            if r < 0:
                return sent if sent else -1
            return sent + r
        return _fail(t, sym, rc, sent)


cdef size_t _iov_total(const iovec *iov, size_t cnt) noexcept nogil:
    cdef size_t i, total = 0
    for i in range(cnt):
        total += iov[i].iov_len
    return total


cdef ssize_t _sendmsg(gh_thread_t *t, int sym, int fd, const msghdr *msg, int flags, bint from_writev) noexcept nogil:
    cdef ssize_t r, sent = 0
    cdef size_t total = _iov_total(msg.msg_iov, msg.msg_iovlen)
    cdef int64_t deadline = GH_UNSET
    cdef int rc, e
    cdef bint waited = False
    cdef msghdr m
    cdef iovec *iov = NULL
    cdef size_t skip
    memcpy(&m, msg, sizeof(msghdr))
    while True:
        r = real_sendmsg(fd, &m, flags | MSG_DONTWAIT)
        if r >= 0:
            sent += r
            if <size_t>sent >= total:
                _done(t, sym, waited)
                free(iov)
                return sent
            # Partial: continue with the rest of the data; ancillary data went with the first part.
            if iov == NULL:
                iov = <iovec *>malloc(msg.msg_iovlen * sizeof(iovec))
                if iov == NULL:
                    return sent
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
            _done(t, sym, waited)
            free(iov)
            if sent:
                return sent
            gh_set_errno(e)
            return -1
        rc = _park_fd(t, fd, POLLOUT, SO_SNDTIMEO, &deadline, sym)
        if rc == GH_READY:
            waited = True
            continue
        if rc == GH_BLOCK:
            _blocking(t, sym)
            r = real_sendmsg(fd, &m, flags)
            _unblocked(t)
            free(iov)
            if r < 0:
                return sent if sent else -1
            return sent + r
        free(iov)
        return _fail(t, sym, rc, sent)


# --- connect / accept: the only hooks that toggle O_NONBLOCK, and only between two syscalls
#     of the same greenlet (never across a wait), so no other greenlet can observe it ----------

cdef int _connect(gh_thread_t *t, int fd, const sockaddr *addr, socklen_t alen) noexcept nogil:
    cdef int fl, r, e, rc, err
    cdef socklen_t el = sizeof(int)
    cdef int64_t deadline = GH_UNSET
    cdef pollfd p
    cdef bint waited = False
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
            waited = True
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
            t.counters[GH_SYM_CONNECT].blocked += 1
            return real_connect(fd, addr, alen)
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


cdef int _accept(gh_thread_t *t, int sym, int fd, sockaddr *addr, socklen_t *alen, int flags, bint four) noexcept nogil:
    cdef int fl, r, e, rc
    cdef int64_t deadline = GH_UNSET
    cdef bint waited = False
    fl = fcntl(fd, F_GETFL)
    if fl < 0 or (fl & O_NONBLOCK):
        t.counters[sym].passthrough += 1
        return real_accept4(fd, addr, alen, flags) if four else real_accept(fd, addr, alen)
    while True:
        fcntl(fd, F_SETFL, fl | O_NONBLOCK)
        r = real_accept4(fd, addr, alen, flags) if four else real_accept(fd, addr, alen)
        e = gh_get_errno()
        fcntl(fd, F_SETFL, fl)
        if r >= 0 or not _would_block(e):
            _done(t, sym, waited)
            gh_set_errno(e)
            return r
        rc = _park_fd(t, fd, POLLIN, SO_RCVTIMEO, &deadline, sym)
        if rc == GH_READY:
            waited = True
            continue
        if rc == GH_BLOCK:
            _blocking(t, sym)
            r = real_accept4(fd, addr, alen, flags) if four else real_accept(fd, addr, alen)
            _unblocked(t)
            return r
        return <int>_fail(t, sym, rc, 0)


# --- readiness waits --------------------------------------------------------------------------

cdef inline int64_t _nap_until(int64_t deadline, int spurious) noexcept nogil:
    """After repeated wakes that the probe does not confirm (the hub reports readiness poll
    does not, e.g. plain data while only POLLPRI was asked), sleep in growing naps instead of
    spinning: 1 ms doubling to 64 ms, never past the deadline."""
    cdef int shift = spurious - 3
    cdef int64_t until
    if shift > 6:
        shift = 6
    until = gh_now_ns() + (<int64_t>1000000 << shift)
    if deadline >= 0 and until > deadline:
        return deadline
    return until


cdef int _poll(gh_thread_t *t, int sym, pollfd *fds, nfds_t nfds, int64_t deadline,
               const sigset_t *mask, bint is_ppoll) noexcept nogil:
    """Slow path of poll/ppoll after a zero-timeout probe found nothing ready."""
    cdef int r, rc, spurious = 0
    cdef timespec zero, left
    cdef int64_t ns
    zero.tv_sec = 0
    zero.tv_nsec = 0
    while True:
        if spurious >= 3:
            rc = gh_wait(t, NULL, 0, _nap_until(deadline, spurious), sym)
        else:
            rc = gh_wait(t, fds, <int>nfds, deadline, sym)
        if rc == GH_BLOCK:
            _blocking(t, sym)
            if is_ppoll:
                if deadline < 0:
                    r = real_ppoll(fds, nfds, NULL, mask)
                else:
                    ns = deadline - gh_now_ns()
                    if ns < 0:
                        ns = 0
                    left.tv_sec = ns // 1000000000
                    left.tv_nsec = ns % 1000000000
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
            if r > 0:
                t.counters[sym].green += 1
            return r
        if deadline >= 0 and gh_now_ns() >= deadline:
            t.counters[sym].timeouts += 1
            return 0  # never earlier than asked
        spurious += 1


cdef int _select(gh_thread_t *t, int sym, int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
                 int64_t deadline, const sigset_t *mask, bint is_pselect) noexcept nogil:
    """select/pselect after a zero-timeout probe found nothing ready (the sets were restored)."""
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
            gh_set_errno(ENOMEM_)
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
            rc = gh_wait(t, fds, n, deadline, sym)
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
            if r > 0:
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



# --- sleeps ---------------------------------------------------------------------------------

cdef int _sleep_until(gh_thread_t *t, int sym, int64_t deadline) noexcept nogil:
    """Green sleep until ``deadline``: GH_TIMEDOUT when done, GH_CANCELLED or GH_BLOCK."""
    cdef int rc
    while True:
        rc = gh_wait(t, NULL, 0, deadline, sym)
        if rc != GH_TIMEDOUT:
            return rc
        if gh_now_ns() >= deadline:
            return GH_TIMEDOUT


cdef inline void _fill_rem(timespec *rem, int64_t deadline) noexcept nogil:
    cdef int64_t left
    if rem == NULL:
        return
    left = deadline - gh_now_ns()
    if left < 0:
        left = 0
    rem.tv_sec = left // 1000000000
    rem.tv_nsec = left % 1000000000


# === the hooks: exact libc signatures =======================================================

cdef int gh_connect(int fd, const sockaddr *addr, socklen_t alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_CONNECT)
        return real_connect(fd, addr, alen)
    return _connect(t, fd, addr, alen)


cdef int gh_accept(int fd, sockaddr *addr, socklen_t *alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_ACCEPT)
        return real_accept(fd, addr, alen)
    return _accept(t, GH_SYM_ACCEPT, fd, addr, alen, 0, False)


cdef int gh_accept4(int fd, sockaddr *addr, socklen_t *alen, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_ACCEPT4)
        return real_accept4(fd, addr, alen, flags)
    return _accept(t, GH_SYM_ACCEPT4, fd, addr, alen, flags, True)


cdef ssize_t gh_read(int fd, void *buf, size_t n) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_READ)
        return real_read(fd, buf, n)
    return _recv(t, GH_SYM_READ, fd, <char *>buf, n, 0, NULL, NULL, True)


cdef ssize_t gh_write(int fd, const void *buf, size_t n) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_WRITE)
        return real_write(fd, buf, n)
    return _send(t, GH_SYM_WRITE, fd, <const char *>buf, n, 0, NULL, 0, True)


cdef ssize_t gh_readv(int fd, const iovec *iov, int cnt) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef msghdr m
    if t == NULL or cnt < 0:
        if t == NULL:
            gh_count_unbound(GH_SYM_READV)
        return real_readv(fd, iov, cnt)
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
    if t == NULL or cnt < 0:
        if t == NULL:
            gh_count_unbound(GH_SYM_WRITEV)
        return real_writev(fd, iov, cnt)
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
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_RECV].passthrough += 1
        return real_recv(fd, buf, n, flags)
    return _recv(t, GH_SYM_RECV, fd, <char *>buf, n, flags, NULL, NULL, False)


cdef ssize_t gh_send(int fd, const void *buf, size_t n, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_SEND)
        return real_send(fd, buf, n, flags)
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_SEND].passthrough += 1
        return real_send(fd, buf, n, flags)
    return _send(t, GH_SYM_SEND, fd, <const char *>buf, n, flags, NULL, 0, False)


cdef ssize_t gh_recvfrom(int fd, void *buf, size_t n, int flags, sockaddr *addr, socklen_t *alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RECVFROM)
        return real_recvfrom(fd, buf, n, flags, addr, alen)
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_RECVFROM].passthrough += 1
        return real_recvfrom(fd, buf, n, flags, addr, alen)
    return _recv(t, GH_SYM_RECVFROM, fd, <char *>buf, n, flags, addr, alen, False)


cdef ssize_t gh_sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr, socklen_t alen) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_SENDTO)
        return real_sendto(fd, buf, n, flags, addr, alen)
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_SENDTO].passthrough += 1
        return real_sendto(fd, buf, n, flags, addr, alen)
    return _send(t, GH_SYM_SENDTO, fd, <const char *>buf, n, flags, addr, alen, False)


cdef ssize_t gh_recvmsg(int fd, msghdr *msg, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_RECVMSG)
        return real_recvmsg(fd, msg, flags)
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_RECVMSG].passthrough += 1
        return real_recvmsg(fd, msg, flags)
    return _recvmsg(t, GH_SYM_RECVMSG, fd, msg, flags, False)


cdef ssize_t gh_sendmsg(int fd, const msghdr *msg, int flags) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    if t == NULL:
        gh_count_unbound(GH_SYM_SENDMSG)
        return real_sendmsg(fd, msg, flags)
    if flags & MSG_DONTWAIT:
        t.counters[GH_SYM_SENDMSG].passthrough += 1
        return real_sendmsg(fd, msg, flags)
    return _sendmsg(t, GH_SYM_SENDMSG, fd, msg, flags, False)


cdef int gh_poll(pollfd *fds, nfds_t nfds, int timeout) noexcept nogil:
    cdef gh_thread_t *t = gh_self()
    cdef int r
    if t == NULL:
        gh_count_unbound(GH_SYM_POLL)
        return real_poll(fds, nfds, timeout)
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
    cdef int64_t deadline
    cdef int r, e
    if t == NULL:
        gh_count_unbound(GH_SYM_SELECT)
        return real_select(nfds, rd, wr, ex, tv)
    if (tv != NULL and ((tv.tv_sec == 0 and tv.tv_usec == 0) or tv.tv_sec < 0 or tv.tv_usec < 0)) \
            or nfds < 0 or nfds > FD_SETSIZE:
        t.counters[GH_SYM_SELECT].passthrough += 1
        return real_select(nfds, rd, wr, ex, tv)
    deadline = -1 if tv == NULL else gh_now_ns() + <int64_t>tv.tv_sec * 1000000000 + <int64_t>tv.tv_usec * 1000
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
        deadline -= gh_now_ns()
        if deadline < 0:
            deadline = 0
        tv.tv_sec = deadline // 1000000000
        tv.tv_usec = (deadline % 1000000000) // 1000
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


# === Python face ============================================================================

def hook_table():
    """{libc symbol: address of its green replacement} for every symbol this libc provides."""
    table = {
        "connect": (<uintptr_t>gh_connect, <uintptr_t>real_connect),
        "__connect": (<uintptr_t>gh_connect, <uintptr_t>real_connect),
        "accept": (<uintptr_t>gh_accept, <uintptr_t>real_accept),
        "accept4": (<uintptr_t>gh_accept4, <uintptr_t>real_accept4),
        "read": (<uintptr_t>gh_read, <uintptr_t>real_read),
        "__read": (<uintptr_t>gh_read, <uintptr_t>real_read),
        "write": (<uintptr_t>gh_write, <uintptr_t>real_write),
        "__write": (<uintptr_t>gh_write, <uintptr_t>real_write),
        "readv": (<uintptr_t>gh_readv, <uintptr_t>real_readv),
        "writev": (<uintptr_t>gh_writev, <uintptr_t>real_writev),
        "recv": (<uintptr_t>gh_recv, <uintptr_t>real_recv),
        "send": (<uintptr_t>gh_send, <uintptr_t>real_send),
        "__send": (<uintptr_t>gh_send, <uintptr_t>real_send),
        "recvfrom": (<uintptr_t>gh_recvfrom, <uintptr_t>real_recvfrom),
        "sendto": (<uintptr_t>gh_sendto, <uintptr_t>real_sendto),
        "recvmsg": (<uintptr_t>gh_recvmsg, <uintptr_t>real_recvmsg),
        "sendmsg": (<uintptr_t>gh_sendmsg, <uintptr_t>real_sendmsg),
        "poll": (<uintptr_t>gh_poll, <uintptr_t>real_poll),
        "__poll": (<uintptr_t>gh_poll, <uintptr_t>real_poll),
        "ppoll": (<uintptr_t>gh_ppoll, <uintptr_t>real_ppoll),
        "select": (<uintptr_t>gh_select, <uintptr_t>real_select),
        "__select": (<uintptr_t>gh_select, <uintptr_t>real_select),
        "pselect": (<uintptr_t>gh_pselect, <uintptr_t>real_pselect),
        "sleep": (<uintptr_t>gh_sleep, <uintptr_t>real_sleep),
        "usleep": (<uintptr_t>gh_usleep, <uintptr_t>real_usleep),
        "nanosleep": (<uintptr_t>gh_nanosleep, <uintptr_t>real_nanosleep),
        "__nanosleep": (<uintptr_t>gh_nanosleep, <uintptr_t>real_nanosleep),
        "clock_nanosleep": (<uintptr_t>gh_clock_nanosleep, <uintptr_t>real_clock_nanosleep),
        "__read_chk": (<uintptr_t>gh___read_chk, <uintptr_t>real_read_chk),
        "__recv_chk": (<uintptr_t>gh___recv_chk, <uintptr_t>real_recv_chk),
        "__recvfrom_chk": (<uintptr_t>gh___recvfrom_chk, <uintptr_t>real_recvfrom_chk),
        "__poll_chk": (<uintptr_t>gh___poll_chk, <uintptr_t>real_poll_chk),
        "__ppoll_chk": (<uintptr_t>gh___ppoll_chk, <uintptr_t>real_ppoll_chk),
    }
    return {name: hook for name, (hook, real) in table.items() if real != 0}


def set_shutdown_on_cancel(bint enabled):
    """Whether a cancelled wait shuts its connected stream socket down; returns the old value."""
    global _shutdown_on_cancel
    old = _shutdown_on_cancel
    _shutdown_on_cancel = enabled
    return old


def set_backend_resolver(resolver):
    """``resolver()`` returns the backend for threads bound without an explicit one (or None)."""
    global _backend_resolver
    _backend_resolver = resolver


def bind_thread(backend=None):
    """Let hooked calls made in this OS thread wait on ``backend`` (None: ask the resolver).

    Returns the thread's state object.  Threads never bound pass every call straight through.
    """
    cdef gh_thread_t *t = gh_self()
    cdef _ThreadState st
    if t != NULL:
        st = <_ThreadState>t.state
    else:
        st = _ThreadState()
        _all_states.append(st)
        gh_set_self(&st.c)
    st.backend = backend
    return st


def unbind_thread():
    """Make hooked calls in this OS thread pass straight through again."""
    gh_set_self(NULL)


def thread_state():
    """This OS thread's state object, or None if it is not bound."""
    cdef gh_thread_t *t = gh_self()
    return None if t == NULL else <_ThreadState>t.state


def thread_states():
    """Every state ever bound (for the blocking detector and stats)."""
    return list(_all_states)


def stats():
    """{symbol: {calls, passthrough, fast, green, waits, timeouts, cancelled, blocked}}, summed
    over every thread; symbols never called are left out."""
    cdef _ThreadState st
    cdef int i
    out = {}
    for i in range(GH_NSYM):
        row = {"calls": 0, "passthrough": <object>gh_unbound(i), "fast": 0, "green": 0,
               "waits": 0, "timeouts": 0, "cancelled": 0, "blocked": 0}
        for s in _all_states:
            st = <_ThreadState>s
            row["passthrough"] += st.c.counters[i].passthrough
            row["fast"] += st.c.counters[i].fast
            row["green"] += st.c.counters[i].green
            row["waits"] += st.c.counters[i].waits
            row["timeouts"] += st.c.counters[i].timeouts
            row["cancelled"] += st.c.counters[i].cancelled
            row["blocked"] += st.c.counters[i].blocked
        row["calls"] = (row["passthrough"] + row["fast"] + row["green"] + row["timeouts"]
                        + row["cancelled"] + row["blocked"])
        if row["calls"]:
            out[SYMBOL_NAMES[i]] = row
    return out


def reset_stats():
    cdef _ThreadState st
    cdef int i
    gh_reset_unbound()
    for s in _all_states:
        st = <_ThreadState>s
        for i in range(GH_NSYM):
            st.c.counters[i].passthrough = 0
            st.c.counters[i].fast = 0
            st.c.counters[i].green = 0
            st.c.counters[i].waits = 0
            st.c.counters[i].timeouts = 0
            st.c.counters[i].cancelled = 0
            st.c.counters[i].blocked = 0
