"""The real drivers connecting by NAME, the lookup greened (hooks/resolve.pxi): 20 greenlets
each resolve ``db.test`` (the test DNS server answers after 0.2 s), connect and wait 0.3 s on
the server; they overlap (ideal ~0.5 s; serialized 10 s) while the ticker ticks.

The scenario (``tests/scenarios/dns_drivers.py``) runs in a private *mount* namespace only,
with test copies of /etc/resolv.conf and /etc/hosts bind-mounted: the database servers listen
on 127.0.0.1 of the machine's network namespace, which a new network namespace could not
reach, so the DNS server listens on a free 127.53.x.y:53 of the machine's loopback instead
(glibc's resolver only speaks to port 53).  Needs root.
"""
import os
import shutil

import pytest

from greenhook_drivers_support import SERVICES_ENV, require_module, unavailable
from greenhook_test_support import SCENARIO_DIR, run_checked

N = 20
IDEAL = 0.2 + 0.3         # the lookup, then the request
BOUND = 2 * IDEAL + 0.2   # "well under 1.5 s"; serialized: 10 s

DRIVERS = {"mysqlclient": ("MySQLdb", "mysql_server", 0),
           "psycopg2": ("psycopg2", "postgres_server", 7),
           "pylibmc": ("pylibmc", "memcached_server", "by-name")}


@pytest.mark.parametrize("hub", ["gevent", "builtin"])
@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_connect_by_name(request, driver, hub):
    module, server_fixture, want = DRIVERS[driver]
    require_module(module)
    request.getfixturevalue(server_fixture)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("resolving through the test DNS server needs root and unshare")
    require_module("dnslib")
    r = run_checked(os.path.join(SCENARIO_DIR, "dns_drivers.py"), timeout=90,
                    args=[driver, hub, os.environ[SERVICES_ENV]])
    print("%s by name on %s: %d greenlets in %.3f s, %d ticks"
          % (driver, hub, N, r["wall"], r["ticks"]))
    assert [v for _, v in r["results"]] == [want] * N
    # every greenlet's lookup went through the delayed server, on the pool, greened
    assert r["getaddrinfo"]["green"] >= N and r["getaddrinfo"]["blocked"] == 0
    assert min(t for t, _ in r["results"]) >= 0.19
    assert IDEAL * 0.95 <= r["wall"] < BOUND, r["wall"]
    assert r["ticks"] >= r["wall"] / 0.01 * 0.5
