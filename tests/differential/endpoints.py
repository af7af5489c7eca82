"""What the differential cases are made of: the process environment (:class:`Env`: mode,
library, hub, helper threads and greenlets, resources to close), endpoints (:class:`Ep`:
sockets of every family and type, pipes, eventfd, files, /dev/null, and their peers),
addresses mapped to names, pattern-filled buffers, and drains of what is left.

Everything here uses plain Python objects (never the patched library), so setting a state up
and reading it back is the same in every mode.
"""
import ctypes
import errno
import hashlib
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback

from greenhook import samples


now = time.monotonic

IOV_MAX = os.sysconf("SC_IOV_MAX")
CLOSED_FD = 1001      # a number no case opens: the "closed fd" of every EBADF case
DELAY = 0.04          # a "later" event happens this long after it was scheduled
SIGNAL_AT = 0.02      # a signal interrupts the waiting call this early ...
SIGNAL_DATA = 0.08    # ... and the data that ends the wait comes this late
TIMEO = 0.05          # SO_RCVTIMEO / SO_SNDTIMEO / poll and select timeouts that expire
SMALL_BUF = 16384     # SO_SNDBUF / SO_RCVBUF of "full" sockets (fixed: no autotuning)
PATTERN = 0xA5        # output buffers start filled with this byte

MSG_FLAGS = {
    "WAITALL": socket.MSG_WAITALL, "PEEK": socket.MSG_PEEK, "TRUNC": socket.MSG_TRUNC,
    "OOB": socket.MSG_OOB, "ERRQUEUE": socket.MSG_ERRQUEUE, "DONTWAIT": socket.MSG_DONTWAIT,
    "NOSIGNAL": socket.MSG_NOSIGNAL, "MORE": 0x8000, "EOR": socket.MSG_EOR,
    "CONFIRM": socket.MSG_CONFIRM, "CTRUNC": socket.MSG_CTRUNC,
}
POLL_BITS = {
    "IN": 0x1, "PRI": 0x2, "OUT": 0x4, "ERR": 0x8, "HUP": 0x10, "NVAL": 0x20, "RDNORM": 0x40,
    "RDBAND": 0x80, "WRNORM": 0x100, "WRBAND": 0x200, "MSG": 0x400, "RDHUP": 0x2000,
}
SOCK_NONBLOCK, SOCK_CLOEXEC = socket.SOCK_NONBLOCK, socket.SOCK_CLOEXEC
IP_RECVERR, IPV6_RECVERR, IP_PKTINFO = 11, 25, 8
CLOCKS = {"MONOTONIC": time.CLOCK_MONOTONIC, "REALTIME": time.CLOCK_REALTIME,
          "BOOTTIME": getattr(time, "CLOCK_BOOTTIME", 7), "THREAD_CPUTIME": 3, "BAD": 12345}
TIMER_ABSTIME = 1


def flag_bits(spec, table=MSG_FLAGS):
    """``"PEEK|WAITALL"`` -> the OR of the bits; ``"0"`` -> 0."""
    bits = 0
    for name in spec.split("|"):
        if name != "0":
            bits |= table[name]
    return bits


def flag_names(bits, table=MSG_FLAGS):
    """The inverse of :func:`flag_bits` (unknown bits in hex), for readable results."""
    names = [n for n, b in sorted(table.items(), key=lambda kv: kv[1]) if bits & b]
    rest = bits & ~flag_bits("|".join(names) or "0", table)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"


# --- the environment of one process: mode, library, hub, helpers --------------------------

class HelperError(AssertionError):
    """A helper (thread or greenlet) of a case failed: the case itself is broken."""


class Event:
    """Something a helper does ``delay`` seconds after it was scheduled."""

    def __init__(self, delay, fn, args, primary):
        self.delay, self.fn, self.args, self.primary = delay, fn, args, primary
        self.fired = self.done = False
        self.error = None
        self.thread = None
        self.done_at = None

    def run(self):
        self.fired = True
        try:
            self.fn(*self.args)
        except BaseException:  # noqa: BLE001 - reported by Env.finish
            self.error = traceback.format_exc()
        self.done_at = now()
        self.done = True


class Env:
    """One process's way of running cases.  ``mode``: ``"plain"`` (library not patched, no
    hub) or a hub name (library patched, calls made from a greenlet on that hub)."""

    def __init__(self, mode, lib, hub=None):
        self.mode, self.lib, self.hub = mode, lib, hub
        self.main_ident = threading.get_ident()
        self.signals = {"SIGALRM": 0, "SIGPIPE": 0}
        signal.signal(signal.SIGALRM, self._on_signal)
        signal.signal(signal.SIGPIPE, self._on_signal)
        self.reset()

    def _on_signal(self, signum, frame):
        self.signals[signal.Signals(signum).name] += 1

    def reset(self):
        self.events, self.sockets, self.fds, self.paths, self.after = [], [], [], [], []
        self.names = {}
        self.started = None
        self.calling = threading.Event()  # set when the case makes its call

    def call(self, fn, *args):
        """``fn(*args)`` with errno cleared; ``(ret, errno, elapsed)``.  Helper threads start
        counting their delays now."""
        self.calling.set()
        ctypes.set_errno(0)
        t0 = now()
        r = fn(*args)
        return r, ctypes.get_errno(), now() - t0

    # -- helpers
    def later(self, delay, fn, *args, via="thread", primary=True):
        """Run ``fn(*args)`` after ``delay`` s in a helper OS thread (``via="greenlet"``: in
        a greenlet when a hub runs the case; a thread otherwise)."""
        ev = Event(delay, fn, args, primary)
        self.events.append(ev)
        if via == "greenlet" and self.hub is not None:
            # the case's greenlet does not yield before its call parks: no need to wait
            self.hub.spawn_later(delay, ev.run)
        else:
            calling = self.calling

            def body():
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                calling.wait(10)  # count from the call, not from the setup before it
                time.sleep(delay)
                ev.run()
            ev.thread = threading.Thread(target=body, daemon=True)
            ev.thread.start()
        return ev

    def signal_main(self, delay, primary=False):
        """SIGALRM to this (the calling) thread after ``delay``: interrupts a blocking call."""
        return self.later(delay, signal.pthread_kill, self.main_ident, signal.SIGALRM,
                          primary=primary)

    def sleep(self, seconds):
        if self.hub is not None:
            self.hub.sleep(seconds)
        else:
            time.sleep(seconds)

    def wait_until(self, pred, timeout=10.0, what="condition"):
        deadline = now() + timeout
        while not pred():
            if now() > deadline:
                raise HelperError("%s not reached after %s s" % (what, timeout))
            self.sleep(0.002)

    def quiet_since(self):
        """When the case last had a reason to make progress: its start, or the moment its
        last helper finished; None while a helper is still to act."""
        if self.started is None or not all(e.done for e in self.events):
            return None
        return max([self.started] + [e.done_at for e in self.events])

    def primary_fired(self):
        evs = [e for e in self.events if e.primary]
        return None if not evs else any(e.fired for e in evs)

    def finish_helpers(self):
        """After the call: tell drainers to stop and wait for every helper (so that all they
        were to send has arrived), keeping the endpoints open for the drains."""
        for fn in self.after:
            fn()
        self.after = []
        self.wait_until(lambda: all(e.done for e in self.events), what="helpers done")
        errors = [e.error for e in self.events if e.error]
        if errors:
            raise HelperError("a helper of this case failed:\n" + "\n".join(errors))

    def finish(self):
        """Wait for every helper, close everything the case opened."""
        try:
            self.finish_helpers()
        finally:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass
            for fd in self.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            for p in self.paths:
                try:
                    os.unlink(p)
                except OSError:
                    pass
            self.reset()

    # -- resources, closed by finish()
    def sock(self, *args):
        s = socket.socket(*args)
        self.sockets.append(s)
        return s

    def own(self, *objs):
        self.sockets.extend(objs)
        return objs[0] if len(objs) == 1 else objs

    def own_fd(self, fd):
        self.fds.append(fd)
        return fd

    def close_fd(self, fd):
        """Close an fd from own_fd() now (finish() must not close its number again: it may
        have been reused by then)."""
        self.fds.remove(fd)
        os.close(fd)

    def unix_path(self):
        fd, path = tempfile.mkstemp(prefix="ghdiff-", suffix=".sock")
        os.close(fd)
        os.unlink(path)
        self.paths.append(path)
        return path

    def name(self, label, sock):
        """Remember ``sock``'s address as ``label``: returned addresses are reported by label."""
        self.names[label] = norm_pyaddr(sock.family, sock.getsockname())


# --- addresses -----------------------------------------------------------------------------

def norm_pyaddr(family, addr):
    if family == socket.AF_INET:
        return ("inet", addr[0], addr[1])
    if family == socket.AF_INET6:
        return ("inet6", addr[0], addr[1])
    if isinstance(addr, str):
        addr = os.fsencode(addr)
    return ("unix", addr.hex())


def parse_sockaddr(raw):
    """A C sockaddr's bytes -> the same normalized tuple as :func:`norm_pyaddr`."""
    if len(raw) < 2:
        return ("short", raw.hex())
    fam = int.from_bytes(raw[:2], sys.byteorder)
    if fam == socket.AF_INET and len(raw) >= 8:
        return ("inet", socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big"))
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return ("inet6", socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                int.from_bytes(raw[2:4], "big"))
    if fam == socket.AF_UNIX:
        path = raw[2:]
        if path.endswith(b"\0") and not path.startswith(b"\0"):
            path = path.split(b"\0", 1)[0]
        return ("unix", path.hex())
    return ("family-%d" % fam, raw.hex())


def describe_addr(env, buf, buflen, namelen):
    """What a call wrote into an address buffer of ``buflen`` bytes, reporting ``namelen``:
    the label of one of the case's sockets, the untouched pattern, or what it was."""
    raw = bytes(buf)[:buflen]
    if namelen is None:
        return None
    if raw == bytes([PATTERN]) * buflen:
        return "untouched"
    if namelen <= buflen:
        norm = parse_sockaddr(raw[:namelen])
        for label, known in env.names.items():
            if norm == known:
                return label + ("" if raw[namelen:] == bytes([PATTERN]) * (buflen - namelen)
                                else " +written past namelen")
        return "unknown %s" % (norm[0],)
    # truncated: the kernel copies the first buflen bytes of the real address
    fam = int.from_bytes(raw[:2], sys.byteorder) if buflen >= 2 else None
    return "truncated family=%s" % fam


# --- buffers -------------------------------------------------------------------------------

def pattern_buffer(n):
    return ctypes.create_string_buffer(bytes([PATTERN]) * max(n, 1), max(n, 1))


def show_bytes(data):
    """Bytes for the report: in full when short, else length, digest and both ends."""
    data = bytes(data)
    body = data.rstrip(bytes([PATTERN]))
    tail = len(data) - len(body)
    if len(body) <= 96:
        return body.hex() + (" +%02x*%d" % (PATTERN, tail) if tail else "")
    return {"len": len(data), "sha1": hashlib.sha1(data).hexdigest()[:16],
            "head": data[:16].hex(), "tail": data[-16:].hex()}


def payload(n, seed=0):
    """``n`` bytes that say where they are (a repeating counter), distinct from PATTERN."""
    return bytes((i * 7 + seed) % 251 for i in range(n))


def outcome(env, ret, err, elapsed, timeout=None, long_wait=None):
    """The common part of a result: return value, errno (cleared before the call), when it
    returned relative to the case's first event and to its timeout."""
    res = {"ret": ret, "errno": errno.errorcode.get(err, err)}  # also after a success:
    # a real call that succeeds leaves errno alone, and so must a green one
    fired = env.primary_fired()
    if fired is not None:
        res["returned"] = "after" if fired else "before"
    if timeout is not None:
        res["not_early"] = elapsed >= timeout - 0.005
    if long_wait is not None:   # a 1 s (or longer) timeout: did the call wait all of it?
        res["waited_full"] = elapsed >= long_wait - 0.005
    res["_elapsed"] = round(elapsed, 4)
    return res


# --- draining what is left -----------------------------------------------------------------

def drain_socket(sock, limit=1 << 24):
    """Everything readable now on ``sock`` without blocking: stream bytes (+ how it ended) or
    the list of datagrams; pending errors are named, not raised."""
    out, end = [], "empty"
    stream = sock.type == socket.SOCK_STREAM
    total = 0
    while total < limit:
        try:
            chunk = sock.recv(65536 if stream else 262144, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        except OSError as exc:
            end = errno.errorcode.get(exc.errno, exc.errno)
            break
        if not chunk and sock.type != socket.SOCK_DGRAM:  # stream, seqpacket: EOF
            end = "eof"
            break
        out.append(chunk)
        total += len(chunk)
    if stream:
        return {"data": show_bytes(b"".join(out)), "end": end}
    res = {"datagrams": [show_bytes(d) for d in out], "end": end}
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        errq = 0
        while True:
            try:
                sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except OSError:
                break
            errq += 1
        res["errqueue"] = errq
    return res


def drain_fd(fd, limit=1 << 24):
    """Everything readable now on a pipe (or eventfd) without blocking."""
    out, end = [], "empty"
    fl = _set_nonblock(fd, True)
    try:
        total = 0
        while total < limit:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                end = errno.errorcode.get(exc.errno, exc.errno)
                break
            if not chunk:
                end = "eof"
                break
            out.append(chunk)
            total += len(chunk)
    finally:
        _restore_flags(fd, fl)
    return {"data": show_bytes(b"".join(out)), "end": end}


def _set_nonblock(fd, on):
    import fcntl
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (fl | os.O_NONBLOCK) if on else (fl & ~os.O_NONBLOCK))
    return fl


def _restore_flags(fd, fl):
    import fcntl
    fcntl.fcntl(fd, fcntl.F_SETFL, fl)


def fd_flags(fd):
    """O_NONBLOCK and FD_CLOEXEC of ``fd`` as a short string (or the errno)."""
    import fcntl
    try:
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fdf = fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, exc.errno)
    return ("nonblock" if fl & os.O_NONBLOCK else "block") + ("+cloexec" if fdf & 1 else "")


def fill(sock):
    """Queue bytes on ``sock`` until a non-blocking send would block; returns the count."""
    total = 0
    sock.setblocking(False)
    try:
        for chunk in (65536, 4096, 512, 1):
            while True:
                try:
                    total += sock.send(b"f" * chunk)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EMSGSIZE:
                        break
                    raise
    finally:
        sock.setblocking(True)
    return total


def fill_fd(fd):
    fl = _set_nonblock(fd, True)
    total = 0
    try:
        for chunk in (65536, 4096, 512, 1):
            while True:
                try:
                    total += os.write(fd, b"f" * chunk)
                except BlockingIOError:
                    break
    finally:
        _restore_flags(fd, fl)
    return total


def set_timeo(sock, option, seconds):
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", sec, int((seconds - sec) * 1e6)))


def wait_event(fd, events, timeout=1.0):
    """Setup helper (plain Python poll, never hooked): wait until the kernel reports
    ``events`` on ``fd``, so that a state (RST, FIN, ICMP error) has really arrived."""
    p = select.poll()
    p.register(fd, events)
    p.poll(int(timeout * 1000))


# --- endpoints -----------------------------------------------------------------------------

class Ep:
    """The fd a case calls on (``fd``), its Python object (``sock``), and the other side:
    ``feed(data)`` sends to ``fd``, ``rest()`` / ``peer_rest()`` drain either side."""

    def __init__(self, kind, fd, sock=None, peer=None, peer_fd=None):
        self.kind, self.fd, self.sock, self.peer, self.peer_fd = kind, fd, sock, peer, peer_fd
        self.filled = 0          # bytes queued by fill() before the call (send family)
        self.sent = 0            # what the call reported sent
        self.drained = None      # what a drainer collected, when one ran

    @property
    def stream(self):
        return self.sock is not None and self.sock.type == socket.SOCK_STREAM

    def feed(self, data):
        if self.kind == "eventfd":
            os.write(self.fd, struct.pack("Q", len(data)))
        elif self.peer is not None:
            self.peer.send(data)
        else:
            os.write(self.peer_fd, data)

    def close_peer(self):
        if self.peer is not None:
            self.peer.close()
        else:
            self.env.close_fd(self.peer_fd)
            self.peer_fd = -1

    def rest(self):
        if self.kind == "eventfd":
            fl = _set_nonblock(self.fd, True)
            try:
                return {"counter": struct.unpack("Q", os.read(self.fd, 8))[0]}
            except BlockingIOError:
                return {"counter": 0}
            finally:
                _restore_flags(self.fd, fl)
        if self.kind == "file":
            pos = os.lseek(self.fd, 0, os.SEEK_CUR)
            os.lseek(self.fd, 0, os.SEEK_SET)
            content = os.read(self.fd, 1 << 20)
            return {"offset": pos, "content": show_bytes(content)}
        if self.kind == "devnull":
            return None
        if self.sock is not None:
            return drain_socket(self.sock)
        return drain_fd(self.fd)

    def peer_rest(self):
        """What the peer can read now, after the filler bytes (stream: the bytes beyond
        ``filled``, which must all be filler)."""
        if self.kind in ("eventfd", "file", "devnull"):
            return self.rest()
        if self.peer is not None:
            if self.peer.fileno() < 0:
                return "closed"
            if self.drained is None and self.sent and self.stream:
                # a stream send may still be corked (MSG_MORE): wait for what it reported
                deadline = now() + 1.0
                while now() < deadline and _readable(self.peer) < self.sent:
                    time.sleep(0.005)
            got = drain_socket(self.peer)
        elif self.peer_fd == -1:
            return "closed"
        elif self.peer_fd is not None:
            got = drain_fd(self.peer_fd)
        else:
            return None
        if self.drained is not None:
            got["drainer"] = self.drained
        return got


def _readable(sock):
    """Bytes queued for reading on a stream socket (FIONREAD)."""
    import fcntl
    import termios
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def tcp_pair(env, family):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    lst = env.sock(family, socket.SOCK_STREAM)
    lst.bind((host, 0))
    lst.listen(1)
    c = env.sock(family, socket.SOCK_STREAM)
    c.connect(lst.getsockname()[:2])
    s, _ = lst.accept()
    env.own(s)
    lst.close()
    for x in (c, s):
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c, s


def make_ep(env, kind, side="rx"):
    """A fresh endpoint of ``kind``; ``side`` "rx": the case reads from ``fd``, "tx": writes."""
    ep = _make_ep(env, kind, side)
    ep.env = env
    return ep


def _make_ep(env, kind, side):
    if kind in ("tcp4", "tcp6"):
        fam = socket.AF_INET if kind == "tcp4" else socket.AF_INET6
        a, b = tcp_pair(env, fam)
        env.name("peer", b)
        env.name("self", a)
        return Ep(kind, a.fileno(), a, b)
    if kind in ("udp4", "udp6"):
        fam = socket.AF_INET if kind == "udp4" else socket.AF_INET6
        host = "127.0.0.1" if kind == "udp4" else "::1"
        a, b = env.sock(fam, socket.SOCK_DGRAM), env.sock(fam, socket.SOCK_DGRAM)
        a.bind((host, 0))
        b.bind((host, 0))
        b.connect(a.getsockname()[:2])
        if side == "tx":
            a.connect(b.getsockname()[:2])
        env.name("peer", b)
        env.name("self", a)
        return Ep(kind, a.fileno(), a, b)
    if kind in ("unix_stream", "unix_dgram", "unix_seqpacket"):
        typ = {"unix_stream": socket.SOCK_STREAM, "unix_dgram": socket.SOCK_DGRAM,
               "unix_seqpacket": socket.SOCK_SEQPACKET}[kind]
        a, b = env.own(*socket.socketpair(socket.AF_UNIX, typ))
        env.names["unnamed"] = ("unix", "")
        return Ep(kind, a.fileno(), a, b)
    if kind == "unix_dgram_named":
        a = env.sock(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = env.sock(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.bind(env.unix_path())
        b.bind(env.unix_path())
        b.connect(a.getsockname())
        if side == "tx":
            a.connect(b.getsockname())
        env.name("peer", b)
        env.name("self", a)
        return Ep(kind, a.fileno(), a, b)
    if kind == "pipe":
        r, w = os.pipe()
        env.own_fd(r)
        env.own_fd(w)
        return Ep(kind, r, peer_fd=w) if side == "rx" else Ep(kind, w, peer_fd=r)
    if kind == "eventfd":
        return Ep(kind, env.own_fd(eventfd()))
    if kind == "file":
        f = tempfile.TemporaryFile()
        env.own(f)
        return Ep(kind, f.fileno())
    if kind == "devnull":
        return Ep(kind, env.own_fd(os.open(os.devnull, os.O_RDWR)))
    raise ValueError("unknown endpoint kind %r" % kind)


def eventfd():
    """A new eventfd, counter 0 (os.eventfd before Python 3.10: through libc)."""
    if hasattr(os, "eventfd"):
        return os.eventfd(0)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.eventfd(0, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "eventfd")
    return fd


def loopback(family):
    return "127.0.0.1" if family == socket.AF_INET else "::1"


def ref(obj):
    """``ctypes.byref(obj)``, or NULL for None."""
    return None if obj is None else ctypes.byref(obj)


def iov_pointer(iov):
    """An iovec array as the ``struct iovec *`` of a msghdr (None: NULL)."""
    return None if iov is None else ctypes.cast(iov, ctypes.POINTER(samples.iovec))


def rst(sock):
    """Close ``sock`` with SO_LINGER 0: the other side gets a RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def unconnected(env, kind):
    """A fresh socket of ``kind``'s family and type, never connected."""
    fam, typ = {
        "tcp4": (socket.AF_INET, socket.SOCK_STREAM), "tcp6": (socket.AF_INET6, socket.SOCK_STREAM),
        "udp4": (socket.AF_INET, socket.SOCK_DGRAM), "udp6": (socket.AF_INET6, socket.SOCK_DGRAM),
        "unix_stream": (socket.AF_UNIX, socket.SOCK_STREAM),
        "unix_dgram": (socket.AF_UNIX, socket.SOCK_DGRAM),
        "unix_dgram_named": (socket.AF_UNIX, socket.SOCK_DGRAM),
        "unix_seqpacket": (socket.AF_UNIX, socket.SOCK_SEQPACKET),
    }[kind]
    return env.sock(fam, typ)


def listening(env, kind):
    s = unconnected(env, kind)
    if s.family == socket.AF_UNIX:
        s.bind(env.unix_path())
    else:
        s.bind(("127.0.0.1" if s.family == socket.AF_INET else "::1", 0))
    s.listen(4)
    return s
