"""Helpers for scenario subprocesses (``tests/conftest.py:run_scenario`` puts this directory
on ``sys.path``).

One small API over both hubs (:class:`Hub`), a :class:`Ticker` greenlet that proves the hub
kept running, thin callers of the sample library's ``ghs_*`` wrappers that return
``(result, errno, ...)`` as the C caller sees them, and :func:`report` to hand values back to
the test process (one ``GHRESULT {json}`` line).
"""
import ctypes
import json
import os
import select
import socket
import struct
import sys
import threading
import time

import greenhook
from greenhook import samples

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
POLLRDNORM = 0x40

now = time.monotonic


# --- the hub under test -------------------------------------------------------------------

class Hub:
    """``spawn``, ``spawn_later``, ``joinall``, ``sleep``, ``Timeout``, ``get_hub_if_exists``,
    ``run_in_hub`` for ``"builtin"`` (greenhook.hub) or ``"gevent"``.  Makes no hub."""

    def __init__(self, name):
        self.name = name
        if name == "gevent":
            import gevent
            from gevent._hub_local import get_hub_if_exists

            self.spawn, self.joinall, self.sleep = gevent.spawn, gevent.joinall, gevent.sleep
            self.Timeout = gevent.Timeout
            self.get_hub_if_exists = get_hub_if_exists
            self._run_callback = lambda fn: gevent.get_hub().loop.run_callback(fn)
        elif name == "builtin":
            from greenhook import hub

            self.spawn, self.joinall, self.sleep = hub.spawn, hub.joinall, hub.sleep
            self.Timeout = hub.Timeout
            self.get_hub_if_exists = hub.get_hub_if_exists
            self._run_callback = lambda fn: hub.get_hub().run_callback(fn)
        else:
            raise ValueError(name)

    def spawn_later(self, seconds, fn, *args):
        def later():
            self.sleep(seconds)
            return fn(*args)
        return self.spawn(later)

    def run_in_hub(self, fn, *args):
        """Run ``fn(*args)`` as a loop callback (in the hub greenlet) and return its result;
        the calling greenlet waits greenly."""
        box = []

        def callback():
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box.append((False, exc))
        self._run_callback(callback)
        while not box:
            self.sleep(0.002)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def call(self, fn, *args, timeout=10):
        """Run ``fn(*args)`` in a new greenlet, wait for it, return its value (or raise)."""
        g = self.spawn(fn, *args)
        self.join([g], timeout)
        return g.get()

    def wait_thread(self, thread, timeout=10):
        """Wait greenly (the hub keeps running) for an OS thread to finish."""
        deadline = now() + timeout
        while thread.is_alive():
            assert now() < deadline, "thread still running after %s s" % timeout
            self.sleep(0.005)
        return thread.result

    def join(self, greenlets, timeout=10):
        """joinall that insists everyone finished (nobody hangs)."""
        greenlets = list(greenlets)
        self.joinall(greenlets, timeout=timeout)
        stuck = [g for g in greenlets if not g.dead]
        assert not stuck, "greenlets still running after %s s: %r" % (timeout, stuck)


class Ticker:
    """A greenlet counting 10 ms ticks: it only advances while the hub runs."""

    def __init__(self, hub, interval=0.01):
        self.count = 0
        self.greenlet = hub.spawn(self._run, hub, interval)

    def _run(self, hub, interval):
        while True:
            self.count += 1
            hub.sleep(interval)

    def stop(self):
        self.greenlet.kill()


def setup(hub="builtin", variant="now", patch=True):
    """Choose ``hub``, load ``libghsample_<variant>.so`` (patched unless ``patch`` is False);
    return ``(Hub, ctypes library)``.  Counters start at zero."""
    h = Hub(hub)
    greenhook.use(hub)
    lib = samples.ctypes_lib(variant)
    if patch:
        greenhook.patch_library(samples.library_path(variant))
    greenhook.reset_stats()
    return h, lib


def report(**values):
    """Hand ``values`` (JSON-able) to the test process."""
    sys.stdout.write("GHRESULT %s\n" % json.dumps(values, default=_jsonable))
    sys.stdout.flush()


def _jsonable(obj):
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    return repr(obj)


def stat(symbol):
    """greenhook's counters for one libc symbol (zeros if never called)."""
    return greenhook.stats().get(symbol, {k: 0 for k in (
        "calls", "passthrough", "fast", "green", "waits", "timeouts", "cancelled", "blocked",
        "yields")})


class Worker(threading.Thread):
    """An OS thread running ``fn(*args)``; ``result`` once done (wait with Hub.wait_thread)."""

    def __init__(self, fn, *args):
        threading.Thread.__init__(self, daemon=True)
        self.fn, self.args, self.result = fn, args, None

    def run(self):
        self.result = self.fn(*self.args)


def in_thread(fn, *args):
    """Start ``fn(*args)`` in a new OS thread (never bound to greenhook); returns the Worker."""
    w = Worker(fn, *args)
    w.start()
    return w


def in_thread_after(seconds, fn, *args):
    """Run ``fn(*args)`` in an OS thread after ``seconds`` (works while the hub is blocked)."""
    timer = threading.Timer(seconds, fn, args)
    timer.daemon = True
    timer.start()
    return timer


# --- sockets ------------------------------------------------------------------------------

def unix_pair(type=socket.SOCK_STREAM):
    return socket.socketpair(socket.AF_UNIX, type)


def tcp_pair():
    """A connected 127.0.0.1 TCP pair (plain, unpatched Python sockets)."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
    return c, s


def closed_port():
    """A 127.0.0.1 TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_timeo(sock, option, seconds):
    """SO_RCVTIMEO / SO_SNDTIMEO as a struct timeval."""
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", sec, int((seconds - sec) * 1e6)))


def fill_send_buffer(sock):
    """Queue data until a non-blocking send would block; returns bytes queued."""
    sock.setblocking(False)
    total = 0
    for chunk in (65536, 4096, 1):
        while True:
            try:
                total += sock.send(b"f" * chunk)
            except BlockingIOError:
                break
    sock.setblocking(True)
    return total


def full_backlog_listener():
    """A 127.0.0.1 listener with backlog 0 whose accept queue is already full: a new
    connect stays in SYN_SENT (the SYN is dropped and retried after ~1 s).
    Returns ``(listener, address, queued client sockets)``."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    addr = lst.getsockname()
    queued = []
    for _ in range(8):  # until a non-blocking connect no longer completes
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(addr)
        queued.append(c)
        if not select.select([], [c], [], 0.1)[1]:
            break
    else:
        raise AssertionError("could not fill the accept queue of a backlog-0 listener")
    return lst, addr, queued


# --- callers of the ghs_* wrappers: (result, errno[, data]) as the C caller sees them -----

def ccall(fn, *args):
    """``fn(*args)`` with errno cleared first; returns ``(result, errno)``."""
    ctypes.set_errno(0)
    r = fn(*args)
    return r, ctypes.get_errno()


def recording(lib, name, record):
    """A separate ctypes function for the wrapper ``name`` whose ``errcheck`` saves the C
    result and errno in ``record`` (``result``, ``errno``) the moment the C call returns --
    before a cancelled call's exception is raised in the calling frame."""
    proto = getattr(lib, name)
    fn = lib[name]  # a new function object: the shared one keeps no errcheck
    fn.restype, fn.argtypes = proto.restype, proto.argtypes

    def errcheck(result, func, args):
        record["result"], record["errno"] = result, ctypes.get_errno()
        return result
    fn.errcheck = errcheck
    return fn


def c_recv(lib, fd, n=64, flags=0, fn="ghs_recv"):
    buf = ctypes.create_string_buffer(n)
    if fn == "ghs_read":
        r, e = ccall(lib.ghs_read, fd, buf, n)
    elif fn == "ghs_recvfrom":
        r, e = ccall(lib.ghs_recvfrom, fd, buf, n, flags, None, None)
    else:
        r, e = ccall(getattr(lib, fn), fd, buf, n, flags)
    return r, e, buf.raw[:max(r, 0)]


def c_send(lib, fd, data, flags=0, fn="ghs_send"):
    if fn == "ghs_write":
        return ccall(lib.ghs_write, fd, data, len(data))
    return ccall(getattr(lib, fn), fd, data, len(data), flags)


def c_connect(lib, sock, address):
    buf, length = samples.sockaddr(address)
    return ccall(lib.ghs_connect, sock.fileno(), buf, length)


def c_accept(lib, sock, fn="ghs_accept"):
    """Returns ``(fd, errno)``; closes nothing."""
    if fn == "ghs_accept4":
        return ccall(lib.ghs_accept4, sock.fileno(), None, None, 0)
    return ccall(lib.ghs_accept, sock.fileno(), None, None)


def c_poll(lib, entries, timeout_ms, fn="ghs_poll", garbage=0):
    """``entries``: ``[(fd, events)]``; returns ``(result, errno, [revents])``.  ``fn``
    ``"ghs_ppoll"`` takes ``timeout_ms`` None (NULL) or milliseconds.  ``garbage``: initial
    revents (poll must overwrite them)."""
    n = len(entries)
    arr = (samples.pollfd * max(n, 1))(*[samples.pollfd(fd, ev, garbage) for fd, ev in entries])
    ptr = arr if n else None
    if fn == "ghs_ppoll":
        tmo = None if timeout_ms is None else ctypes.byref(samples.timespec.from_seconds(timeout_ms / 1000))
        r, e = ccall(lib.ghs_ppoll, ptr, n, tmo, None)
    else:
        r, e = ccall(lib.ghs_poll, ptr, n, timeout_ms)
    return r, e, [arr[i].revents for i in range(n)]


def c_select(lib, rd=None, wr=None, ex=None, timeout=None, fn="ghs_select"):
    """fd lists (None = NULL set); ``timeout`` seconds or None (NULL).  Returns
    ``(result, errno, rd_after, wr_after, ex_after, timeout_left)`` with the sets as the fds
    still set among those passed."""
    sets = [None if fds is None else samples.fd_set.of(*fds) for fds in (rd, wr, ex)]
    nfds = max([fd for fds in (rd, wr, ex) if fds for fd in fds] + [-1]) + 1
    left = None
    if fn == "ghs_pselect":
        ts = None if timeout is None else samples.timespec.from_seconds(timeout)
        r, e = ccall(lib.ghs_pselect, nfds, *[None if s is None else ctypes.byref(s) for s in sets],
                     None if ts is None else ctypes.byref(ts), None)
    else:
        tv = None if timeout is None else samples.timeval.from_seconds(timeout)
        r, e = ccall(lib.ghs_select, nfds, *[None if s is None else ctypes.byref(s) for s in sets],
                     None if tv is None else ctypes.byref(tv))
        if tv is not None:
            left = tv.tv_sec + tv.tv_usec / 1e6
    after = [None if s is None else [fd for fd in fds if s.isset(fd)]
             for s, fds in zip(sets, (rd, wr, ex))]
    return (r, e, *after, left)


# --- the patcher --------------------------------------------------------------------------

def import_extension(variant, lazy=False):
    """Import ``_ghsample_<variant>`` (which loads its library); ``lazy``: with RTLD_LAZY, so
    that a lazily bound library keeps its PLT stubs in the GOT until first use (ctypes and
    Python's default flags bind everything at load time)."""
    old = sys.getdlopenflags()
    if lazy:
        sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_LOCAL)
    try:
        return samples.load(variant)
    finally:
        sys.setdlopenflags(old)


def library_slots(variant, names=None):
    """``[(symbol, slot address, kind, current value)]`` of the blocking-relevant imports of
    a loaded ``libghsample_<variant>.so``."""
    from greenhook import _patch
    obj = _patch.find_loaded(samples.library_path(variant))
    return obj.slots(names if names is not None else _patch._BLOCKING)


def mapping_of(address):
    """``(file name, perms)`` of the /proc/self/maps line holding ``address``."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return os.path.basename(parts[5].strip()) if len(parts) > 5 else "", parts[1]
    return None, None


def c_address(name):
    """Address of the libc function ``name`` as the loader resolves it."""
    return ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value
