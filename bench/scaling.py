"""Scenario 3: concurrency scaling -- N concurrent requests, each answered after 50 ms.

The server is the C delay server (bench/delayserver.c: one thread, epoll, a heap of deadlines),
which reports its own CPU time (OP_STATS, getrusage), so its share is measured, not guessed.
Ideal wall time of N concurrent requests: 50 ms whatever N.

One process per (how, N, round); each does, in this order:

1. connect    N connections opened at once (timed apart: not part of the figure)
2. requests   N concurrent requests, one per open connection, from N greenlets (or pool
              tasks) created inside the timed window, first spawn to last reply: THE figure
              (issue 13: 1000 x 50 ms requests, wall / ideal)
2b. gated     the same N requests from N greenlets already running, parked on a gate and
              released together (what is left without greenlet creation)
2c. spawn     N greenlets (or pool tasks) that do nothing: the hub's own per-greenlet cost
3. close      all N, the server's side of the teardown measured
4. per-request  N requests with one connection each (connect + request + close inside the
              window): the figure this scenario reported until 2026-12-01

For the requests phase it also records when the last request started and the tail beyond
50 ms, so that wall = last request started + 50 ms + tail; and machine-wide TCP counters
(listen-queue overflows and drops, SYN retransmissions) around each phase.

* ``greenhook/gevent``, ``greenhook/builtin``  greenlets; the C libraries patched by greenhook
* ``greenify``                     gevent greenlets; the C libraries patched by greenify
* ``threadpool (default)``         each call handed to gevent's hub threadpool (10 threads)
* ``threadpool (100)``             the same with maxsize 100
* ``ceiling``                      the same protocol over pure gevent sockets (no C, no hooks)
* ``c-floor``                      ghb_burst_floor (bench/ghbench.c): one C thread, one epoll
                                   set, no Python in the window: what the machine allows

The C clients: connect is ``ghs_connect`` of the sample library (libghsample_now.so, full
RELRO), a request on an open connection one ctypes call of ``ghb_request`` (bench/ghbench.c:
send, recv until complete, through the PLT; GIL released), a request with its own connection
``_ghsample_now.request("send_recv", port, 50, payload)``.
Peak RSS: VmHWM (see _common.peak_rss_kib for why not ``ru_maxrss``).
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MODES = ("greenhook-gevent", "greenhook-builtin", "greenify", "threadpool-default",
         "threadpool-100", "ceiling", "c-floor")
LABELS = {
    "greenhook-gevent": "greenhook, gevent hub",
    "greenhook-builtin": "greenhook, builtin hub",
    "greenify": "greenify",
    "threadpool-default": "gevent threadpool (default size)",
    "threadpool-100": "gevent threadpool (100 threads)",
    "ceiling": "pure gevent-socket client (no C, no hooks)",
    "c-floor": "C floor: one thread, epoll, no Python",
}
NS = (1, 10, 100, 1000)
DELAY_MS = 50
PAYLOAD = 100
TARGET_N, TARGET_X = 1000, 1.5
HDR = struct.Struct("!HHII")
MSG_NOSIGNAL = 0x4000


def tcp_counters():
    """Machine-wide TCP counters that show a connect storm going wrong: listen-queue
    overflows and drops (a full accept backlog), SYN retransmissions (each costs the client a
    1 s timeout), segments retransmitted.  From /proc/net/netstat and /proc/net/snmp."""
    want = {"TcpExt": ("ListenOverflows", "ListenDrops", "TCPSynRetrans"),
            "Tcp": ("RetransSegs",)}
    out = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for head, vals in zip(lines[::2], lines[1::2]):
            names, nums = head.split(), vals.split()
            prefix = names[0].rstrip(":")
            for k, v in zip(names[1:], nums[1:]):
                if k in want.get(prefix, ()):
                    out[k] = int(v)
    return out


def counters_delta(c0, c1):
    return {k: c1[k] - c0.get(k, 0) for k in c1}


MARK_START, MARK_END = "/@@ghbench-scaling-requests-start", "/@@ghbench-scaling-requests-end"


def _mark(path):
    """A syscall strace shows with a name nobody else uses: stat() of a path that does not
    exist.  The strace'd child counts the calls between two of these."""
    try:
        os.stat(path)
    except OSError:
        pass


# --- child -----------------------------------------------------------------------------------

def _runner(mode):
    """(run, info): ``run(fn, n)`` calls fn(0) ... fn(n-1) concurrently the way ``mode`` does
    (greenlets of the gevent or builtin hub, or gevent's threadpool) and returns the results."""
    if mode.startswith("threadpool"):
        import gevent

        pool = gevent.get_hub().threadpool
        if mode == "threadpool-100":
            pool.maxsize = 100

        def run(fn, n):
            rs = [pool.spawn(fn, i) for i in range(n)]
            return [r.get() for r in rs]
        return run, {"threads": pool.maxsize, "gated": None}
    if mode == "greenhook-builtin":
        from greenhook import hub

        spawn, sleep = hub.spawn, hub.sleep

        def joinall(gs):
            hub.joinall(gs)
            for g in gs:
                if g.exception is not None:
                    raise g.exception
    else:
        import gevent

        spawn, sleep = gevent.spawn, gevent.sleep

        def joinall(gs):
            gevent.joinall(gs, raise_error=True)

    def run(fn, n):
        gs = [spawn(fn, i) for i in range(n)]
        joinall(gs)
        return [g.value for g in gs]

    def run_gated(fn, n):
        """Start N greenlets, let each park on a gate (``gate.join()``), open it: the N calls
        of ``fn`` begin together in greenlets that already run.  Returns (results, the time
        the gate opened)."""
        parked, opened = [0], [0.0]

        def gate_fn():
            while parked[0] < n:
                sleep(0.001)
            opened[0] = time.perf_counter()

        def one(i):
            parked[0] += 1
            gate.join()
            return fn(i)

        gate = spawn(gate_fn)
        gs = [spawn(one, i) for i in range(n)]
        joinall(gs + [gate])
        return [g.value for g in gs], opened[0]

    return run, {"gated": run_gated}


def _c_client(mode, port, delay_ms):
    """connect / request / full request through C libraries greened by ``mode``: connect is the
    sample library's ``ghs_connect``, a request on an open connection ``ghb_request``
    (bench/ghbench.c: send, then recv until the reply is complete; one ctypes call, GIL
    released), a full request ``_ghsample_now.request("send_recv", ...)``."""
    import ctypes
    import socket

    from greenhook import samples

    mod = samples.load("now")
    lib = samples.ctypes_lib("now")
    bench_path = C.build_tool("ghbench")
    blib = ctypes.CDLL(bench_path, use_errno=True)
    if mode == "greenify":
        import greenify

        greenify.greenify()
        for path in (samples.library_path("now"), bench_path):
            if not greenify.patch_lib(path):
                raise RuntimeError("greenify.patch_lib(%s) returned False"
                                   % os.path.basename(path))
    elif mode.startswith("greenhook"):
        import greenhook

        greenhook.use("builtin" if mode == "greenhook-builtin" else "gevent")
        greenhook.patch_module(mod)
        greenhook.patch_library(bench_path)
    sa, salen = samples.sockaddr(("127.0.0.1", port))
    ghs_connect, ghb_request = lib.ghs_connect, blib.ghb_request
    ghb_request.restype = ctypes.c_int
    ghb_request.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                            ctypes.c_size_t]

    def connect():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # blocking, as a C driver's
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ghs_connect(s.fileno(), sa, salen) != 0:
            e = ctypes.get_errno()
            s.close()
            raise OSError(e, "ghs_connect: %s" % os.strerror(e))
        return s

    def request(s, req, want):
        buf = ctypes.create_string_buffer(want)
        rc = ghb_request(s.fileno(), req, len(req), buf, want)
        if rc:
            raise OSError(rc, "ghb_request: %s" % os.strerror(rc))
        return buf.raw

    def full(payload):
        return mod.request("send_recv", port, delay_ms, payload) == payload

    return connect, request, full


def _gevent_socket_client(port, delay_ms):
    """The same three operations in pure Python over gevent's own sockets."""
    import gevent.socket as gsock

    def connect():
        # A plain socket + connect to the IP literal: create_connection() would resolve the
        # address in gevent's threadpool (a futex storm that is not the server's).
        s = gsock.socket(gsock.AF_INET, gsock.SOCK_STREAM)
        s.setsockopt(gsock.IPPROTO_TCP, gsock.TCP_NODELAY, 1)
        s.connect(("127.0.0.1", port))
        return s

    def request(s, req, want):
        s.sendall(req)
        buf = b""
        while len(buf) < want:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("server closed")
            buf += chunk
        return buf

    def full(payload):
        s = connect()
        try:
            return request(s, HDR.pack(1, 0, delay_ms, len(payload)) + payload,
                           4 + len(payload))[4:] == payload
        finally:
            s.close()

    return connect, request, full


def _child_floor(p, n, port, delay_ms, reqs, replies):
    """Mode ``c-floor``: ghb_burst_floor (bench/ghbench.c), one C thread and one epoll set
    over N connections opened beforehand (sequential blocking connects, timed apart)."""
    import ctypes
    import socket

    lib = ctypes.CDLL(C.build_tool("ghbench"), use_errno=True)
    fn = lib.ghb_burst_floor
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                   ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    reqlen, replylen = len(reqs[0]), len(replies[0])
    allreq, allrep = b"".join(reqs), b"".join(replies)
    times = (ctypes.c_int64 * 2)()

    def burst(fds, k):
        arr = (ctypes.c_int * k)(*fds[:k])
        rc = fn(arr, k, allreq[:k * reqlen], reqlen, allrep[:k * replylen], replylen, times)
        if rc:
            raise OSError(rc, "ghb_burst_floor: %s" % os.strerror(rc))
        return times[0] / 1e9, times[1] / 1e9

    rss0 = C.rss_kib()
    stats = C.DelayServerStats(port)
    k0 = tcp_counters()
    s0, c0, t0 = stats.read(), time.process_time(), time.perf_counter()
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect(("127.0.0.1", port))
        conns.append(s)
    t1, c1 = time.perf_counter(), time.process_time()
    s1 = stats.read()
    res = {"n": n, "info": {}, "connect": {"wall": t1 - t0, "cpu_s": c1 - c0,
                                         "server_cpu_s": (s1[1] - s0[1]) / 1e6,
                                         "server_requests": 0,
                                         "tcp": counters_delta(k0, tcp_counters())}}
    fds = [s.fileno() for s in conns]
    burst(fds, 1)                                   # warm-up: one request
    s0, c0 = stats.read(), time.process_time()
    if p.get("mark"):
        _mark(MARK_START)
        burst(fds, n)
        _mark(MARK_END)
        return {"marked": n, "ok": True}, rss0
    last, wall = burst(fds, n)
    c1, s1 = time.process_time(), stats.read()
    res["requests"] = {"wall": wall, "cpu_s": c1 - c0, "server_cpu_s": (s1[1] - s0[1]) / 1e6,
                       "server_requests": s1[0] - s0[0], "last_start_ms": last * 1e3,
                       "tail_ms": (wall - last) * 1e3 - delay_ms}
    s0 = stats.read()
    t0 = time.perf_counter()
    for s in conns:
        s.close()
    res["close"] = {"wall": time.perf_counter() - t0}
    time.sleep(0.1)
    res["close"]["server_cpu_s"] = (stats.read()[1] - s0[1]) / 1e6
    stats.close()
    return res, rss0


def child(p):
    C.raise_nofile()
    mode, n, port = p["mode"], int(p["n"]), int(p["port"])
    delay_ms = int(p.get("delay_ms", DELAY_MS))
    payloads = [(b"%06d" % i) * (PAYLOAD // 6) for i in range(n)]
    reqs = [HDR.pack(1, 0, delay_ms, len(d)) + d for d in payloads]
    replies = [struct.pack("!I", len(d)) + d for d in payloads]
    if mode == "c-floor":
        res, rss0 = _child_floor(p, n, port, delay_ms, reqs, replies)
        return res if "marked" in res else _finish(res, n, delay_ms, rss0)
    try:
        if mode == "ceiling":
            connect, request, full = _gevent_socket_client(port, delay_ms)
        else:
            connect, request, full = _c_client(mode, port, delay_ms)
    except RuntimeError as exc:
        return {"error": str(exc)}
    run, info = _runner(mode)
    gated = info.pop("gated")
    conns = [None] * n
    started, done = [0.0] * n, [0.0] * n

    def open_i(i):
        conns[i] = connect()

    def request_i(i):
        started[i] = time.perf_counter()
        ok = request(conns[i], reqs[i], len(replies[i])) == replies[i]
        done[i] = time.perf_counter()
        return ok

    def full_i(i):
        return full(payloads[i])

    # Warm-up, one of each: imports, the hub, lazy binding and first-use costs stay out.
    run(open_i, 1)
    run(request_i, 1)
    conns[0].close()
    run(full_i, 1)
    rss0 = C.rss_kib()
    # A plain blocking Python socket (never greened), opened before everything measured.
    stats = C.DelayServerStats(port) if p.get("server_stats", True) else None

    def server():
        return stats.read() if stats else (0, 0)

    def phase(fn):
        k0 = tcp_counters()
        s0, c0, t0 = server(), time.process_time(), time.perf_counter()
        out = run(fn, n)
        t1, c1 = time.perf_counter(), time.process_time()
        s1 = server()
        return out, t0, {"wall": t1 - t0, "cpu_s": c1 - c0,
                         "server_cpu_s": (s1[1] - s0[1]) / 1e6 if stats else None,
                         "server_requests": s1[0] - s0[0],
                         "tcp": counters_delta(k0, tcp_counters())}

    res = {"n": n, "info": info}
    # 1. connect: N connections opened concurrently (connect + the server's accept).
    _, _, ph = phase(open_i)
    res["connect"] = ph
    # 2. requests: N concurrent 50 ms requests on the open connections -- the figure.
    if p.get("mark"):                               # under strace: count this phase only
        _mark(MARK_START)
        ok = run(request_i, n)
        _mark(MARK_END)
        return {"marked": n, "ok": all(ok)}
    ok, t0, ph = phase(request_i)
    if not all(ok):
        return {"error": "%d of %d replies were wrong" % (ok.count(False), n)}
    last = max(started) - t0
    lat = sorted(d - s for d, s in zip(done, started))
    ph.update({"last_start_ms": last * 1e3, "lat_p50_ms": C.percentile(lat, 50) * 1e3,
               "lat_max_ms": lat[-1] * 1e3, "tail_ms": (ph["wall"] - last) * 1e3 - delay_ms})
    res["requests"] = ph
    # 2b. the same N requests again from N greenlets that already run, parked on a gate and
    #     released together: no greenlet creation in the window (not for the thread pools).
    if gated is not None:
        s0, c0 = server(), time.process_time()
        ok, t0 = gated(request_i, n)
        t1, c1 = max(done), time.process_time()
        s1 = server()
        if not all(ok):
            return {"error": "gated: %d of %d replies were wrong" % (ok.count(False), n)}
        last = max(started) - t0
        res["requests_gated"] = {
            "wall": t1 - t0, "cpu_s": c1 - c0,
            "server_cpu_s": (s1[1] - s0[1]) / 1e6 if stats else None,
            "server_requests": s1[0] - s0[0], "last_start_ms": last * 1e3,
            "tail_ms": (t1 - t0 - last) * 1e3 - delay_ms}
    # 2c. what N greenlets (or pool tasks) that do nothing cost: spawn, run, join.
    _, _, ph = phase(lambda i: None)
    res["spawn_noop"] = {"wall": ph["wall"], "cpu_s": ph["cpu_s"]}
    res["peak_rss_open_kib"] = C.peak_rss_kib()
    # 3. close (client side; the server sees EOF and closes its end), then a pause so the
    #    server's half of the teardown lands in this phase, not the next.
    s0 = server()
    t0 = time.perf_counter()
    for s in conns:
        s.close()
    res["close"] = {"wall": time.perf_counter() - t0}
    time.sleep(0.1)
    s1 = server()
    res["close"]["server_cpu_s"] = (s1[1] - s0[1]) / 1e6 if stats else None
    # 4. one connection per request (connect, send, recv, close), N at once: the figure
    #    this scenario reported before 2026-12-01.  Skipped where it adds nothing but time
    #    (p["per_request"] false: 10 threads at N=1000 are 100 waves of 50 ms either way).
    if not p.get("per_request", True):
        if stats:
            stats.close()
        return _finish(res, n, delay_ms, rss0)
    ok, _, ph = phase(full_i)
    if not all(ok):
        return {"error": "per-request connections: %d of %d replies were wrong"
                % (ok.count(False), n)}
    res["per_request"] = ph
    if stats:
        stats.close()
    return _finish(res, n, delay_ms, rss0)


def _finish(res, n, delay_ms, rss0):
    for key in ("connect", "requests", "requests_gated", "close", "per_request"):
        ph = res.get(key)
        if ph is None:
            continue
        if ph.get("server_cpu_s") is not None:
            ph["server_cpu_us_per_req"] = ph["server_cpu_s"] * 1e6 / n
        if key in ("requests", "requests_gated", "per_request"):
            ph["x_ideal"] = ph["wall"] / (delay_ms / 1000.0)
    peak = C.peak_rss_kib()
    res.update({"wall": res["requests"]["wall"], "x_ideal": res["requests"]["x_ideal"],
                "rss_mib": peak / 1024.0, "rss_growth_mib": max(0, peak - rss0) / 1024.0})
    return res


# --- parent ----------------------------------------------------------------------------------

GREEN = ("greenhook-gevent", "greenhook-builtin", "greenify", "ceiling")
PHASE_FIELDS = {
    "requests": ("wall", "x_ideal", "cpu_s", "server_cpu_us_per_req", "last_start_ms",
                 "tail_ms", "lat_p50_ms", "lat_max_ms"),
    "requests_gated": ("wall", "x_ideal", "cpu_s", "server_cpu_us_per_req", "last_start_ms",
                       "tail_ms"),
    "spawn_noop": ("wall", "cpu_s"),
    "connect": ("wall", "cpu_s", "server_cpu_us_per_req"),
    "close": ("wall", "server_cpu_us_per_req"),
    "per_request": ("wall", "x_ideal", "cpu_s", "server_cpu_us_per_req"),
}
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")


def cases(cfg):
    ns = (1, 10, 100) if cfg["quick"] else NS
    out = []
    for mode in MODES:
        for n in ns:
            out.append(C.Case("%s/%d" % (mode, n), "scaling.py",
                              {"mode": mode, "n": n, "port": cfg["delay_port"],
                               "server_pid": cfg.get("delay_pid"),
                               "per_request": not (mode == "threadpool-default" and n >= 1000)},
                              timeout=120))
    return out


STRACE_MODES = ("greenhook-gevent", "greenhook-builtin", "greenify", "ceiling", "c-floor")
STRACE_N = 1000


def once_cases(cfg):
    """Run once (the counts do not vary): syscalls per request of the requests phase."""
    n = 100 if cfg["quick"] else STRACE_N
    return [C.Case("strace/" + m, "scaling.py",
                   {"mode": "strace", "target": m, "n": n, "port": cfg["delay_port"]},
                   timeout=300) for m in STRACE_MODES]


def strace_child(p):
    """Syscalls per request of mode p["target"] in the requests phase (N requests on open
    connections): ``strace -f`` of one child run, the calls between its two markers counted
    by name (a call is counted where it returns; failed ones apart)."""
    import json
    import re
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("strace"):
        return {"error": "strace is not installed (scripts/install_system_deps.sh installs it)"}
    n = int(p["n"])
    d = tempfile.mkdtemp(prefix="ghbench-strace-")
    try:
        out = os.path.join(d, "strace.txt")
        params = json.dumps({"mode": p["target"], "n": n, "port": p["port"], "mark": True})
        proc = subprocess.run(["strace", "-f", "-qq", "-o", out, sys.executable,
                               os.path.abspath(__file__), "child", params],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=240)
        if proc.returncode != 0 or '"ok": true' not in proc.stdout:
            return {"error": "strace'd child failed: %s" % proc.stderr[-500:]}
        with open(out) as f:
            lines = f.read().splitlines()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    try:
        a = next(i for i, ln in enumerate(lines) if MARK_START in ln)
        b = next(i for i, ln in enumerate(lines) if MARK_END in ln)
    except StopIteration:
        return {"error": "markers not found in the strace output"}
    calls, errs = {}, {}
    for ln in lines[a + 1:b]:
        if "<unfinished ...>" in ln:
            continue
        m = re.match(r"^\d+\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()", ln)
        if not m:
            continue
        name = m.group(1) or m.group(2)
        calls[name] = calls.get(name, 0) + 1
        if re.search(r"= -1 E[A-Z]+", ln):
            errs[name] = errs.get(name, 0) + 1
    per = {k: [round(v / n, 2), round(errs.get(k, 0) / n, 2)] for k, v in calls.items()
           if v / n >= 0.05}
    return {"per_req": per, "total": round(sum(calls.values()) / n, 2),
            "failed": round(sum(errs.values()) / n, 2), "n": n}


def summarize(results, cfg):
    ns = (1, 10, 100) if cfg["quick"] else NS
    figs = {}
    tcp = {ph: {k: 0 for k in TCP_COUNTERS} for ph in ("connect", "per_request", "requests")}
    for mode in MODES:
        figs[mode] = {}
        for n in ns:
            rs = results.get("%s/%d" % (mode, n), [])
            ok = [r for r in rs if "error" not in r]
            f = {"wall": C.field_stats(rs, "wall"), "x_ideal": C.field_stats(rs, "x_ideal"),
                 "rss_mib": C.field_stats(rs, "rss_mib"),
                 "rss_growth_mib": C.field_stats(rs, "rss_growth_mib"),
                 "errors": C.errors(rs)}
            for ph, fields in PHASE_FIELDS.items():
                f[ph] = {k: C.stats([(r.get(ph) or {}).get(k) for r in ok]) for k in fields}
            figs[mode][str(n)] = f
            for r in ok:
                for ph in ("connect", "per_request", "requests", "requests_gated"):
                    acc = tcp["requests" if ph == "requests_gated" else ph]
                    for k, v in ((r.get(ph) or {}).get("tcp") or {}).items():
                        if k in acc:
                            acc[k] += v
    top = str(max(ns))
    sysc = {}
    for m in STRACE_MODES:
        rs = [r for r in results.get("strace/" + m, []) if "error" not in r]
        if rs:
            sysc[m] = {"total": rs[0]["total"], "failed": rs[0]["failed"],
                       "per_req": rs[0]["per_req"], "n": rs[0]["n"]}

    def med(mode, ph):
        return figs[mode][top][ph]["x_ideal"]["median"]

    def le(v):
        return None if int(top) < TARGET_N or v is None else v <= TARGET_X

    return {
        "title": "Concurrency scaling (N requests, 50 ms server delay)",
        "ns": list(ns),
        "delay_ms": DELAY_MS,
        "figures": figs,
        "tcp_counters": tcp,
        "syscalls": sysc,
        "target": {"what": "%d concurrent 50 ms requests on open connections within %.1fx "
                           "ideal (greenhook, gevent hub, median; greenlets spawned inside the "
                           "timed window)" % (TARGET_N, TARGET_X),
                   "met": le(med("greenhook-gevent", "requests")),
                   "builtin_met": le(med("greenhook-builtin", "requests")),
                   "gated_met": le(med("greenhook-gevent", "requests_gated")),
                   "gated_builtin_met": le(med("greenhook-builtin", "requests_gated"))},
    }


def _ms(s):
    """'median (min–max)' of a stats dict of seconds, in ms."""
    if not s or s.get("median") is None:
        return "—"
    return C.mmm({k: (v * 1e3 if k in ("median", "min", "max") else v) for k, v in s.items()})


def _wall_x(f):
    """'wall s (min–max) (x ideal)' of a phase's figures."""
    if not f or f["wall"]["median"] is None:
        return "—"
    return "%s s (%s)" % (C.mmm(f["wall"]), C.fmt_ratio(f["x_ideal"]["median"]))


def report(sec):
    ns = [str(n) for n in sec["ns"]]
    top = ns[-1]
    figs = sec["figures"]
    modes = [m for m in MODES if m in figs]
    head = ["how"] + ["N=%s" % n for n in ns]

    def table(ph, only=None):
        rows = []
        for m in modes:
            if only and m not in only:
                continue
            rows.append([LABELS[m]] + [_wall_x(figs[m][n].get(ph)) for n in ns])
        return C.md_table(head, rows)

    md = ["Each run (one process per how, N and round) does, against the C delay server "
          "(`bench/delayserver.c`), in this order: **connect** N connections at once; "
          "**requests**: N concurrent requests answered after 50 ms, one per open connection, "
          "timed from the first spawn to the last reply (the N greenlets or thread-pool tasks "
          "are created inside the window; connection setup is not); the same N requests again "
          "from N greenlets **already running**, parked on a gate and released together; "
          "**close** all; then N requests with **one connection per request** (connect, send, "
          "recv, close inside the window: the figure this scenario reported before "
          "2026-12-01; not run for the default-size thread pool at N=1000, 100 waves of "
          "50 ms either way). Ideal: 50 ms whatever N. The C clients go through C libraries "
          "greened by greenhook or greenify: `ghs_connect` of the sample library, one "
          "`ghb_request` (`bench/ghbench.c`: send, recv until complete) per request, "
          "`_ghsample_now.request(\"send_recv\", ...)` per connection; the gevent-socket "
          "client does the same in Python; the C floor sends all N requests from one C thread "
          "and collects the replies with one epoll set (connections opened beforehand, "
          "sequentially).", "",
          "**Requests on open connections** (the figure of issue 13): wall, median (min–max), "
          "and median wall / ideal 50 ms:", "", table("requests"), "",
          "The same requests from greenlets already running (no greenlet creation in the "
          "window; released together through `Greenlet.join()` on a gate greenlet):", "",
          table("requests_gated", GREEN), ""]
    rows = []
    for m in modes:
        f = figs[m][top]
        r, g, sp = f["requests"], f["requests_gated"], f["spawn_noop"]
        rows.append([LABELS[m], _wall_x(r), C.mmm(r["last_start_ms"]), C.mmm(r["tail_ms"]),
                     C.mmm(r["lat_max_ms"]), _ms(sp["wall"]), _ms(r["cpu_s"]),
                     C.mmm(r["server_cpu_us_per_req"]), C.mmm(g["last_start_ms"]),
                     C.mmm(g["tail_ms"])])
    md += ["Where the N=%s wall time goes: wall = *last request started* + 50 ms + *tail* "
           "(the last reply's own latency beyond 50 ms: the server's timer, rounded up to the "
           "millisecond, and replies queued behind others). *Last request started* is the "
           "client's time to create N greenlets (or queue N pool tasks) and issue N requests; "
           "*spawn + join N no-op* is what the hub charges for N greenlets that do nothing "
           "(on CPython 3.11+ a new greenlet maps and unmaps a 16 KiB frame stack chunk: one "
           "mmap + munmap + page fault each); CPU is the client's during the burst (ms) and "
           "the server's per request (µs, its own getrusage: recv, timer, send, and the "
           "kernel's loopback delivery of the reply to the client, charged to the sender); "
           "the C floor is what this machine, kernel and server allow. All medians (min–max), "
           "ms unless said:" % top, "",
           C.md_table(["how", "wall (x ideal)", "last request started", "tail beyond 50 ms",
                       "slowest request", "spawn + join N no-op", "client CPU",
                       "server CPU µs / request", "gated: last started", "gated: tail"], rows),
           ""]
    sysc = sec.get("syscalls") or {}
    if sysc:
        rows = []
        for m in STRACE_MODES:
            v = sysc.get(m)
            if not v:
                continue
            rows.append([LABELS[m], C.fmt(v["total"]), C.fmt(v["failed"]),
                         C.syscalls_by_name(v["per_req"])])
        md += ["Syscalls per request in the requests phase (N=%s; one `strace -f` run per how, "
               "the calls between two marker calls counted by name; exact, load does not "
               "change them). The `mmap` + `munmap` per request are the new greenlet's frame "
               "stack chunk (CPython 3.11+), paid by every greenlet client; the C floor's "
               "`epoll_ctl` is its registration of each connection, done before its clock "
               "starts:"
               % next(iter(sysc.values()))["n"], "",
               C.md_table(["how", "per request", "failed", "by name"], rows), ""]
    md += ["**One connection per request** (connect + request + close inside the window, "
           "N at once): wall and wall / ideal:", "", table("per_request"), ""]
    rows = []
    for m in modes:
        f = figs[m][top]
        rows.append([LABELS[m], _ms(f["connect"]["wall"]), _ms(f["connect"]["cpu_s"]),
                     C.mmm(f["connect"]["server_cpu_us_per_req"]),
                     C.mmm(f["close"]["server_cpu_us_per_req"]),
                     C.mmm(f["per_request"]["server_cpu_us_per_req"])])
    tcp = sec.get("tcp_counters") or {}

    def counts(ph):
        c = tcp.get(ph)
        if not isinstance(c, dict):
            return "—"
        return " / ".join(str(c.get(k, "—")) for k in TCP_COUNTERS)

    md += ["Connection setup and teardown at N=%s, measured apart: connecting N sockets at "
           "once (the C floor: one after the other, blocking), the client's CPU for it, and "
           "the server's CPU µs per connection for accept (connect phase), for its side of "
           "the close (EOF, close, FIN/ACK), and per request when every request brings its own "
           "connection (accept + request + close: what the server's figure was before "
           "2026-12-01). Listen-queue overflows / drops / SYN retransmissions, summed over "
           "all runs and N (`/proc/net/netstat`; the counters are machine-wide, so the "
           "requests phases, which open no connection, show what other processes on the "
           "machine caused meanwhile): connect phases %s, one-connection-per-request phases "
           "%s, requests phases %s. A SYN retransmission of this client would show as a "
           "phase over 1 s." % (top, counts("connect"), counts("per_request"),
                                counts("requests")), "",
           C.md_table(["how", "connect N, ms", "client CPU, ms", "server µs / accept",
                       "server µs / close", "server µs / request, one connection each"],
                      rows), ""]
    rows = []
    for m in modes:
        f = figs[m]
        rows.append([LABELS[m]] + ["%s (+%s)" % (C.fmt(f[n]["rss_mib"]["median"]),
                                                C.fmt(f[n]["rss_growth_mib"]["median"]))
                                   for n in ns])
    md += ["Peak RSS of the client process over the whole run, MiB, median (+ growth after "
           "the warm-up):", "", C.md_table(head, rows), ""]
    t = sec["target"]
    md.append("Target: %s — %s (builtin hub: %s). With the greenlets already running: "
              "gevent hub %s, builtin hub %s." % (
                  t["what"], C.verdict(t["met"]), C.verdict(t.get("builtin_met")),
                  C.verdict(t.get("gated_met")), C.verdict(t.get("gated_builtin_met"))))
    return "\n".join(md)


def plot(sec, plt, outdir):
    ns = sec["ns"]
    paths = []
    for key, ylabel, fname, log in (
            ("wall", "wall time (s), median with min-max", "scaling_wall.png", True),  # requests
            ("rss_mib", "peak RSS (MiB), median with min-max", "scaling_rss.png", False)):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for mode in MODES:
            f = sec["figures"][mode]
            med = [f[str(n)][key]["median"] for n in ns]
            if any(v is None for v in med):
                continue
            lo = [m - f[str(n)][key]["min"] for m, n in zip(med, ns)]
            hi = [f[str(n)][key]["max"] - m for m, n in zip(med, ns)]
            ax.errorbar(ns, med, yerr=[lo, hi], marker="o", capsize=3, label=LABELS[mode])
        if key == "wall":
            ax.axhline(sec["delay_ms"] / 1000.0, color="grey", ls="--", lw=1, label="ideal (50 ms)")
            ax.axhline(TARGET_X * sec["delay_ms"] / 1000.0, color="grey", ls=":", lw=1,
                       label="%.1fx ideal (target)" % TARGET_X)
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("concurrent requests N")
        ax.set_ylabel(ylabel)
        ax.set_title("Concurrency scaling: %s" % (
            "N x 50 ms requests on open connections" if key == "wall" else "memory"))
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(outdir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _child(p):
    return strace_child(p) if p["mode"] == "strace" else child(p)


if __name__ == "__main__":
    C.child_main(_child)
