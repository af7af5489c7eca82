"""The libc semantics of the green hooks, as a C caller sees them, on both hubs.

Every test runs one scenario in a fresh interpreter (GOT patches are process-wide): the
sample library ``libghsample_now.so`` is patched and its thin ``ghs_*`` wrappers (exact libc
signatures) are called through ctypes, which releases the GIL like a driver would.  Scenarios
hand measurements back with ``report()``; the assertions are here.  Helpers: ``ghscen.py``.

Timing bounds tell apart "waited greenly" (the 10 ms ticker greenlet ticked) from "blocked
the thread" (it did not), "returned at once" from "waited for the timeout", and "waited
once" from "waited twice": a call that should take T seconds must take at most T + SLACK
(0.15 s, for scheduling on a loaded 2-core machine; measured overshoot <= 0.06 s), so a timer
restarted or a wait repeated (2 T) fails for every T used here (0.2 s and up).
"""
import errno
import textwrap

import pytest

from greenhook_test_support import run_checked, skip_or_fail

EAGAIN, EPIPE, ETIMEDOUT = errno.EAGAIN, errno.EPIPE, errno.ETIMEDOUT
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
POLLRDNORM = 0x40

#: a 10 ms ticker runs ~30 times in 0.3 s; "kept ticking" means clearly more than "blocked"
GREEN_TICKS = 10
#: how much later than its ideal time a call may end (a loaded 2-core machine)
SLACK = 0.15

PRELUDE = """\
import ctypes, errno, os, signal, socket, sys, time
import greenhook
from ghscen import *
H, lib = setup({hub!r}, {variant!r}, patch={patch!r})
"""


def scenario(hub, body, variant="now", patch=True, timeout=30):
    """Run ``body`` after the prelude (hub chosen, library patched, counters reset) in a
    subprocess; it must exit 0 with a clean stderr.  Returns the ``report()``-ed values."""
    code = PRELUDE.format(hub=hub, variant=variant, patch=patch) + textwrap.dedent(body)
    return run_checked(code, timeout=timeout)


def assert_green(r, low, high=None):
    """The call took [low, high] seconds (``high``: ``low + SLACK``, ``low`` being the ideal
    time or a hair under it) and the ticker kept ticking meanwhile."""
    high = high if high is not None else low + SLACK
    assert low <= r["elapsed"] <= high, r
    assert r["ticks"] >= GREEN_TICKS, "the hub did not run while the call waited: %r" % r


# One measured call in a greenlet: its result ``res``, ``elapsed`` and the ticker's ``ticks``
# meanwhile, the counters ``stats``, and the ``extra`` report entries.
MEASURE = """
ticker = Ticker(H)
H.sleep(0.03)
{setup}
ticks0, t0 = ticker.count, now()
res = H.call(lambda: {call})
report(res=res, elapsed=now() - t0, ticks=ticker.count - ticks0, stats=greenhook.stats(), {extra})
"""


def measured(call, setup="", extra=""):
    """Scenario body: ``setup`` (source, run once the ticker runs), then ``call`` (an
    expression) measured."""
    return MEASURE.format(setup=textwrap.dedent(setup), call=call, extra=extra)


# ==========================================================================================
# 1. Pass-through: calls that must not park
# ==========================================================================================

def test_other_os_thread_blocks_only_itself(hub):
    """An OS thread greenhook never bound calls the real recv (GIL released by ctypes): that
    thread blocks, the hub thread's greenlets keep running."""
    r = scenario(hub, """
        a, b = unix_pair()
        ticker = Ticker(H)
        H.sleep(0.03)
        ticks0, t0 = ticker.count, now()
        worker = in_thread(c_recv, lib, a.fileno())
        H.spawn_later(0.3, b.send, b"from-main")
        res = H.wait_thread(worker)
        report(res=res, elapsed=now() - t0, ticks=ticker.count - ticks0, recv=stat("recv"))
    """)
    assert r["res"][0] == 9 and r["res"][2] == "from-main"
    assert_green(r, 0.28)
    assert r["recv"]["passthrough"] == 1 and r["recv"]["waits"] == 0, r["recv"]
    assert r["recv"]["blocked"] == 0 and r["recv"]["calls"] == 1, r["recv"]


def test_call_from_hub_greenlet_blocks_for_real(hub):
    """A loop callback runs in the hub greenlet, which cannot park: the real call blocks the
    thread (the ticker stops) and still returns the right bytes; counted as "blocked"."""
    r = scenario(hub, """
        a, b = unix_pair()
        ticker = Ticker(H)
        H.sleep(0.03)
        ticks0, t0 = ticker.count, now()
        in_thread_after(0.25, b.send, b"to-the-hub")
        res = H.run_in_hub(c_recv, lib, a.fileno())
        report(res=res, elapsed=now() - t0, ticks=ticker.count - ticks0, recv=stat("recv"))
    """)
    assert r["res"][0] == 10 and r["res"][2] == "to-the-hub", r
    assert 0.23 <= r["elapsed"] <= 0.25 + SLACK, r
    assert r["ticks"] <= 4, "the hub kept running during a call that had to block: %r" % r
    assert r["recv"]["blocked"] == 1 and r["recv"]["waits"] == 0, r["recv"]


@pytest.mark.parametrize("fn", ["ghs_recv", "ghs_recvfrom"])
def test_msg_dontwait_returns_eagain_at_once(hub, fn):
    sym = fn[4:]
    r = scenario(hub, measured(f"c_recv(lib, a.fileno(), flags=socket.MSG_DONTWAIT, fn={fn!r})",
                               setup="a, b = unix_pair()"))
    assert r["res"][:2] == [-1, EAGAIN], r
    assert r["elapsed"] < 0.1, r
    st = r["stats"][sym]
    assert st["passthrough"] == 1 and st["waits"] == 0 and st["calls"] == 1, st


NONBLOCKING = {
    # name: (setup, call, libc symbol, expected errno)
    "recv": ("a, b = unix_pair(); a.setblocking(False)",
             "c_recv(lib, a.fileno())", "recv", errno.EAGAIN),
    "read": ("a, b = unix_pair(); a.setblocking(False)",
             "c_recv(lib, a.fileno(), fn='ghs_read')", "read", errno.EAGAIN),
    "send": ("a, b = unix_pair(); fill_send_buffer(a); a.setblocking(False)",
             "c_send(lib, a.fileno(), b'x' * 1000)", "send", errno.EAGAIN),
    "write": ("a, b = unix_pair(); fill_send_buffer(a); a.setblocking(False)",
              "c_send(lib, a.fileno(), b'x' * 1000, fn='ghs_write')", "write", errno.EAGAIN),
    "accept": ("l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(); l.setblocking(False)",
               "c_accept(lib, l)", "accept", errno.EAGAIN),
    "accept4": ("l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(); l.setblocking(False)",
                "c_accept(lib, l, fn='ghs_accept4')", "accept4", errno.EAGAIN),
    "connect": ("l, addr, q = full_backlog_listener(); s = socket.socket(); s.setblocking(False)",
                "c_connect(lib, s, addr)", "connect", errno.EINPROGRESS),
}


@pytest.mark.parametrize("call", sorted(NONBLOCKING))
def test_o_nonblock_fd_returns_at_once(hub, call):
    """The caller made the fd O_NONBLOCK: it wants EAGAIN (EINPROGRESS for connect) back."""
    setup, expr, sym, want = NONBLOCKING[call]
    r = scenario(hub, measured(expr, setup=setup))
    assert r["res"][:2] == [-1, want], r
    assert r["elapsed"] < 0.1, r
    st = r["stats"][sym]
    assert st["passthrough"] == 1 and st["waits"] == 0 and st["calls"] == 1, st


def test_pipe_and_regular_file_pass_through(hub):
    r = scenario(hub, """
        import tempfile
        def run():
            rfd, wfd = os.pipe()
            pipe = (c_send(lib, wfd, b"through a pipe", fn="ghs_write"),
                    c_recv(lib, rfd, fn="ghs_read"))
            with tempfile.TemporaryFile() as f:
                wrote = c_send(lib, f.fileno(), b"regular file", fn="ghs_write")
                os.lseek(f.fileno(), 0, os.SEEK_SET)
                got = c_recv(lib, f.fileno(), fn="ghs_read")
            return pipe, (wrote, got)
        res = H.call(run)
        report(res=res, read=stat("read"), write=stat("write"))
    """)
    (pw, pr), (fw, fr) = r["res"]
    assert pw[0] == 14 and pr[0] == 14 and pr[2] == "through a pipe", r
    assert fw[0] == 12 and fr[0] == 12 and fr[2] == "regular file", r
    for sym in ("read", "write"):
        st = r[sym]
        assert st["passthrough"] == 2 and st["waits"] == 0 and st["calls"] == 2, (sym, st)


NO_HUB_CALLS = {
    "recv": ("in_thread_after(0.2, b.send, b'late data')", "c_recv(lib, a.fileno())", "recv"),
    "poll": ("in_thread_after(0.2, b.send, b'late data')",
             "c_poll(lib, [(a.fileno(), POLLIN)], 5000)", "poll"),
    "usleep": ("", "ccall(lib.ghs_usleep, 200000)", "usleep"),
}


@pytest.mark.parametrize("call", sorted(NO_HUB_CALLS))
def test_no_hub_in_thread_blocks_for_real_and_creates_none(hub, call):
    """The thread is bound (patching binds it) but no hub was ever made: the real call
    blocks, and the hooks must not make a hub as a side effect."""
    setup, expr, sym = NO_HUB_CALLS[call]
    r = scenario(hub, f"""
        a, b = unix_pair()
        before = H.get_hub_if_exists()
        {setup}
        t0 = now()
        res = {expr}
        report(res=res, elapsed=now() - t0, sym=stat({sym!r}),
               hub_before=repr(before), hub_after=repr(H.get_hub_if_exists()))
    """)
    assert r["hub_before"] == "None" and r["hub_after"] == "None", r
    assert 0.18 <= r["elapsed"] <= 0.2 + SLACK, r
    if call == "recv":
        assert r["res"][0] == 9 and r["res"][2] == "late data", r
    elif call == "poll":
        assert r["res"][0] == 1 and r["res"][2] == [POLLIN], r
    else:
        assert r["res"][0] == 0, r
    assert r["sym"]["blocked"] == 1 and r["sym"]["waits"] == 0, r["sym"]


# ==========================================================================================
# 2. Fast path: ready at once, no wait
# ==========================================================================================

FAST = {
    # name: (setup, call, libc symbol)
    "recv": ("a, b = unix_pair(); b.send(b'ready')", "c_recv(lib, a.fileno())", "recv"),
    "read": ("a, b = unix_pair(); b.send(b'ready')",
             "c_recv(lib, a.fileno(), fn='ghs_read')", "read"),
    "send": ("a, b = unix_pair()", "c_send(lib, a.fileno(), b'ready')", "send"),
    "poll": ("a, b = unix_pair(); b.send(b'ready')",
             "c_poll(lib, [(a.fileno(), POLLIN)], -1)", "poll"),
    "select": ("a, b = unix_pair(); b.send(b'ready')", "c_select(lib, rd=[a.fileno()])", "select"),
    "accept": ("l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(); "
               "c = socket.create_connection(l.getsockname())", "c_accept(lib, l)", "accept"),
}


@pytest.mark.parametrize("call", sorted(FAST))
def test_fast_path_when_ready(hub, call):
    setup, expr, sym = FAST[call]
    r = scenario(hub, measured(expr, setup=setup))
    res = r["res"]
    if call in ("recv", "read"):
        assert res[0] == 5 and res[2] == "ready", r
    elif call == "send":
        assert res[0] == 5, r
    elif call in ("poll", "select"):
        assert res[0] == 1, r
    else:
        assert res[0] >= 0, r
    assert r["elapsed"] < 0.1, r
    st = r["stats"][sym]
    assert st["fast"] == 1 and st["waits"] == 0 and st["calls"] == 1, st


# ==========================================================================================
# 3. SO_RCVTIMEO / SO_SNDTIMEO
# ==========================================================================================

def test_so_rcvtimeo_expires_greenly_with_eagain(hub):
    r = scenario(hub, measured(
        "c_recv(lib, a.fileno())",
        setup="a, b = unix_pair(); set_timeo(a, socket.SO_RCVTIMEO, 0.3)"))
    assert r["res"][:2] == [-1, EAGAIN], r
    assert_green(r, 0.28)
    st = r["stats"]["recv"]
    assert st["timeouts"] == 1 and st["waits"] >= 1, st


def test_so_rcvtimeo_deadline_survives_a_spurious_wake(hub):
    """Data arrives at 0.15 s and a greenlet parked on the fd before us steals it: the hook
    wakes for nothing and must wait only for what is left of its 0.4 s, not 0.4 s more."""
    r = scenario(hub, """
        a, b = unix_pair()
        set_timeo(a, socket.SO_RCVTIMEO, 0.4)
        stolen = []
        def thief():
            if H.name == "gevent":
                from gevent.socket import wait_read
                wait_read(a.fileno())
            else:
                from greenhook import hub
                hub.get_hub().wait_fd(a.fileno(), POLLIN)
            stolen.append(a.recv(64, socket.MSG_DONTWAIT))
        ticker = Ticker(H)
        th = H.spawn(thief)       # parks on the fd first: woken first
        H.sleep(0.02)
        H.spawn_later(0.15, b.send, b"x")
        t0 = now()
        res = H.call(lambda: c_recv(lib, a.fileno()))
        elapsed = now() - t0
        H.join([th])
        report(res=res, elapsed=elapsed, ticks=ticker.count, stolen=stolen, recv=stat("recv"))
    """)
    assert r["stolen"] == ["x"], "the scenario did not produce a spurious wake: %r" % r
    assert r["res"][:2] == [-1, EAGAIN], r
    assert 0.37 <= r["elapsed"] <= 0.5, "deadline not kept across the wake: %r" % r
    assert r["recv"]["waits"] >= 2 and r["recv"]["timeouts"] == 1, r["recv"]


def test_msg_waitall_collects_until_complete_or_timeout(hub):
    """MSG_WAITALL: the pieces are collected across waits; when SO_RCVTIMEO expires first,
    what arrived so far is returned (as the kernel does), not -1."""
    r = scenario(hub, """
        a, b = unix_pair()
        def pieces():
            for piece in (b"abc", b"defg", b"hij"):
                H.sleep(0.05)
                b.send(piece)
        H.spawn(pieces)
        whole = H.call(lambda: c_recv(lib, a.fileno(), 10, flags=socket.MSG_WAITALL))
        c, d = unix_pair()
        set_timeo(c, socket.SO_RCVTIMEO, 0.3)
        d.send(b"xyz")
        t0 = now()
        partial = H.call(lambda: c_recv(lib, c.fileno(), 10, flags=socket.MSG_WAITALL))
        report(whole=whole, partial=partial, elapsed=now() - t0)
    """)
    assert r["whole"][0] == 10 and r["whole"][2] == "abcdefghij", r
    assert r["partial"][0] == 3 and r["partial"][2] == "xyz", r
    assert 0.28 <= r["elapsed"] <= 0.3 + SLACK, r


def test_so_sndtimeo_expires_on_a_full_send_buffer(hub):
    r = scenario(hub, measured(
        "c_send(lib, a.fileno(), b'y' * 1000)",
        setup="a, b = unix_pair(); fill_send_buffer(a); set_timeo(a, socket.SO_SNDTIMEO, 0.3)"))
    assert r["res"] == [-1, EAGAIN], r
    assert_green(r, 0.28)
    st = r["stats"]["send"]
    assert st["timeouts"] == 1 and st["waits"] >= 1, st


# ==========================================================================================
# 4. poll / ppoll / select / pselect
# ==========================================================================================

def test_poll_infinite_timeout_waits_greenly(hub):
    r = scenario(hub, measured("c_poll(lib, [(a.fileno(), POLLIN)], -1)", setup="""
        a, b = unix_pair()
        H.spawn_later(0.25, b.send, b"wake")
    """))
    assert r["res"][0] == 1 and r["res"][2] == [POLLIN], r
    assert_green(r, 0.23)
    st = r["stats"]["poll"]
    assert st["green"] == 1 and st["waits"] >= 1, st


def test_poll_zero_timeout_is_a_probe(hub):
    r = scenario(hub, measured("c_poll(lib, [(a.fileno(), POLLIN)], 0)", setup="a, b = unix_pair()"))
    assert r["res"][0] == 0 and r["res"][2] == [0], r
    assert r["elapsed"] < 0.1, r
    st = r["stats"]["poll"]
    assert st["passthrough"] == 1 and st["waits"] == 0, st


def test_poll_timeout_returns_zero_never_early(hub):
    r = scenario(hub, measured("c_poll(lib, [(a.fileno(), POLLIN)], 250)", setup="a, b = unix_pair()"))
    assert r["res"][0] == 0 and r["res"][2] == [0], r
    assert_green(r, 0.25)
    assert r["stats"]["poll"]["timeouts"] == 1, r["stats"]


@pytest.mark.parametrize("events", [POLLERR | POLLHUP | POLLRDNORM | POLLPRI, POLLPRI, 0],
                         ids=["err-hup-rdnorm-pri", "pri", "none"])
def test_poll_reports_hangup_whatever_the_events(hub, events):
    """The peer closes while we wait: POLLHUP is reported even when not asked for, and no bit
    outside ``events | POLLERR | POLLHUP | POLLNVAL``."""
    r = scenario(hub, measured(f"c_poll(lib, [(a.fileno(), {events})], 5000)", setup="""
        a, b = unix_pair()
        H.spawn_later(0.2, b.close)
    """))
    res, revents = r["res"], r["res"][2][0]
    assert res[0] == 1 and revents & POLLHUP, r
    assert not revents & ~(events | POLLERR | POLLHUP | POLLNVAL), "revents %#x" % revents
    if events & POLLRDNORM:
        assert revents & POLLRDNORM, "revents %#x" % revents
    assert_green(r, 0.18)


def test_poll_without_fds_is_a_green_sleep(hub):
    r = scenario(hub, measured("c_poll(lib, [], 200)"))
    assert r["res"][:2] == [0, 0], r
    assert_green(r, 0.2)


def test_poll_single_negative_fd_is_ignored(hub):
    """poll(2) ignores an entry with a negative fd (revents 0): with a timeout it is a sleep
    that returns 0, on every hub."""
    r = scenario(hub, measured("c_poll(lib, [(-1, POLLIN)], 200, garbage=0x7f)"))
    assert r["res"] == [0, 0, [0]], r
    assert_green(r, 0.2)


def test_poll_returns_the_final_probes_revents(hub):
    """Several fds, one becomes ready: the result and every revents come from a real probe
    (stale ``revents`` overwritten, negative fds 0, not-ready fds 0)."""
    r = scenario(hub, measured(
        "c_poll(lib, [(a1.fileno(), POLLIN), (-1, POLLIN), (a2.fileno(), POLLIN | POLLPRI),"
        " (a1.fileno(), POLLIN)], 5000, garbage=0x7f)",
        setup="""
            a1, b1 = unix_pair()
            a2, b2 = unix_pair()
            H.spawn_later(0.2, b2.send, b"second")
        """))
    assert r["res"][0] == 1 and r["res"][2] == [0, 0, POLLIN, 0], r
    assert_green(r, 0.18)


@pytest.mark.parametrize("tmo", [None, 250], ids=["NULL", "250ms"])
def test_ppoll(hub, tmo):
    r = scenario(hub, measured(f"c_poll(lib, [(a.fileno(), POLLIN)], {tmo!r}, fn='ghs_ppoll')",
                               setup=f"""
        a, b = unix_pair()
        H.spawn_later({0.25 if tmo is None else 2.0}, b.send, b"wake")
    """))
    if tmo is None:
        assert r["res"][0] == 1 and r["res"][2] == [POLLIN], r
        assert_green(r, 0.23)
        assert r["stats"]["ppoll"]["green"] == 1, r["stats"]
    else:
        assert r["res"][0] == 0 and r["res"][2] == [0], r
        assert_green(r, 0.25)
        assert r["stats"]["ppoll"]["timeouts"] == 1, r["stats"]


@pytest.mark.parametrize("fn", ["ghs_select", "ghs_pselect"])
def test_select_null_sets_and_no_timeout_waits_until_readable(hub, fn):
    r = scenario(hub, measured(f"c_select(lib, rd=[a.fileno(), c.fileno()], fn={fn!r})", setup="""
        a, b = unix_pair()
        c, d = unix_pair()
        H.spawn_later(0.25, b.send, b"wake")
    """, extra="ready=a.fileno()"))
    res = r["res"]
    assert res[0] == 1 and res[2] == [r["ready"]], "only the readable fd stays set: %r" % r
    assert res[3] is None and res[4] is None, r
    assert_green(r, 0.23)
    st = r["stats"][fn[4:]]
    assert st["green"] == 1 and st["waits"] >= 1, st


@pytest.mark.parametrize("fn", ["ghs_select", "ghs_pselect"])
def test_select_timeout_returns_zero_with_sets_cleared(hub, fn):
    r = scenario(hub, measured(
        f"c_select(lib, rd=[a.fileno(), c.fileno()], ex=[a.fileno()], timeout=0.25, fn={fn!r})",
        setup="a, b = unix_pair(); c, d = unix_pair()"))
    res = r["res"]
    assert res[0] == 0, r
    assert res[2] == [] and res[3] is None and res[4] == [], "sets not cleared: %r" % r
    if fn == "ghs_select":
        assert res[5] == 0, "Linux select() leaves the time not slept in the timeval: %r" % r
    assert_green(r, 0.25)
    assert r["stats"][fn[4:]]["timeouts"] == 1, r["stats"]


def test_select_with_more_fds_than_fit_on_the_stack(hub):
    """70 fds (the hook keeps 64 pollfds on its stack, then allocates)."""
    r = scenario(hub, measured("c_select(lib, rd=[p[0].fileno() for p in pairs])", setup="""
        pairs = [unix_pair() for _ in range(70)]
        H.spawn_later(0.2, pairs[65][1].send, b"x")
    """, extra="ready=pairs[65][0].fileno()"))
    assert r["res"][0] == 1 and r["res"][2] == [r["ready"]], r
    assert_green(r, 0.18)


# ==========================================================================================
# 5. errno as the C caller sees it
# ==========================================================================================

def test_connect_refused(hub):
    """Loopback connect to a closed port: EINPROGRESS then an error on a non-blocking socket,
    so the hook goes through its green wait and must still report ECONNREFUSED."""
    r = scenario(hub, measured("c_connect(lib, s, ('127.0.0.1', closed_port()))",
                               setup="s = socket.socket()"))
    assert r["res"] == [-1, errno.ECONNREFUSED], r
    assert r["elapsed"] < SLACK, r


def test_connect_sndtimeo_through_the_green_path_gives_the_kernels_errno(hub):
    """A SYN nobody answers (full accept queue) and SO_SNDTIMEO 0.3 s: a blocking connect
    gives up with EINPROGRESS; the green one must do the same, without blocking the hub."""
    r = scenario(hub, """
        l, addr, queued = full_backlog_listener()
        def attempt():
            s = socket.socket()
            set_timeo(s, socket.SO_SNDTIMEO, 0.3)
            t = now()
            return c_connect(lib, s, addr), now() - t
        ticker = Ticker(H)
        H.sleep(0.03)
        ticks0, t0 = ticker.count, now()
        green, _ = H.call(attempt)
        elapsed, ticks = now() - t0, ticker.count - ticks0
        real = H.wait_thread(in_thread(attempt))     # an unbound thread: the kernel's answer
        report(res=green, real=real, elapsed=elapsed, ticks=ticks, connect=stat("connect"))
    """)
    assert r["real"][0] == [-1, errno.EINPROGRESS], r
    assert r["res"] == r["real"][0], r
    assert_green(r, 0.28)
    assert r["connect"]["waits"] >= 1 and r["connect"]["timeouts"] == 1, r["connect"]


def test_connect_completes_through_the_green_path(hub):
    """The SYN is dropped (full queue) until the queue drains: connect waits greenly for the
    kernel's retransmission (~1 s) and succeeds."""
    r = scenario(hub, measured("c_connect(lib, s, addr)", setup="""
        l, addr, queued = full_backlog_listener()
        s = socket.socket()
        def drain():
            for c in queued:          # no competing SYN retransmissions
                c.close()
            conn, _ = l.accept()      # the queue has a connection: returns at once
            queued.append(conn)
        H.spawn_later(0.2, drain)
    """))
    assert r["res"][0] == 0, r
    assert_green(r, 0.95)     # the kernel retransmits the SYN 1 s after the first one
    st = r["stats"]["connect"]
    assert st["green"] == 1 and st["waits"] >= 1, st


UNIX_LISTENER = """
import tempfile
path = os.path.join(tempfile.mkdtemp(), "sock")
l = socket.socket(socket.AF_UNIX)
l.bind(path)
l.listen(0)
queued = []
while True:                       # fill the accept queue
    c = socket.socket(socket.AF_UNIX)
    c.setblocking(False)
    try:
        c.connect(path)
    except BlockingIOError:
        break
    queued.append(c)
def attempt(timeo=None):
    s = socket.socket(socket.AF_UNIX)
    if timeo:
        set_timeo(s, socket.SO_SNDTIMEO, timeo)
    t = now()
    return c_connect(lib, s, path), now() - t
"""


def test_unix_connect_waits_greenly_for_room_in_the_backlog(hub):
    """AF_UNIX connect to a full backlog: blocking connect waits for room; the hook retries
    with green sleeps until the server accepts."""
    r = scenario(hub, UNIX_LISTENER + """
ticker = Ticker(H)
H.spawn_later(0.3, lambda: [queued.append(l.accept()[0]) for _ in range(len(queued))])
ticks0 = ticker.count
res, elapsed = H.call(attempt)
report(res=res, elapsed=elapsed, ticks=ticker.count - ticks0, connect=stat("connect"))
""")
    assert r["res"][0] == 0, r
    assert_green(r, 0.28)
    assert r["connect"]["green"] == 1, r["connect"]


def test_unix_connect_sndtimeo_gives_the_kernels_errno(hub):
    r = scenario(hub, UNIX_LISTENER + """
ticker = Ticker(H)
ticks0 = ticker.count
res, elapsed = H.call(attempt, 0.3)
ticks = ticker.count - ticks0
real = H.wait_thread(in_thread(attempt, 0.3))     # an unbound thread: the kernel's answer
report(res=res, real=real, elapsed=elapsed, ticks=ticks, connect=stat("connect"))
""")
    assert r["real"][0] == [-1, EAGAIN], r
    assert r["res"] == r["real"][0], r
    assert_green(r, 0.28)
    assert r["connect"]["timeouts"] == 1, r["connect"]


def test_recv_after_peer_close_is_eof(hub):
    r = scenario(hub, """
        a, b = unix_pair()
        b.close()
        closed_before = H.call(lambda: c_recv(lib, a.fileno()))
        c, d = unix_pair()
        H.spawn_later(0.2, d.close)
        t0 = now()
        closed_while_waiting = H.call(lambda: c_recv(lib, c.fileno()))
        report(before=closed_before, during=closed_while_waiting, elapsed=now() - t0)
    """)
    assert r["before"][0] == 0 and r["before"][2] == "", r
    assert r["during"][0] == 0 and r["during"][2] == "", r
    assert 0.18 <= r["elapsed"] <= 0.2 + SLACK, r


def test_send_after_peer_close_is_epipe(hub):
    r = scenario(hub, """
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        def run():
            out = {}
            a, b = unix_pair()
            b.close()
            out["send"] = c_send(lib, a.fileno(), b"x")
            out["write"] = c_send(lib, a.fileno(), b"x", fn="ghs_write")
            c, d = unix_pair()
            c.shutdown(socket.SHUT_WR)
            out["after_shutdown"] = c_send(lib, c.fileno(), b"x")
            e, f = unix_pair()                 # closed while the send waits for room
            fill_send_buffer(e)
            H.spawn_later(0.2, f.close)
            out["while_waiting"] = c_send(lib, e.fileno(), b"z" * 1000)
            return out
        report(**H.call(run), send_stats=stat("send"))
    """)
    for k in ("send", "write", "after_shutdown", "while_waiting"):
        assert r[k] == [-1, EPIPE], (k, r)
    assert r["send_stats"]["waits"] >= 1, r["send_stats"]


# ==========================================================================================
# 6. Several greenlets on one fd
# ==========================================================================================

def test_reader_and_writer_on_the_same_socket(hub):
    """One greenlet waits to read a reply on ``a`` while another waits for room to write a
    1 MiB request on the same ``a``; a third echoes a checksum once it has it all."""
    r = scenario(hub, """
        import zlib
        a, b = unix_pair()
        payload = os.urandom(1 << 20)
        def writer():
            return c_send(lib, a.fileno(), payload)
        def reader():
            return c_recv(lib, a.fileno(), 8, flags=socket.MSG_WAITALL)
        def peer():
            got = b""
            while len(got) < len(payload):
                k, e, chunk = c_recv(lib, b.fileno(), 65536)
                assert k > 0, (k, e)
                got += chunk
                H.sleep(0.001)              # read slowly: the writer must wait for room
            return c_send(lib, b.fileno(), b"%08x" % zlib.crc32(got))
        ticker = Ticker(H)
        gs = [H.spawn(reader), H.spawn(writer), H.spawn(peer)]
        H.join(gs, timeout=20)
        report(reader=gs[0].get(), writer=gs[1].get(), peer=gs[2].get(),
               want="%08x" % zlib.crc32(payload), ticks=ticker.count,
               recv=stat("recv"), send=stat("send"))
    """)
    assert r["writer"][0] == 1 << 20, r
    assert r["reader"][0] == 8 and r["reader"][2] == r["want"], r
    assert r["send"]["waits"] >= 1 and r["recv"]["waits"] >= 1, r


def test_two_readers_on_one_socket_get_distinct_whole_messages(hub):
    r = scenario(hub, """
        a, b = unix_pair(socket.SOCK_SEQPACKET)
        def reader():
            return c_recv(lib, a.fileno(), 4096)
        def sender():
            H.sleep(0.1)
            b.send(b"first-" + b"1" * 1000)
            H.sleep(0.1)
            b.send(b"second-" + b"2" * 1000)
        gs = [H.spawn(reader), H.spawn(reader), H.spawn(sender)]
        H.join(gs, timeout=10)
        report(got=sorted(g.get()[2] for g in gs[:2]), recv=stat("recv"))
    """)
    assert r["got"] == ["first-" + "1" * 1000, "second-" + "2" * 1000], r
    assert r["recv"]["green"] == 2, r["recv"]


# ==========================================================================================
# 7. Cancellation of a parked call
# ==========================================================================================

# ``recv(fd, buf, n, flags)``: ghs_recv whose C result and errno land in ``rec`` as soon as the
# C call returns, whatever exception is then delivered to the calling frame.
CANCEL_SETUP = """
from greenlet import GreenletExit
# These tests reuse the socket after a cancellation; by default greenhook shuts it down
# (see test_cancel_shuts_the_connection_down_by_default).
greenhook.configure(shutdown_cancelled_sockets=False)
a, b = unix_pair()
rec, out = {}, {}
recv = recording(lib, "ghs_recv", rec)
buf = ctypes.create_string_buffer(64)
"""

# A greenlet parked in recv under a 0.2 s Timeout, which then parks again normally.
TIMEOUT_VICTIM = CANCEL_SETUP + """
def victim():
    t0 = now()
    try:
        with H.Timeout(0.2):
            recv(a.fileno(), buf, 64, 0)
            out["returned"] = True
    except H.Timeout as exc:
        out["caught"] = type(exc).__module__ + "." + type(exc).__name__
        out["elapsed"] = now() - t0
    H.spawn_later(0.1, b.send, b"again")
    out["again"] = c_recv(lib, a.fileno())
"""


def test_timeout_cancels_a_parked_call(hub):
    r = scenario(hub, TIMEOUT_VICTIM + """
ticker = Ticker(H)
H.call(victim)
H.spawn_later(0.05, b.send, b"other")        # other greenlets still work
other = H.call(lambda: c_recv(lib, a.fileno()))
report(out=out, rec=rec, other=other, recv=stat("recv"), ticks=ticker.count)
""")
    out = r["out"]
    want = "gevent.timeout.Timeout" if hub == "gevent" else "greenhook.hub.Timeout"
    assert out.get("caught") == want and "returned" not in out, r
    assert 0.18 <= out["elapsed"] <= 0.2 + SLACK, r
    assert r["rec"] == {"result": -1, "errno": ETIMEDOUT}, r
    assert out["again"][0] == 5 and out["again"][2] == "again", "the greenlet cannot park again: %r" % r
    assert r["other"][0] == 5 and r["other"][2] == "other", r
    assert r["ticks"] >= GREEN_TICKS, r
    assert r["recv"]["cancelled"] == 1 and r["recv"]["green"] == 2, r["recv"]


# Every family of hooks returns -1/ETIMEDOUT when cancelled (clock_nanosleep: returns it).
# name: (setup, the recorded call, expected (result, errno))
CANCEL_CALLS = {
    "recv": ("", "recv(a.fileno(), buf, 64, 0)", (-1, ETIMEDOUT)),
    "send": ("fill_send_buffer(a); fn = recording(lib, 'ghs_send', rec)",
             "fn(a.fileno(), b'x' * 1000, 1000, 0)", (-1, ETIMEDOUT)),
    "poll": ("fn = recording(lib, 'ghs_poll', rec); fds = (samples.pollfd * 1)((a.fileno(), 1, 0))",
             "fn(fds, 1, -1)", (-1, ETIMEDOUT)),
    "select": ("fn = recording(lib, 'ghs_select', rec); rd = samples.fd_set.of(a.fileno())",
               "fn(a.fileno() + 1, ctypes.byref(rd), None, None, None)", (-1, ETIMEDOUT)),
    "accept": ("fn = recording(lib, 'ghs_accept', rec); l = socket.socket(); "
               "l.bind(('127.0.0.1', 0)); l.listen()", "fn(l.fileno(), None, None)", (-1, ETIMEDOUT)),
    "connect": ("fn = recording(lib, 'ghs_connect', rec); l, addr, q = full_backlog_listener(); "
                "s = socket.socket(); sa, salen = samples.sockaddr(addr)",
                "fn(s.fileno(), sa, salen)", (-1, ETIMEDOUT)),
    "usleep": ("fn = recording(lib, 'ghs_usleep', rec)", "fn(5000000)", (-1, ETIMEDOUT)),
    "nanosleep": ("fn = recording(lib, 'ghs_nanosleep', rec); ts = samples.timespec(5, 0)",
                  "fn(ctypes.byref(ts), None)", (-1, ETIMEDOUT)),
    "clock_nanosleep": ("fn = recording(lib, 'ghs_clock_nanosleep', rec); ts = samples.timespec(5, 0)",
                        "fn(time.CLOCK_MONOTONIC, 0, ctypes.byref(ts), None)", (ETIMEDOUT, None)),
}


@pytest.mark.parametrize("call", sorted(CANCEL_CALLS))
def test_timeout_cancels_every_kind_of_call(hub, call):
    setup, expr, (want_result, want_errno) = CANCEL_CALLS[call]
    r = scenario(hub, CANCEL_SETUP + f"""
from greenhook import samples
{setup}
def victim():
    t0 = now()
    try:
        with H.Timeout(0.2):
            {expr}
            out["returned"] = True
    except H.Timeout:
        out["elapsed"] = now() - t0
H.call(victim)
report(out=out, rec=rec, stats=stat({call!r}))
""")
    assert "returned" not in r["out"] and 0.18 <= r["out"].get("elapsed", -1) <= 0.2 + SLACK, r
    assert r["rec"]["result"] == want_result, r
    if want_errno is not None:
        assert r["rec"]["errno"] == want_errno, r
    assert r["stats"]["cancelled"] == 1, r["stats"]


KILL_VICTIMS = {
    # the hooked call followed by more code in the greenlet's function
    "statement": """
def victim():
    try:
        recv(a.fileno(), buf, 64, 0)
        out["returned"] = True
    except BaseException as exc:
        out["raised"] = type(exc).__name__
        raise
""",
    # the hooked call is what the greenlet's function returns
    "return": """
victim = lambda: recv(a.fileno(), buf, 64, 0)
""",
}


@pytest.mark.parametrize("position", sorted(KILL_VICTIMS))
def test_kill_cancels_a_parked_call(hub, position):
    """kill() throws GreenletExit into the parked greenlet: the call returns -1/ETIMEDOUT and
    the greenlet ends with GreenletExit at once, wherever the call sits in its code."""
    r = scenario(hub, CANCEL_SETUP + KILL_VICTIMS[position] + """
g = H.spawn(victim)
H.sleep(0.1)
t0 = now()
g.kill(timeout=3)
kill_took = now() - t0
H.spawn_later(0.05, b.send, b"after")
after = H.call(lambda: c_recv(lib, a.fileno()))
report(out=out, rec=rec, kill_took=kill_took, dead=g.dead, value=repr(g.value),
       exit=isinstance(g.value, GreenletExit), after=after, recv=stat("recv"))
""")
    assert r["rec"] == {"result": -1, "errno": ETIMEDOUT}, r
    assert r["dead"] and r["exit"], "the greenlet did not end with GreenletExit: %r" % r
    assert r["kill_took"] < SLACK, r
    if position == "statement":
        assert r["out"] == {"raised": "GreenletExit"}, r
    assert r["after"][0] == 5 and r["after"][2] == "after", r
    assert r["recv"]["cancelled"] == 1, r["recv"]


SILENT_VICTIMS = {
    "last-in-block": """
def victim():
    with H.Timeout(0.2, False):
        recv(a.fileno(), buf, 64, 0)
    return "went on after the block"
""",
    "followed-by-code": """
def victim():
    with H.Timeout(0.2, False):
        recv(a.fileno(), buf, 64, 0)
        out["returned"] = True
    return "went on after the block"
""",
}


@pytest.mark.parametrize("position", sorted(SILENT_VICTIMS))
def test_silent_timeout_ends_only_its_block(hub, position):
    """``with Timeout(s, False):`` (gevent's idiom, also the built-in hub's) swallows its own
    expiry: execution goes on after the block, the greenlet is not killed."""
    r = scenario(hub, CANCEL_SETUP + SILENT_VICTIMS[position] + """
g = H.spawn(victim)
H.joinall([g], timeout=3)
report(out=out, rec=rec, dead=g.dead, value=g.value,
       exception=repr(getattr(g, "exception", None)))
""")
    assert r["rec"] == {"result": -1, "errno": ETIMEDOUT}, r
    assert r["dead"] and r["value"] == "went on after the block", r
    assert r["exception"] == "None" and r["out"] == {}, r


def test_cancel_shuts_the_connection_down_by_default(hub):
    """A cancelled call leaves the driver's protocol in an unknown state: greenhook shuts the
    connected stream socket down, so the peer sees EOF and the next call on it sees the end
    of the connection instead of a stale reply."""
    r = scenario(hub, """
a, b = unix_pair()
rec, out = {}, {}
recv = recording(lib, "ghs_recv", rec)
buf = ctypes.create_string_buffer(64)
def victim():
    try:
        with H.Timeout(0.2):
            recv(a.fileno(), buf, 64, 0)
    except H.Timeout:
        out["caught"] = True
H.call(victim)
b.settimeout(1.0)
out["peer_sees"] = b.recv(16).decode()           # EOF: b''
try:
    b.send(b"late")                               # the server's late answer...
except OSError as exc:
    out["late_send"] = exc.errno
out["next"] = c_recv(lib, a.fileno())             # ...is not read as the next reply
report(out=out, rec=rec)
""")
    assert r["out"]["caught"] and r["rec"] == {"result": -1, "errno": ETIMEDOUT}, r
    assert r["out"]["peer_sees"] == "", r
    assert r["out"]["next"][0] == 0 and r["out"]["next"][2] == "", r


def test_ctrl_c_reaches_the_main_greenlet_parked_in_a_call(hub):
    """SIGINT while the main greenlet waits in a hooked call: the hub (which runs the signal
    handler) throws KeyboardInterrupt into it; it surfaces at the call; waiting works after."""
    r = scenario(hub, CANCEL_SETUP + """
import threading
ticker = Ticker(H)
H.sleep(0.01)
quiet = H.get_hub_if_exists()
quiet.print_exception = lambda *args: None    # the hub reports KeyboardInterrupt; expected
signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started with SIGINT ignored
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = now()
try:
    recv(a.fileno(), buf, 64, 0)
    out["returned"] = True
except KeyboardInterrupt:
    out["interrupted_after"] = now() - t0
H.spawn_later(0.05, b.send, b"after")
after = c_recv(lib, a.fileno())
report(out=out, rec=rec, after=after, ticks=ticker.count)
""")
    assert "returned" not in r["out"], r
    assert 0.18 <= r["out"]["interrupted_after"] <= 0.2 + SLACK, r
    assert r["rec"] == {"result": -1, "errno": ETIMEDOUT}, r
    assert r["after"][0] == 5 and r["after"][2] == "after", r


@pytest.fixture(scope="module")
def delay_server():
    from greenhook.samples.server import DelayServer
    with DelayServer() as srv:
        yield srv


def test_timeout_replaces_the_drivers_error(hub, delay_server):
    """The extension turns the cancelled call's -1/ETIMEDOUT into OSError; the caller sees
    the Timeout instead, with the OSError as its ``__context__``."""
    r = scenario(hub, f"""
        from greenhook import samples
        mod = samples.load("now")
        out = {{}}
        def victim():
            t0 = now()
            try:
                with H.Timeout(0.2):
                    mod.request("send_recv", {delay_server.tcp_port}, 3000, b"slow")
            except H.Timeout as exc:
                ctx = exc.__context__
                out["caught"] = type(exc).__name__
                out["elapsed"] = now() - t0
                out["context"] = [isinstance(ctx, OSError), getattr(ctx, "errno", None)]
            out["next"] = mod.request("send_recv", {delay_server.tcp_port}, 20, b"next")
        ticker = Ticker(H)
        H.call(victim)
        report(**out, ticks=ticker.count)
    """)
    assert r["caught"] == "Timeout", r
    assert 0.18 <= r["elapsed"] <= 0.2 + SLACK, r
    assert r["context"] == [True, ETIMEDOUT], "__context__ is not the driver's OSError: %r" % r
    assert r["next"] == "next", r


def test_tracer_survives_a_cancellation(hub):
    """A tracer installed before (debugger, coverage) is still installed and still called
    after the one-shot delivery tracer did its job."""
    r = scenario(hub, TIMEOUT_VICTIM + """
events = []
def tracer(frame, event, arg):
    if frame.f_code.co_name == "probe":
        events.append(event)
    return None
def probe():
    return 1
sys.settrace(tracer)
H.call(victim)
probe()
still = sys.gettrace() is tracer
sys.settrace(None)
report(out=out, still=still, events=events, rec=rec)
""")
    assert "caught" in r["out"], r
    assert r["rec"] == {"result": -1, "errno": ETIMEDOUT}, r
    assert r["still"], "the tracer installed before the cancellation was dropped: %r" % r
    assert "call" in r["events"], r
