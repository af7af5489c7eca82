"""Name lookups: greenhook's resolver pool vs the unpatched call vs gevent's own resolvers.

    python bench/dns.py [--rounds 5] [--out bench/results]      # as root (unshare)

Runs in a private mount + network namespace with the tests' DNS server (``tests/scenarios/
dnsenv.py`` and ``dns_server.py``: asyncio + dnslib on 127.0.0.1:53, test copies of
resolv.conf / hosts bound over the real ones, which are never touched).  Every case runs in
its own child process; rounds are interleaved (A B C D, B C D A, ...).  Every lookup asks for
a name never asked before (``h<N>.test``, AF_INET, SOCK_STREAM: one A query), so no cache of
any resolver helps.  Cases:

* ``unpatched``   ``socket.getaddrinfo`` as is (blocks the thread; the sequential figure only);
* ``greenhook``   the same call with ``_socket`` patched, in gevent greenlets (resolver pool);
* ``gevent-thread`` / ``gevent-ares``  ``gevent.socket.getaddrinfo`` with GEVENT_RESOLVER=thread
  (gevent's threadpool, 10 threads) / ares (c-ares on the hub).

Figures: ``seq_us`` µs per lookup one after the other (server answers at once: the cost of the
hop); ``par_500`` wall s for 500 lookups at once (server answers at once: throughput);
``par_200_delay`` wall s for 200 lookups at once with the server answering after 50 ms
(ideal 0.05 s: overlap).  Writes ``dns.json`` and ``dns.md`` in ``--out``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(os.path.dirname(HERE), "tests", "scenarios")
CASES = ("unpatched", "greenhook", "gevent-thread", "gevent-ares")
SEQ, PAR, PAR_DELAYED, DELAY = 300, 500, 200, 0.05


def child(case, base):
    """One measurement; prints one JSON line.  ``base``: first name number to use."""
    import socket
    if case.startswith("gevent-"):
        os.environ["GEVENT_RESOLVER"] = case[len("gevent-"):]
    import gevent
    import gevent.socket

    names = iter("h%d.test" % n for n in range(base, base + SEQ + PAR + PAR_DELAYED + 1))
    if case == "greenhook":
        import _socket

        import greenhook
        greenhook.patch_library(_socket)
        greenhook.use("gevent")
        greenhook.configure(resolver_threads=64)
        lookup = socket.getaddrinfo
    elif case == "unpatched":
        lookup = socket.getaddrinfo
    else:
        lookup = gevent.socket.getaddrinfo

    def one(name):
        return lookup(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]

    out = {"case": case}
    gevent.spawn(one, next(names)).join()       # warm up (pool thread, hub, resolver init)
    t0 = time.perf_counter()
    for _ in range(SEQ):
        one(next(names)) if case == "unpatched" else gevent.spawn(one, next(names)).join()
    out["seq_us"] = (time.perf_counter() - t0) / SEQ * 1e6
    if case != "unpatched":
        t0 = time.perf_counter()
        gs = [gevent.spawn(one, next(names)) for _ in range(PAR)]
        gevent.joinall(gs, raise_error=True)
        out["par_500"] = time.perf_counter() - t0
        control(0.05)
        t0 = time.perf_counter()
        gs = [gevent.spawn(one, next(names)) for _ in range(PAR_DELAYED)]
        gevent.joinall(gs, raise_error=True)
        out["par_200_delay"] = time.perf_counter() - t0
        control(0)
    print(json.dumps(out), flush=True)


def control(delay):
    """Set the server's answer delay (the query goes out on a plain, unpatched socket)."""
    import socket as s
    from dnslib import DNSRecord

    # The greened _socket would park this call on the hub: use a raw syscall-level socket
    # through the os module instead (send/recv via os.write/os.read on a connected fd).
    fd = s.socket(s.AF_INET, s.SOCK_DGRAM)
    fd.connect(("127.0.0.1", 53))
    os.write(fd.fileno(), DNSRecord.question("delay-%d.ctl" % round(delay * 1000)).pack())
    os.read(fd.fileno(), 4096)
    fd.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    sys.path.insert(0, SCENARIOS)
    import dnsenv

    dnsenv.enter(net=True)
    runs = {c: [] for c in CASES}
    base = 0
    t_start = time.monotonic()
    for r in range(args.rounds):
        for case in CASES[r % len(CASES):] + CASES[:r % len(CASES)]:
            base += SEQ + PAR + PAR_DELAYED + 2
            p = subprocess.run([sys.executable, __file__, "child", case, str(base)],
                               capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, PYTHONPATH=SCENARIOS))
            if p.returncode != 0:
                raise SystemExit("%s failed:\n%s" % (case, p.stderr))
            runs[case].append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(runs[case][-1], flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dns.json"), "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": args.rounds,
                   "runtime_s": time.monotonic() - t_start, "runs": runs}, f, indent=1)
    with open(os.path.join(args.out, "dns.md"), "w") as f:
        f.write(render(runs, args.rounds))
    print(render(runs, args.rounds))


def fig(values, fmt):
    if not values:
        return "—"
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(values), min(values), max(values))


def render(runs, rounds):
    lines = ["# Name lookups (`bench/dns.py`)", "",
             "Median (min–max) of %d interleaved rounds, each case in a fresh process, a name never "
             "asked before per lookup, the tests' DNS server on loopback in a private namespace "
             "(%s, %d cores)." % (rounds, time.strftime("%Y-%m-%d"), os.cpu_count()), "",
             "| case | sequential, µs per lookup | %d at once, s | %d at once, 50 ms answers, s (ideal 0.05) |"
             % (PAR, PAR_DELAYED), "|---|---|---|---|"]
    for case in CASES:
        rs = runs[case]
        lines.append("| %s | %s | %s | %s |" % (
            case, fig([r["seq_us"] for r in rs], "%.0f"),
            fig([r["par_500"] for r in rs if "par_500" in r], "%.3f"),
            fig([r["par_200_delay"] for r in rs if "par_200_delay" in r], "%.3f")))
    lines += ["", "`unpatched` blocks the thread, so it has no concurrent figure (200 × 50 ms "
              "would take 10 s). gevent's thread resolver runs at most 10 lookups at once (its "
              "threadpool); greenhook's pool was 64 threads.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
