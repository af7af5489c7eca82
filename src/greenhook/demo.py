"""``python -m greenhook demo``: greened vs ungreened sample C clients, side by side.

A sample "driver" (a C library + a CPython extension in plain C, like mysqlclient on
libmariadb) makes blocking calls from C.  N greenlets each make one request that the server
answers after ``delay`` seconds, while a ticker greenlet counts 10 ms ticks.  Ungreened, the
requests queue behind each other and the ticker starves; greened, they overlap.
"""

import argparse
import sys

from greenhook.verify import TICK, run_cells

DEFAULT_STYLES = ("send_recv", "poll_nonblock", "select", "accept", "usleep")


def main(argv=None):
    p = argparse.ArgumentParser(prog="greenhook demo", description=__doc__.splitlines()[0])
    p.add_argument("--hub", default="builtin", choices=("builtin", "gevent"))
    p.add_argument("--variant", default="now", help="sample link variant (default: now = full RELRO)")
    p.add_argument("--n", type=int, default=10, help="concurrent calls (default 10)")
    p.add_argument("--delay", type=float, default=0.2, help="server delay in seconds (default 0.2)")
    p.add_argument("--style", action="append", help="call style(s) to show")
    args = p.parse_args(argv)
    styles = args.style or list(DEFAULT_STYLES)
    from greenhook import samples

    print(f"greenhook demo: {args.n} greenlets call a C client (libghsample_{args.variant}.so, "
          f"through its CPython extension, GIL released);")
    print(f"each request is answered after {args.delay:.1f} s.  Hub: {args.hub}.  "
          f"A ticker greenlet ticks every {TICK * 1000:.0f} ms.\n")
    cells = run_cells(args.variant, args.hub, styles, gil=("released",), n=args.n,
                      control=args.n, delay=args.delay)
    rows = {}
    for c in cells:
        rows.setdefault(c.style, {})[c.patched] = c
    ideal_ticks = int(args.delay / TICK)
    print(f"{'call style':16} {'ungreened':>22}   {'greened':>22}   {'speed-up':>8}")
    failed = False
    for style in styles:
        off, on = rows[style][False], rows[style][True]
        ok = off.ok and on.ok
        failed |= not ok
        speed = off.wall / on.wall if on.wall else float("inf")
        calls = ", ".join(samples.STYLE_CALLS[style])
        print(f"{style:16} {off.wall:8.2f} s {off.ticks:5d} ticks   "
              f"{on.wall:8.2f} s {on.ticks:5d} ticks   {speed:7.1f}x   ({calls})"
              + ("" if ok else "   WRONG BYTES"))
    print(f"\nideal: {args.delay:.2f} s and ~{ideal_ticks} ticks; serialized: "
          f"{args.n * args.delay:.2f} s.  Every reply was checked byte for byte.")
    print("Prove it for every call style and link variant: python -m greenhook verify")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
