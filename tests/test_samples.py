"""The sample C clients themselves, unpatched: relocation facts per variant and round trips.

These pin down the fixtures the patcher tests rely on: if a toolchain stops producing the
relocation a variant exists for, this file says so before the greening tests get confusing.
"""
import ctypes
import errno
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from greenhook_test_support import skip_or_fail

if not sys.platform.startswith("linux"):
    skip_or_fail("the samples are ELF/Linux only", allow_module_level=True)

from greenhook import samples  # noqa: E402
from greenhook.samples.server import (  # noqa: E402
    OP_CONNECT_BACK,
    OP_ECHO,
    OP_HANGUP,
    DelayServer,
    decode_reply_header,
    encode_request,
)

# The libc calls the thin wrappers forward to: every variant imports all of them.
WRAPPED = (
    "connect", "accept", "accept4", "read", "write", "readv", "writev", "recv", "send",
    "recvfrom", "sendto", "recvmsg", "sendmsg", "poll", "ppoll", "select", "pselect",
    "sleep", "usleep", "nanosleep", "clock_nanosleep",
)
# The libc calls ghs_request makes (through the data table in "addrtaken").
REQUEST_CALLS = tuple(s for s in WRAPPED if s != "sleep")
FORTIFY_IMPORTS = ("__recv_chk", "__read_chk", "__recvfrom_chk", "__poll_chk", "__ppoll_chk",
                   "__fdelt_chk")

RELOC_NAMES = {
    "x86_64": {"jump_slot": "R_X86_64_JUMP_SLOT", "glob_dat": "R_X86_64_GLOB_DAT",
               "abs64": "R_X86_64_64"},
    "aarch64": {"jump_slot": "R_AARCH64_JUMP_SLOT", "glob_dat": "R_AARCH64_GLOB_DAT",
                "abs64": "R_AARCH64_ABS64"},
}


@pytest.fixture(scope="module")
def built():
    """Every variant's library and extension, or a clear failure."""
    try:
        for v in samples.VARIANTS:
            samples.library_path(v)
            samples.load(v)
    except samples.SamplesNotBuilt as exc:
        pytest.fail(str(exc))
    return samples


@pytest.fixture(scope="module")
def server():
    with DelayServer() as srv:
        yield srv


# ---------------------------------------------------------------------------------------
# ELF facts
# ---------------------------------------------------------------------------------------
def _tool(name):
    path = shutil.which(name)
    if path is None:
        skip_or_fail("%s (binutils) not installed" % name)
    return path


def _run(*cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, LC_ALL="C")).stdout


def _relocs(path):
    """{(relocation type, symbol without version)} and {symbol: [offsets]} per type."""
    pairs = set()
    offsets = {}
    for line in _run(_tool("readelf"), "-rW", path).splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[2].startswith("R_"):
            continue
        sym = parts[4].split("@")[0]
        pairs.add((parts[2], sym))
        offsets.setdefault((parts[2], sym), []).append(int(parts[0], 16))
    return pairs, offsets


def _dynamic(path):
    return _run(_tool("readelf"), "-dW", path)


def _relro_range(path):
    for line in _run(_tool("readelf"), "-lW", path).splitlines():
        parts = line.split()
        if parts and parts[0] == "GNU_RELRO":
            vaddr, memsz = int(parts[2], 16), int(parts[5], 16)
            return vaddr, vaddr + memsz
    return None


def _undefined(path):
    out = _run(_tool("nm"), "-D", "--undefined-only", path)
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def _reloc_names():
    names = RELOC_NAMES.get(platform.machine())
    if names is None:
        skip_or_fail("relocation names not catalogued for %s" % platform.machine())
    return names


def _bind_now(dyn):
    return bool(re.search(r"\(FLAGS\)\s.*\bBIND_NOW\b", dyn)) or bool(
        re.search(r"\(FLAGS_1\)\s.*\bNOW\b", dyn))


@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_every_variant_imports_the_wrapped_calls(built, variant):
    path = built.library_path(variant)
    missing = set(WRAPPED) - _undefined(path)
    assert not missing
    assert "(SONAME)" in _dynamic(path)
    assert "[%s]" % built.soname(variant) in _dynamic(path)


@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_extension_links_the_library_through_origin(built, variant):
    mod = built.load(variant)
    dyn = _dynamic(mod.__file__)
    assert "Shared library: [%s]" % built.soname(variant) in dyn
    assert re.search(r"\((RUNPATH|RPATH)\)\s+Library r(un)?path: \[\$ORIGIN\]", dyn), dyn
    assert os.path.realpath(mod.library_path()) == os.path.realpath(built.library_path(variant))
    assert mod.VARIANT == variant
    assert mod.STYLES == built.STYLES


def test_lazy_binds_lazily_with_partial_relro(built):
    names = _reloc_names()
    path = built.library_path("lazy")
    dyn = _dynamic(path)
    assert not _bind_now(dyn), dyn
    assert _relro_range(path) is not None  # partial RELRO: .got.plt stays writable
    pairs, offsets = _relocs(path)
    start, end = _relro_range(path)
    for sym in WRAPPED:
        assert (names["jump_slot"], sym) in pairs, sym
        assert not any(start <= off < end for off in offsets[(names["jump_slot"], sym)]), sym


def test_now_is_full_relro(built):
    names = _reloc_names()
    path = built.library_path("now")
    dyn = _dynamic(path)
    assert re.search(r"\(FLAGS\)\s.*\bBIND_NOW\b", dyn), dyn
    assert re.search(r"\(FLAGS_1\)\s.*\bNOW\b", dyn), dyn
    assert _relro_range(path) is not None
    pairs, offsets = _relocs(path)
    start, end = _relro_range(path)
    for sym in WRAPPED:
        assert (names["jump_slot"], sym) in pairs, sym
        # the slot is read-only after start-up: the patcher must mprotect it
        assert all(start <= off < end for off in offsets[(names["jump_slot"], sym)]), sym


def test_noplt_calls_through_glob_dat_only(built):
    names = _reloc_names()
    path = built.library_path("noplt")
    assert _bind_now(_dynamic(path))
    pairs, offsets = _relocs(path)
    start, end = _relro_range(path)
    for sym in WRAPPED:
        assert (names["glob_dat"], sym) in pairs, sym
        assert (names["jump_slot"], sym) not in pairs, sym
        assert all(start <= off < end for off in offsets[(names["glob_dat"], sym)]), sym


def test_addrtaken_has_a_data_pointer_and_a_plt_slot(built):
    names = _reloc_names()
    path = built.library_path("addrtaken")
    pairs, offsets = _relocs(path)
    start, end = _relro_range(path)
    for sym in REQUEST_CALLS:
        assert (names["abs64"], sym) in pairs, sym  # the table in .data
        assert (names["jump_slot"], sym) in pairs, sym  # the thin wrapper's PLT call
        # the function-pointer table is plain writable data, outside RELRO
        assert not any(start <= off < end for off in offsets[(names["abs64"], sym)]), sym
    assert (names["jump_slot"], "sleep") in pairs
    assert (names["abs64"], "sleep") not in pairs


def test_fortify_imports_the_checking_twins(built):
    imports = _undefined(built.library_path("fortify"))
    missing = set(FORTIFY_IMPORTS) - imports
    assert not missing
    # the thin wrappers (unknown buffer sizes) still import the plain names
    assert {"recv", "read", "recvfrom", "poll", "ppoll"} <= imports


@pytest.mark.parametrize("variant", [v for v in samples.VARIANTS if v != "fortify"])
def test_other_variants_are_not_fortified(built, variant):
    chk = {s for s in _undefined(built.library_path(variant)) if s.endswith("_chk")}
    assert not chk


# ---------------------------------------------------------------------------------------
# Round trips, unpatched
# ---------------------------------------------------------------------------------------
DELAY_MS = 10


def _payloads(style):
    big = bytes((i * 7 + 3) & 0xFF for i in range(30_000 if style == "udp" else 200_000))
    return [b"", b"\x00g\xffh", big]


@pytest.mark.parametrize("release_gil", [True, False], ids=["nogil", "gil"])
@pytest.mark.parametrize("style", samples.STYLES)
@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_round_trip(built, server, variant, style, release_gil):
    mod = built.load(variant)
    for payload in _payloads(style):
        t0 = time.monotonic()
        got = mod.request(style, server.target(style), DELAY_MS, payload, release_gil=release_gil)
        elapsed = time.monotonic() - t0
        assert type(got) is bytes
        assert got == payload
        assert elapsed >= DELAY_MS / 1000.0 * 0.9


@pytest.mark.parametrize("style", samples.STREAM_STYLES)
def test_stream_styles_over_unix_socket(built, server, style):
    mod = built.load("now")
    payload = b"unix" * 5000
    assert mod.request(style, server.unix_path, 0, payload) == payload


def test_request_accepts_keywords_and_buffers(built, server):
    mod = built.load("lazy")
    got = mod.request(style="send_recv", target=server.tcp_port, delay_ms=0,
                      payload=bytearray(b"abc"), release_gil=False)
    assert got == b"abc"
    assert mod.request("send_recv", server.tcp_port, 0, memoryview(b"xyz")) == b"xyz"


@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_request_errors(built, server, variant):
    mod = built.load(variant)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    for style in samples.STREAM_STYLES:
        if style == "unix":
            continue
        with pytest.raises(OSError) as info:
            mod.request(style, port, 0, b"x")
        assert info.value.errno == errno.ECONNREFUSED, style
    with pytest.raises(OSError) as info:
        mod.request("unix", server.unix_path + ".missing", 0, b"x")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        mod.request("udp", server.udp_port, 0, bytes(70_000))
    assert info.value.errno == errno.EMSGSIZE
    with pytest.raises(ValueError):
        mod.request("no_such_style", server.tcp_port, 0, b"x")
    with pytest.raises(ValueError):
        mod.request("send_recv", server.tcp_port, -1, b"x")
    with pytest.raises(TypeError):
        mod.request("unix", server.tcp_port, 0, b"x")


def test_eintr_is_returned_not_retried(built, server):
    """A signal interrupting the blocking call surfaces as OSError(EINTR) (handler returns)."""
    import threading

    mod = built.load("now")
    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        for style in ("send_recv", "poll_nonblock", "select", "accept", "nanosleep"):
            timer = threading.Timer(0.05, signal.pthread_kill,
                                    (threading.get_ident(), signal.SIGUSR1))
            timer.start()
            try:
                with pytest.raises(OSError) as info:
                    mod.request(style, server.target(style), 1000, b"x")
                assert info.value.errno == errno.EINTR, style
            finally:
                timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_no_fd_leak(built, server):
    mod = built.load("noplt")
    before = len(os.listdir("/proc/self/fd"))
    for style in samples.STYLES:
        mod.request(style, server.target(style), 0, b"leak?")
        if style in samples.STREAM_STYLES and style != "unix":
            with pytest.raises(OSError):
                mod.request(style, 1, 0, b"x")
    assert len(os.listdir("/proc/self/fd")) == before


def test_released_gil_runs_concurrently(built, server):
    import threading

    mod = built.load("now")
    threads = [threading.Thread(target=mod.request, args=("send_recv", server.tcp_port, 200, b"c"))
               for _ in range(10)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 10 overlapped calls of 0.2 s; two of them serialized would take >= 0.6 s
    assert time.monotonic() - t0 < 2 * 0.2 + 0.2


# ---------------------------------------------------------------------------------------
# The server protocol and the ctypes view
# ---------------------------------------------------------------------------------------
def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "server closed early"
        data += chunk
    return data


def test_server_protocol(server):
    assert os.path.exists(server.unix_path)
    os.kill(server.pid, 0)
    with socket.create_connection(("127.0.0.1", server.tcp_port)) as s:
        # pipelined requests are answered in order
        s.sendall(encode_request(b"one", 30) + encode_request(b"two!", 0, op=OP_ECHO))
        for want in (b"one", b"two!"):
            n = decode_reply_header(_recv_exact(s, 4))
            assert _recv_exact(s, n) == want
        s.sendall(encode_request(b"", 10, op=OP_HANGUP))
        assert s.recv(10) == b""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        with socket.create_connection(("127.0.0.1", server.tcp_port)) as s:
            s.sendall(encode_request(b"back", 10, op=OP_CONNECT_BACK,
                                     port=lst.getsockname()[1]))
            conn, _ = lst.accept()
            with conn:
                assert _recv_exact(conn, 8)[4:] == b"back"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(encode_request(b"dgram", 5), ("127.0.0.1", server.udp_port))
        assert u.recv(100) == b"\x00\x00\x00\x05dgram"


def test_delay_server_stops_by_pid():
    srv = DelayServer().start()
    pid = srv.pid
    assert srv.proc.pid == pid
    unix_path = srv.unix_path
    srv.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(unix_path)


@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_ctypes_wrappers(built, server, variant):
    lib = built.ctypes_lib(variant)
    assert lib.ghs_variant() == variant.encode()
    names = []
    i = 0
    while lib.ghs_style_name(i) is not None:
        names.append(lib.ghs_style_name(i).decode())
        i += 1
    assert tuple(names) == built.STYLES
    for name in built.WRAPPERS:
        assert getattr(lib, name).argtypes is not None

    a, b = socket.socketpair()
    with a, b:
        buf = ctypes.create_string_buffer(16)
        assert lib.ghs_send(b.fileno(), b"hello", 5, 0) == 5
        fds = (samples.pollfd * 1)(samples.pollfd(a.fileno(), select.POLLIN, 0))
        assert lib.ghs_poll(fds, 1, 1000) == 1 and fds[0].revents & select.POLLIN
        assert lib.ghs_ppoll(fds, 1, None, None) == 1
        rset = samples.fd_set.of(a.fileno())
        assert lib.ghs_select(a.fileno() + 1, ctypes.byref(rset), None, None, None) == 1
        rset = samples.fd_set.of(a.fileno())
        assert lib.ghs_pselect(a.fileno() + 1, ctypes.byref(rset), None, None, None, None) == 1
        assert lib.ghs_recv(a.fileno(), buf, 16, 0) == 5 and buf.raw[:5] == b"hello"
        assert lib.ghs_write(b.fileno(), b"abc", 3) == 3
        assert lib.ghs_read(a.fileno(), buf, 16) == 3 and buf.raw[:3] == b"abc"
        assert lib.ghs_recv(a.fileno(), buf, 16, socket.MSG_DONTWAIT) == -1
        assert ctypes.get_errno() in (errno.EAGAIN, errno.EWOULDBLOCK)

        b1, b2 = ctypes.create_string_buffer(b"ab", 2), ctypes.create_string_buffer(b"cd", 2)
        iov = (samples.iovec * 2)((ctypes.addressof(b1), 2), (ctypes.addressof(b2), 2))
        assert lib.ghs_writev(b.fileno(), iov, 2) == 4
        assert lib.ghs_readv(a.fileno(), iov, 2) == 4 and b1.raw + b2.raw == b"abcd"
        msg = samples.msghdr(msg_iov=iov, msg_iovlen=2)
        assert lib.ghs_sendmsg(b.fileno(), ctypes.byref(msg), 0) == 4
        assert lib.ghs_recvmsg(a.fileno(), ctypes.byref(msg), 0) == 4

    with socket.socket() as c:
        addr, alen = samples.sockaddr(("127.0.0.1", server.tcp_port))
        assert lib.ghs_connect(c.fileno(), addr, alen) == 0
        c.sendall(encode_request(b"ct", 0))
        assert _recv_exact(c, 6) == b"\x00\x00\x00\x02ct"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        addr, alen = samples.sockaddr(("127.0.0.1", server.udp_port))
        req = encode_request(b"u", 0)
        assert lib.ghs_sendto(u.fileno(), req, len(req), 0, addr, alen) == len(req)
        buf = ctypes.create_string_buffer(16)
        assert lib.ghs_recvfrom(u.fileno(), buf, 16, 0, None, None) == 5
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        for accept4 in (False, True):
            c = socket.create_connection(lst.getsockname())
            fd = (lib.ghs_accept4(lst.fileno(), None, None, socket.SOCK_CLOEXEC) if accept4
                  else lib.ghs_accept(lst.fileno(), None, None))
            assert fd >= 0
            os.close(fd)
            c.close()

    t0 = time.monotonic()
    assert lib.ghs_usleep(20_000) == 0
    assert lib.ghs_nanosleep(ctypes.byref(samples.timespec.from_seconds(0.02)), None) == 0
    assert lib.ghs_clock_nanosleep(time.CLOCK_MONOTONIC, 0,
                                   ctypes.byref(samples.timespec.from_seconds(0.02)), None) == 0
    assert lib.ghs_sleep(0) == 0
    assert time.monotonic() - t0 >= 0.055

