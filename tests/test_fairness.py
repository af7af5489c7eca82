"""Fairness (README, Semantics 13): a greenlet whose fd is always ready must not starve the
others of its thread.  Every ``fair_yield``-th hooked call that may wait, if the thread has not
parked since the previous check, lets the hub run once (``configure(fair_yield=N)``, 0 = off).

The greedy greenlet is a C loop in the patched sample library: ``ghs_bench_poll_ready`` polls
an always-writable socket (``poll(fd, POLLOUT, 1000)``) ``n`` times, returning ``n`` or
``-errno`` at the first failure; ctypes releases the GIL around it like a driver would.  With
the policy off the loop never leaves C (the ticker cannot tick, a second greedy greenlet
starts only when the first is done): the tests below fail without the policy.
"""
import errno
import textwrap

import pytest

from greenhook_test_support import run_checked

#: calls of the greedy loop: about 0.3-1 s of hooked fast-path polls on this machine
LOOP = 1000000
#: how much later than its ideal time a call may end (a loaded 2-core machine)
SLACK = 0.15

PRELUDE = """\
import ctypes, errno, os, socket, sys, threading, time
import greenhook
from ghscen import *
H, lib = setup({hub!r})
lib.ghs_bench_poll_ready.restype = ctypes.c_long
lib.ghs_bench_poll_ready.argtypes = (ctypes.c_int, ctypes.c_long)
"""


def scenario(hub, body, timeout=60):
    code = PRELUDE.format(hub=hub) + textwrap.dedent(body)
    return run_checked(code, timeout=timeout)


@pytest.mark.parametrize("fair", [None, 0], ids=["default", "off"])
def test_greedy_greenlet_lets_ticker_tick(hub, fair):
    """A greenlet polling an always-ready fd in a C loop: with the policy (the default) the
    10 ms ticker keeps ticking; with ``fair_yield=0`` it cannot tick until the loop ends."""
    r = scenario(hub, f"""
        if {fair!r} is not None:
            greenhook.configure(fair_yield={fair!r})
        a, b = unix_pair()
        ticker = Ticker(H)
        H.sleep(0.03)
        greenhook.reset_stats()
        ticks0, t0 = ticker.count, now()
        res = H.call(lambda: lib.ghs_bench_poll_ready(a.fileno(), {LOOP}), timeout=30)
        report(res=res, elapsed=now() - t0, ticks=ticker.count - ticks0, poll=stat("poll"))
    """)
    st = r["poll"]
    assert r["res"] == LOOP, r
    assert st["fast"] == LOOP and st["calls"] == LOOP and st["waits"] == 0, st
    expected = r["elapsed"] / 0.01   # ticks of a 10 ms ticker that always gets the hub
    if fair is None:
        assert st["yields"] >= 1, st
        assert r["ticks"] >= max(5, expected / 3), r
    else:
        assert st["yields"] == 0, st
        assert r["ticks"] <= 2, "the ticker ran while the loop never yielded: %r" % r


@pytest.mark.parametrize("fair", [None, 0], ids=["default", "off"])
def test_nonblocking_calls_count_too(hub, fair):
    """libmariadb reads and writes with MSG_DONTWAIT: when the answer is already there, a query
    makes no call that could wait.  Such calls count too: a loop of them (here from Python
    through ctypes, 0.3 s) lets the ticker tick, unless the policy is off."""
    r = scenario(hub, f"""
        if {fair!r} is not None:
            greenhook.configure(fair_yield={fair!r})
        a, b = unix_pair()
        def loop():
            n, end = 0, now() + 0.3
            while now() < end:
                assert c_send(lib, a.fileno(), b"q", flags=socket.MSG_DONTWAIT)[0] == 1
                assert c_recv(lib, b.fileno(), 8, flags=socket.MSG_DONTWAIT)[2] == b"q"
                n += 1
            return n
        ticker = Ticker(H)
        H.sleep(0.03)
        greenhook.reset_stats()
        ticks0 = ticker.count
        n = H.call(loop)
        report(n=n, ticks=ticker.count - ticks0, send=stat("send"), recv=stat("recv"))
    """)
    yields = r["send"]["yields"] + r["recv"]["yields"]
    assert r["send"]["passthrough"] == r["recv"]["passthrough"] == r["n"] > 0, r
    assert r["send"]["waits"] == r["recv"]["waits"] == 0, r
    if fair is None:
        assert yields >= 1 and r["ticks"] >= 5, r
    else:
        assert yields == 0 and r["ticks"] <= 2, r


@pytest.mark.parametrize("fair", [4, 0], ids=["on", "off"])
def test_two_greedy_greenlets_take_turns(hub, fair):
    """Two greedy loops: with the policy the second starts before the first ends, and each
    yield lets the other run (so neither backs off: about one yield per N calls each);
    without, they run one after the other."""
    n = 20000
    r = scenario(hub, f"""
        greenhook.configure(fair_yield={fair})
        events = []
        def greedy(name):
            s, peer = unix_pair()
            events.append(name + " start")
            res = lib.ghs_bench_poll_ready(s.fileno(), {n})
            events.append(name + " end")
            return res
        greenhook.reset_stats()
        gs = [H.spawn(greedy, "A"), H.spawn(greedy, "B")]
        H.join(gs, timeout=30)
        report(res=[g.value for g in gs], events=events, poll=stat("poll"))
    """)
    assert r["res"] == [n, n], r
    if fair:
        assert r["events"][:2] == ["A start", "B start"], r
        # Each greedy loop yields every N..2N calls while the other one is running.
        assert r["poll"]["yields"] >= (2 * n) // (2 * fair) // 2, r["poll"]
    else:
        assert r["events"] == ["A start", "A end", "B start", "B end"], r
        assert r["poll"]["yields"] == 0, r["poll"]


def test_cancelled_during_the_yield(hub):
    """A timeout thrown in while the greedy loop yields ends the hooked call as a cancelled
    wait does: poll returns -1/ETIMEDOUT (the loop returns -ETIMEDOUT), the Timeout reaches
    the caller on time, ``cancelled`` is counted, nothing parked, and the connected socket is
    killed (the peer reads EOF; ``shutdown_cancelled_sockets`` is on by default)."""
    r = scenario(hub, """
        greenhook.configure(fair_yield=4)
        a, b = unix_pair()
        rec = {}
        fn = recording(lib, "ghs_bench_poll_ready", rec)
        fn.restype, fn.argtypes = ctypes.c_long, (ctypes.c_int, ctypes.c_long)
        def run():
            t0 = now()
            try:
                with H.Timeout(0.2):
                    fn(a.fileno(), 10 ** 12)
                caught = None
            except H.Timeout as exc:
                caught = type(exc).__name__
            return caught, now() - t0
        greenhook.reset_stats()
        caught, elapsed = H.call(run, timeout=30)
        b.settimeout(5)
        report(caught=caught, elapsed=elapsed, rec=rec, poll=stat("poll"), peer=b.recv(16))
    """)
    assert r["caught"] == "Timeout", r
    assert 0.19 <= r["elapsed"] <= 0.2 + SLACK, r
    assert r["rec"]["result"] == -errno.ETIMEDOUT, r
    st = r["poll"]
    assert st["cancelled"] == 1 and st["waits"] == 0 and st["yields"] >= 1, st
    assert st["calls"] == st["fast"] + 1, st    # every other call was a fast-path success
    assert r["peer"] == "", "the cancelled call's socket was not killed: %r" % r


def test_select_cancelled_during_the_yield_reports_time_not_slept(hub):
    """select on one always-ready fd, from a Python loop: cancelled in a yield, it returns
    -1/ETIMEDOUT, its timeout holds the time not slept (a hair under the 5 s asked, as after a
    cancelled wait), the fd is killed, nothing parked."""
    r = scenario(hub, """
        greenhook.configure(fair_yield=4)
        a, b = unix_pair()
        rec = {}
        fn = recording(lib, "ghs_select", rec)
        tv = samples.timeval.from_seconds(5.0)
        def run():
            n = 0
            try:
                with H.Timeout(0.1):
                    while True:
                        tv.tv_sec, tv.tv_usec = 5, 0
                        wr = samples.fd_set.of(a.fileno())
                        fn(a.fileno() + 1, None, ctypes.byref(wr), None, ctypes.byref(tv))
                        n += 1
            except H.Timeout:
                return n
        greenhook.reset_stats()
        n = H.call(run, timeout=30)
        b.settimeout(5)
        report(n=n, rec=rec, left=tv.tv_sec + tv.tv_usec / 1e6, select=stat("select"),
               peer=b.recv(16))
    """)
    st = r["select"]
    assert r["n"] > 0 and r["rec"]["result"] == -1 and r["rec"]["errno"] == errno.ETIMEDOUT, r
    assert 4.9 < r["left"] < 5.0, r
    assert st["cancelled"] == 1 and st["waits"] == 0 and st["yields"] >= 1, st
    assert st["fast"] == r["n"], st
    assert r["peer"] == "", r


def test_cancelled_during_the_yield_keeps_socket_when_configured(hub):
    """With ``shutdown_cancelled_sockets=False`` the cancelled yield leaves the socket alone,
    as a cancelled wait does."""
    r = scenario(hub, """
        greenhook.configure(fair_yield=4, shutdown_cancelled_sockets=False)
        a, b = unix_pair()
        def run():
            try:
                with H.Timeout(0.1):
                    lib.ghs_bench_poll_ready(a.fileno(), 10 ** 12)
            except H.Timeout:
                pass
            a.send(b"still-open")
        greenhook.reset_stats()
        H.call(run, timeout=30)
        b.settimeout(5)
        report(poll=stat("poll"), peer=b.recv(16))
    """)
    assert r["poll"]["cancelled"] == 1 and r["poll"]["yields"] >= 1, r
    assert r["peer"] == "still-open", r


WHERE = {
    # an OS thread greenhook never bound: every call passes straight through
    "unbound": "res = H.wait_thread(in_thread(loop))",
    # the bound main thread before any hub exists: no yield, and no hub made as a side effect
    "no_hub": "res = loop()",
    # a loop callback in the hub greenlet, which cannot switch
    "hub_greenlet": "res = H.run_in_hub(loop)",
}


@pytest.mark.parametrize("where", sorted(WHERE))
def test_no_yield_where_the_greenlet_cannot_switch(hub, where):
    n = 200000
    r = scenario(hub, f"""
        greenhook.configure(fair_yield=4)
        a, b = unix_pair()
        def loop():
            return lib.ghs_bench_poll_ready(a.fileno(), {n})
        had_hub = H.get_hub_if_exists() is not None
        greenhook.reset_stats()
        {WHERE[where]}
        report(res=res, poll=stat("poll"), had_hub=had_hub,
               hub_after=H.get_hub_if_exists() is not None)
    """)
    st = r["poll"]
    assert r["res"] == n, r
    assert st["yields"] == 0 and st["waits"] == 0 and st["calls"] == n, st
    if where == "unbound":
        assert st["passthrough"] == n, st
    else:
        assert st["fast"] == n, st
    if where == "no_hub":
        assert not r["had_hub"] and not r["hub_after"], r


def test_configure_fair_yield():
    """configure(fair_yield=N) returns the previous value (default 4); other values are
    refused with InvalidArgument, changing nothing (not even the other options given)."""
    code = """if True:
        import greenhook, ghscen
        old = greenhook.configure(fair_yield=16)
        errors = []
        for bad in (-1, 2 ** 30 + 1, 2.5, "8", True, None.__class__):
            try:
                greenhook.configure(fair_yield=bad)
            except greenhook.InvalidArgument as exc:
                errors.append(type(exc).__name__)
        try:
            greenhook.configure(shutdown_cancelled_sockets=False, fair_yield=-1)
        except greenhook.InvalidArgument:
            errors.append("together")
        shutdown = greenhook.configure(shutdown_cancelled_sockets=True)
        ghscen.report(old=old, errors=errors, shutdown=shutdown,
                      off=greenhook.configure(fair_yield=0),
                      back=greenhook.configure(fair_yield=4))
    """
    r = run_checked(code)
    assert r["old"] == {"fair_yield": 4}, r
    assert r["errors"] == ["InvalidArgument"] * 6 + ["together"], r
    # A refused fair_yield refuses the whole call: the other option given was not set.
    assert r["shutdown"] == {"shutdown_cancelled_sockets": True}, r
    assert r["off"] == {"fair_yield": 16} and r["back"] == {"fair_yield": 0}, r
