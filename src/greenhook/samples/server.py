"""The delay server: an asyncio echo server with a per-request delay, for the sample clients.

Run it as ``python -m greenhook.samples.server --ready-file F`` (or as a script: it uses the
standard library only and never imports greenhook).  It listens on 127.0.0.1 TCP, 127.0.0.1
UDP and a unix stream socket, writes ``{"tcp": port, "udp": port, "unix": path, "pid": pid}``
to F (atomically) once all three accept, and exits on SIGTERM or SIGINT.

Protocol (integers big-endian), the same on every transport:

    request = op:u16  port:u16  delay_ms:u32  len:u32   (12 bytes)  +  len payload bytes
    reply   = len:u32                                    (4 bytes)   +  len payload bytes

* ``OP_ECHO`` (1): after ``delay_ms`` the reply goes back on the same connection.  UDP: one
  datagram in (header + payload), one datagram out (reply) to the sender, after the delay.
* ``OP_CONNECT_BACK`` (2): after ``delay_ms`` the server connects to ``127.0.0.1:port``, sends
  the reply there and closes that connection.  Nothing is sent on the request connection.
* ``OP_HANGUP`` (3): after ``delay_ms`` the server closes the request connection, no reply.

Requests on one stream connection are served one after the other, in order (the delay of a
request starts when the previous one has been answered).  A malformed header (unknown op,
payload larger than ``MAX_PAYLOAD``) aborts the connection.

Built for load: one protocol object per connection and one timer per request (no coroutine,
no thread), listen backlog 4096, and the soft RLIMIT_NOFILE raised to the hard limit.

``DelayServer`` starts the server as a subprocess for tests and benchmarks::

    with DelayServer() as srv:
        mod.request("send_recv", srv.tcp_port, 50, b"hi")
        mod.request(style, srv.target(style), 50, b"hi")
"""
import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

__all__ = [
    "HEADER",
    "REPLY",
    "OP_ECHO",
    "OP_CONNECT_BACK",
    "OP_HANGUP",
    "MAX_PAYLOAD",
    "encode_request",
    "decode_reply_header",
    "DelayServer",
    "serve",
    "main",
]

HEADER = struct.Struct("!HHII")  # op, port, delay_ms, len
REPLY = struct.Struct("!I")  # len
OP_ECHO = 1
OP_CONNECT_BACK = 2
OP_HANGUP = 3
_OPS = (OP_ECHO, OP_CONNECT_BACK, OP_HANGUP)
MAX_PAYLOAD = 64 * 1024 * 1024
BACKLOG = 4096


def encode_request(payload=b"", delay_ms=0, op=OP_ECHO, port=0):
    """The bytes of one request (header + payload)."""
    return HEADER.pack(op, port, delay_ms, len(payload)) + bytes(payload)


def decode_reply_header(data):
    """Payload length announced by a 4-byte reply header."""
    return REPLY.unpack_from(data)[0]


def _reply(payload):
    return REPLY.pack(len(payload)) + payload


# ---------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------
class _StreamProtocol(asyncio.Protocol):
    """One TCP or unix connection: parse requests, answer them in order after their delay."""

    __slots__ = ("_loop", "_tasks", "_transport", "_buf", "_queue", "_timer", "_closed")

    def __init__(self, loop, tasks):
        self._loop = loop
        self._tasks = tasks
        self._transport = None
        self._buf = bytearray()
        self._queue = collections.deque()
        self._timer = None  # pending timer handle, or None when idle
        self._closed = False

    def connection_made(self, transport):
        self._transport = transport

    def data_received(self, data):
        buf = self._buf
        buf += data
        hsize = HEADER.size
        while len(buf) >= hsize:
            op, port, delay_ms, length = HEADER.unpack_from(buf)
            if op not in _OPS or length > MAX_PAYLOAD:
                self._transport.abort()
                return
            end = hsize + length
            if len(buf) < end:
                break
            self._queue.append((op, port, delay_ms, bytes(buf[hsize:end])))
            del buf[:end]
        self._next()

    def _next(self):
        if self._timer is not None or self._closed or not self._queue:
            return
        op, port, delay_ms, payload = self._queue.popleft()
        self._timer = self._loop.call_later(delay_ms / 1000.0, self._fire, op, port, payload)

    def _fire(self, op, port, payload):
        self._timer = None
        if self._closed:
            return
        if op == OP_ECHO:
            self._transport.write(_reply(payload))
        elif op == OP_CONNECT_BACK:
            task = self._loop.create_task(_connect_back(self._loop, port, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:  # OP_HANGUP
            self._closed = True
            self._queue.clear()
            self._transport.close()
            return
        self._next()

    def connection_lost(self, exc):
        self._closed = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _connect_back(loop, port, payload):
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    except OSError:
        return  # the client gave up (cancelled, interrupted): nothing to deliver
    transport.write(_reply(payload))
    transport.close()  # flushes the buffer first


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self._loop = loop
        self._transport = None

    def connection_made(self, transport):
        self._transport = transport

    def datagram_received(self, data, addr):
        if len(data) < HEADER.size:
            return
        op, _port, delay_ms, length = HEADER.unpack_from(data)
        if op != OP_ECHO or len(data) != HEADER.size + length:
            return
        reply = REPLY.pack(length) + data[HEADER.size:]
        self._loop.call_later(delay_ms / 1000.0, self._send, reply, addr)

    def _send(self, reply, addr):
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, addr)

    def error_received(self, exc):
        pass  # e.g. ICMP port unreachable from a client that went away

    def connection_lost(self, exc):
        self._transport = None


def _raise_nofile_limit():
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _write_ready_file(path, info):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


async def serve(ready_file=None, host="127.0.0.1", tcp_port=0, udp_port=0, unix_path=None,
                backlog=BACKLOG):
    """Serve until SIGTERM/SIGINT.  ``unix_path=None`` picks a path in a new temp dir."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tmpdir = None
    if unix_path is None:
        tmpdir = tempfile.mkdtemp(prefix="ghs-delay-")
        unix_path = os.path.join(tmpdir, "delay.sock")
        if len(os.fsencode(unix_path)) > 100:  # sun_path is 108 bytes
            shutil.rmtree(tmpdir, ignore_errors=True)
            tmpdir = tempfile.mkdtemp(prefix="ghs-delay-", dir="/tmp")
            unix_path = os.path.join(tmpdir, "delay.sock")
    elif os.path.exists(unix_path):
        os.unlink(unix_path)

    tasks = set()
    servers = []
    udp_transport = None
    try:
        tcp = await loop.create_server(
            lambda: _StreamProtocol(loop, tasks), host, tcp_port, backlog=backlog,
            reuse_address=True,
        )
        servers.append(tcp)
        unix = await loop.create_unix_server(
            lambda: _StreamProtocol(loop, tasks), unix_path, backlog=backlog
        )
        servers.append(unix)
        udp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _DatagramProtocol(loop), local_addr=(host, udp_port)
        )
        info = {
            "tcp": tcp.sockets[0].getsockname()[1],
            "udp": udp_transport.get_extra_info("sockname")[1],
            "unix": unix_path,
            "pid": os.getpid(),
        }
        if ready_file:
            _write_ready_file(ready_file, info)
        await stop.wait()
    finally:
        for s in servers:
            s.close()
        if udp_transport is not None:
            udp_transport.close()
        for t in list(tasks):
            t.cancel()
        try:
            os.unlink(unix_path)
        except OSError:
            pass
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description="greenhook delay server (echo after a delay)")
    ap.add_argument("--ready-file", help="write the JSON listening info here when ready")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tcp-port", type=int, default=0)
    ap.add_argument("--udp-port", type=int, default=0)
    ap.add_argument("--unix", dest="unix_path", help="unix socket path (default: in a temp dir)")
    ap.add_argument("--backlog", type=int, default=BACKLOG)
    args = ap.parse_args(argv)
    _raise_nofile_limit()
    asyncio.run(
        serve(args.ready_file, args.host, args.tcp_port, args.udp_port, args.unix_path,
              args.backlog)
    )
    return 0


# ---------------------------------------------------------------------------------------
# Client-side helper
# ---------------------------------------------------------------------------------------
class DelayServer:
    """Run the delay server in a subprocess; a context manager.

    Attributes once started: ``tcp_port``, ``udp_port``, ``unix_path``, ``pid``, ``info``.
    The server runs this file as a script, so it does not import greenhook (nor greenlet).
    """

    def __init__(self, timeout=15.0, python=None, stderr=None):
        self.timeout = timeout
        self.python = python or sys.executable
        self.stderr = stderr
        self.proc = None
        self.info = None
        self.tcp_port = self.udp_port = self.unix_path = self.pid = None
        self._dir = None

    def start(self):
        if self.proc is not None:
            raise RuntimeError("DelayServer already started")
        self._dir = tempfile.mkdtemp(prefix="ghs-srv-")
        if len(os.fsencode(self._dir)) > 80:  # leave room for the socket name in sun_path
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = tempfile.mkdtemp(prefix="ghs-srv-", dir="/tmp")
        ready = os.path.join(self._dir, "ready.json")
        cmd = [
            self.python,
            os.path.abspath(__file__),
            "--ready-file",
            ready,
            "--unix",
            os.path.join(self._dir, "delay.sock"),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + self.timeout
        try:
            while not os.path.exists(ready):
                code = self.proc.poll()
                if code is not None:
                    raise RuntimeError("delay server exited with status %s before it was ready"
                                       % code)
                if time.monotonic() > deadline:
                    raise RuntimeError("delay server not ready after %.1f s" % self.timeout)
                time.sleep(0.01)
            with open(ready) as f:
                self.info = json.load(f)
        except BaseException:
            self.stop()
            raise
        self.tcp_port = self.info["tcp"]
        self.udp_port = self.info["udp"]
        self.unix_path = self.info["unix"]
        self.pid = self.info["pid"]
        return self

    def target(self, style):
        """The ``target`` argument of ``request()`` for a request style."""
        if style == "udp":
            return self.udp_port
        if style == "unix":
            return self.unix_path
        if style in ("usleep", "nanosleep", "clock_nanosleep"):
            return None
        return self.tcp_port

    def stop(self, timeout=5.0):
        proc, self.proc = self.proc, None
        if proc is not None:
            pid = proc.pid
            if proc.poll() is None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(pid, signal.SIGKILL)
                    proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<DelayServer tcp=%s udp=%s unix=%s pid=%s>" % (
            self.tcp_port, self.udp_port, self.unix_path, self.pid)


if __name__ == "__main__":
    sys.exit(main())
