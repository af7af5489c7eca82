"""python-ldap (libldap) under auto mode only, against a real slapd (scripts/services.py,
service "slapd") behind the delaying proxy (0.3 s per client chunk): 20 greenlets, each its
own connection, search one entry each.  Serialized that is 6 s; greened it must finish well
under 1.5 s (bound: 2 x 0.3 + 0.2 s)."""
import pytest

from _auto_run import assert_concurrent, run
from greenhook_drivers_support import require_module, unavailable

N = 20
MIN_TICKS = 15


@pytest.fixture(scope="module")
def slapd_server(services):
    require_module("ldap")
    info = services.get("services", {}).get("slapd")
    if not info:
        unavailable("service 'slapd' is not in services.json (scripts/services.py start)")
    return info


@pytest.mark.parametrize("hub", ["builtin", "gevent"])
def test_ldap_searches_overlap(hub, slapd_server):
    delay = slapd_server["proxy_delay"]
    res = run("auto_drivers.py", {"hub": hub, "case": "ldap", "n": N,
                                  "uri": slapd_server["proxy_uri"], "base": slapd_server["base"]})
    assert any(n.startswith("libldap") for n in res["after_import"]), res["after_import"]
    base = slapd_server["base"]
    assert res["results"] == [[["uid=user%d,ou=people,%s" % (i, base), {"cn": ["User %d" % i]}]]
                              for i in range(N)], res["results"]
    assert_concurrent(res, N, 2 * delay + 0.2, MIN_TICKS)
