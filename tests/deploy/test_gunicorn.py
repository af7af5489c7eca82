"""gunicorn ``-k gevent``, one worker, under wrk (100 connections): every request runs
``SELECT SLEEP(0.05)`` through mysqlclient.  With greenhook the worker overlaps the
requests; without it, it serves one at a time (20 req/s).  The cases and the app are
bench/deploy_gunicorn.py's and bench/deploy_app.py's; this runs them for 4 s each (the
benchmark's default is 10 s).

These are end-to-end checks of a deployment, not speed targets: the bound (>= 50x the
ungreened worker, ideal 100x) is half the ideal, and p99 < 0.3 s is six times one query.
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


@pytest.mark.parametrize("case", ["app", "app --preload", "post_fork hook"])
def test_one_worker_serves_50x(case, tools, baseline):
    res = bench.run_case(case, tools, SECONDS, CONNECTIONS, python=sys.executable,
                         log=lambda msg: print(msg))
    gh = res["greenhook"]
    assert "libmariadb.so.3" in gh["patched"], gh
    assert gh["backend"] == "gevent", gh
    # Where the patch was made: in the master with --preload (the worker inherited it across
    # the fork), else in the worker itself.
    assert gh["ppid"] == res["master_pid"], (gh, res["master_pid"])
    if case == "app --preload":
        assert gh["patched_in"] == res["master_pid"] != gh["pid"], gh
    else:
        assert gh["patched_in"] == gh["pid"], gh
    # The worker's waits were green, none blocked the OS thread.
    assert gh["poll"]["green"] >= res["requests"] // 2 and gh["poll"]["blocked"] == 0, gh
    assert res["non_2xx"] == 0 and not any(res["socket_errors"].values()), res
    # Nothing went wrong in the master or the worker, up to and including their exit.
    assert "Traceback" not in res["log"] and "Exception ignored" not in res["log"], res["log"]
    ratio = res["req_s"] / baseline["req_s"]
    assert ratio >= 50, "%s: %.1f req/s = %.1fx the ungreened %.1f req/s (need >= 50x)" % (
        case, res["req_s"], ratio, baseline["req_s"])
    assert res["p99_ms"] < 300, res
