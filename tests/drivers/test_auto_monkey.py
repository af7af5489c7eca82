"""``GREENHOOK_AUTO=1`` + gevent's ``monkey.patch_all()``, and no greenhook line in the
script (tests/drivers/scenarios/auto_monkey.py): gevent calls greenhook's
``gevent.plugins.monkey.did_patch_all`` entry point.  mysqlclient imported before and after
the monkey-patch runs 20 x ``SELECT SLEEP(0.3)`` well under 1 s; without GREENHOOK_AUTO
(the control, 3 calls) they run one after the other."""
import pytest

from _auto_run import assert_concurrent, run
from greenhook_drivers_support import require_module

N, SLEEP = 20, 0.3


@pytest.fixture(scope="module", autouse=True)
def _drivers():
    require_module("MySQLdb")
    require_module("gevent")


@pytest.mark.parametrize("when", ["before", "after"])
def test_auto_env_with_monkey_patch_all(when, mysql_server):
    res = run("auto_monkey.py", {"when": when, "n": N, "sleep": SLEEP,
                                 "connect": mysql_server["connect"]},
              env={"GREENHOOK_AUTO": "1"})
    assert res["greenhook_loaded"] is True
    assert "libmariadb.so.3" in res["patched"], res["patched"]
    assert res["results"] == [[[0, i]] for i in range(N)], res["results"]
    assert_concurrent(res, N, 2 * SLEEP + 0.2, 15)


def test_without_auto_env_nothing_is_patched(mysql_server):
    res = run("auto_monkey.py", {"when": "after", "n": 3, "sleep": SLEEP,
                                 "connect": mysql_server["connect"]})
    assert res["patched"] == []
    assert res["elapsed"] >= 3 * SLEEP - 0.05, res   # serialized
    assert res["ticks"] <= 2, res
