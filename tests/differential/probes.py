"""Run one differential case in this process and describe what the C caller saw.

A case (see :mod:`.cases`) names a call, an endpoint kind, an fd state and the call's
arguments.  :func:`run_case` builds the endpoint (plain Python sockets, pipes, files...), puts
it in the asked state, schedules what must happen while the call waits (data, a peer close, a
signal, a drain) on a helper thread -- or a helper greenlet -- then calls the sample library's
``ghs_<call>`` wrapper through ctypes (the exact libc signature, through the library's GOT:
patched or not) and returns a JSON-able dict:

* ``ret``, ``errno`` (only when the call failed), every output buffer in full (pre-filled with a
  pattern, so bytes written past the return count show), ``msghdr`` fields, addresses mapped
  to the names of the case's own sockets (ports differ between processes), revents / fd sets;
* ``rest``: what is still readable afterwards (a peek that consumed, or a call that consumed too
  much, shows here), ``peer``: what the peer received (send family);
* ``returned``: ``"before"``/``"after"`` the first scheduled event, when there is one;
  ``not_early``: a timed wait did not end before its timeout.

Keys starting with ``_`` are measurements that are not compared (elapsed time, hook counters).
Nothing here knows whether the library is patched: the same code runs in both processes.
"""

import ctypes
import errno
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

from greenhook import samples

from .endpoints import (
    CLOCKS,
    CLOSED_FD,
    DELAY,
    Ep,
    HelperError,
    IP_PKTINFO,
    IP_RECVERR,
    IPV6_RECVERR,
    POLL_BITS,
    SIGNAL_AT,
    SIGNAL_DATA,
    SMALL_BUF,
    SOCK_CLOEXEC,
    SOCK_NONBLOCK,
    TIMEO,
    TIMER_ABSTIME,
    eventfd,
    iov_pointer,
    loopback,
    ref,
    _set_nonblock,
    describe_addr,
    fd_flags,
    fill,
    fill_fd,
    flag_bits,
    flag_names,
    listening,
    make_ep,
    norm_pyaddr,
    now,
    outcome,
    pattern_buffer,
    payload,
    rst,
    set_timeo,
    show_bytes,
    tcp_pair,
    unconnected,
    wait_event,
)


# --- receive family ------------------------------------------------------------------------

HELLO, WORLD = b"hello", b"world!"


def rx_state(env, ep, state, via):
    """Put ``ep`` in ``state`` for a receive call; returns the fd to call on, or None to keep
    ``ep.fd``.  Schedules the helpers of the states that need the call to wait."""
    if state == "queued":
        ep.feed(HELLO)
    elif state == "queued2":
        ep.feed(HELLO)
        ep.feed(WORLD)
    elif state == "later":
        env.later(DELAY, ep.feed, HELLO, via=via)
    elif state == "greenlet_later":  # a greenlet sends when a hub runs the case
        env.later(DELAY, ep.feed, HELLO, via="greenlet")
    elif state == "partial":
        ep.feed(HELLO)
        env.later(DELAY, ep.feed, payload(64, 1), via=via)
    elif state == "eof":
        ep.close_peer()
        wait_event(ep.fd, select.POLLIN)
    elif state == "data_eof":
        ep.feed(HELLO)
        ep.close_peer()
        wait_event(ep.fd, select.POLLIN | 0x2000)
    elif state == "eof_later":
        env.later(DELAY, ep.close_peer, via=via)
    elif state == "eof_after":  # bounds a MSG_WAITALL that the data alone would not end
        env.later(2 * DELAY, ep.close_peer, primary=False)
    elif state == "rst":
        rst(ep.peer)
        wait_event(ep.fd, select.POLLERR)
    elif state == "data_rst":
        ep.feed(HELLO)
        rst(ep.peer)
        wait_event(ep.fd, select.POLLERR)
    elif state == "rst_later":
        env.later(DELAY, rst, ep.peer, via=via)
    elif state == "urgent":
        ep.peer.send(b"ab")
        ep.peer.send(b"!", socket.MSG_OOB)
        wait_event(ep.fd, select.POLLPRI)
    elif state == "notconn":
        return unconnected(env, ep.kind).fileno()
    elif state == "listening":
        return listening(env, ep.kind).fileno()
    elif state == "closed":
        return CLOSED_FD
    elif state == "nonblock":
        _set_nonblock(ep.fd, True)
    elif state == "rcvtimeo":
        set_timeo(ep.sock, socket.SO_RCVTIMEO, TIMEO)
    elif state == "rcvtimeo_partial":
        ep.feed(HELLO)
        set_timeo(ep.sock, socket.SO_RCVTIMEO, TIMEO)
    elif state == "shutrd":
        ep.sock.shutdown(socket.SHUT_RD)
    elif state == "icmp":
        if ep.kind == "udp4":
            ep.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            ep.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        ep.peer.close()  # its port is closed now: the next datagram there is refused
        ep.sock.connect(env.names["peer"][1:3])
        ep.sock.send(b"x")
        wait_event(ep.fd, select.POLLERR)
    elif state == "pktinfo":
        ep.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        ep.feed(HELLO)
    elif state == "fds_queued":
        f = tempfile.TemporaryFile()
        env.own(f)
        rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", f.fileno()))
        ep.peer.sendmsg([HELLO], [rights])
        env.passed_inode = os.fstat(f.fileno()).st_ino
    elif state == "signal":
        env.signal_main(SIGNAL_AT)
        env.later(SIGNAL_DATA, ep.feed, HELLO)
    elif state == "written":  # a regular file with content, offset 0
        os.write(ep.fd, HELLO + WORLD)
        os.lseek(ep.fd, 0, os.SEEK_SET)
    elif state == "empty":
        pass
    else:
        raise ValueError("unknown receive state %r" % state)
    return None


def iov_array(buf, size, spec):
    """``(iovec pointer or None, iovcnt passed, [iovec lengths])`` splitting ``buf`` (``size``
    bytes) into ``spec`` vectors: a count, "nullbase" (1 vector, NULL base, nonzero length),
    "nulliov" (NULL array, count 1), "neg" (count -1), "huge" (a 2-vector array, count 2**20)."""
    if spec == "nulliov":
        return None, 1, []
    if spec == "neg":
        arr = (samples.iovec * 1)(samples.iovec(ctypes.addressof(buf), size))
        return arr, -1, [size]
    if spec == "nullbase":
        arr = (samples.iovec * 1)(samples.iovec(None, size or 8))
        return arr, 1, [size or 8]
    if spec == "huge":
        arr = (samples.iovec * 2)(samples.iovec(ctypes.addressof(buf), size),
                                  samples.iovec(None, 0))
        return arr, 1 << 20, [size]
    cnt = int(spec)
    if cnt == 0:
        return (samples.iovec * 1)(), 0, []
    base = ctypes.addressof(buf)
    lens = [size // cnt + (1 if i < size % cnt else 0) for i in range(cnt)]
    arr = (samples.iovec * cnt)()
    off = 0
    for i, n in enumerate(lens):
        arr[i].iov_base = base + off
        arr[i].iov_len = n
        off += n
    return arr, cnt, lens


def addr_buffers(spec):
    """``(buffer, ctypes socklen or None, buffer length)`` for an address out-parameter:
    "none" (NULL, NULL), "full" (128 bytes), "short" (4 bytes), "lenonly" (NULL buffer, a
    length), "nolen" (a buffer, NULL length)."""
    if spec == "none":
        return None, None, 0
    if spec == "lenonly":
        return None, ctypes.c_uint32(128), 0
    n = {"full": 128, "short": 4, "nolen": 128}[spec]
    buf = pattern_buffer(n)
    return buf, (None if spec == "nolen" else ctypes.c_uint32(n)), n


def parse_cmsgs(env, raw):
    """Control messages as ``[level, type, len, data]``; SCM_RIGHTS fds are checked against
    the file the case passed (and closed), not reported by number."""
    out, off = [], 0
    hdr = struct.calcsize("QiI")
    while off + hdr <= len(raw):
        clen, level, typ = struct.unpack_from("Qii", raw, off)
        if clen < hdr:
            out.append(["bad cmsg_len", clen])
            break
        data = raw[off + hdr:off + clen]
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            shown = []
            for i in range(len(data) // 4):
                fd = struct.unpack_from("i", data, 4 * i)[0]
                try:
                    same = os.fstat(fd).st_ino == getattr(env, "passed_inode", None)
                    os.close(fd)
                    shown.append("the passed file" if same else "another file")
                except OSError:
                    shown.append("not an fd")
            data = shown
        elif (level, typ) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            ee_errno, origin, etype, code = struct.unpack_from("IBBB", data)
            data = {"ee_errno": errno.errorcode.get(ee_errno, ee_errno), "origin": origin,
                    "type": etype, "code": code, "len": len(data)}
        else:
            data = data.hex()
        out.append([level, typ, clen, data])
        off += (clen + 7) & ~7
    return out


def run_rx(env, p):
    call, kind, state = p["call"], p["ep"], p["state"]
    ep = make_ep(env, kind, "rx")
    fd = None
    for part in state.split("+"):  # "queued+eof_after": both, in order
        fd = rx_state(env, ep, part, p.get("via", "thread")) or fd
    fd = fd or ep.fd
    lib = env.lib
    size = p.get("size", 64)
    flags = flag_bits(p.get("flags", "0"))
    timeout = TIMEO if state.startswith("rcvtimeo") else None
    res = {}
    if size == "huge":              # a length the kernel clamps: the buffer is 64 bytes
        buf, n = pattern_buffer(64), ctypes.c_size_t(-1).value
    elif size == "null":            # NULL buffer, nonzero length: EFAULT
        buf, n = None, 64
    else:
        buf, n = pattern_buffer(size), size
    if call == "read":
        r, e, dt = env.call(lib.ghs_read, fd, buf, n)
    elif call == "recv":
        r, e, dt = env.call(lib.ghs_recv, fd, buf, n, flags)
    elif call == "recvfrom":
        abuf, alen, ablen = addr_buffers(p.get("addr", "full"))
        r, e, dt = env.call(lib.ghs_recvfrom, fd, buf, n, flags, abuf, ref(alen))
        res["namelen"] = None if alen is None else alen.value
        if abuf is not None:
            res["addr"] = describe_addr(env, abuf, ablen, None if alen is None else alen.value)
    elif call in ("readv", "recvmsg"):
        iov, cnt, lens = iov_array(buf if buf is not None else pattern_buffer(1),
                                   n if isinstance(n, int) and n < (1 << 40) else 64,
                                   p.get("iov", "1"))
        if buf is None and iov is not None:  # NULL base for every vector
            for i in range(max(cnt, 0) if cnt < (1 << 20) else 1):
                iov[i].iov_base = None
        if call == "readv":
            r, e, dt = env.call(lib.ghs_readv, fd, iov, cnt)
        else:
            nbuf, nlen, nblen = addr_buffers(p.get("addr", "full"))
            ctl = p.get("control", 0)
            cbuf = pattern_buffer(ctl) if ctl else None
            msg = samples.msghdr()
            msg.msg_name = None if nbuf is None else ctypes.addressof(nbuf)
            msg.msg_namelen = 0 if nlen is None else nlen.value
            msg.msg_iov = iov_pointer(iov)
            msg.msg_iovlen = cnt
            msg.msg_control = None if cbuf is None else ctypes.addressof(cbuf)
            msg.msg_controllen = ctl
            msg.msg_flags = 0x5A5A
            r, e, dt = env.call(lib.ghs_recvmsg, fd, ctypes.byref(msg), flags)
            res["msg_namelen"] = msg.msg_namelen
            if nbuf is not None:
                res["addr"] = describe_addr(env, nbuf, nblen, msg.msg_namelen)
            res["msg_flags"] = flag_names(msg.msg_flags)
            res["msg_controllen"] = msg.msg_controllen
            if cbuf is not None:
                res["control"] = parse_cmsgs(env, bytes(cbuf)[:min(msg.msg_controllen, ctl)])
    else:
        raise ValueError(call)
    res.update(outcome(env, r, e, dt, timeout=timeout))
    if buf is not None:
        res["buf"] = show_bytes(bytes(buf)[:max(size, 1) if isinstance(size, int) else 64])
    env.finish_helpers()
    if fd == ep.fd:
        res["rest"] = ep.rest()
    return res


# --- send family ---------------------------------------------------------------------------

def start_drainer(env, ep, delay, primary=True):
    """After ``delay``, a helper thread reads everything the peer gets.  Once the call has
    returned it goes on until the filler plus what the call reports sent has arrived (data
    corked by MSG_MORE or queued behind a closed window comes later) or 1 s passed; what it
    read beyond the filler ends up in ``ep.drained``."""
    stop = threading.Event()

    def drain():
        got, total, until = [], 0, None
        sock, fd = ep.peer, ep.peer_fd
        while True:
            if stop.is_set() and until is None:
                until = now() + 1.0
            if until is not None and (total >= ep.filled + ep.sent or now() > until):
                break
            try:
                if sock is not None:
                    r, _, _ = select.select([sock], [], [], 0.01)
                    chunk = sock.recv(262144, socket.MSG_DONTWAIT) if r else None
                else:
                    r, _, _ = select.select([fd], [], [], 0.01)
                    chunk = os.read(fd, 262144) if r else None
            except BlockingIOError:
                chunk = None
            if chunk:
                got.append(chunk)
                total += len(chunk)
            elif chunk == b"":
                break
        data = b"".join(got)
        filler, rest = data[:ep.filled], data[ep.filled:]
        ep.drained = {"filler_ok": filler == b"f" * ep.filled, "bytes": show_bytes(rest)}

    env.later(delay, drain, primary=primary)
    env.after.append(stop.set)


def tx_state(env, ep, state, p):
    """Put ``ep`` in ``state`` for a send call; returns the fd to call on, or None."""
    if state == "ready":
        pass
    elif state in ("full_drain", "full_sndtimeo", "full_nonblock", "signal", "full_drain_greenlet"):
        if ep.sock is not None:
            ep.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
            ep.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
            ep.filled = fill(ep.sock)
        else:
            ep.filled = fill_fd(ep.fd)
        if state == "full_drain":
            start_drainer(env, ep, DELAY)
        elif state == "full_sndtimeo":
            set_timeo(ep.sock, socket.SO_SNDTIMEO, TIMEO)
        elif state == "full_nonblock":
            _set_nonblock(ep.fd, True)
        elif state == "signal":
            env.signal_main(SIGNAL_AT)
            start_drainer(env, ep, SIGNAL_DATA)
    elif state == "drain":          # a large send: the peer reads from the start
        start_drainer(env, ep, 0.0, primary=False)
    elif state == "peer_closed":
        ep.close_peer()
        if ep.sock is not None and ep.sock.type == socket.SOCK_STREAM:
            wait_event(ep.fd, select.POLLIN | 0x2000)
    elif state == "rst":
        rst(ep.peer)
        wait_event(ep.fd, select.POLLERR)
    elif state == "notconn":
        return unconnected(env, ep.kind).fileno()
    elif state == "listening":
        return listening(env, ep.kind).fileno()
    elif state == "closed":
        return CLOSED_FD
    elif state == "shutwr":
        ep.sock.shutdown(socket.SHUT_WR)
    elif state == "append":  # a regular file opened O_APPEND with content
        os.write(ep.fd, HELLO)
    else:
        raise ValueError("unknown send state %r" % state)
    return None


def dest_addr(env, ep, spec):
    """``(buffer, length)`` of a destination address: "none", "peer", "self", "badlen",
    "wrongfam" (an AF_INET6 address for an AF_INET socket or the reverse), "unix_missing"."""
    if spec == "none":
        return None, 0
    if spec in ("peer", "self"):
        sock = ep.peer if spec == "peer" else ep.sock
        name = sock.getsockname()
        if sock.family == socket.AF_INET6:
            raw = (socket.AF_INET6.to_bytes(2, sys.byteorder) + name[1].to_bytes(2, "big")
                   + bytes(4) + socket.inet_pton(socket.AF_INET6, name[0]) + bytes(4))
            return ctypes.create_string_buffer(raw, len(raw)), len(raw)
        return samples.sockaddr(name if sock.family == socket.AF_UNIX else name[:2])
    if spec == "badlen":
        buf, _ = samples.sockaddr(("127.0.0.1", 9))
        return buf, 3
    if spec == "wrongfam":
        if ep.sock.family == socket.AF_INET6:
            return samples.sockaddr(("127.0.0.1", 9))
        raw = socket.AF_INET6.to_bytes(2, sys.byteorder) + bytes(26)
        return ctypes.create_string_buffer(raw, len(raw)), len(raw)
    if spec == "unix_missing":
        return samples.sockaddr(env.unix_path())
    raise ValueError(spec)


def run_tx(env, p):
    call, kind, state = p["call"], p["ep"], p["state"]
    ep = make_ep(env, kind, "tx")
    if p.get("addr") not in (None, "none") and kind in ("udp4", "udp6", "unix_dgram_named") \
            and p.get("connected", "yes") == "no":
        # an unconnected sender: a fresh socket of the same kind stands in for ep.sock
        fresh = unconnected(env, kind)
        ep = Ep(kind, fresh.fileno(), fresh, ep.sock)
    if kind == "file" and state == "append":
        _set_append(ep.fd)
    fd = tx_state(env, ep, state, p) or ep.fd
    lib = env.lib
    size = p.get("size", 64)
    flags = flag_bits(p.get("flags", "0"))
    timeout = TIMEO if state == "full_sndtimeo" else None
    data = payload(size if isinstance(size, int) else 64, 3)
    if kind == "eventfd" and size == 8:
        data = struct.pack("Q", 5)
    buf = None if size == "null" else ctypes.create_string_buffer(data, max(len(data), 1))
    n = len(data)
    res = {}
    if call == "write":
        r, e, dt = env.call(lib.ghs_write, fd, buf, n)
    elif call == "send":
        r, e, dt = env.call(lib.ghs_send, fd, buf, n, flags)
    elif call == "sendto":
        abuf, alen = dest_addr(env, ep, p.get("addr", "none"))
        r, e, dt = env.call(lib.ghs_sendto, fd, buf, n, flags, abuf, alen)
    elif call in ("writev", "sendmsg"):
        holder = buf if buf is not None else pattern_buffer(1)
        iov, cnt, _ = iov_array(holder, n, p.get("iov", "1"))
        if buf is None and iov is not None:
            for i in range(min(max(cnt, 0), 1 << 16)):
                if i < len(iov):
                    iov[i].iov_base = None
        if call == "writev":
            r, e, dt = env.call(lib.ghs_writev, fd, iov, cnt)
        elif p.get("msg") == "null":
            r, e, dt = env.call(lib.ghs_sendmsg, fd, None, flags)
        else:
            abuf, alen = dest_addr(env, ep, p.get("addr", "none"))
            msg = samples.msghdr()
            msg.msg_name = None if abuf is None else ctypes.addressof(abuf)
            msg.msg_namelen = alen
            msg.msg_iov = iov_pointer(iov)
            msg.msg_iovlen = cnt
            cbuf = control_message(env, p.get("control", "none"))
            msg.msg_control = None if cbuf is None else ctypes.addressof(cbuf)
            msg.msg_controllen = 0 if cbuf is None else len(cbuf)
            r, e, dt = env.call(lib.ghs_sendmsg, fd, ctypes.byref(msg), flags)
    else:
        raise ValueError(call)
    res.update(outcome(env, r, e, dt, timeout=timeout))
    ep.sent = max(r, 0)
    env.finish_helpers()
    res["sigpipe"] = env.signals["SIGPIPE"] - env.sigpipe0
    if fd == ep.fd:
        res["peer"] = ep.peer_rest()
    if p.get("control", "none") == "rights" and ep.peer is not None and ep.peer.fileno() >= 0:
        res["peer_cmsgs"] = peer_cmsgs(env, ep.peer)
    return res


def _set_append(fd):
    import fcntl
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def control_message(env, spec):
    if spec == "none":
        return None
    if spec == "rights":
        f = tempfile.TemporaryFile()
        env.own(f)
        env.passed_inode = os.fstat(f.fileno()).st_ino
        raw = (struct.pack("Qii", 20, socket.SOL_SOCKET, socket.SCM_RIGHTS)
               + struct.pack("i", f.fileno()) + bytes(4))
        return ctypes.create_string_buffer(raw, len(raw))
    if spec == "badlen":  # cmsg_len larger than the control buffer: EINVAL
        raw = struct.pack("Qii", 64, socket.SOL_SOCKET, socket.SCM_RIGHTS) + bytes(8)
        return ctypes.create_string_buffer(raw, len(raw))
    raise ValueError(spec)


def peer_cmsgs(env, peer):
    """Ancillary data the peer can still receive (fds passed with the data)."""
    try:
        _, anc, _, _ = peer.recvmsg(1, 64, socket.MSG_DONTWAIT)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, exc.errno)
    out = []
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            for i in range(len(data) // 4):
                fd = struct.unpack_from("i", data, 4 * i)[0]
                out.append(os.fstat(fd).st_ino == env.passed_inode)
                os.close(fd)
    return out


# --- connect / accept ----------------------------------------------------------------------

def full_backlog_tcp(env):
    """A 127.0.0.1 listener with backlog 0 whose accept queue is already full."""
    lst = env.sock()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    for _ in range(8):
        c = env.sock()
        c.setblocking(False)
        c.connect_ex(lst.getsockname())
        if not select.select([], [c], [], 0.1)[1]:
            return lst
    raise HelperError("could not fill the accept queue of a backlog-0 listener")


def full_backlog_unix(env):
    lst = env.sock(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(env.unix_path())
    lst.listen(0)
    for _ in range(8):
        c = env.sock(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(lst.getsockname())
        except BlockingIOError:
            return lst
    raise HelperError("could not fill the backlog of a unix listener")


def closed_port(family=socket.AF_INET):
    with socket.socket(family) as s:
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        return s.getsockname()[1]


def run_connect(env, p):
    target, state = p["target"], p.get("state", "blocking")
    fam = socket.AF_INET6 if target.startswith("tcp6") or target.startswith("udp6") else \
        socket.AF_UNIX if target.startswith("unix") else socket.AF_INET
    typ = socket.SOCK_DGRAM if target.startswith(("udp", "unix_dgram")) else socket.SOCK_STREAM
    s = env.sock(fam, typ)
    fd, abuf, alen = s.fileno(), None, 0
    host = "127.0.0.1" if fam == socket.AF_INET else "::1"
    timeout = None

    def addr_of(name):
        if fam == socket.AF_INET6:
            raw = (socket.AF_INET6.to_bytes(2, sys.byteorder) + name[1].to_bytes(2, "big")
                   + bytes(4) + socket.inet_pton(socket.AF_INET6, name[0]) + bytes(4))
            return ctypes.create_string_buffer(raw, len(raw)), len(raw)
        return samples.sockaddr(name if fam == socket.AF_UNIX else name[:2])

    lst = None
    if target in ("tcp4_listen", "tcp6_listen", "unix_listen", "udp4_peer", "unix_dgram_peer"):
        if target.startswith("udp"):
            lst = env.sock(fam, socket.SOCK_DGRAM)
            lst.bind((host, 0))
        elif target == "unix_dgram_peer":
            lst = env.sock(socket.AF_UNIX, socket.SOCK_DGRAM)
            lst.bind(env.unix_path())
        else:
            lst = env.sock(fam, socket.SOCK_STREAM)
            lst.bind(env.unix_path() if fam == socket.AF_UNIX else (host, 0))
            lst.listen(8)
        env.name("target", lst)
        abuf, alen = addr_of(lst.getsockname())
    elif target in ("tcp4_refused", "tcp6_refused"):
        abuf, alen = addr_of((host, closed_port(fam)))
    elif target == "unix_missing":
        abuf, alen = samples.sockaddr(env.unix_path())
    elif target == "unix_wrongtype":  # a stream socket to a datagram socket's path
        d = env.sock(socket.AF_UNIX, socket.SOCK_DGRAM)
        d.bind(env.unix_path())
        abuf, alen = samples.sockaddr(d.getsockname())
    elif target == "tcp4_full":
        lst = full_backlog_tcp(env)
        abuf, alen = addr_of(lst.getsockname())
    elif target in ("unix_full", "unix_full_later"):
        lst = full_backlog_unix(env)
        abuf, alen = samples.sockaddr(lst.getsockname())
        if target == "unix_full_later":
            def make_room():
                c, _ = lst.accept()
                env.own(c)
            env.later(DELAY, make_room)
    elif target == "tcp4_badlen":
        abuf, alen = samples.sockaddr(("127.0.0.1", 9))
        alen = 3
    elif target == "tcp4_wrongfam":
        abuf, alen = samples.sockaddr(env.unix_path())
    elif target == "tcp4_null":
        abuf, alen = None, 16
    elif target == "udp4_unspec":
        lst = env.sock(socket.AF_INET, socket.SOCK_DGRAM)
        lst.bind((host, 0))
        s.connect(lst.getsockname())
        raw = socket.AF_UNSPEC.to_bytes(2, sys.byteorder) + bytes(14)
        abuf, alen = ctypes.create_string_buffer(raw, 16), 16
    else:
        raise ValueError("unknown connect target %r" % target)

    if state == "nonblock":
        s.setblocking(False)
    elif state == "sndtimeo":
        set_timeo(s, socket.SO_SNDTIMEO, TIMEO)
        timeout = TIMEO
    elif state == "connected":   # connect again once connected: EISCONN
        if lst is not None and lst.type == socket.SOCK_STREAM:
            s.connect(lst.getsockname())
    elif state == "refused_before":  # a previous connect was refused
        try:
            s.connect((host, closed_port(fam)))
        except OSError:
            pass
    elif state == "in_progress":  # a non-blocking connect still in progress: EALREADY
        s.setblocking(False)
        s.connect_ex(lst.getsockname())
        s.setblocking(True)
    elif state == "closed":
        fd = CLOSED_FD
    elif state == "notsock":
        r, w = os.pipe()
        env.own_fd(r)
        env.own_fd(w)
        fd = r
    elif state == "signal":
        env.signal_main(SIGNAL_AT)
        if target == "unix_full":
            def make_room_late():
                c, _ = lst.accept()
                env.own(c)
            env.later(SIGNAL_DATA, make_room_late, primary=True)
    elif state != "blocking":
        raise ValueError("unknown connect state %r" % state)

    r, e, dt = env.call(env.lib.ghs_connect, fd, abuf, alen)
    res = outcome(env, r, e, dt, timeout=timeout)
    env.finish_helpers()
    if fd == s.fileno():
        res["so_error"] = errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), "0")
        res["flags"] = fd_flags(fd)
        try:
            res["peername"] = describe_peer(env, s)
        except OSError as exc:
            res["peername"] = errno.errorcode.get(exc.errno, exc.errno)
    return res


def describe_peer(env, s):
    norm = norm_pyaddr(s.family, s.getpeername())
    for label, known in env.names.items():
        if norm == known:
            return label
    return "unknown %s" % norm[0]


def run_accept(env, p):
    call, lkind, state = p["call"], p["listener"], p["state"]
    fam = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6, "unix": socket.AF_UNIX}[lkind]
    lst = env.sock(fam, socket.SOCK_STREAM)
    lst.bind(env.unix_path() if fam == socket.AF_UNIX else (loopback(fam), 0))
    fd = lst.fileno()
    clients = []

    def connect_one():
        c = socket.socket(fam, socket.SOCK_STREAM)
        env.own(c)
        if fam != socket.AF_UNIX:
            c.bind(("127.0.0.1" if fam == socket.AF_INET else "::1", 0))
            env.name("client", c)
        clients.append(c)  # before connecting: accept may return before connect() does
        c.connect(lst.getsockname())

    if state != "notlisten":
        lst.listen(8)
    timeout = None
    if state == "pending":
        connect_one()
    elif state == "later":
        env.later(DELAY, connect_one, via=p.get("via", "thread"))
    elif state == "pending_rst":
        connect_one()
        rst(clients[0])
    elif state == "nonblock":
        lst.setblocking(False)
    elif state == "rcvtimeo":
        set_timeo(lst, socket.SO_RCVTIMEO, TIMEO)
        timeout = TIMEO
    elif state == "shutdown_later":
        env.later(DELAY, lst.shutdown, socket.SHUT_RD)
    elif state == "closed":
        fd = CLOSED_FD
    elif state == "notsock":
        r, w = os.pipe()
        env.own_fd(r)
        env.own_fd(w)
        fd = r
    elif state == "udp":
        u = env.sock(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        fd = u.fileno()
    elif state == "signal":
        env.signal_main(SIGNAL_AT)
        env.later(SIGNAL_DATA, connect_one)
    elif state != "notlisten":
        raise ValueError("unknown accept state %r" % state)
    if fam == socket.AF_UNIX:
        env.names["unnamed"] = ("unix", "")
    abuf, alen, ablen = addr_buffers(p.get("addr", "none"))
    pa = None if alen is None else ctypes.byref(alen)
    if call == "accept4":
        r, e, dt = env.call(env.lib.ghs_accept4, fd, abuf, pa, flag_bits(p.get("flags", "0"), {
            "NONBLOCK": SOCK_NONBLOCK, "CLOEXEC": SOCK_CLOEXEC, "BAD": 0x1}))
    else:
        r, e, dt = env.call(env.lib.ghs_accept, fd, abuf, pa)
    res = outcome(env, "fd" if r >= 0 else r, e, dt, timeout=timeout)
    if alen is not None:
        res["addrlen"] = alen.value
    if abuf is not None:
        res["addr"] = describe_addr(env, abuf, ablen, None if alen is None else alen.value)
    if r >= 0:
        res["flags"] = fd_flags(r)
        conn = socket.socket(fileno=r)
        env.own(conn)
        if clients:  # the accepted socket is connected to the client: a byte goes through
            try:
                clients[-1].send(b"k")
                wait_event(r, select.POLLIN)
                res["talks"] = conn.recv(8, socket.MSG_DONTWAIT).hex()
            except OSError as exc:
                res["talks"] = errno.errorcode.get(exc.errno, exc.errno)
    env.finish_helpers()
    if state not in ("closed", "notsock", "udp"):
        res["listener_flags"] = fd_flags(lst.fileno())
        res["backlog_left"] = len(select.select([lst], [], [], 0)[0])
    return res


# --- poll / ppoll / select / pselect ---------------------------------------------------------

def poll_fd(env, spec, via="thread"):
    """An fd in the readiness state ``spec`` (see cases.POLL_SPECS)."""
    if spec == "neg":
        return -1
    if spec == "closed":
        return CLOSED_FD
    if spec in ("data", "empty", "later", "hup", "hup_later", "full", "full_drain", "greenlet"):
        a, b = env.own(*socket.socketpair())
        if spec == "data":
            b.send(HELLO)
        elif spec == "later":
            env.later(DELAY, b.send, HELLO)
        elif spec == "greenlet":
            env.later(DELAY, b.send, HELLO, via="greenlet")
        elif spec == "hup":
            b.close()
        elif spec == "hup_later":
            env.later(DELAY, b.close)
        elif spec in ("full", "full_drain"):
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
            filled = fill(a)
            if spec == "full_drain":
                ep = Ep("unix_stream", a.fileno(), a, b)
                ep.filled = filled
                start_drainer(env, ep, DELAY)
        return a.fileno()
    if spec.startswith("tcp_"):
        a, b = tcp_pair(env, socket.AF_INET)
        if spec == "tcp_data":
            b.send(HELLO)
        elif spec == "tcp_rst":
            rst(b)
            wait_event(a.fileno(), select.POLLERR)
        elif spec == "tcp_rst_later":
            env.later(DELAY, rst, b)
        elif spec == "tcp_urgent":
            b.send(b"!", socket.MSG_OOB)
            wait_event(a.fileno(), select.POLLPRI)
        elif spec == "tcp_urgent_later":
            env.later(DELAY, b.send, b"!", socket.MSG_OOB)
        return a.fileno()
    if spec in ("udp_empty", "udp_data"):
        u = env.sock(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        if spec == "udp_data":
            v = env.sock(socket.AF_INET, socket.SOCK_DGRAM)
            v.sendto(HELLO, u.getsockname())
            wait_event(u.fileno(), select.POLLIN)
        return u.fileno()
    if spec in ("listen_empty", "listen_pending", "listen_later"):
        lst = listening(env, "tcp4")
        if spec == "listen_pending":
            c = env.sock()
            c.connect(lst.getsockname())
        elif spec == "listen_later":
            c = env.sock()
            env.later(DELAY, c.connect, lst.getsockname())
        return lst.fileno()
    if spec == "unconnected":
        return env.sock().fileno()
    if spec.startswith("pipe_"):
        r, w = os.pipe()
        env.own_fd(r)
        env.own_fd(w)
        if spec == "pipe_r_data":
            os.write(w, HELLO)
        elif spec == "pipe_r_later":  # later than the others: never at the same time
            env.later(2 * DELAY, os.write, w, HELLO)
        elif spec == "pipe_r_hup":
            env.close_fd(w)
        elif spec == "pipe_w_broken":
            env.close_fd(r)
        return r if spec.startswith("pipe_r") else w
    if spec in ("eventfd0", "eventfd1"):
        fd = env.own_fd(eventfd())
        if spec == "eventfd1":
            os.write(fd, struct.pack("Q", 1))
        return fd
    if spec == "file":
        f = tempfile.TemporaryFile()
        env.own(f)
        return f.fileno()
    if spec == "devnull":
        return env.own_fd(os.open(os.devnull, os.O_RDWR))
    raise ValueError("unknown poll fd spec %r" % spec)


def run_poll(env, p):
    call = p["call"]
    specs = p["fds"].split(",") if p["fds"] else []
    events = [flag_bits(e, POLL_BITS) for e in p.get("events", "IN").split(",")] if specs else []
    if len(events) == 1 and len(specs) > 1:
        events = events * len(specs)
    timeout = p["timeout"]
    fds = []
    for spec in specs:
        if spec == "dup":       # the previous fd again
            fds.append(fds[-1])
        else:
            fds.append(poll_fd(env, spec))
    if p.get("state") == "signal":
        env.signal_main(SIGNAL_AT)
    n = len(fds)
    garbage = 0x7F if p.get("garbage") else 0
    arr = (samples.pollfd * max(n, 1))(*[samples.pollfd(fd, ev, garbage)
                                         for fd, ev in zip(fds, events)])
    ptr = None if p.get("array") == "null" else arr
    nfds = n if p.get("nfds") is None else p["nfds"]
    mask_restore = None
    if call == "poll":
        ms = {"none": -1, "zero": 0, "short": int(TIMEO * 1000), "long": 1000}[timeout]
        r, e, dt = env.call(env.lib.ghs_poll, ptr, nfds, ms)
    else:
        ts = {"none": None, "zero": samples.timespec(0, 0),
              "short": samples.timespec.from_seconds(TIMEO),
              "long": samples.timespec(1, 0),
              "bad_nsec": samples.timespec(0, 1000000000), "neg": samples.timespec(-1, 0)}[timeout]
        sig, mask_restore = sigmask_arg(p.get("sigmask", "none"))
        r, e, dt = env.call(env.lib.ghs_ppoll, ptr, nfds, ref(ts), sig)
    if mask_restore is not None:
        mask_restore()
    res = outcome(env, r, e, dt, timeout=TIMEO if timeout == "short" else None,
                  long_wait=1.0 if timeout == "long" else None)
    res["revents"] = [flag_names(arr[i].revents & 0xFFFF, POLL_BITS) for i in range(n)]
    res["sigalrm"] = env.signals["SIGALRM"] - env.sigalrm0
    env.finish_helpers()
    return res


class Sigset(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * 16)]


def sigmask_arg(spec):
    """``(sigset pointer or None, restore callback or None)`` for ppoll/pselect.

    "none": NULL.  "empty": an empty mask while SIGALRM is blocked in the thread (the call
    unblocks it).  "block": a mask blocking SIGALRM while the thread does not."""
    if spec == "none":
        return None, None
    s = Sigset()
    if spec == "block":
        s.val[0] |= 1 << (signal.SIGALRM - 1)
        return ctypes.byref(s), None
    if spec == "empty":
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        return ctypes.byref(s), lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old)
    raise ValueError(spec)


def run_select(env, p):
    call = p["call"]
    sets = {"r": [], "w": [], "x": []}
    for item in p["fds"].split(",") if p["fds"] else []:
        spec, which = item.split(":")
        fd = poll_fd(env, spec)
        for c in which:
            sets[c].append(fd)
    if p.get("state") == "signal":
        env.signal_main(SIGNAL_AT)
    null_sets = p.get("null_sets", False)
    fdsets = {k: (None if null_sets and not v else samples.fd_set.of(*[f for f in v if f >= 0]))
              for k, v in sets.items()}
    allfds = [f for v in sets.values() for f in v]
    nfds = (max(allfds + [-1]) + 1) if p.get("nfds") is None else p["nfds"]
    timeout = p["timeout"]
    ptrs = [None if fdsets[k] is None else ctypes.byref(fdsets[k]) for k in "rwx"]
    mask_restore = None
    before = None
    if call == "select":
        tv = {"none": None, "zero": samples.timeval(0, 0),
              "short": samples.timeval.from_seconds(TIMEO), "long": samples.timeval(1, 0),
              "bad_usec": samples.timeval(0, 1000000), "neg": samples.timeval(0, -1)}[timeout]
        r, e, dt = env.call(env.lib.ghs_select, nfds, *ptrs, ref(tv))
        left = None if tv is None else tv.tv_sec + tv.tv_usec / 1e6
    else:
        ts = {"none": None, "zero": samples.timespec(0, 0),
              "short": samples.timespec.from_seconds(TIMEO), "long": samples.timespec(1, 0),
              "bad_nsec": samples.timespec(0, 1000000000),
              "neg": samples.timespec(-1, 0)}[timeout]
        before = None if ts is None else (ts.tv_sec, ts.tv_nsec)
        sig, mask_restore = sigmask_arg(p.get("sigmask", "none"))
        r, e, dt = env.call(env.lib.ghs_pselect, nfds, *ptrs, ref(ts), sig)
        left = None
    if mask_restore is not None:
        mask_restore()
    res = outcome(env, r, e, dt, timeout=TIMEO if timeout == "short" else None,
                  long_wait=1.0 if timeout == "long" else None)
    for k in "rwx":
        s = fdsets[k]
        res["set_" + k] = None if s is None else [
            i for i, f in enumerate(sets[k]) if f >= 0 and s.isset(f)]
    if call == "select" and left is not None and timeout in ("short", "long", "bad_usec"):
        total = {"short": TIMEO, "long": 1.0, "bad_usec": 1.0}[timeout]
        res["timeout_left"] = "zero" if left == 0 else (
            "consistent" if abs(left - (total - dt)) <= 0.015 else "inconsistent")
        res["_left"] = left
    elif call == "select" and left is not None:
        res["timeout_left"] = round(left, 6)
    if before is not None:
        res["timeout_untouched"] = (ts.tv_sec, ts.tv_nsec) == before
    res["sigalrm"] = env.signals["SIGALRM"] - env.sigalrm0
    env.finish_helpers()
    return res


# --- sleeps ----------------------------------------------------------------------------------

def run_sleep(env, p):
    call, arg = p["call"], p["arg"]
    if p.get("state") == "signal":
        env.signal_main(SIGNAL_AT)
    lib = env.lib
    res = {}
    expect = None
    if call == "sleep":
        r, e, dt = env.call(lib.ghs_sleep, int(arg))
        res.update(outcome(env, r, e, dt, timeout=int(arg) or None))
    elif call == "usleep":
        r, e, dt = env.call(lib.ghs_usleep, int(arg))
        res.update(outcome(env, r, e, dt, timeout=int(arg) / 1e6 if int(arg) else None))
    else:
        req = {"null": None, "zero": samples.timespec(0, 0),
               "short": samples.timespec.from_seconds(TIMEO),
               "long": samples.timespec.from_seconds(0.2),
               "bad_nsec": samples.timespec(0, 1000000000),
               "neg": samples.timespec(-1, 0), "abs_past": samples.timespec(1, 0)}[arg]
        rem = samples.timespec(77, 77)
        remp = None if p.get("rem") == "null" else ctypes.byref(rem)
        if arg in ("short", "long"):
            expect = req.tv_sec + req.tv_nsec / 1e9
        if call == "nanosleep":
            r, e, dt = env.call(lib.ghs_nanosleep, ref(req), remp)
            res.update(outcome(env, r, e, dt, timeout=expect))
        else:
            clk = CLOCKS[p.get("clock", "MONOTONIC")]
            flags = TIMER_ABSTIME if p.get("abstime") else 0
            if p.get("abstime") and arg == "short":  # an absolute deadline TIMEO from now
                t = time.clock_gettime(clk) + TIMEO
                req = samples.timespec.from_seconds(t)
            r, e, dt = env.call(lib.ghs_clock_nanosleep, clk, flags, ref(req), remp)
            res.update(outcome(env, r, e, dt, timeout=expect))
            res["ret"] = errno.errorcode.get(r, r) if r else 0
        if remp is not None:
            left = rem.tv_sec + rem.tv_nsec / 1e9
            if (rem.tv_sec, rem.tv_nsec) == (77, 77):
                res["rem"] = "untouched"
            elif expect is not None:
                res["rem"] = "consistent" if abs(left - (expect - dt)) <= 0.015 else "inconsistent"
            else:
                res["rem"] = round(left, 3)
    res["sigalrm"] = env.signals["SIGALRM"] - env.sigalrm0
    env.finish_helpers()
    return res


# --- entry ---------------------------------------------------------------------------------

RUNNERS = {
    "read": run_rx, "readv": run_rx, "recv": run_rx, "recvfrom": run_rx, "recvmsg": run_rx,
    "write": run_tx, "writev": run_tx, "send": run_tx, "sendto": run_tx, "sendmsg": run_tx,
    "connect": run_connect, "accept": run_accept, "accept4": run_accept,
    "poll": run_poll, "ppoll": run_poll, "select": run_select, "pselect": run_select,
    "sleep": run_sleep, "usleep": run_sleep, "nanosleep": run_sleep, "clock_nanosleep": run_sleep,
}


def run_case(env, params):
    """Run one case (a dict of parameters, see cases.py); returns its result dict."""
    env.started = now()
    env.sigpipe0 = env.signals["SIGPIPE"]
    env.sigalrm0 = env.signals["SIGALRM"]
    env.passed_inode = None
    if closed_fd_is_open():
        raise HelperError("fd %d is open: it must stay closed for the EBADF cases" % CLOSED_FD)
    try:
        return RUNNERS[params["call"]](env, params)
    finally:
        env.finish()


def closed_fd_is_open():
    try:
        os.fstat(CLOSED_FD)
    except OSError:
        return False
    return True
