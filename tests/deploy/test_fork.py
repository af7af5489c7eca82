"""Fork safety: a process that patched mysqlclient forks (``os.fork()``, multiprocessing's
fork start method, ``gevent.fork()``) and every child keeps waiting greenly, on a hub of its
own, while the parent keeps working.  Scenario: tests/scenarios/fork_mysql.py."""
import json
import os

from greenhook_test_support import SCENARIO_DIR, run_checked

N, SLEEP = 20, 0.2
# Overlapped calls: 2x the ideal + a fixed margin (connects included); serialized is 4 s.
BOUND = 2 * SLEEP + 0.4


def check_round(r, what):
    assert r["rows"] == [[[0, i]] for i in range(N)], what
    assert r["wall"] < BOUND, "%s: %d x SELECT SLEEP(%s) took %.2f s (bound %.2f s, serial %.1f s)" % (
        what, N, SLEEP, r["wall"], BOUND, N * SLEEP)
    # The loop and its timers ran during the round: a 10 ms ticker ticked.
    assert r["ticks"] >= 0.5 * r["wall"] / 0.01, (what, r)


def test_children_stay_green(hub, mysql_server):
    out = run_checked(os.path.join(SCENARIO_DIR, "fork_mysql.py"), timeout=120,
                      args=[json.dumps({"hub": hub, "connect": mysql_server["connect"],
                                        "n": N, "sleep": SLEEP})])
    assert out["hub"] == hub
    assert out["kcmp_self"] is True     # the epoll comparison below can say "same"
    assert out["parent_bound_before"] == 2      # the main thread and the other bound thread
    for what in ("first", "during", "after"):
        check_round(out[what], "parent, %s round" % what)
    expected = {"os.fork", "multiprocessing"} | ({"gevent.fork"} if hub == "gevent" else set())
    assert set(out["children"]) == expected
    for how, res in out["children"].items():
        what = "child by %s" % how
        assert "error" not in res, (what, res)
        assert res["exitcode"] == 0, (what, res)
        check_round(res["round"], what)
        # Only the forking thread is still bound; the other thread's binding was dropped.
        assert res["bound_threads"] == [res["me"]], (what, res)
        # The child's loop has its own epoll set, not the parent's kernel object.
        assert res["epoll_shared"] is False, (what, res)
        assert res["green"] >= N, (what, res)
        # The detector's monitor thread runs again in the child and sees the child's stall.
        assert res["monitor_alive"] is True, (what, res)
        assert any(s["thread"] == res["me"] and s["seconds"] >= 0.1 for s in res["stalls"]), \
            (what, res)
    # The parent after its children: still bound twice, its detector still running.
    assert out["parent_bound_after"] == 2
    assert out["parent_monitor_alive"] is True
