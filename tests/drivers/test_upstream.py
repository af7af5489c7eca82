"""The drivers' own test suites, plain and greened, compared test by test.

For psycopg2, mysqlclient and pylibmc, the sdist of the version scripts/install_drivers.sh
builds is fetched (cached in ``.run/upstream``) and its test suite is run three times with
``scripts/upstream_suites.py``: plain (no greenhook), and greened on the gevent hub and on the
built-in hub -- the driver patched with ``greenhook.patch_module`` and the whole suite run in a
greenlet, so every driver call that would block parks it on the hub.

The contract: every test that passes plain passes greened.  A difference is allowed only
when it is listed in ``KNOWN_DIFFERENCES`` with its reason -- the same list as in
docs/DRIVERS.md ("The drivers' own test suites").  The test fails on any unlisted difference,
and also when a listed one stops differing, so the list stays honest.  Tests that do not pass
plain are listed in ``PLAIN_NOT_PASSING`` (also mirrored in the doc): an unexpected change
there means the environment, not greenhook, changed, and fails the plain test.

Times are printed (``-s``): the whole module takes ~3 minutes on the 2-core machine.
"""
import importlib.util
import os
import sys

import pytest

from greenhook_drivers_support import require_module, unavailable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "scripts", "upstream_suites.py")
CACHE = os.path.join(REPO, ".run", "upstream")

HUBS = ["gevent", "builtin"]
DRIVERS = ["psycopg2", "mysqlclient", "pylibmc"]
TEST_TIMEOUT = 60       # one upstream test; a hang is recorded and the suite resumes
SUITE_TIMEOUT = 420     # one run of one suite

#: (driver, test id) -> (hubs it differs on, why): tests that pass plain and not greened.
#: Mirrored in docs/DRIVERS.md; keep both in step.
KNOWN_DIFFERENCES = {
}

#: (driver, test id) -> (outcome plain, why): tests that do not pass plain, here.
#: Mirrored in docs/DRIVERS.md.
PLAIN_NOT_PASSING = {
    ("pylibmc", "tests/test_autoconf.py::AutoConfTests::test_autoconf"):
        ("failed", "pylibmc.autoconf.elasticache() defaults to 127.0.0.1:11211"),
    ("pylibmc", "tests/test_autoconf.py::AutoConfTests::test_autoconf_only_cname"):
        ("failed", "pylibmc.autoconf.elasticache() defaults to 127.0.0.1:11211"),
    ("pylibmc", "tests/test_autoconf.py::AutoConfTests::test_no_autoconf"):
        ("failed", "pylibmc.autoconf.elasticache() defaults to 127.0.0.1:11211"),
    ("mysqlclient", "tests/test_sqlalchemy.py"):
        ("skipped", "needs SQLAlchemy >= 2.0, which is not installed"),
}

#: (driver, test id) -> why: tests whose outcome depends on the machine's load, by their own
#: authors' account; run and recorded, but not compared.  Mirrored in docs/DRIVERS.md.
TIMING_DEPENDENT = {
    ("psycopg2", "tests.test_async.AsyncTests.test_flush_on_write"):
        "warns (an error under the suite's warnings filter) when the kernel's buffers take a "
        "50 MB query without blocking -- 'a testing glitch ... on high load', says the test",
}

#: a sanity floor: the suites really ran (passing plain, here: 691, 182, 38)
MIN_PASSED = {"psycopg2": 650, "mysqlclient": 170, "pylibmc": 35}
#: and greened runs really parked on the hub (measured: ~8,500, ~1,050, ~510)
MIN_GREEN_WAITS = {"psycopg2": 4000, "mysqlclient": 500, "pylibmc": 250}

IMPORT = {"psycopg2": "psycopg2", "mysqlclient": "MySQLdb", "pylibmc": "pylibmc"}
SERVICE = {"psycopg2": "postgres_server", "mysqlclient": "mysql_server",
           "pylibmc": "memcached_server"}


def _load_script():
    spec = importlib.util.spec_from_file_location("greenhook_upstream_suites", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


upstream = _load_script()


@pytest.fixture(scope="module")
def suites():
    require_module("gevent")
    try:
        return upstream.fetch(CACHE, python=sys.executable)
    except Exception as exc:  # no network, no pip: nothing to run
        unavailable("cannot fetch the drivers' sdists into %s: %s" % (CACHE, exc))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("upstream"))


_runs = {}


def _run(driver, mode, suites, services, workdir, request):
    """One run of ``driver``'s suite in ``mode``, once per session."""
    key = (driver, mode)
    if key not in _runs:
        require_module(IMPORT[driver])
        request.getfixturevalue(SERVICE[driver])   # the server is there (or fail/skip)
        res = upstream.run_suite(driver, mode, suites[driver]["root"], services,
                                 sys.executable, workdir, test_timeout=TEST_TIMEOUT,
                                 total_timeout=SUITE_TIMEOUT)
        c = upstream.counts(res["outcomes"])
        print("\n[greenhook-upstream] %-11s %-7s %6.1f s  %s%s" % (
            driver, mode, res["seconds"], " ".join("%s=%d" % kv for kv in c.items()),
            "  green_waits=%s" % (res["info"] or {}).get("green_waits") if mode != "plain"
            else ""))
        _runs[key] = res
    return _runs[key]


def _detail(res, tid):
    lines = (res["details"].get(tid) or "").strip().splitlines()
    return " | ".join(lines[-3:])


@pytest.mark.parametrize("driver", DRIVERS)
def test_upstream_suite_plain(driver, suites, services, workdir, request):
    res = _run(driver, "plain", suites, services, workdir, request)
    assert "aborted" not in (res["info"] or {}), res["info"]
    assert res["info"]["driver"].startswith(sys.prefix), res["info"]  # the built driver
    passed = sum(1 for o in res["outcomes"].values() if o == "passed")
    assert passed >= MIN_PASSED[driver], upstream.counts(res["outcomes"])
    not_passing = {tid: o for tid, o in res["outcomes"].items()
                   if o not in ("passed", "skipped", "xfailed")
                   and (driver, tid) not in TIMING_DEPENDENT}
    not_passing.update({tid: o for tid, o in res["outcomes"].items()
                        if (driver, tid) in PLAIN_NOT_PASSING})
    expected = {tid: why[0] for (d, tid), why in PLAIN_NOT_PASSING.items() if d == driver}
    assert not_passing == expected, "\n".join(
        "%s: %s plain (listed: %s) %s" % (tid, not_passing.get(tid, "passed"),
                                          expected.get(tid, "no"), _detail(res, tid))
        for tid in sorted(set(not_passing) | set(expected))
        if not_passing.get(tid) != expected.get(tid))


@pytest.mark.parametrize("hub", HUBS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_upstream_suite_greened(driver, hub, suites, services, workdir, request):
    plain = _run(driver, "plain", suites, services, workdir, request)
    green = _run(driver, hub, suites, services, workdir, request)
    assert "aborted" not in (green["info"] or {}), green["info"]
    # greened for real: the suite ran inside a greenlet and parked on the hub
    assert green["info"]["green_waits"] >= MIN_GREEN_WAITS[driver], green["info"]
    assert any(IMPORT[driver].lower() in p.lower() for p in green["info"]["patched"]), (
        green["info"]["patched"])
    # the same tests ran
    assert set(green["outcomes"]) == set(plain["outcomes"]), (
        sorted(set(green["outcomes"]) ^ set(plain["outcomes"]))[:20])
    diff = {tid: d for tid, d in upstream.differences(plain["outcomes"], green["outcomes"]).items()
            if (driver, tid) not in TIMING_DEPENDENT}
    listed = {tid for (d, tid), (hubs, why) in KNOWN_DIFFERENCES.items()
              if d == driver and hub in hubs}
    unlisted = sorted(set(diff) - listed)
    fixed = sorted(listed - set(diff))
    assert not unlisted and not fixed, "\n".join(
        ["passed plain, %s on the %s hub (not in KNOWN_DIFFERENCES):" % ("/".join(
            sorted({diff[t][1] for t in unlisted})) or "-", hub)]
        + ["  %s: %s" % (t, _detail(green, t)) for t in unlisted]
        + ["listed in KNOWN_DIFFERENCES but passes greened now: remove it "
           "(here and in docs/DRIVERS.md):"] * bool(fixed)
        + ["  %s" % t for t in fixed])
