"""Scenarios for tests/test_hardening.py: ``python hardening.py CASE HUB [PATCH]``.

Each case runs in its own interpreter (GOT patches are process-wide), calls the sample
library's ``ghs_*`` wrappers (exact libc signatures) from a greenlet, and hands what the C
caller saw back with ``report()``.  The assertions live in the test module.
"""
import ctypes
import errno
import gc
import os
import signal
import socket
import sys
import threading
import time

import greenhook
from ghscen import (POLLIN, Ticker, c_poll, c_recv, ccall, import_extension, in_thread_after, now, recording,
                    report, setup, tcp_pair, unix_pair)

MSG_PEEK, MSG_WAITALL, MSG_ERRQUEUE, MSG_OOB = 0x2, 0x100, 0x2000, 0x1
IOV_MAX = 1024


class timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def measured(H, fn, arrange=None):
    """``fn()`` in a greenlet with a 10 ms ticker running: (result, elapsed, ticks).
    ``arrange()`` runs right before, once the ticker runs (e.g. to schedule the data)."""
    ticker = Ticker(H)
    H.sleep(0.03)
    if arrange is not None:
        arrange()
    t0, k0 = now(), ticker.count
    res = H.call(fn)
    out = res, now() - t0, ticker.count - k0
    ticker.stop()
    return out


# --- kernel semantics that the hooks used to emulate wrongly ------------------------------------

def case_waitall_dgram(H, lib):
    out = {}
    for name, pair in (("udp", _udp_pair), ("unix_dgram", lambda: unix_pair(socket.SOCK_DGRAM))):
        a, b = pair()
        out[name] = measured(H, lambda: c_recv(lib, b.fileno(), 100, MSG_WAITALL),
                             lambda: in_thread_after(0.1, a.send, b"12345"))
    report(**out)


def _udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    a.connect(b.getsockname())
    b.connect(a.getsockname() if a.getsockname()[1] else ("127.0.0.1", 0))
    return a, b


def case_peek_waitall(H, lib):
    a, b = tcp_pair()
    a.send(b"abc")
    peeked = measured(H, lambda: c_recv(lib, b.fileno(), 8, MSG_PEEK | MSG_WAITALL),
                      lambda: in_thread_after(0.2, a.send, b"defgh"))
    then = c_recv(lib, b.fileno(), 8, MSG_WAITALL)
    # At EOF the kernel returns what there is.
    c, d = tcp_pair()
    c.send(b"xy")
    at_eof = measured(H, lambda: c_recv(lib, d.fileno(), 8, MSG_PEEK | MSG_WAITALL),
                      lambda: in_thread_after(0.1, c.shutdown, socket.SHUT_WR))
    report(peeked=peeked, then=then, at_eof=at_eof)


def case_errqueue_oob(H, lib):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t1, t2 = tcp_pair()
    report(errqueue_recv=measured(H, lambda: c_recv(lib, u.fileno(), 64, MSG_ERRQUEUE)),
           errqueue_recvfrom=measured(H, lambda: c_recv(lib, u.fileno(), 64, MSG_ERRQUEUE,
                                                         fn="ghs_recvfrom")),
           oob=measured(H, lambda: c_recv(lib, t2.fileno(), 64, MSG_OOB)),
           stats=greenhook.stats())


def case_iov_max(H, lib):
    a, b = unix_pair()
    a.send(b"x" * 10)
    buf = ctypes.create_string_buffer(IOV_MAX + 1)
    vec = (iovec * (IOV_MAX + 1))(*[iovec(ctypes.addressof(buf) + i, 1)
                                     for i in range(IOV_MAX + 1)])
    out = {}
    for fn, fd in (("ghs_readv", b.fileno()), ("ghs_writev", a.fileno())):
        f = getattr(lib, fn)
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        out[fn] = H.call(lambda: (ccall(f, fd, vec, IOV_MAX + 1), ccall(f, fd, vec, IOV_MAX)))
    report(**out)


# --- Python inside a hook is a guest ------------------------------------------------------------

def case_pending_exception(H, lib):
    ext = import_extension("now")
    a, b = tcp_pair()
    res = measured(H, lambda: ext.recv_with_error_set(b.fileno(), 64),
                   lambda: in_thread_after(0.2, a.send, b"answer"))
    report(res=res, stats=greenhook.stats())


# --- cancellation leaves no stale data ----------------------------------------------------------

def case_cancel_queued(H, lib, shutdown=True):
    """The answer is queued in the socket when the kill lands: the next read must not see it."""
    greenhook.configure(shutdown_cancelled_sockets=shutdown)
    server, client = tcp_pair()
    record = {}
    recv = recording(lib, "ghs_recv", record)
    buf = ctypes.create_string_buffer(64)

    def request():
        recv(client.fileno(), buf, 64, 0)

    g = H.spawn(request)
    H.sleep(0.05)                       # parked in recv
    server.send(b"late answer")         # queued in the client socket ...
    time.sleep(0.05)
    _kill_now(H, g)                     # ... and the kill is delivered before the read
    H.join([g])
    fd_alive = _fd_ok(client.fileno())
    r, e, data = c_recv(lib, client.fileno(), 64, 0x40)  # MSG_DONTWAIT: whatever is queued
    report(first=[record.get("result"), record.get("errno")], next=[r, e, data], fd_alive=fd_alive,
           cloexec=bool(os.get_inheritable(client.fileno())) is False,
           stats=greenhook.stats())


def case_cancel_queued_noshutdown(H, lib):
    case_cancel_queued(H, lib, shutdown=False)


def _kill_now(H, g):
    if H.name == "gevent":
        g.kill(block=False)
    else:
        g.kill(block=False)


def _fd_ok(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


# --- the backend a thread waits on --------------------------------------------------------------

def case_pinned_backend(H, lib):
    """Bound to the built-in hub by patching; importing gevent later does not move it."""
    a, b = unix_pair()
    first = measured(H, lambda: c_recv(lib, b.fileno(), 64),
                     lambda: in_thread_after(0.2, a.send, b"one"))
    import gevent  # noqa: F401  -- the default would now say "gevent"
    second = measured(H, lambda: c_recv(lib, b.fileno(), 64),
                      lambda: in_thread_after(0.2, a.send, b"two"))
    report(first=first, second=second, backend=greenhook.current_backend().name)


def case_backend_error(H, lib):
    """A backend that cannot set a wait up: reported, and the call blocks instead (right answer)."""
    from greenhook.backends import get_backend

    real = get_backend(H.name)

    class Broken(type(real)):
        name = "broken"

        def wait_fd(self, fd, events, timeout):
            raise greenhook.BackendError("cannot watch fd %d" % fd)

    greenhook.use(Broken())
    a, b = unix_pair()
    res = measured(H, lambda: c_recv(lib, b.fileno(), 64),
                   lambda: in_thread_after(0.2, a.send, b"data"))
    report(res=res, stats=greenhook.stats())


def case_thread_states(H, lib):
    """Short-lived threads that bind leave no state behind; their counters are kept."""
    from greenhook import _hooks

    def worker():
        greenhook.enable_thread()
        a, b = unix_pair()
        a.send(b"x")
        c_recv(lib, b.fileno(), 8)
        a.close()
        b.close()

    before = len(_hooks.thread_states())
    for _ in range(50):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    gc.collect()
    report(before=before, after=len(_hooks.thread_states()), recv=greenhook.stats()["recv"])


# --- timeouts too large for a deadline ----------------------------------------------------------

def case_huge_timeouts(H, lib):
    a, b = unix_pair()
    fd = b.fileno()

    def sel():
        rd = (ctypes.c_ulong * 16)()
        rd[fd // 64] |= 1 << (fd % 64)
        tv = timeval(2 ** 62, 0)
        r, e = ccall(lib.ghs_select, fd + 1, rd, None, None, ctypes.byref(tv))
        return r, e, tv.tv_sec > 2 ** 61
    select_res = measured(H, sel, lambda: in_thread_after(0.2, a.send, b"z"))
    c_recv(lib, fd, 8)

    def nap():
        ts, rem = timespec(2 ** 62, 0), timespec(0, 0)
        with H.Timeout(0.2, False):
            return ccall(lib.ghs_nanosleep, ctypes.byref(ts), ctypes.byref(rem))
        return "timeout"
    report(select=select_res, nanosleep=measured(H, nap))


# --- errno on success ---------------------------------------------------------------------------

def case_errno_after_wait(H, lib):
    """A call that succeeds after a green wait leaves errno as it found it (0 here: ccall
    clears it), as the real call does -- not EAGAIN from the first try, nor whatever the hub's
    own syscalls left (gevent: EEXIST from epoll_ctl)."""
    out = {}
    a, b = unix_pair()
    fd = b.fileno()
    send = lambda data: (lambda: in_thread_after(0.1, a.send, data))
    out["recv"] = measured(H, lambda: c_recv(lib, fd, 8), send(b"1"))
    out["read"] = measured(H, lambda: c_recv(lib, fd, 8, fn="ghs_read"), send(b"2"))
    out["recv_waitall"] = measured(H, lambda: c_recv(lib, fd, 2, MSG_WAITALL), send(b"34"))
    out["poll"] = measured(H, lambda: c_poll(lib, [(fd, POLLIN)], 2000), send(b"5"))
    c_recv(lib, fd, 8)
    out["poll_timeout"] = measured(H, lambda: c_poll(lib, [(fd, POLLIN)], 100))

    def sel():
        rd = (ctypes.c_ulong * 16)()
        rd[fd // 64] |= 1 << (fd % 64)
        tv = timeval(2, 0)
        return ccall(lib.ghs_select, fd + 1, rd, None, None, ctypes.byref(tv))
    out["select"] = measured(H, sel, send(b"6"))
    c_recv(lib, fd, 8)
    ts = timespec(0, 100000000)
    out["nanosleep"] = measured(H, lambda: ccall(lib.ghs_nanosleep, ctypes.byref(ts), None))
    out["usleep"] = measured(H, lambda: ccall(lib.ghs_usleep, 100000))
    report(**out)


# --- signals ------------------------------------------------------------------------------------

def case_signal_while_parked(H, lib):
    hits = []
    signal.signal(signal.SIGALRM, lambda *a: hits.append(now()))
    a, b = unix_pair()

    def arrange():
        in_thread_after(0.3, a.send, b"after the signal")
        signal.setitimer(signal.ITIMER_REAL, 0.1)
    res = measured(H, lambda: c_recv(lib, b.fileno(), 64), arrange)
    report(res=res, handler_ran=len(hits))


def main():
    case, hub = sys.argv[1], sys.argv[2]
    patch = len(sys.argv) < 4 or sys.argv[3] != "unpatched"
    H, lib = setup(hub, "now", patch=patch)
    globals()["case_" + case](H, lib)


if __name__ == "__main__":
    main()
