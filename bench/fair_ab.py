"""The fairness policy (README, Semantics 11) on and off, interleaved; run on its own.

    python bench/fair_ab.py --services .run/bench/services.json [--runs 7] [--values 0,4,8]

Cases (each run a fresh child of scenario 1 or 4, round-robin with a rotating start):

* scenario 4 (``drivers.py``), 50 clients x 300 ``SELECT 1``: psycopg2 + greenhook with
  ``configure(fair_yield=N)`` for each N of ``--values`` (0 = off), psycopg2 + psycogreen;
  mysqlclient + greenhook for each N;
* scenario 1 (``fastpath.py``): the C loops of the sample library (one greenlet alone, always
  ready) with each N: the policy's cost where there is nobody to be fair to.

Figures: median (min-max) over the runs, and the median over rounds of each round's ratio to
the reference of the same round (psycogreen; for mysqlclient and the fast path, N = 0), which
cancels much of the load other processes put on the machine.  Writes
``bench/results/fairness.{md,json}``.  Servers: ``scripts/services.py start --services
mysql,postgres --dir .run/bench`` (bench/run.sh starts them the same way).
"""
import argparse
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

FIGURES = ("qps", "p50_ms", "p99_ms", "cpu_us_per_q", "first_done_frac")
LOOPS = ("recv_send", "poll_ready", "poll0_like")


def cases(services, values):
    out = []
    for n in values:
        out.append(C.Case("postgres fair_yield=%d" % n, "drivers.py", {
            "services": services, "db": "postgres", "mode": "greenhook", "workload": "select1",
            "clients": 50, "queries": 300, "fair_yield": n}, timeout=180))
    out.append(C.Case("postgres psycogreen", "drivers.py", {
        "services": services, "db": "postgres", "mode": "psycogreen", "workload": "select1",
        "clients": 50, "queries": 300}, timeout=180))
    for n in values:
        out.append(C.Case("mysql fair_yield=%d" % n, "drivers.py", {
            "services": services, "db": "mysql", "mode": "greenhook", "workload": "select1",
            "clients": 50, "queries": 300, "fair_yield": n}, timeout=180))
    for n in values:
        out.append(C.Case("fastpath fair_yield=%d" % n, "fastpath.py", {
            "mode": "greenhook", "reps": 3, "fair_yield": n, "loops": list(LOOPS),
            "n": {k: 200000 for k in LOOPS}}, timeout=180))
    return out


def round_ratios(results, key, ref, field):
    """Median over rounds of results[key][r][field] / results[ref][r][field]."""
    by_run = {r["run"]: r for r in results[ref] if "error" not in r}
    rs = [r[field] / by_run[r["run"]][field] for r in results[key]
          if "error" not in r and r["run"] in by_run and by_run[r["run"]].get(field)]
    return statistics.median(rs) if rs else None


def report(results, values, meta):
    md = ["# The fairness policy on and off (`bench/fair_ab.py`)", "",
          "%s; %s, %d cores, load average at start %s; %d rounds, interleaved." % (
              meta["date"], meta["machine"]["cpu_model"], meta["machine"]["cores"],
              meta["loadavg_start"], meta["runs"]), ""]
    for db, ref in (("postgres", "postgres psycogreen"), ("mysql", "mysql fair_yield=0")):
        keys = ["%s fair_yield=%d" % (db, n) for n in values]
        if db == "postgres":
            keys.append(ref)
        md.append("**%s `SELECT 1`, 50 clients x 300 queries** (ratios: per round, to %s)" % (
            "psycopg2" if db == "postgres" else "mysqlclient",
            "psycopg2 + psycogreen" if db == "postgres" else "fair_yield=0"))
        md.append("")
        rows = []
        for k in keys:
            rs = results[k]
            rows.append([k.split(" ", 1)[1]] + [C.mmm(C.field_stats(rs, f)) for f in FIGURES] + [
                C.fmt_ratio(round_ratios(results, k, ref, "qps")),
                C.fmt_ratio(round_ratios(results, k, ref, "p99_ms")),
                C.fmt_ratio(round_ratios(results, k, ref, "cpu_us_per_q"))])
        md.append(C.md_table(["case", "queries/s", "p50 ms", "p99 ms", "client CPU µs/query",
                              "first client done", "q/s ratio", "p99 ratio", "CPU ratio"], rows))
        md.append("")
    md.append("**Fast path, one greenlet alone** (CPU ns per libc call, best of 3; ratio per "
              "round to fair_yield=0)")
    md.append("")
    rows = []
    for n in values:
        k = "fastpath fair_yield=%d" % n
        rows.append([k.split(" ", 1)[1]] + ["%s, %s" % (
            C.mmm(C.field_stats(results[k], loop)),
            C.fmt_ratio(round_ratios(results, k, "fastpath fair_yield=0", loop)))
            for loop in LOOPS])
    md.append(C.md_table(["case"] + list(LOOPS), rows))
    md.append("")
    errs = {k: C.errors(v) for k, v in results.items() if C.errors(v)}
    if errs:
        md.append("Errors: %s" % json.dumps(errs))
    return "\n".join(md) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--values", default="0,4,8", help="fair_yield values (0 is always included)")
    ap.add_argument("--out", default=os.path.join(C.HERE, "results"))
    args = ap.parse_args(argv)
    values = sorted({0} | {int(v) for v in args.values.split(",") if v})
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": C.machine(), "loadavg_start": C.loadavg(), "runs": args.runs,
            "values": values, "versions": C.versions()}
    results = C.interleave("fairness", cases(os.path.abspath(args.services), values), args.runs)
    md = report(results, values, meta)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fairness.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(args.out, "fairness.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
