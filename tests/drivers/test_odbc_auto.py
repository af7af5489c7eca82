"""pyodbc + unixODBC under auto mode only (``greenhook.patch_all()``, no ``patch_module``):
unixODBC (through libltdl) dlopens the ODBC driver -- MariaDB Connector/ODBC (libmaodbc,
which links libmariadb) or psqlODBC (psqlodbcw, which links libpq) -- at the first connect,
after patch_all.  libltdl's dlopen slot is hooked, so the driver and its libraries are
patched as they load.  20 greenlets, each its own connection, wait 0.3 s on the server:
serialized that is 6 s; greened it must finish well under 1.5 s (bound: 2 x 0.3 + 0.2 s)."""
import pytest

from _auto_run import assert_concurrent, run
from greenhook_drivers_support import require_module

N, SLEEP = 20, 0.3
BOUND = 2 * SLEEP + 0.2
MIN_TICKS = 15


@pytest.fixture(scope="module", autouse=True)
def _pyodbc():
    require_module("pyodbc")


def _odbc(hub, conn_str, sql):
    return run("auto_drivers.py", {"hub": hub, "case": "odbc", "sleep": SLEEP, "n": N,
                                   "conn_str": conn_str, "sql": sql})


@pytest.mark.parametrize("hub", ["builtin", "gevent"])
def test_mariadb_odbc(hub, mysql_server):
    c = mysql_server["connect"]
    res = _odbc(hub, "DRIVER={MariaDB Unicode};SERVER=%s;PORT=%d;USER=%s;PASSWORD=%s;"
                     "DATABASE=%s" % (c["host"], c["port"], c["user"], c["password"],
                                      c["database"]),
                "SELECT SLEEP({sleep}), {i}")
    # the driver's client library was not loaded before the first connect, then patched
    assert "libmariadb.so.3" not in res["after_import"], res["after_import"]
    assert "libmariadb.so.3" in res["after_connect"], res["after_connect"]
    assert res["results"] == [[[0, i]] for i in range(N)], res["results"]
    assert_concurrent(res, N, BOUND, MIN_TICKS)


@pytest.mark.parametrize("hub", ["builtin", "gevent"])
def test_postgresql_odbc(hub, postgres_server):
    c = postgres_server["connect"]
    res = _odbc(hub, "DRIVER={PostgreSQL Unicode};SERVER=%s;PORT=%d;UID=%s;DATABASE=%s;"
                     "SSLMODE=disable" % (c["host"], c["port"], c["user"], c["dbname"]),
                "SELECT pg_sleep({sleep}), {i}")
    assert not any(n.startswith("libpq.so") for n in res["after_import"]), res["after_import"]
    assert any(n.startswith("libpq.so") for n in res["after_connect"]), res["after_connect"]
    # pg_sleep returns void: psqlODBC hands it back as ''
    assert res["results"] == [[["", i]] for i in range(N)], res["results"]
    assert_concurrent(res, N, BOUND, MIN_TICKS)
