"""Cancellation storms against the real drivers, greened, on both hubs.

A storm (``scenarios/storm_<driver>.py``, logic in ``scenarios/storm_common.py``): 50
greenlets, each looping over queries that carry a unique marker and wait a random time on the
server, each under a random ``Timeout`` (gevent's or ``greenhook.hub``'s), until at least
``CANCELS`` cancellations were counted.  After a cancel the greenlet keeps the same
connection: its next query must fail (the connection is dead: it reconnects) or return its own
marker.  An answer carrying another marker is *stale* (typically the cancelled query's answer,
read as the next one's): there must be none.  The process's fds and RSS, sampled after a
warm-up and again after the storm (connections closed, gc run), must be back to the baseline.

The staged case makes the worst moment deterministic: the cancel lands while the server's
whole answer already sits in the socket (see ``storm_common.staged_round``); the next queries
on that connection must fail or return their own rows.

Each run is a fresh interpreter with a timeout (GOT patches are process-wide).  Numbers are
printed (``-s``) and quoted in docs/DRIVERS.md ("Cancellation storms").
"""
import pytest

from greenhook_drivers_support import require_module
from test_greened import HUBS, run_scenario

N = 50                  # greenlets per storm
CANCELS = 1000          # at least this many cancellations per storm
SECONDS = 25            # the storm's own budget; it stops earlier once it has its cancellations
TIMEOUT = SECONDS + 60  # the subprocess's
RSS_MARGIN_KB = 4096    # RSS after the storm vs the warmed-up baseline (measured: +0.3-1.2 MB)
ROUNDS = 3              # staged rounds per run

# target cancellations per driver: the cheap ones get more (1.5-8 s each on 2 cores)
TARGET = {"mysql": 3000, "pg": 3000, "pylibmc": 1500}


@pytest.fixture(scope="module")
def storm_args(mysql_server, postgres_server, memcached_server):
    require_module("gevent")
    return {
        "mysql": {"module": "MySQLdb._mysql", "connect": mysql_server["connect"],
                  "_require": "MySQLdb"},
        "pg": {"module": "psycopg2._psycopg", "dsn": postgres_server["dsn_nossl"],
               "port": postgres_server["port"], "_require": "psycopg2"},
        "pylibmc": {"module": "_pylibmc", "servers": memcached_server["servers"],
                    "proxy_servers": memcached_server["proxy_servers"],
                    "proxy_delay": memcached_server["proxy_delay"], "_require": "pylibmc"},
    }


def _args(storm_args, driver, **kw):
    a = dict(storm_args[driver])
    require_module(a.pop("_require"))
    a.update(kw)
    return a


def _show(label, res):
    keys = ("elapsed", "queries", "answers", "cancels", "cancels_zero_delay",
            "dead_after_cancel", "answers_after_cancel", "stale", "missing", "connects")
    print("\n[greenhook-storm] %-8s hub=%-7s %s fds %s->%s rss %s->%s kB" % (
        label, res["hub"], " ".join("%s=%s" % (k, res.get(k)) for k in keys),
        res["base"]["fds"], res["after"]["fds"], res["base"]["rss_kb"], res["after"]["rss_kb"]))


@pytest.mark.parametrize("hub", HUBS)
@pytest.mark.parametrize("driver", ["mysql", "pg", "pylibmc"])
def test_cancellation_storm(storm_args, driver, hub):
    res = run_scenario("storm_%s.py" % driver,
                       _args(storm_args, driver, case="storm", hub=hub, patch=True, n=N,
                             cancels=TARGET[driver], seconds=SECONDS),
                       timeout=TIMEOUT)
    _show(driver, res)
    # the storm ran to completion, every greenlet ended cleanly
    assert res["greenlet_errors"] == [] and res["unfinished"] == 0, res
    assert res["warm_errors"] == {}, res["warm_errors"]
    # enough cancellations, at random moments, each inside a driver's greened wait
    assert res["cancels"] >= CANCELS, "only %d cancellations in %s s" % (
        res["cancels"], res["elapsed"])
    assert res["cancelled_waits"] >= res["cancels"], res
    assert res["answers"] >= CANCELS // 2, res   # and plenty of answers were checked
    # no stale answer; no answer without its marker
    assert res["stale"] == 0, "%d stale answers of %d (after %d cancellations): %s" % (
        res["stale"], res["answers"], res["cancels"], res["stale_samples"][:5])
    assert res["missing"] == 0, res["stale_samples"]
    # a connection that was never cancelled never failed
    assert res["n_unexpected"] == 0, res["unexpected_errors"]
    # a cancelled connection was either dead or went on answering correctly
    assert res["dead_after_cancel"] + res["answers_after_cancel"] > 0, res
    if driver == "mysql":
        # libmariadb drops the connection when a wait fails: every cancel costs a reconnect
        assert res["answers_after_cancel"] == 0, res
    # resources back to the baseline
    assert res["after"]["fds"] == res["base"]["fds"], (res["base"], res["after"])
    assert res["after"]["rss_kb"] - res["base"]["rss_kb"] <= RSS_MARGIN_KB, (
        res["base"], res["after"])


@pytest.mark.parametrize("hub", HUBS)
@pytest.mark.parametrize("driver", ["mysql", "pg", "pylibmc"])
def test_cancel_with_answer_already_queued(storm_args, driver, hub):
    res = run_scenario("storm_%s.py" % driver,
                       _args(storm_args, driver, case="staged", hub=hub, patch=True,
                             rounds=ROUNDS),
                       timeout=60)
    assert len(res["rounds"]) == ROUNDS
    for rnd in res["rounds"]:
        # the staging worked: one socket found, the call was cancelled by the Timeout
        # while the server's answer was queued in that socket
        assert rnd["warm"] is True and rnd["sockets"] == 1, rnd
        assert rnd.get("raised") == "Timeout", "not cancelled (staging failed?): %r" % (rnd,)
        assert rnd["queued"] > 0, rnd
        # the same connection afterwards: dead, or its own answers; never the cancelled one
        for nxt in rnd["next"]:
            assert "error" in nxt or nxt["verdict"] == "own", (
                "a query after the cancel got %s answer: %r (after cancel: %r)" % (
                    nxt.get("verdict"), nxt, rnd["state_after_cancel"]))
        if driver == "pg":
            # psycopg2 knows its connection is dead once a query failed on it
            if any("error" in nxt for nxt in rnd["next"]):
                assert rnd["state_after_next"]["closed"] != 0, rnd
    assert res["cancelled_waits"] >= ROUNDS, res
