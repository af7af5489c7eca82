#!/bin/bash
# A/B of two greenhook builds on scenario 1 and 2's child entry points, interleaved
# (base, this, base, this ...), medians of ROUNDS runs; used for issue 13's step-by-step numbers.
#
#   bench/ab_children.sh BASE_PKG_DIR [ROUNDS]
#
# BASE_PKG_DIR: a `pip install --target DIR` of the baseline build (e.g. from
# `git archive main`); the build under test is the one $PYTHON imports (default .venv/bin/python).
# Prints ns per call (fastpath, CPU) and us per round trip (pingpong, wall and CPU) with ratios
# to raw, to gevent's sockets and to the C floor measured in the same rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1
R=${2:-7}
PY=${PYTHON:-.venv/bin/python}
FP='{"n":{"recv_send":200000,"read_pipe":200000,"poll0_like":200000,"poll_ready":200000},"reps":3,"mode":"MODE"}'
last() { tail -1 | sed 's/^@@BENCH@@ //'; }
for i in $(seq "$R"); do
  for v in base this; do
    if [ "$v" = base ]; then PP=$BASE; else PP=; fi
    for m in greenhook-gevent greenhook-builtin gevent-socket c-floor; do
      echo "pp $v $m $(PYTHONPATH=$PP $PY bench/pingpong.py child '{"mode":"'$m'","n":20000}' 2>/dev/null | last)"
    done
    echo "fp $v greenhook $(PYTHONPATH=$PP $PY bench/fastpath.py child "${FP/MODE/greenhook}" 2>/dev/null | last)"
  done
  echo "fp raw raw $($PY bench/fastpath.py child "${FP/MODE/raw}" 2>/dev/null | last)"
done | $PY -c '
import collections, json, statistics as S, sys
pp, fp = collections.defaultdict(list), collections.defaultdict(list)
for line in sys.stdin:
    kind, v, m, js = line.split(" ", 3)
    (pp if kind == "pp" else fp)[(v, m)].append(json.loads(js))
def med(rows, k): return S.median(r[k] for r in rows)
raw = fp[("raw", "raw")]
print("fast path, CPU ns per call, median (min-max) and ratio to raw:")
for key in (("raw", "raw"), ("base", "greenhook"), ("this", "greenhook")):
    rows = fp[key]
    print("  %-5s" % key[0], "  ".join("%s %.0f (%.0f-%.0f) %.2fx" % (k, med(rows, k), min(r[k] for r in rows),
          max(r[k] for r in rows), med(rows, k) / med(raw, k)) for k in ("recv_send", "poll0_like", "read_pipe")))
print("round trip, us wall (CPU), median (min-max), ratio to gevent sockets / C floor of the same build rounds:")
for v in ("base", "this"):
    g, f = med(pp[(v, "gevent-socket")], "us_per_rt"), med(pp[(v, "c-floor")], "us_per_rt")
    for m in ("greenhook-gevent", "greenhook-builtin", "gevent-socket", "c-floor"):
        rows = pp[(v, m)]
        w = med(rows, "us_per_rt")
        print("  %-5s %-18s %.2f (%.2f-%.2f) cpu %.2f  %.2fx sockets  %.2fx floor" % (v, m, w,
              min(r["us_per_rt"] for r in rows), max(r["us_per_rt"] for r in rows),
              med(rows, "cpu_us_per_rt"), w / g, w / f))
'
