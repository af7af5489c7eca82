"""Scenario 5: what the blocking detector costs.

>>> PLACEHOLDER HOOK <<<  ``greenhook.watch()`` (src/greenhook/_watch.py) is being written
in parallel with this benchmark.  When the installed greenhook has it (``greenhook.watch``,
or ``greenhook._watch.watch`` until it is exported), this scenario runs
scenario 4's mysqlclient + greenhook workloads (50 clients, ``SELECT 1`` and
``SELECT SLEEP(0.01)``) with ``greenhook.watch(threshold=0.1)`` on and off, interleaved;
otherwise it reports that it was skipped and why.  The call itself lives in
drivers.py (``_start_watcher`` / ``_stop_watcher``): adapt it there if watch()'s final API
differs (it accepts a returned handle with stop/close/cancel/disable, or a context manager).
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import drivers  # noqa: E402

THRESHOLD = 0.1
WORKS = ("select1", "sleep10ms")


def available():
    """(True, which) when the benchmark venv's greenhook has watch(), else (False, why)."""
    code = ("import sys, greenhook; sys.path.insert(0, %r); import drivers; "
            "fn = drivers.watch_function(greenhook); "
            "sys.exit(3 if fn is None else 0 if fn is getattr(greenhook, 'watch', None) else 4)"
            % os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode == 0:
        return True, "greenhook.watch"
    if r.returncode == 4:
        return True, "greenhook._watch.watch (not exported as greenhook.watch yet)"
    if r.returncode == 3:
        return False, ("greenhook.watch() does not exist in the installed greenhook "
                       "(nor greenhook._watch.watch): scenario skipped")
    return False, "could not import greenhook: %s" % r.stderr.strip()[-300:]


def cases(cfg):
    out = []
    for work in WORKS:
        q = drivers.QUERIES[work] // (4 if cfg["quick"] else 1)
        for on in (False, True):
            params = {"services": cfg["services"], "db": "mysql", "mode": "greenhook",
                      "workload": work, "clients": drivers.CLIENTS, "queries": q}
            if on:
                params["watch"] = THRESHOLD
            out.append(C.Case("%s/%s" % (work, "on" if on else "off"), "drivers.py", params,
                              timeout=180))
    return out


def summarize(results, cfg):
    figs = {}
    which = cfg.get("watch_function")
    for work in WORKS:
        figs[work] = {}
        for state in ("off", "on"):
            rs = results["%s/%s" % (work, state)]
            figs[work][state] = {f: C.field_stats(rs, f) for f in ("qps", "p50_ms", "p99_ms")}
            figs[work][state]["errors"] = C.errors(rs)
        figs[work]["cost"] = C.ratio(figs[work]["off"]["qps"]["median"],
                                     figs[work]["on"]["qps"]["median"])
    return {"title": "Detector cost: greenhook.watch(threshold=%s) on vs off" % THRESHOLD,
            "figures": figs, "skipped": None, "function": which}


def skipped(why):
    return {"title": "Detector cost: greenhook.watch(threshold=%s) on vs off" % THRESHOLD,
            "figures": None, "skipped": why}


def report(sec):
    if sec.get("skipped"):
        return "**Placeholder** — %s. It runs by itself once `greenhook.watch` exists." % sec["skipped"]
    rows = []
    for work in WORKS:
        f = sec["figures"][work]
        for state in ("off", "on"):
            rows.append(["mysqlclient + greenhook, %s" % work, state, C.mmm(f[state]["qps"]),
                         C.mmm(f[state]["p50_ms"]), C.mmm(f[state]["p99_ms"]),
                         C.fmt_ratio(f["cost"]) if state == "on" else ""])
    return ("Called: `%s`, threshold %s s, on the gevent hub; scenario 4's MariaDB workloads, "
            "50 clients.\n\n" % (sec.get("function"), THRESHOLD)
            + C.md_table(["workload", "watch", "queries/s", "p50 ms", "p99 ms",
                          "q/s off / on (> 1: watch costs)"], rows))
