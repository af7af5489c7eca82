"""The blocking detector where users run it: a process monkey-patched by gevent (gunicorn's
gevent worker, Celery's gevent pool, Locust), before and after a fork.  There
``threading.Thread`` is a greenlet and ``threading.get_ident()`` names greenlets, so the
detector's monitor must be a real OS thread.  Scenario: tests/scenarios/fork_watch_monkey.py."""
import os

from greenhook_test_support import SCENARIO_DIR, run_checked


def reported(stalls, me):
    """One stall of the blocked thread, reported past the 0.05 s threshold, lasting ~0.3 s."""
    return any(s["thread"] == me and s["seconds"] >= 0.05 and s["duration"] >= 0.25
               for s in stalls)


def test_detector_in_a_monkey_patched_process_and_its_fork():
    out = run_checked(os.path.join(SCENARIO_DIR, "fork_watch_monkey.py"), timeout=60)
    assert out["monitor_is_greenlet"] is False
    assert reported(out["parent_before"], out["me"]), out
    child = out["child"]
    assert out["child_exit"] == 0, out
    assert child["alive"] is True, out
    assert reported(child["stalls"], child["me"]), out
    assert reported(out["parent_after"], out["me"]), out
    assert out["stopped"] is True
