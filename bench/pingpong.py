"""Scenario 2: wait/wake round trip -- two greenlets ping-pong 1 byte over a socketpair.

Every receive finds nothing there yet, so every call parks its greenlet on the hub and is
woken by the peer's send: a round trip is two parks and two wakes.

* ``greenhook/gevent``  C loop (``ghs_bench_pingpong``) in the patched sample library, one
                        ctypes call per greenlet; gevent hub
* ``greenhook/builtin`` the same on greenhook's own hub (for information)
* ``greenhook/gevent, ctypes per call`` Python loop calling ``ghs_send``/``ghs_recv`` through
                        ctypes (each call pays ctypes and the GIL release; for information)
* ``gevent sockets``    Python loop on ``gevent.socket.socketpair()`` (what a pure-Python
                        driver on gevent does)
* ``greenify``          the C loop with douban's greenify patching the library
* ``C floor``           no greenlets, no Python in the loop: bench/ghbench.c's
                        ``ghb_pingpong_floor`` drives both ends of the same socketpair in one
                        thread with one epoll set (2 send + 2 epoll_wait + 2 recv per round
                        trip).  Measured in the same run, so the ratios to it are like for like.

Syscalls per round trip: each of ``STRACE_MODES`` is run once more under ``strace -f -c`` with
``STRACE_N`` and then 5x as many round trips (same warm-up); the difference of the two counts
over the difference of round trips is the syscalls one round trip costs (start-up, imports and
warm-up cancel out), by name and with the failed ones (EAGAIN, EEXIST...) counted apart.

Figures: microseconds per round trip (wall / round trips) after a warm-up, and the process's
CPU time per round trip (both ends live in this one process, so on a machine shared with
other load the CPU figure is the steadier one).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MODES = ("greenhook-gevent", "greenhook-builtin", "greenhook-gevent-ctypes", "gevent-socket",
         "greenify", "c-floor")
STRACE_MODES = ("c-floor", "greenhook-gevent", "greenhook-builtin", "gevent-socket")
STRACE_N = 500
# Targets of issue 13 (ratios of medians in one run).
TARGET_GEVENT_VS_SOCKETS = 0.85
TARGET_BUILTIN_VS_SOCKETS = 0.70
TARGET_VS_FLOOR = 1.6
LABELS = {
    "greenhook-gevent": "greenhook, gevent hub (C loop)",
    "greenhook-builtin": "greenhook, builtin hub (C loop)",
    "greenhook-gevent-ctypes": "greenhook, gevent hub (ctypes per call)",
    "gevent-socket": "gevent's own sockets (Python loop)",
    "greenify": "greenify (C loop)",
    "c-floor": "C floor: epoll ping-pong, one thread, no greenlets",
}


# --- child -----------------------------------------------------------------------------------

def child(p):
    import ctypes
    import socket

    mode = p["mode"]
    n = int(p["n"])
    warm = int(p.get("warm", max(100, n // 10)))

    if mode == "c-floor":
        lib = ctypes.CDLL(C.build_tool("ghbench"), use_errno=True)
        lib.ghb_pingpong_floor.restype = ctypes.c_long
        lib.ghb_pingpong_floor.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long]
        a, b = socket.socketpair()

        def rnd(k):
            r = lib.ghb_pingpong_floor(a.fileno(), b.fileno(), k)
            if r != k:
                raise OSError(-r if r < 0 else 0, "ghb_pingpong_floor returned %d" % r)

        return _time(rnd, n, warm)

    if mode == "gevent-socket":
        import gevent
        import gevent.socket

        a, b = gevent.socket.socketpair()

        def ping(k):
            send, recv = a.send, a.recv
            for _ in range(k):
                send(b"p")
                if recv(1) != b"p":
                    raise RuntimeError("bad reply")

        def pong(k):
            send, recv = b.send, b.recv
            for _ in range(k):
                send(recv(1))

        def rnd(k):
            g = [gevent.spawn(pong, k), gevent.spawn(ping, k)]
            gevent.joinall(g, raise_error=True)

        return _time(rnd, n, warm)

    from greenhook import samples

    path = samples.library_path("now")
    lib = ctypes.CDLL(path, use_errno=True)
    lib.ghs_bench_pingpong.restype = ctypes.c_long
    lib.ghs_bench_pingpong.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_int]
    lib.ghs_send.restype = lib.ghs_recv.restype = ctypes.c_ssize_t
    lib.ghs_send.argtypes = lib.ghs_recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                                                     ctypes.c_int]
    a, b = socket.socketpair()
    fa, fb = a.fileno(), b.fileno()

    if mode == "greenify":
        import gevent
        import greenify

        greenify.greenify()
        if not greenify.patch_lib(path):
            return {"error": "greenify.patch_lib returned False"}
        spawn, joinall = gevent.spawn, lambda g: gevent.joinall(g, raise_error=True)
    else:
        import greenhook

        if mode == "greenhook-builtin":
            from greenhook import hub

            greenhook.use("builtin")
            spawn, joinall = hub.spawn, hub.joinall
        else:
            import gevent

            greenhook.use("gevent")
            spawn, joinall = gevent.spawn, lambda g: gevent.joinall(g, raise_error=True)
        greenhook.patch_library(path)

    def c_side(fd, k, initiator):
        r = lib.ghs_bench_pingpong(fd, k, initiator)
        if r != k:
            raise OSError(-r if r < 0 else 0, "ghs_bench_pingpong returned %d" % r)

    if mode == "greenhook-gevent-ctypes":
        MSG_NOSIGNAL = 0x4000
        bufa, bufb = ctypes.create_string_buffer(b"p", 1), ctypes.create_string_buffer(1)
        send, recv = lib.ghs_send, lib.ghs_recv

        def ping(k):
            for _ in range(k):
                if send(fa, bufa, 1, MSG_NOSIGNAL) != 1 or recv(fa, bufa, 1, 0) != 1:
                    raise OSError(ctypes.get_errno(), "ping")

        def pong(k):
            for _ in range(k):
                if recv(fb, bufb, 1, 0) != 1 or send(fb, bufb, 1, MSG_NOSIGNAL) != 1:
                    raise OSError(ctypes.get_errno(), "pong")

        def rnd(k):
            g = [spawn(pong, k), spawn(ping, k)]
            joinall(g)
            for x in g:
                if getattr(x, "exception", None) is not None:
                    raise x.exception
    else:
        def rnd(k):
            g = [spawn(c_side, fb, k, 0), spawn(c_side, fa, k, 1)]
            joinall(g)
            for x in g:
                if getattr(x, "exception", None) is not None:
                    raise x.exception

    res = _time(rnd, n, warm)
    if mode.startswith("greenhook"):
        st = greenhook.stats()
        res["waits"] = sum(v["waits"] for v in st.values())
        res["blocked"] = sum(v["blocked"] for v in st.values())
    return res


def _time(rnd, n, warm):
    rnd(warm)
    c0 = time.process_time()
    t0 = time.perf_counter()
    rnd(n)
    dt = time.perf_counter() - t0
    dc = time.process_time() - c0
    # Everything happens in this one process (both ends of the socketpair), so its CPU time
    # is the cost of the round trips; wall time also counts being preempted by other load.
    return {"us_per_rt": dt / n * 1e6, "cpu_us_per_rt": dc / n * 1e6, "wall": dt, "n": n}


# --- parent ----------------------------------------------------------------------------------

def cases(cfg):
    n = 2000 if cfg["quick"] else 20000
    return [C.Case(m, "pingpong.py", {"mode": m, "n": n}, timeout=120) for m in MODES]


def once_cases(cfg):
    """Run once (counts do not vary): syscalls per round trip under strace."""
    return [C.Case("strace/" + m, "pingpong.py", {"mode": "strace", "target": m, "n": STRACE_N},
                   timeout=300) for m in STRACE_MODES]


def strace_counts(target, n):
    """{syscall: [calls, errors]} of one child run of ``target`` with n round trips."""
    import json
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("strace"):
        raise RuntimeError("strace is not installed (scripts/install_system_deps.sh installs it)")
    d = tempfile.mkdtemp(prefix="ghbench-strace-")
    try:
        out = os.path.join(d, "strace.txt")
        params = json.dumps({"mode": target, "n": n, "warm": 100})
        subprocess.run(["strace", "-f", "-c", "-o", out, sys.executable, os.path.abspath(__file__),
                        "child", params], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=240)
        with open(out) as f:
            text = f.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (5, 6) or parts[-1] == "total" or not parts[3].isdigit():
            continue
        try:
            float(parts[0])
        except ValueError:
            continue
        counts[parts[-1]] = [int(parts[3]), int(parts[4]) if len(parts) == 6 else 0]
    return counts


def strace_child(p):
    """Syscalls per round trip of mode p["target"]: two strace'd runs, n and 5n round trips."""
    n1 = int(p["n"])
    n2 = 5 * n1
    c1, c2 = strace_counts(p["target"], n1), strace_counts(p["target"], n2)
    per = {}
    for name in set(c1) | set(c2):
        calls = (c2.get(name, [0, 0])[0] - c1.get(name, [0, 0])[0]) / float(n2 - n1)
        errs = (c2.get(name, [0, 0])[1] - c1.get(name, [0, 0])[1]) / float(n2 - n1)
        if calls >= 0.05:
            per[name] = [round(calls, 2), round(errs, 2)]
    return {"per_rt": per, "total": round(sum(v[0] for v in per.values()), 2),
            "failed": round(sum(v[1] for v in per.values()), 2), "n": [n1, n2]}


def summarize(results, cfg):
    figs = {m: C.field_stats(results[m], "us_per_rt") for m in MODES if m in results}
    cpu = {m: C.field_stats(results[m], "cpu_us_per_rt") for m in MODES if m in results}
    modes = [m for m in MODES if m in figs]
    base = figs["gevent-socket"]["median"]
    floor = figs.get("c-floor", {}).get("median")
    ratios = {m: C.ratio(figs[m]["median"], base) for m in modes}
    cpu_ratios = {m: C.ratio(cpu[m]["median"], cpu["gevent-socket"]["median"]) for m in modes}
    floor_ratios = {m: C.ratio(figs[m]["median"], floor) for m in modes}
    sysc = {}
    for m in STRACE_MODES:
        rs = [r for r in results.get("strace/" + m, []) if "error" not in r]
        if rs:
            sysc[m] = rs[-1]
    fl = sysc.get("c-floor", {}).get("total")
    for m, v in sysc.items():
        v["beyond_floor"] = None if fl is None else round(v["total"] - fl, 2)

    def le(r, t):
        return r is not None and r <= t

    return {
        "title": "Wait/wake round trip (µs per ping-pong, two greenlets, socketpair)",
        "modes": modes,
        "n": cases(cfg)[0].params["n"],
        "figures": figs,
        "cpu": cpu,
        "ratio_vs_gevent_socket": ratios,
        "cpu_ratio_vs_gevent_socket": cpu_ratios,
        "ratio_vs_floor": floor_ratios,
        "syscalls": sysc,
        "errors": {m: C.errors(results[m]) for m in results},
        "target": {"what": "greenhook (gevent hub) no slower than gevent's own sockets",
                   "met": le(ratios["greenhook-gevent"], 1.0),
                   "met_cpu": le(cpu_ratios["greenhook-gevent"], 1.0)},
        "targets13": {
            "gevent_vs_sockets": le(ratios["greenhook-gevent"], TARGET_GEVENT_VS_SOCKETS),
            "builtin_vs_sockets": le(ratios["greenhook-builtin"], TARGET_BUILTIN_VS_SOCKETS),
            "gevent_vs_floor": le(floor_ratios.get("greenhook-gevent"), TARGET_VS_FLOOR),
            "builtin_vs_floor": le(floor_ratios.get("greenhook-builtin"), TARGET_VS_FLOOR),
        },
    }


def report(sec):
    modes = sec.get("modes", MODES)
    rows = [[LABELS[m], C.mmm(sec["figures"][m]), C.fmt_ratio(sec["ratio_vs_gevent_socket"][m]),
             C.fmt_ratio(sec.get("ratio_vs_floor", {}).get(m)),
             C.mmm(sec["cpu"][m]), C.fmt_ratio(sec["cpu_ratio_vs_gevent_socket"][m])]
            for m in modes]
    md = [C.md_table(["how", "µs per round trip (wall)", "vs gevent's sockets", "vs C floor",
                      "CPU µs per round trip", "vs gevent's sockets (CPU)"], rows), ""]
    md.append("%d round trips per process after a warm-up. Target: %s (median wall) — %s; "
              "on CPU time: %s." % (sec["n"], sec["target"]["what"], C.verdict(sec["target"]["met"]),
                                    C.verdict(sec["target"].get("met_cpu"))))
    t13 = sec.get("targets13")
    if t13:
        md += ["", "Issue 13's targets (median wall, same run): gevent hub ≤ %.2fx gevent's "
               "sockets — %s; builtin hub ≤ %.2fx gevent's sockets — %s; ≤ %.1fx the C floor: "
               "gevent hub %s, builtin hub %s." % (
                   TARGET_GEVENT_VS_SOCKETS, C.verdict(t13["gevent_vs_sockets"]),
                   TARGET_BUILTIN_VS_SOCKETS, C.verdict(t13["builtin_vs_sockets"]),
                   TARGET_VS_FLOOR, C.verdict(t13["gevent_vs_floor"]),
                   C.verdict(t13["builtin_vs_floor"]))]
    sysc = sec.get("syscalls") or {}
    if sysc:
        rows = []
        for m in STRACE_MODES:
            v = sysc.get(m)
            if not v:
                rows.append([LABELS[m], "—", "—", "—", "not measured"])
                continue
            detail = C.syscalls_by_name(v["per_rt"])
            rows.append([LABELS[m], C.fmt(v["total"]), C.fmt(v["failed"]),
                         "—" if v.get("beyond_floor") is None else "%+.1f" % v["beyond_floor"],
                         detail])
        md += ["", "Syscalls per round trip (`strace -f -c`, %s and 5x as many round trips, "
               "difference over difference; one run each, counts do not vary):" % STRACE_N, "",
               C.md_table(["how", "syscalls", "of which failed", "beyond the C floor",
                           "by name (per round trip)"], rows)]
    return "\n".join(md)


def plot(sec, plt, outdir):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    modes = sec.get("modes", MODES)
    meds = [sec["figures"][m]["median"] or 0 for m in modes]
    lo = [m - (sec["figures"][k]["min"] or 0) for m, k in zip(meds, modes)]
    hi = [(sec["figures"][k]["max"] or 0) - m for m, k in zip(meds, modes)]
    y = range(len(modes))
    ax.barh(list(y), meds, xerr=[lo, hi], capsize=3, color="tab:blue")
    ax.set_yticks(list(y))
    ax.set_yticklabels([LABELS[m] for m in modes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per round trip (median, min-max; lower is better)")
    ax.set_title("Wait/wake round trip")
    fig.tight_layout()
    path = os.path.join(outdir, "pingpong.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _child(p):
    return strace_child(p) if p["mode"] == "strace" else child(p)


if __name__ == "__main__":
    C.child_main(_child)
