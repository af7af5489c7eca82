"""Scenarios for tests/test_fdstate.py: ``python fdstate.py CASE HUB``.

The hooks keep per-fd state (the identity of the socket a watcher was kept for) and the
backends keep one watcher/registration per fd across waits; O_NONBLOCK and SO_RCVTIMEO/
SO_SNDTIMEO are read from the kernel on every wait.  These cases close an fd
greenhook waited on and put another file at the same number *behind greenhook's back* (Python's
own ``os.dup2``/``os.close``, which no patched library sees), then wait on that number again
through the patched sample library: the call must behave as the real call on the new file.
"""
import ctypes
import os
import socket
import sys
import time

import greenhook
from greenhook import _hooks
from ghscen import (POLLIN, c_poll, ccall, c_recv, in_thread_after, now, report, set_timeo, setup,
                    unix_pair)
from hardening import measured

F_SETFL, O_NONBLOCK, FIONBIO = 4, 0o4000, 0x5421


def prime(H, lib, fd, peer, data=b"prime"):
    """One green wait on ``fd`` (its table entry is filled, a watcher kept)."""
    return measured(H, lambda: c_recv(lib, fd, 64), lambda: in_thread_after(0.05, peer.send, data))


def behind_our_back(new_sock, number):
    """Put ``new_sock``'s file at ``number`` with Python's own dup2 (greenhook does not see it)."""
    os.dup2(new_sock.fileno(), number)
    new_sock.close()


def hook(name, restype, *argtypes):
    """The green entry point a patched library's call of ``name`` lands in."""
    return ctypes.CFUNCTYPE(restype, *argtypes, use_errno=True)(_hooks.state_functions()[name])


def case_pipe(H, lib):
    a, b = unix_pair()
    n = b.detach()
    out = {"prime": prime(H, lib, n, a)}
    r, w = os.pipe()
    os.dup2(r, n)
    os.close(r)
    out["recv"] = H.call(lambda: c_recv(lib, n, 64))
    os.write(w, b"pipe")
    out["read"] = H.call(lambda: c_recv(lib, n, 64, fn="ghs_read"))
    out["poll"] = measured(H, lambda: c_poll(lib, [(n, POLLIN)], 2000),
                           lambda: in_thread_after(0.1, os.write, w, b"x"))
    report(**out)


def case_nonblocking_socket(H, lib):
    a, b = unix_pair()
    n = b.detach()
    out = {"prime": prime(H, lib, n, a)}
    c, d = unix_pair()
    d.setblocking(False)
    behind_our_back(d, n)
    out["recv"] = measured(H, lambda: c_recv(lib, n, 64))
    c.send(b"new")
    out["after"] = H.call(lambda: c_recv(lib, n, 64))
    report(**out)


def case_shorter_timeout(H, lib):
    a, b = unix_pair()
    set_timeo(b, socket.SO_RCVTIMEO, 5)
    n = b.detach()
    out = {"prime": prime(H, lib, n, a)}
    c, d = unix_pair()
    set_timeo(d, socket.SO_RCVTIMEO, 0.2)
    behind_our_back(d, n)
    out["recv"] = measured(H, lambda: c_recv(lib, n, 64))
    report(**out)


def case_no_timeout_any_more(H, lib):
    a, b = unix_pair()
    set_timeo(b, socket.SO_RCVTIMEO, 0.2)
    n = b.detach()
    out = {"prime": prime(H, lib, n, a)}
    c, d = unix_pair()
    behind_our_back(d, n)
    out["recv"] = measured(H, lambda: c_recv(lib, n, 64),
                           lambda: in_thread_after(0.5, c.send, b"late"))
    report(**out)


def case_reuse_without_a_loop_turn(H, lib):
    """Close and reuse between two waits of one greenlet, the hub never running in between,
    while a dup keeps the old file (and any epoll registration of it) alive and readable."""
    a, b = unix_pair()
    n = b.detach()
    keep = os.dup(n)
    c, d = unix_pair()

    def body():
        first = c_recv(lib, n, 64)
        behind_our_back(d, n)
        t0 = now()
        second = c_recv(lib, n, 64)
        return first, second, now() - t0
    in_thread_after(0.05, a.send, b"one")
    in_thread_after(0.15, a.send, b"old file")     # readable old file: must not be read
    in_thread_after(0.3, c.send, b"two")
    first, second, elapsed = H.call(body)
    report(first=first, second=second, elapsed=elapsed, old=os.read(keep, 64))


def case_reuse_released_without_a_loop_turn(H, lib):
    """The same, the old file released by the reuse: a registration kept for it is gone from
    the kernel, and only a re-registration makes the second wait see the new file at all."""
    a, b = unix_pair()
    n = b.detach()
    c, d = unix_pair()
    cpu = []

    def body():
        first = c_recv(lib, n, 64)
        behind_our_back(d, n)
        t0, c0 = now(), time.process_time()
        second = c_recv(lib, n, 64)
        cpu.append(time.process_time() - c0)
        return first, second, now() - t0
    in_thread_after(0.05, a.send, b"one")
    in_thread_after(0.3, c.send, b"two")
    first, second, elapsed = H.call(body)
    report(first=first, second=second, elapsed=elapsed, cpu=cpu[0])


def case_unseen_changes(H, lib):
    """O_NONBLOCK and SO_RCVTIMEO changed on the *same* open socket, between two waits, by
    code greenhook does not see: libc called directly through ctypes (an unpatched library)
    and Python's own socket methods.  Each wait must act on the kernel's current state."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fcntl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    libc.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                ctypes.c_uint]
    a, b = unix_pair()
    n = b.fileno()
    out = {"prime": [prime(H, lib, n, a) for _ in range(3)]}
    out["cache"] = _hooks.fd_cache_stats()
    out["fcntl"] = libc.fcntl(n, F_SETFL, O_NONBLOCK)
    out["nonblocking"] = measured(H, lambda: c_recv(lib, n, 64))
    libc.fcntl(n, F_SETFL, 0)
    out["blocking_again"] = prime(H, lib, n, a)
    one = ctypes.c_int(1)
    out["ioctl"] = libc.ioctl(n, FIONBIO, ctypes.addressof(one))
    out["fionbio"] = measured(H, lambda: c_recv(lib, n, 64))
    b.setblocking(True)             # Python's socket: ioctl(FIONBIO, 0) from the interpreter
    out["python_blocking"] = prime(H, lib, n, a)
    b.setblocking(False)            # and back: O_NONBLOCK again
    out["python_nonblocking"] = measured(H, lambda: c_recv(lib, n, 64))
    b.setblocking(True)
    tv = (ctypes.c_long * 2)(0, 200000)
    out["setsockopt"] = libc.setsockopt(n, socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                        ctypes.addressof(tv), ctypes.sizeof(tv))
    out["timeout"] = measured(H, lambda: c_recv(lib, n, 64))
    set_timeo(b, socket.SO_RCVTIMEO, 0)     # Python: the timeout removed
    out["no_timeout"] = measured(H, lambda: c_recv(lib, n, 64),
                                 lambda: in_thread_after(0.5, a.send, b"late"))
    set_timeo(b, socket.SO_RCVTIMEO, 5)
    out["long_timeout"] = prime(H, lib, n, a)
    set_timeo(b, socket.SO_RCVTIMEO, 0.2)   # shorter than the one the last wait saw
    out["shorter_timeout"] = measured(H, lambda: c_recv(lib, n, 64))
    report(**out)


def case_poll_reuse(H, lib):
    """poll() on one socket (libpq's and libmariadb's wait) keeps the backend's watcher as a
    socket call's wait does: the number reused behind greenhook's back, first with the old file
    alive and readable (a dup), then with it released, must wake for the new file only."""
    a, b = unix_pair()
    n = b.detach()
    keep = os.dup(n)

    def poll_once(peer, data, delay):
        res = measured(H, lambda: c_poll(lib, [(n, POLLIN)], 2000),
                       lambda: in_thread_after(delay, peer.send, data))
        os.read(n, 64)      # drained behind greenhook's back too
        return res

    before = _hooks.fd_cache_stats()
    out = {"prime": [poll_once(a, b"x", 0.05) for _ in range(3)]}
    after = _hooks.fd_cache_stats()
    out["hits"] = after["hits"] - before["hits"]
    c, d = unix_pair()
    behind_our_back(d, n)
    in_thread_after(0.05, a.send, b"old file")     # readable old file: must not wake it
    out["alive"] = poll_once(c, b"new", 0.3)
    out["old"] = os.read(keep, 64)
    os.close(keep)
    e, f = unix_pair()
    behind_our_back(f, n)                           # releases the file d had
    out["released"] = poll_once(e, b"newer", 0.2)
    report(**out)


def case_closed_through_hooks(H, lib):
    """close/dup2 through the hooks: the number reused as a non-blocking socket."""
    close = hook("close", ctypes.c_int, ctypes.c_int)
    dup2 = hook("dup2", ctypes.c_int, ctypes.c_int, ctypes.c_int)
    a, b = unix_pair()
    n = b.detach()
    out = {"prime": prime(H, lib, n, a)}
    c, d = unix_pair()      # made first: neither end may take the closed number
    d.setblocking(False)
    out["close"] = close(n)
    out["dup2"] = dup2(d.fileno(), n) == n
    d.close()
    out["recv"] = measured(H, lambda: c_recv(lib, n, 64))
    report(**out)


def case_read_hint(H, lib):
    """read/write pick their first try by a per-fd socket-ness hint: a pipe's number reused as
    a blocking socket behind greenhook's back must still park greenly, and a socket's number
    reused as a pipe must still read it."""
    r, w = os.pipe()
    out = {"pipe_write": H.call(lambda: ccall(lib.ghs_write, w, b"pipe", 4)),
           "pipe_read": H.call(lambda: c_recv(lib, r, 64, fn="ghs_read"))}
    c, d = unix_pair()
    behind_our_back(d, r)           # the pipe's read end number is now a blocking socket
    out["socket_read"] = measured(H, lambda: c_recv(lib, r, 64, fn="ghs_read"),
                                  lambda: in_thread_after(0.1, c.send, b"sock"))
    a, b = unix_pair()
    out["socket_read2"] = H.call(lambda: (a.send(b"s2"), c_recv(lib, b.fileno(), 64, fn="ghs_read"))[1])
    r2, w2 = os.pipe()
    os.write(w2, b"p2")
    os.dup2(r2, b.fileno())         # the socket's number is now a pipe
    out["pipe_read2"] = H.call(lambda: c_recv(lib, b.fileno(), 64, fn="ghs_read"))
    out["stats"] = greenhook.stats()
    report(**out)


def case_slots(H, lib):
    """The state hooks are written into the patched library and restored by unpatch."""
    from greenhook import _patch, samples
    state = {name: hook for _, name, _, _, _, hook in _patch.patched_slots(state=True)
             if name in _hooks.state_hook_table()}
    greened = {name for _, name, _, _, _, _ in _patch.patched_slots()}
    table = _hooks.state_hook_table()
    ok = all(hook == table[name] for name, hook in state.items())
    rep = [r for r in greenhook.patched_libraries()
           if r.library == os.path.realpath(samples.library_path("now"))][0]
    greenhook.unpatch_library(samples.library_path("now"))
    report(state=sorted(state), ok=ok, greened_has_state=bool(greened & set(state)),
           reported=rep.as_dict()["state_hooks"], symbols=sorted(rep.symbols),
           left=len(_patch.patched_slots(state=True)))


def main():
    case, hub = sys.argv[1], sys.argv[2]
    H, lib = setup(hub, "now")
    globals()["case_" + case](H, lib)


if __name__ == "__main__":
    main()
