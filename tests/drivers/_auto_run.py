"""Shared by the auto-mode driver tests (test_odbc_auto, test_ldap_auto, test_auto_monkey):
run ``scenarios/<script>`` in a fresh interpreter (patches are process-wide), return its
``RESULT`` and check the usual concurrency proof."""
import json
import os
import subprocess
import sys

import pytest

SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")


def run(script, args, env=None, timeout=90):
    cmd = [sys.executable, os.path.join(SCENARIOS, script), json.dumps(args)]
    child_env = dict(os.environ, PYTHONFAULTHANDLER="1")
    child_env.pop("GREENHOOK_AUTO", None)
    child_env.update(env or {})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout, cwd=SCENARIOS, env=child_env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail("%s %s: no result after %s s\n%s\n%s" % (script, args, timeout, exc.stdout,
                                                            exc.stderr), pytrace=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or len(lines) != 1 or "Traceback" in proc.stderr:
        pytest.fail("%s %s failed (exit %s)\nstdout:\n%s\nstderr:\n%s" % (
            script, args, proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]),
            pytrace=False)
    return json.loads(lines[0][len("RESULT "):])


def assert_concurrent(res, n, bound, min_ticks):
    """n calls overlapped: no error, all finished, within ``bound`` s, the ticker ticking."""
    print("\n[greenhook-auto] %-40s hub=%-7s elapsed=%s ticks=%s" % (
        res.get("case", res.get("when")), res.get("hub", "gevent"), res["elapsed"], res["ticks"]))
    assert res["errors"] == {}, res["errors"]
    assert res["unfinished"] == 0, res
    assert len(res["results"]) == n
    assert res["elapsed"] < bound, res
    assert res["ticks"] >= min_ticks, res
