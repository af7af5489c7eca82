"""Scenario 1: fast-path overhead -- what a hooked call costs when it never has to wait.

Tight C loops in the sample library (``ghs_bench_*`` in cext_samples/ghsample.c), called
once through ctypes from a gevent greenlet, so that every libc call goes through the
library's GOT with no Python in between:

* ``recv_send``  send 1 byte on one end of an AF_UNIX socketpair, recv it on the other
                 (data always ready: the hook's first non-blocking try always succeeds)
* ``poll_ready`` poll(POLLOUT, 1000 ms) on an always-writable socket
* ``read_pipe``  write 1 byte into a pipe and read it back (not a socket: pass-through)
* ``poll0_like`` like for like with the hook's poll fast path, which is a ``poll(…, 0)``
                 inside: ``raw`` runs ``poll(POLLOUT, 0)`` unpatched, ``greenhook`` runs
                 ``poll(POLLOUT, 1000)`` hooked (fast path: the fd is ready), both from
                 bench/ghbench.c's ``ghb_poll_loop`` (greenify: not run).  ``poll_ready``
                 compares a raw ``poll(…, 1000)``, which the kernel prepares a timeout for, and
                 flatters the hook.

Three processes per round: ``raw`` (library not patched), ``greenhook`` (patch_library,
gevent hub bound), ``greenify`` (douban's greenify.patch_lib, its gevent wait callback).
Figure: ns per libc call (two calls per iteration for recv_send and read_pipe): the process's
CPU time (user + system: the loop never sleeps, and CPU time does not count being preempted by
other load on a shared machine), best of ``reps`` timed repeats in each process after a
warm-up.  The wall-clock equivalent is in latest.json (``<loop>_wall``).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MODES = ("raw", "greenhook", "greenify")
LOOPS = ("recv_send", "poll_ready", "poll0_like", "read_pipe")
CALLS_PER_ITER = {"recv_send": 2, "poll_ready": 1, "poll0_like": 1, "read_pipe": 2}
TARGET = 1.10   # hooked within 1.10x of raw
TARGET_LOOPS = ("recv_send", "poll0_like", "read_pipe")


# --- child -----------------------------------------------------------------------------------

def child(p):
    import ctypes
    import socket

    import gevent

    from greenhook import samples

    mode = p["mode"]
    path = samples.library_path("now")
    lib = ctypes.CDLL(path, use_errno=True)
    for name, argtypes in (("ghs_bench_recv_send", [ctypes.c_int, ctypes.c_int, ctypes.c_long]),
                           ("ghs_bench_poll_ready", [ctypes.c_int, ctypes.c_long]),
                           ("ghs_bench_read_pipe", [ctypes.c_int, ctypes.c_int, ctypes.c_long])):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_long
        fn.argtypes = argtypes

    blib = ctypes.CDLL(C.build_tool("ghbench"), use_errno=True)
    blib.ghb_poll_loop.restype = ctypes.c_long
    blib.ghb_poll_loop.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_int]

    info = {}
    if mode == "greenhook":
        import greenhook

        greenhook.use("gevent")
        if p.get("fair_yield") is not None:
            # configure(fair_yield=N) for an A/B of the fairness policy (0: off)
            greenhook.configure(fair_yield=int(p["fair_yield"]))
            info["fair_yield"] = int(p["fair_yield"])
        rep = greenhook.patch_library(path)
        info["patched"] = sorted(rep.symbols)
        greenhook.patch_library(C.build_tool("ghbench"))
    elif mode == "greenify":
        import greenify

        greenify.greenify()
        if not greenify.patch_lib(path):
            return {"error": "greenify.patch_lib(%s) returned False" % path}

    a, b = socket.socketpair()
    rfd, wfd = os.pipe()
    calls = {
        "recv_send": lambda n: lib.ghs_bench_recv_send(a.fileno(), b.fileno(), n),
        "poll_ready": lambda n: lib.ghs_bench_poll_ready(a.fileno(), n),
        "read_pipe": lambda n: lib.ghs_bench_read_pipe(rfd, wfd, n),
        "poll0_like": lambda n: blib.ghb_poll_loop(a.fileno(), n, 0 if mode == "raw" else 1000),
    }

    def measure():
        out = {}
        for loop in p.get("loops", LOOPS):
            if loop not in p["n"]:
                continue
            n = int(p["n"][loop])
            fn = calls[loop]
            r = fn(max(1, n // 10))  # warm-up (and lazy binding, page faults)
            if r < 0:
                raise OSError(-r, "%s warm-up: %s" % (loop, os.strerror(-r)))
            best = best_wall = None
            for _ in range(p.get("reps", 3)):
                c0 = time.process_time_ns()
                t0 = time.perf_counter_ns()
                r = fn(n)
                dt = time.perf_counter_ns() - t0
                dc = time.process_time_ns() - c0
                if r != n:
                    raise OSError(-r if r < 0 else 0, "%s returned %d" % (loop, r))
                best = dc if best is None else min(best, dc)
                best_wall = dt if best_wall is None else min(best_wall, dt)
            out[loop] = best / (n * CALLS_PER_ITER[loop])
            out[loop + "_wall"] = best_wall / (n * CALLS_PER_ITER[loop])
        return out

    if mode == "greenhook":
        import greenhook

        greenhook.reset_stats()
    res = gevent.spawn(measure).get()
    if mode == "greenhook":
        st = greenhook.stats()
        info["stats"] = {k: {f: v.get(f) for f in ("fast", "passthrough", "green", "waits",
                                                     "blocked", "yields")}
                         for k, v in st.items()}
    res["info"] = info
    return res


# --- parent ----------------------------------------------------------------------------------

def cases(cfg):
    n = {"recv_send": 200_000, "poll_ready": 200_000, "poll0_like": 200_000, "read_pipe": 200_000}
    if cfg["quick"]:
        n = {k: v // 10 for k, v in n.items()}
    # greenify's poll goes through the gevent hub on every call (see the report): fewer calls.
    cs = []
    for mode in MODES:
        nn = dict(n)
        if mode == "greenify":
            nn["poll_ready"] = max(1000, n["poll_ready"] // 20)
            del nn["poll0_like"]
        cs.append(C.Case(mode, "fastpath.py", {"mode": mode, "n": nn, "reps": 3}, timeout=120))
    return cs


def summarize(results, cfg):
    figures = {}
    for loop in LOOPS:
        row = {}
        for mode in MODES:
            row[mode] = C.field_stats(results[mode], loop)
        raw = row["raw"]["median"]
        row["ratio_greenhook"] = C.ratio(row["greenhook"]["median"], raw)
        row["ratio_greenify"] = C.ratio(row["greenify"]["median"], raw)
        figures[loop] = row
    gh = [r for r in results["greenhook"] if "error" not in r]
    return {
        "title": "Fast-path overhead (ns per libc call, never waits)",
        "n": cases(cfg)[0].params["n"],
        "figures": figures,
        "greenhook_counters": gh[0]["info"].get("stats") if gh else None,
        "errors": {m: C.errors(results[m]) for m in MODES},
        "target": {
            "what": "hooked send/recv, poll (vs raw poll(…, 0)) and pass-through read/write "
                    "within %.2fx of raw (median ns/call)" % TARGET,
            "met": all(figures[lp]["ratio_greenhook"] is not None
                       and figures[lp]["ratio_greenhook"] <= TARGET
                       for lp in TARGET_LOOPS),
            "per_loop": {lp: figures[lp]["ratio_greenhook"] is not None
                         and figures[lp]["ratio_greenhook"] <= TARGET for lp in TARGET_LOOPS},
        },
    }


def report(sec):
    rows = []
    for loop in LOOPS:
        f = sec["figures"][loop]
        rows.append([loop, C.mmm(f["raw"]), C.mmm(f["greenhook"]), C.fmt_ratio(f["ratio_greenhook"]),
                     C.mmm(f["greenify"]), C.fmt_ratio(f["ratio_greenify"])])
    md = [C.md_table(["loop", "raw ns/call", "greenhook ns/call", "greenhook / raw",
                      "greenify ns/call", "greenify / raw"], rows)]
    md.append("")
    md.append("ns of process CPU time (user + system) per libc call; iterations per timed loop: "
              "%s (greenify's poll_ready: fewer, it goes through the hub every call); best of 3 "
              "timed repeats per process (wall-clock figures in latest.json). Target: %s — %s." % (
                  ", ".join("%s %d" % kv for kv in sec["n"].items()), sec["target"]["what"],
                  C.verdict(sec["target"]["met"])))
    if sec.get("greenhook_counters"):
        c = sec["greenhook_counters"]
        md.append("")
        md.append("greenhook's counters in one hooked process (proof the calls went through the "
                  "hooks): " + ", ".join("%s fast=%d passthrough=%d waits=%d" % (
                      k, v["fast"], v["passthrough"], v["waits"]) for k, v in sorted(c.items())))
    return "\n".join(md)


def plot(sec, plt, outdir):
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(LOOPS))
    w = 0.27
    for i, mode in enumerate(MODES):
        f = sec["figures"]
        med = [f[lp][mode]["median"] or 0 for lp in LOOPS]
        lo = [m - (f[lp][mode]["min"] or 0) for m, lp in zip(med, LOOPS)]
        hi = [(f[lp][mode]["max"] or 0) - m for m, lp in zip(med, LOOPS)]
        ax.bar(x + (i - 1) * w, med, w, yerr=[lo, hi], capsize=3, label=mode)
    ax.set_xticks(x)
    ax.set_xticklabels(LOOPS)
    ax.set_ylabel("CPU ns per libc call (median, min-max)")
    ax.set_yscale("log")
    ax.set_title("Fast path: calls that never wait")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(outdir, "fastpath.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    C.child_main(child)
