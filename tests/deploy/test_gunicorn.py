"""gunicorn ``-k gevent``, one worker, under wrk (100 connections): every request runs
``SELECT SLEEP(0.05)`` through mysqlclient.  With greenhook the worker overlaps the
requests; without it, it serves one at a time (20 req/s).  The cases and the app are
bench/deploy_gunicorn.py's and bench/deploy_app.py's; this runs them for 4 s each (the
benchmark's default is 10 s).

These are end-to-end checks of a deployment, not speed targets: the bound (>= 50x the
ungreened worker, ideal 100x) is half the ideal, and p99 < 0.3 s is six times one query.  The
machine is shared: a case that misses them runs once more and the better run counts (the
functional checks hold for every run).
"""
import importlib.util
import os
import shutil
import sys

import pytest

from greenhook_test_support import ROOT, skip_or_fail

SECONDS, CONNECTIONS = 4, 100


def _bench():
    path = os.path.join(ROOT, "bench", "deploy_gunicorn.py")
    spec = importlib.util.spec_from_file_location("deploy_gunicorn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


@pytest.fixture(scope="module")
def tools(mysql_server):
    for mod in ("gunicorn", "gevent", "MySQLdb"):
        try:
            __import__(mod)
        except ImportError as exc:
            skip_or_fail("%s is not installed (%s): scripts/install_drivers.sh VENV" % (mod, exc))
    if shutil.which("wrk") is None:
        skip_or_fail("wrk is not installed: scripts/install_system_deps.sh")
    return mysql_server["connect"]


@pytest.fixture(scope="module")
def baseline(tools):
    res = bench.run_case("off", tools, SECONDS, CONNECTIONS, python=sys.executable,
                         log=lambda msg: print(msg))
    gh = res["greenhook"]
    assert gh["patched"] == [] and gh["poll"] == {}, gh      # greenhook really was off
    # One request at a time: ~20 req/s (a bound on both sides, so the ratio below means it).
    assert 10 <= res["req_s"] <= 25, res
    assert "Traceback" not in res["log"] and "Exception ignored" not in res["log"], res["log"]
    return res


def check_run(case, res):
    """What must hold in every run, however loaded the machine."""
    gh = res["greenhook"]
    assert "libmariadb.so.3" in gh["patched"], gh
    assert gh["backend"] == "gevent", gh
    # Where the app was imported: in the master with --preload, else in the worker.  The
    # explicit patch_module line runs there (with --preload the worker inherits the patch
    # across the fork); GREENHOOK_AUTO patches in the worker, at gevent's monkey-patching.
    assert gh["ppid"] == res["master_pid"], (gh, res["master_pid"])
    if case.endswith("--preload"):
        assert gh["imported_in"] == res["master_pid"] != gh["pid"], gh
    else:
        assert gh["imported_in"] == gh["pid"], gh
    # The worker's waits were green, none blocked the OS thread.
    assert gh["poll"]["green"] >= res["requests"] // 2 and gh["poll"]["blocked"] == 0, gh
    assert res["non_2xx"] == 0 and not any(res["socket_errors"].values()), res
    # Nothing went wrong in the master or the worker, up to and including their exit.
    assert "Traceback" not in res["log"] and "Exception ignored" not in res["log"], res["log"]


@pytest.mark.parametrize("case", ["app", "app --preload", "post_fork hook", "GREENHOOK_AUTO=1",
                                  "GREENHOOK_AUTO=1 --preload"])
def test_one_worker_serves_50x(case, tools, baseline):
    def fast(res):
        return res["req_s"] >= 50 * baseline["req_s"] and res["p99_ms"] < 300

    runs = []
    for _ in range(2):      # a second run only when the first missed the speed bounds
        res = bench.run_case(case, tools, SECONDS, CONNECTIONS, python=sys.executable,
                             log=lambda msg: print(msg))
        check_run(case, res)
        runs.append(res)
        if fast(res):
            break
    res = max(runs, key=lambda r: (fast(r), r["req_s"]))
    ratio = res["req_s"] / baseline["req_s"]
    assert ratio >= 50, "%s: %.1f req/s = %.1fx the ungreened %.1f req/s (need >= 50x); runs: %s" % (
        case, res["req_s"], ratio, baseline["req_s"], [r["req_s"] for r in runs])
    assert res["p99_ms"] < 300, (res, [r["p99_ms"] for r in runs])
