"""What the blocking detector costs: ``python bench/bench_watch.py`` (about 25 s).

1. A greened workload: ``--n`` concurrent sample requests (``send_recv``, ``now`` variant,
   patched) answered by the delay server after ``--delay-ms``; ``--batches`` batches make one
   run.  Runs alternate watch off / on (``greenhook.watch(threshold)``, drift hits both
   alike); the medians and their ratio are printed.
2. The detector's own CPU: the hub sits idle in ``sleep()`` for ``--idle`` seconds with the
   watch off and on (at the threshold, and at a 10x smaller one); the process CPU time it
   adds (heartbeat timer + monitor thread + GIL hand-offs) is printed per second.

"Off" means nothing runs at all: no timer, no thread.  Each hub runs in its own process.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def measure(args):
    import greenhook
    from greenhook import _watch, samples
    from greenhook.samples.server import DelayServer

    if args.hub == "gevent":
        import gevent
        spawn, joinall, sleep = gevent.spawn, gevent.joinall, gevent.sleep
    else:
        from greenhook import hub as H
        spawn, joinall, sleep = H.spawn, H.joinall, H.sleep
    greenhook.use(args.hub)
    mod = samples.load("now")
    greenhook.patch_library(samples.library_path("now"))
    payload = b"x" * 64

    def run(port):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            gs = [spawn(mod.request, "send_recv", port, args.delay_ms, payload, True)
                  for _ in range(args.n)]
            joinall(gs)
            if any(g.value != payload for g in gs):
                sys.exit("a request failed")
        return time.perf_counter() - t0

    def quiet(stall):
        stalls.append(stall)

    stalls = []
    with DelayServer() as srv:
        run(srv.tcp_port)                       # warm up: connections, allocator, caches
        off, on = [], []
        for i in range(args.runs):
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                if mode == "off":
                    off.append(run(srv.tcp_port))
                else:
                    with _watch.watch(args.threshold, report=quiet, hub=args.hub):
                        on.append(run(srv.tcp_port))

    def idle_cpu(threshold):
        w = _watch.watch(threshold, report=quiet, hub=args.hub) if threshold else None
        c0, t0 = time.process_time(), time.perf_counter()
        sleep(args.idle)
        c1, t1 = time.process_time(), time.perf_counter()
        if w is not None:
            w.stop()
        return (c1 - c0) / (t1 - t0)

    idle = [(t, idle_cpu(t)) for t in (None, args.threshold, args.threshold / 10)]

    mo, mn = statistics.median(off), statistics.median(on)
    per = args.n * args.batches
    print("%s hub: %d runs per mode of %d batches x %d concurrent requests (%d ms delay); "
          "load average %.2f on %d CPUs" % (args.hub, args.runs, args.batches, args.n,
                                            args.delay_ms, os.getloadavg()[0], os.cpu_count()))
    print("  watch off: median %.4f s per run (%.1f us per request), spread %.4f-%.4f"
          % (mo, mo / per * 1e6, min(off), max(off)))
    print("  watch on : median %.4f s per run (%.1f us per request), spread %.4f-%.4f, "
          "threshold %.3f s" % (mn, mn / per * 1e6, min(on), max(on), args.threshold))
    print("  ratio on/off: %.3f" % (mn / mo))
    base = idle[0][1]
    for threshold, cpu in idle[1:]:
        print("  idle hub, watch threshold %.3f s (a beat every %.1f ms, a monitor look every "
              "~%.0f ms): +%.3f ms CPU per second (%.3f%% of a core)"
              % (threshold, threshold / 4 * 1000, threshold * 1250, (cpu - base) * 1000,
                 (cpu - base) * 100))
    print("  idle hub, watch off: %.3f ms CPU per second" % (base * 1000))
    loaded = [st for st in stalls if st.overloaded]
    print("  stalls reported (greened workload, idle hub): %d blocking, %d machine overloaded"
          % (len(stalls) - len(loaded), len(loaded)))
    for stall in stalls:
        if not stall.overloaded:
            print("    %.3f s: %s" % (stall.seconds, stall.verdict()[0]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hub", choices=("builtin", "gevent", "all"), default="all")
    p.add_argument("--n", type=int, default=200, help="concurrent requests per batch (200)")
    p.add_argument("--delay-ms", type=int, default=10, help="server delay per request (10)")
    p.add_argument("--batches", type=int, default=10, help="batches per run (10)")
    p.add_argument("--runs", type=int, default=11, help="runs per mode (11)")
    p.add_argument("--threshold", type=float, default=0.1, help="watch threshold (0.1 s)")
    p.add_argument("--idle", type=float, default=1.0, help="seconds of idle hub per mode (1)")
    args = p.parse_args(argv)
    if args.hub != "all":
        measure(args)
        return 0
    hubs = ["builtin"]
    try:
        import gevent  # noqa: F401
        hubs.append("gevent")
    except ImportError:
        print("(gevent not installed: builtin hub only)")
    rest = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--hub")]
    for hub in hubs:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--hub", hub, *rest],
                              timeout=120)
        if proc.returncode:
            return proc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
