"""Cooperative name resolution (hooks/resolve.pxi, includes/gh_dns.h): greened lookups run the
real libc call on the resolver pool and park the greenlet, with glibc's exact answers.

Every scenario runs in its own private namespace (``tests/scenarios/dnsenv.py``:
``unshare --mount --net``, bind-mounted test copies of /etc/resolv.conf, /etc/hosts and
/etc/nsswitch.conf, the asyncio + dnslib server of ``dns_server.py`` on 127.0.0.1:53 inside):
the machine's own files and network are never touched.  Needs root (CI runs as root).
"""
import os
import shutil

import pytest

from greenhook_test_support import SCENARIO_DIR, run_checked, skip_or_fail


@pytest.fixture(autouse=True)
def namespace_tools():
    if os.geteuid() != 0:
        skip_or_fail("the DNS scenarios need root for unshare --mount --net")
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            skip_or_fail("the DNS scenarios need %s" % tool)
    try:
        import dnslib  # noqa: F401
    except ImportError:
        skip_or_fail("dnslib is not installed (pip install '.[test]')")


def scenario(name, hub, timeout=120):
    return run_checked(os.path.join(SCENARIO_DIR, name), timeout=timeout, args=[hub])


def test_200_distinct_names_overlap(hub):
    """200 greenlets x distinct names x 0.2 s server delay (40 s serialized): all done in
    well under 1 s, the ticker ticking all along, each whole addrinfo list equal to glibc's."""
    r = scenario("dns_concurrency.py", hub)
    assert r["differ"] == [] and len(r["same"]) == 200
    assert r["entries"] == 200 * 6      # 2 families x 3 socket types per name
    assert r["stats"]["green"] == 200 and r["stats"]["blocked"] == 0
    assert 0.2 <= r["wall"] < 0.8, r["wall"]
    assert r["ticks"] >= r["wall"] / 0.01 * 0.5, (r["ticks"], r["wall"])
    assert r["pool"]["live"] == 0 and r["pool"]["max"] == 200


def test_same_answers_as_glibc(hub):
    """Each function and case (A, AAAA, AF_UNSPEC, AI_CANONNAME, AI_ADDRCONFIG, search + ndots,
    /etc/hosts, NXDOMAIN, SERVFAIL, getnameinfo, gethostby*, res_query...) answers as libc
    itself does, all greened at once; gethostbyname_r: ERANGE, then success on retry."""
    r = scenario("dns_semantics.py", hub)
    exp, got = r["expected"], r["got"]
    assert len(exp) == 37
    diff = {k: (exp[k], got[k]) for k in exp if exp[k] != got[k]}
    assert diff == {}
    # the cases really are what their names say (a server mistake would make both sides agree)
    assert exp["NXDOMAIN"][2][0] == -2 and exp["SERVFAIL"][2][0] == -3     # EAI_NONAME, EAI_AGAIN
    assert exp["AI_CANONNAME"][1][0][3] == "h4.test"
    assert exp["search (ndots)"][1][0][4][0] == "10.0.0.6"
    assert exp["/etc/hosts"][1][0][4][0] == "10.9.9.9"
    assert exp["getnameinfo"] == ["ok", ["h7.test", "http"]]
    assert exp["gethostbyname_r ERANGE"][0] == 34 and exp["gethostbyname_r"][3] is True
    assert got["gethostbyname_r"][3] is True    # the answer lives in the caller's buffer
    assert exp["gethostbyname NXDOMAIN"] == [None, 1]       # HOST_NOT_FOUND
    assert exp["res_query NXDOMAIN"] == [-1, None, 1]
    sizes, final = r["erange"]
    assert [rc for _, rc in sizes] == [34] * (len(sizes) - 1) + [0] and final == r["erange_expected"]
    # all 37 at once with 50 ms answers: they overlapped, and the hub kept running
    assert r["wall"] < 1.0 and r["ticks"] > 50
    for sym in ("getaddrinfo", "getnameinfo", "gethostbyname", "gethostbyname_r",
                "gethostbyaddr_r", "res_query"):
        assert r["stats"][sym]["green"] > 0 and r["stats"][sym]["blocked"] == 0, sym
    # numeric hosts and getnameinfo's own AI_NUMERICHOST call answered inline
    assert r["stats"]["getaddrinfo"]["passthrough"] == 7
    # resolver_threads=4: 20 lookups of 0.2 s run in 5 rounds
    assert r["bounded_ok"] and 1.0 <= r["bounded_wall"] < 1.8, r["bounded_wall"]


def test_silent_server(hub):
    """timeout:1 attempts:1 and a server that never answers: the same EAI_AGAIN after the same
    ~1 s as glibc unpatched, while 20 other lookups (0.1 s) finish and the ticker ticks."""
    r = scenario("dns_silent.py", hub)
    assert r["got"] == r["expected"] and r["expected"][2][0] == -3
    assert 0.95 <= r["expected_wall"] < 1.6
    # + 0.1 s: the search-list query after the timeout is answered after the 0.1 s delay
    assert r["expected_wall"] - 0.1 <= r["got_wall"] < r["expected_wall"] + 0.6
    assert r["others_ok"] and r["others_wall"] < 0.6
    assert r["ticks"] >= r["got_wall"] / 0.01 * 0.5


def test_cancel_mid_lookup(hub):
    """A Timeout (0.3 s) or kill during a 1 s lookup returns the greenlet at once with the
    original exception (the C caller saw EAI_SYSTEM/ETIMEDOUT, the Timeout's context); the
    late results are freed by the workers; the next lookup is right; no fd is left over."""
    r = scenario("dns_cancel.py", hub)
    for name, (what, at, _) in r["cases"].items():
        assert what == "Timeout" and 0.29 <= at < 0.6, (name, what, at)
    assert r["cases"]["getaddrinfo"][2] == "TimeoutError(110, 'Connection timed out')"
    assert r["victim_dead"] and 0.29 <= r["kill"] < 0.6
    assert r["during"]["live"] == 4       # the workers still run the abandoned lookups
    assert r["after"]["live"] == 0 and r["after"]["queued"] == 0
    assert r["cancelled"] == {"getaddrinfo": 2, "gethostbyname_r": 1, "gethostbyname": 1}
    assert r["again_same"] and r["fds1"] == r["fds0"]
    assert r["ticks"] >= 15


def test_10000_concurrent_lookups(hub):
    """10,000 concurrent lookups, five rounds, 1,000 cancellations in three of them: right
    answers, no job or fd left, and RSS flat once the first cancelling round has run."""
    r = scenario("dns_many.py", hub, timeout=200)
    rounds = r["rounds"]
    for rd in rounds:
        assert rd["wrong"] == 0 and rd["pool"]["live"] == 0 and rd["pool"]["queued"] == 0
        assert rd["fds"] == rounds[0]["fds"]
        assert rd["pool"]["threads"] <= 64
    assert r["stats"]["green"] >= 50000 and r["stats"]["cancelled"] > 0
    assert r["stats"]["blocked"] == 0
    # RSS (kB, after malloc_trim) wanders by a few MB between rounds on a shared machine; a
    # leak of 300 bytes per lookup would add 9 MB over the 33,000 lookups of rounds 3-5
    base = max(rounds[0]["rss"], rounds[1]["rss"])
    assert max(rd["rss"] for rd in rounds[2:]) <= base + 8 * 1024, [rd["rss"] for rd in rounds]
    assert rounds[1]["rss"] <= rounds[0]["rss"] + 40 * 1024


def test_fork_with_lookups_in_flight(hub):
    """fork() while five lookups are parked: parent and child both get the right answers in
    about the 0.5 s server delay (the child's new workers re-run the jobs with resolver state
    of their own), and the child's pool serves new lookups."""
    r = scenario("dns_fork.py", hub)
    assert r["child_status"] == 0
    assert r["parent_same"] and r["parent_wall"] < 0.8, r
    assert r["child_same"] and r["child_again"] and r["child_wall"] < 1.3, r
    assert r["child_pool"]["live"] == 0


def test_pass_through_rules(hub):
    """An unbound OS thread calls libc directly; the hub greenlet, or a bound thread with no hub
    yet, cannot park, so its lookup blocks its OS thread (counted as blocked); the answers are
    glibc's either way."""
    r = scenario("dns_passthrough.py", hub)
    assert r["no_hub_before"] and r["no_hub_same"] and r["no_hub"]["blocked"] == 1
    assert r["other_same"] and r["unbound"]["passthrough"] == 1 and r["unbound"]["calls"] == 1
    assert r["in_hub_same"] and r["in_hub"]["blocked"] == 1 and r["in_hub"]["calls"] == 1
    assert r["in_hub_static_same"] and r["in_hub_static"]["blocked"] == 1
    assert r["pool"]["live"] == 0


def test_configure_resolver_threads():
    """configure(resolver_threads=N) sets the pool's bound and returns the previous one; other
    values are refused with InvalidArgument, changing nothing."""
    code = """if True:
        import greenhook, ghscen
        hooks = greenhook._core.hooks()
        before = hooks.resolver_pool()["max"]
        old = greenhook.configure(resolver_threads=7)
        errors = []
        for bad in (0, -1, 5000, 2.5, "8", True):
            try:
                greenhook.configure(resolver_threads=bad)
            except greenhook.InvalidArgument as exc:
                errors.append(type(exc).__name__)
        ghscen.report(before=before, old=old, now=hooks.resolver_pool()["max"], errors=errors,
                      back=greenhook.configure(resolver_threads=before))
    """
    r = run_checked(code)
    assert r["before"] == 64 and r["old"] == {"resolver_threads": 64} and r["now"] == 7
    assert r["errors"] == ["InvalidArgument"] * 6
    assert r["back"] == {"resolver_threads": 7}
