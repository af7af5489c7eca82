"""Prove, on this machine, that greened sample C clients yield: ``python -m greenhook verify``.

For every link variant and call style, N greenlets each make one request that the delay
server answers after ``delay`` seconds, while a ticker greenlet counts 10 ms ticks.  Greened,
the N calls overlap (wall ~ delay) and the ticker keeps ticking; ungreened (a small control
group), they run one after the other and the ticker starves.  Each (variant, hub) runs in its
own subprocess with a timeout, since GOT patches are process-wide.

Needs only the installed package (the samples are built into it) and the hub's package.
"""

import argparse
import json
import os
import subprocess
import sys
import time

__all__ = ["Cell", "run_cells", "check", "main"]

TICK = 0.01


class Cell(dict):
    """One measurement: variant, hub, style, gil ("held"/"released"), patched, n, delay, wall,
    ticks, ok (every reply was exactly the bytes sent), errors, waits (hub parks counted by
    greenhook.stats for the style's symbols)."""

    __getattr__ = dict.__getitem__


def _payload(style, i):
    size = 200 if style == "udp" else 1000 + 37 * i
    return (b"%04d:" % i + os.urandom(size // 2).hex().encode())[:size]


# --- child: runs in its own process -----------------------------------------------------------

def _child(args):
    import greenhook
    from greenhook import samples

    if args.hub == "gevent":
        import gevent

        spawn, joinall, sleep = gevent.spawn, gevent.joinall, gevent.sleep
    else:
        from greenhook import hub

        spawn, joinall, sleep = hub.spawn, hub.joinall, hub.sleep
    greenhook.use(args.hub)
    server = json.loads(args.server)
    mod = samples.load(args.variant)
    delay_ms = int(args.delay * 1000)

    def target(style):
        if style == "udp":
            return server["udp"]
        if style == "unix":
            return server["unix"]
        if style in samples.SLEEP_STYLES:
            return None
        return server["tcp"]

    def one(style, gil, patched, n):
        ticks = [0]
        stop = [False]

        def ticker():
            while not stop[0]:
                sleep(TICK)
                ticks[0] += 1

        def call(i):
            data = _payload(style, i)
            got = mod.request(style, target(style), delay_ms, data, gil == "released")
            return got == data

        before = greenhook.stats()
        tk = spawn(ticker)
        sleep(0)  # let the ticker start before the calls
        ticks[0] = 0
        t0 = time.monotonic()
        gs = [spawn(call, i) for i in range(n)]
        joinall(gs, timeout=60)
        wall = time.monotonic() - t0
        stop[0] = True
        joinall([tk], timeout=1)
        after = greenhook.stats()
        names = set(samples.STYLE_CALLS[style])
        waits = sum(row["waits"] - before.get(sym, {}).get("waits", 0)
                    for sym, row in after.items() if sym in names)
        errors = []
        for g in gs:
            exc = getattr(g, "exception", None)
            if exc is not None:
                errors.append(f"{type(exc).__name__}: {exc}")
            elif not g.dead:
                errors.append("did not finish within 60 s")
        ok = not errors and all(getattr(g, "value", None) is True for g in gs)
        return Cell(variant=args.variant, hub=args.hub, style=style, gil=gil, patched=patched,
                    n=n, delay=args.delay, wall=round(wall, 4), ticks=ticks[0], ok=ok,
                    errors=errors[:3], waits=waits)

    phases = []
    if args.control:
        phases.append(False)
    if args.n:
        phases.append(True)
    for patched in phases:
        if patched:
            if args.leave_unpatched:
                pass  # deliberately not greened: verify must report failures
            else:
                greenhook.patch_library(samples.library_path(args.variant))
        for style in args.styles:
            for gil in args.gil:
                cell = one(style, gil, patched, args.n if patched else args.control)
                print(json.dumps(cell), flush=True)


# --- parent -------------------------------------------------------------------------------------

def run_cells(variant, hub, styles, gil=("held", "released"), n=20, control=2, delay=0.2,
              server=None, timeout=300, leave_unpatched=False):
    """Run one (variant, hub) in a subprocess; return its list of Cells.

    Raises RuntimeError with the child's output if it crashes or times out.
    """
    from greenhook.samples.server import DelayServer

    own = server is None
    if own:
        server = DelayServer().start()
    try:
        info = {"tcp": server.tcp_port, "udp": server.udp_port, "unix": server.unix_path}
        cmd = [sys.executable, "-m", "greenhook.verify", "--child", "--variant", variant,
               "--hub", hub, "--server", json.dumps(info), "--n", str(n), "--control",
               str(control), "--delay", str(delay), "--styles", *styles, "--gil", *gil]
        if leave_unpatched:
            cmd.append("--leave-unpatched")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"verify child {variant}/{hub} timed out after {timeout} s; "
                               f"output so far:\n{exc.stdout or ''}{exc.stderr or ''}") from None
        cells = [Cell(json.loads(line)) for line in proc.stdout.splitlines()
                 if line.startswith("{")]
        if proc.returncode != 0:
            raise RuntimeError(f"verify child {variant}/{hub} exited with {proc.returncode}:\n"
                               f"{proc.stderr[-4000:]}")
        return cells
    finally:
        if own:
            server.stop()


#: fixed allowance above twice the ideal time (scheduling on a loaded machine)
MARGIN = 0.2


def check(cell):
    """(passed, reason) for one cell.

    Greened, the n calls overlap: ideally they take ``delay``.  The bound is twice that plus
    MARGIN (0.6 s for 0.2 s calls): if k of the calls blocked the thread instead, the cell
    would take up to (k + 1) x delay, so two blocked calls fail it.  The ticker must have run
    at least half of the ideal number of ticks."""
    serial = cell.n * cell.delay
    if not cell.ok:
        return False, "wrong reply bytes or errors: " + "; ".join(cell.errors or ["bytes differ"])
    if cell.patched:
        limit = 2 * cell.delay + MARGIN
        if cell.wall >= limit:
            return False, f"took {cell.wall:.2f} s, expected < {limit:.2f} s (serial: {serial:.1f} s)"
        expected_ticks = max(3, int(cell.delay / TICK / 2))
        if cell.ticks < expected_ticks:
            return False, f"ticker ticked {cell.ticks} times, expected >= {expected_ticks}: the hub was blocked"
        if cell.waits == 0:
            return False, "no hooked call parked on the hub (greenhook.stats shows no waits)"
        return True, f"{cell.wall:.2f} s for {cell.n} x {cell.delay:.1f} s, {cell.ticks} ticks"
    if cell.wall < 0.9 * serial:
        return False, f"control took {cell.wall:.2f} s, expected serialized >= {0.9 * serial:.2f} s"
    return True, f"serialized as expected: {cell.wall:.2f} s, {cell.ticks} ticks"


def _use_colour(stream):
    return stream.isatty() and not os.environ.get("NO_COLOR")


def main(argv=None):
    p = argparse.ArgumentParser(prog="greenhook verify", description=__doc__.splitlines()[0])
    p.add_argument("--hub", choices=("builtin", "gevent"), action="append",
                   help="hub backend(s) to verify (default: builtin, plus gevent if installed)")
    p.add_argument("--variant", action="append", help="link variant(s) (default: all)")
    p.add_argument("--style", action="append", help="call style(s) (default: all)")
    p.add_argument("--n", type=int, default=20, help="concurrent greened calls (default 20)")
    p.add_argument("--delay", type=float, default=0.2, help="server delay in seconds (default 0.2)")
    p.add_argument("--json", action="store_true", help="print one JSON object per cell")
    p.add_argument("--leave-unpatched", action="store_true",
                   help="do not patch (shows what a failure looks like)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--server", help=argparse.SUPPRESS)
    p.add_argument("--styles", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--gil", nargs="*", default=["held", "released"], help=argparse.SUPPRESS)
    p.add_argument("--control", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.hub = args.hub[0]
        args.variant = args.variant[0]
        _child(args)
        return 0

    from greenhook import samples
    from greenhook.samples.server import DelayServer

    hubs = args.hub
    if not hubs:
        hubs = ["builtin"]
        try:
            import gevent  # noqa: F401
            hubs.append("gevent")
        except ImportError:
            pass
    variants = args.variant or list(samples.VARIANTS)
    styles = args.style or list(samples.STYLES)
    for v in variants:
        if v not in samples.VARIANTS:
            p.error(f"unknown variant {v!r}; choose from {', '.join(samples.VARIANTS)}")
    for s in styles:
        if s not in samples.STYLES:
            p.error(f"unknown style {s!r}; choose from {', '.join(samples.STYLES)}")
    colour = _use_colour(sys.stdout)
    green, red, dim, reset = ("\033[32m", "\033[31m", "\033[2m", "\033[0m") if colour else ("",) * 4
    failures = total = 0
    with DelayServer() as server:
        if not args.json:
            print(f"greenhook verify: {args.n} concurrent calls of {args.delay:.1f} s per cell "
                  f"(serial would take {args.n * args.delay:.1f} s), 10 ms ticker")
            print(f"{'hub':8} {'variant':10} {'style':16} {'gil':9} {'greened':8} "
                  f"{'time':>7} {'ticks':>6}  result")
        for hub in hubs:
            for variant in variants:
                try:
                    cells = run_cells(variant, hub, styles, n=args.n, delay=args.delay,
                                      server=server, control=0,
                                      leave_unpatched=args.leave_unpatched)
                except RuntimeError as exc:
                    failures += 1
                    total += 1
                    print(f"{hub:8} {variant:10} {red}FAIL{reset} {exc}")
                    continue
                for cell in cells:
                    total += 1
                    passed, why = check(cell)
                    failures += not passed
                    if args.json:
                        print(json.dumps(dict(cell, passed=passed, reason=why)))
                        continue
                    mark = f"{green}PASS{reset}" if passed else f"{red}FAIL{reset}"
                    patched = "no" if args.leave_unpatched else "yes"
                    print(f"{hub:8} {variant:10} {cell.style:16} {cell.gil:9} {patched:8} "
                          f"{cell.wall:6.2f}s {cell.ticks:6d}  {mark} {dim}{why}{reset}")
    if not args.json:
        print(f"\n{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
