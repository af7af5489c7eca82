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
         "greenify")
LABELS = {
    "greenhook-gevent": "greenhook, gevent hub (C loop)",
    "greenhook-builtin": "greenhook, builtin hub (C loop)",
    "greenhook-gevent-ctypes": "greenhook, gevent hub (ctypes per call)",
    "gevent-socket": "gevent's own sockets (Python loop)",
    "greenify": "greenify (C loop)",
}


# --- child -----------------------------------------------------------------------------------

def child(p):
    import ctypes
    import socket

    mode = p["mode"]
    n = int(p["n"])
    warm = max(100, n // 10)

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


def summarize(results, cfg):
    figs = {m: C.field_stats(results[m], "us_per_rt") for m in MODES}
    cpu = {m: C.field_stats(results[m], "cpu_us_per_rt") for m in MODES}
    base = figs["gevent-socket"]["median"]
    ratios = {m: C.ratio(figs[m]["median"], base) for m in MODES}
    cpu_ratios = {m: C.ratio(cpu[m]["median"], cpu["gevent-socket"]["median"]) for m in MODES}
    return {
        "title": "Wait/wake round trip (µs per ping-pong, two greenlets, socketpair)",
        "n": cases(cfg)[0].params["n"],
        "figures": figs,
        "cpu": cpu,
        "ratio_vs_gevent_socket": ratios,
        "cpu_ratio_vs_gevent_socket": cpu_ratios,
        "errors": {m: C.errors(results[m]) for m in MODES},
        "target": {"what": "greenhook (gevent hub) no slower than gevent's own sockets",
                   "met": ratios["greenhook-gevent"] is not None and ratios["greenhook-gevent"] <= 1.0,
                   "met_cpu": cpu_ratios["greenhook-gevent"] is not None
                   and cpu_ratios["greenhook-gevent"] <= 1.0},
    }


def report(sec):
    rows = [[LABELS[m], C.mmm(sec["figures"][m]), C.fmt_ratio(sec["ratio_vs_gevent_socket"][m]),
             C.mmm(sec["cpu"][m]), C.fmt_ratio(sec["cpu_ratio_vs_gevent_socket"][m])]
            for m in MODES]
    md = [C.md_table(["how", "µs per round trip (wall)", "vs gevent's sockets",
                      "CPU µs per round trip", "vs gevent's sockets"], rows), ""]
    md.append("%d round trips per process after a warm-up. Target: %s (median wall) — %s; "
              "on CPU time: %s." % (sec["n"], sec["target"]["what"], C.verdict(sec["target"]["met"]),
                                    C.verdict(sec["target"].get("met_cpu"))))
    return "\n".join(md)


def plot(sec, plt, outdir):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    meds = [sec["figures"][m]["median"] or 0 for m in MODES]
    lo = [m - (sec["figures"][k]["min"] or 0) for m, k in zip(meds, MODES)]
    hi = [(sec["figures"][k]["max"] or 0) - m for m, k in zip(meds, MODES)]
    y = range(len(MODES))
    ax.barh(list(y), meds, xerr=[lo, hi], capsize=3, color="tab:blue")
    ax.set_yticks(list(y))
    ax.set_yticklabels([LABELS[m] for m in MODES], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per round trip (median, min-max; lower is better)")
    ax.set_title("Wait/wake round trip")
    fig.tight_layout()
    path = os.path.join(outdir, "pingpong.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    C.child_main(child)
