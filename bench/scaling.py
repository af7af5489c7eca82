"""Scenario 3: concurrency scaling -- N concurrent requests, each answered after 50 ms.

Each of N concurrent clients makes one request through the sample C extension
(``_ghsample_now.request("send_recv", port, 50, payload)``: connect, send, recv with the GIL
released) against the C delay server (bench/delayserver.c: one thread, epoll, a heap of
deadlines; a few µs of CPU per request, so the client is what is measured), which answers
after 50 ms.  Ideal wall time: 50 ms whatever N.  The server reports its own CPU time per
request (its OP_STATS reply, from getrusage), measured over each burst.

* ``greenhook/gevent``, ``greenhook/builtin``  N greenlets, library patched
* ``greenify``                               N gevent greenlets, library patched by greenify
* ``threadpool (default)``                   N greenlets each handing its request to gevent's
                                             hub threadpool (default maxsize: 10 threads)
* ``threadpool (100)``                       the same with maxsize 100
* ``server reference``                       N greenlets speaking the protocol over pure
                                             gevent sockets (no C, no hooks): what this server
                                             and machine give a client with no native code

One process per (how, N, round), so that peak RSS (``getrusage``) belongs to that N alone.
Figures: wall (s), wall / ideal, peak RSS (VmHWM: see _common.peak_rss_kib for why not
``ru_maxrss``) and its growth over the process's RSS before the burst (MiB), client CPU time.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MODES = ("greenhook-gevent", "greenhook-builtin", "greenify", "threadpool-default",
         "threadpool-100", "ceiling")
LABELS = {
    "greenhook-gevent": "greenhook, gevent hub",
    "greenhook-builtin": "greenhook, builtin hub",
    "greenify": "greenify",
    "threadpool-default": "gevent threadpool (default size)",
    "threadpool-100": "gevent threadpool (100 threads)",
    "ceiling": "server reference: pure gevent-socket client",
}
NS = (1, 10, 100, 1000)
DELAY_MS = 50
PAYLOAD = 100
TARGET_N, TARGET_X = 1000, 1.5


# --- child -----------------------------------------------------------------------------------

def child(p):
    C.raise_nofile()
    mode, n, port = p["mode"], int(p["n"]), int(p["port"])
    delay_ms = int(p.get("delay_ms", DELAY_MS))
    payloads = [(b"%06d" % i) * (PAYLOAD // 6) for i in range(n)]
    info = {}

    if mode == "ceiling":
        import struct

        import gevent
        import gevent.socket as gsock

        hdr = struct.Struct("!HHII")

        def one(i):
            # A plain socket + connect to the IP literal: create_connection() would resolve
            # the address in gevent's threadpool (a futex storm that is not the server's).
            s = gsock.socket(gsock.AF_INET, gsock.SOCK_STREAM)
            try:
                s.setsockopt(gsock.IPPROTO_TCP, gsock.TCP_NODELAY, 1)
                s.connect(("127.0.0.1", port))
                data = payloads[i]
                s.sendall(hdr.pack(1, 0, delay_ms, len(data)) + data)
                buf = b""
                while len(buf) < 4 + len(data):
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed")
                    buf += chunk
                return buf[4:] == data
            finally:
                s.close()

        spawn = gevent.spawn

        def run_all():
            gs = [spawn(one, i) for i in range(n)]
            gevent.joinall(gs, raise_error=True)
            return [g.value for g in gs]
    else:
        from greenhook import samples

        mod = samples.load("now")

        def one(i):
            return mod.request("send_recv", port, delay_ms, payloads[i]) == payloads[i]

        if mode.startswith("threadpool"):
            import gevent

            pool = gevent.get_hub().threadpool
            if mode == "threadpool-100":
                pool.maxsize = 100
            info["threads"] = pool.maxsize

            def run_all():
                rs = [pool.spawn(one, i) for i in range(n)]
                return [r.get() for r in rs]
        elif mode == "greenhook-builtin":
            import greenhook
            from greenhook import hub

            greenhook.use("builtin")
            greenhook.patch_module(mod)

            def run_all():
                gs = [hub.spawn(one, i) for i in range(n)]
                hub.joinall(gs)
                for g in gs:
                    if g.exception is not None:
                        raise g.exception
                return [g.value for g in gs]
        else:
            import gevent

            if mode == "greenify":
                import greenify

                greenify.greenify()
                if not greenify.patch_lib(samples.library_path("now")):
                    return {"error": "greenify.patch_lib returned False"}
            else:
                import greenhook

                greenhook.use("gevent")
                greenhook.patch_module(mod)

            def run_all():
                gs = [gevent.spawn(one, i) for i in range(n)]
                gevent.joinall(gs, raise_error=True)
                return [g.value for g in gs]

    # Warm-up: one request, so imports, the hub and lazy binding are not in the figure.
    saved = n
    n = 1
    run_all()
    n = saved
    rss0 = C.rss_kib()
    # A plain blocking Python socket (never greened); p["server_stats"] False: a server with
    # no OP_STATS (the Python one, for an A/B of the servers by hand).
    stats = C.DelayServerStats(port) if p.get("server_stats", True) else None
    sreq0, scpu0 = stats.read() if stats else (0, 0)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ok = run_all()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sreq1, scpu1 = stats.read() if stats else (0, 0)
    if stats:
        stats.close()
    sreqs = sreq1 - sreq0
    scpu = (scpu1 - scpu0) / 1e6 if stats else None
    peak = C.peak_rss_kib()
    if not all(ok):
        return {"error": "%d of %d replies were wrong" % (ok.count(False), n)}
    return {"wall": wall, "x_ideal": wall / (delay_ms / 1000.0), "rss_mib": peak / 1024.0,
            "rss_growth_mib": max(0, peak - rss0) / 1024.0, "cpu_s": cpu, "server_cpu_s": scpu,
            "server_cpu_us_per_req": scpu * 1e6 / sreqs if scpu is not None and sreqs else None,
            "server_requests": sreqs,
            "n": n, "info": info}


# --- parent ----------------------------------------------------------------------------------

def cases(cfg):
    ns = (1, 10, 100) if cfg["quick"] else NS
    out = []
    for mode in MODES:
        for n in ns:
            out.append(C.Case("%s/%d" % (mode, n), "scaling.py",
                              {"mode": mode, "n": n, "port": cfg["delay_port"],
                               "server_pid": cfg.get("delay_pid")}, timeout=120))
    return out


def summarize(results, cfg):
    ns = (1, 10, 100) if cfg["quick"] else NS
    figs = {}
    for mode in MODES:
        figs[mode] = {}
        for n in ns:
            rs = results["%s/%d" % (mode, n)]
            figs[mode][str(n)] = {
                "wall": C.field_stats(rs, "wall"),
                "x_ideal": C.field_stats(rs, "x_ideal"),
                "rss_mib": C.field_stats(rs, "rss_mib"),
                "rss_growth_mib": C.field_stats(rs, "rss_growth_mib"),
                "cpu_s": C.field_stats(rs, "cpu_s"),
                "server_cpu_s": C.field_stats(rs, "server_cpu_s"),
                "server_cpu_us_per_req": C.field_stats(rs, "server_cpu_us_per_req"),
                "errors": C.errors(rs),
            }
    top = str(max(ns))
    gh = figs["greenhook-gevent"][top]["x_ideal"]["median"]
    return {
        "title": "Concurrency scaling (N requests, 50 ms server delay)",
        "ns": list(ns),
        "delay_ms": DELAY_MS,
        "figures": figs,
        "target": {"what": "%d greenlets within %.1fx ideal (greenhook, gevent hub, median)" % (
            TARGET_N, TARGET_X),
            "met": None if int(top) < TARGET_N else (gh is not None and gh <= TARGET_X)},
    }


def report(sec):
    ns = [str(n) for n in sec["ns"]]
    rows = []
    for mode in MODES:
        f = sec["figures"][mode]
        rows.append([LABELS[mode]] + ["%s s (%s)" % (C.mmm(f[n]["wall"]),
                                                   C.fmt_ratio(f[n]["x_ideal"]["median"]))
                                      for n in ns])
    md = ["Wall time, median (min–max), and median wall / ideal 50 ms:", "",
          C.md_table(["how"] + ["N=%s" % n for n in ns], rows), ""]
    rows = []
    for mode in MODES:
        f = sec["figures"][mode]
        rows.append([LABELS[mode]] + ["%s (+%s)" % (C.fmt(f[n]["rss_mib"]["median"]),
                                                   C.fmt(f[n]["rss_growth_mib"]["median"]))
                                      for n in ns])
    md += ["Peak RSS of the client process, MiB, median (+ growth during the burst):", "",
           C.md_table(["how"] + ["N=%s" % n for n in ns], rows), ""]
    rows = []
    for mode in MODES:
        f = sec["figures"][mode]
        rows.append([LABELS[mode]] + ["%s / %s" % (C.fmt(f[n]["cpu_s"]["median"]),
                                                   C.fmt(f[n]["server_cpu_s"]["median"]))
                                      for n in ns])
    md += ["CPU seconds during the burst, client / C delay server (user + system, median; "
           "the server's from its own getrusage). Client and server share the machine's two "
           "cores: their CPU seconds over 2 is a floor under the wall time, before the 50 ms "
           "wait:",
           "",
           C.md_table(["how"] + ["N=%s" % n for n in ns], rows), ""]
    rows = []
    for mode in MODES:
        f = sec["figures"][mode]
        rows.append([LABELS[mode]] + [C.mmm(f[n].get("server_cpu_us_per_req")) for n in ns])
    md += ["The delay server's own CPU µs per request (accept, read, timer, reply, close; "
           "kernel TCP work on its side included), median (min–max):", "",
           C.md_table(["how"] + ["N=%s" % n for n in ns], rows), ""]
    md.append("Target: %s — %s." % (sec["target"]["what"], C.verdict(sec["target"]["met"])))
    return "\n".join(md)


def plot(sec, plt, outdir):
    ns = sec["ns"]
    paths = []
    for key, ylabel, fname, log in (
            ("wall", "wall time (s), median with min-max", "scaling_wall.png", True),
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
        ax.set_title("Concurrency scaling: %s" % ("wall time" if key == "wall" else "memory"))
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(outdir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


if __name__ == "__main__":
    C.child_main(child)
