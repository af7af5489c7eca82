"""Tests of the built-in hub (greenhook.hub): greenlet + stdlib only.

The hub is per OS thread, so every test body runs in a fresh daemon thread (``@isolated``)
that destroys its hub at the end; a body that hangs fails the test instead of the run.
"""
import errno
import functools
import os
import select
import socket
import tempfile
import threading
import time

import pytest
from greenlet import GreenletExit, getcurrent

from greenhook import hub as H

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP = 0x1, 0x2, 0x4, 0x8, 0x10
BODY_TIMEOUT = 15


_owned = threading.local()


def pair():
    """A socketpair closed when the isolated test body ends."""
    a, b = socket.socketpair()
    _owned.__dict__.setdefault("socks", []).extend((a, b))
    return a, b


def isolated(fn):
    """Run the test body in a new thread (a new hub), bounded by BODY_TIMEOUT."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outcome = {}

        def target():
            try:
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as ex:  # noqa: B902 - handed back to the test thread
                outcome["error"] = ex
            finally:
                hub = H.get_hub_if_exists()
                if hub is not None:
                    hub.destroy()
                for sock in _owned.__dict__.pop("socks", ()):
                    sock.close()

        t = threading.Thread(target=target, name="hub-test-" + fn.__name__, daemon=True)
        t.start()
        t.join(BODY_TIMEOUT)
        assert not t.is_alive(), "test body did not finish in %ss" % BODY_TIMEOUT
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    return wrapper


def registered(hub):
    """fd -> (epoll mask, number of waiters) of the hub's registry."""
    return {fd: (reg.mask, len(reg.waiters)) for fd, reg in hub._fds.items()}


def fill_send_buffer(sock):
    """Make ``sock`` not writable: shrink and fill its send buffer (bounded)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setblocking(False)
    chunk = b"x" * 65536
    for _ in range(10000):
        try:
            sock.send(chunk)
        except BlockingIOError:
            break
    else:
        raise AssertionError("send buffer never filled")
    for _ in range(10000):      # top it up with small writes too
        try:
            sock.send(b"y")
        except BlockingIOError:
            return
    raise AssertionError("send buffer never filled")


def drain(sock):
    sock.setblocking(False)
    total = 0
    for _ in range(100000):
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not data:
            break
        total += len(data)
    return total


# -- hubs and threads ----------------------------------------------------------------------


@isolated
def test_get_hub_is_lazy_and_per_thread():
    assert H.get_hub_if_exists() is None
    hub = H.get_hub()
    assert H.get_hub() is hub
    assert H.get_hub_if_exists() is hub
    assert hub.can_switch()             # from the thread's main greenlet
    assert hub.greenlet.parent is getcurrent()

    other = {}

    def in_other_thread():
        other["before"] = H.get_hub_if_exists()
        other["hub"] = H.get_hub()
        H.get_hub().destroy()

    t = threading.Thread(target=in_other_thread)
    t.start()
    t.join(5)
    assert other["before"] is None
    assert other["hub"] is not hub


def test_hubs_in_two_threads_run_at_once():
    results = {}

    @isolated
    def body(name):
        hub = H.get_hub()
        start = time.monotonic()
        H.joinall([H.spawn(H.sleep, 0.2) for _ in range(10)], timeout=5)
        results[name] = (hub, time.monotonic() - start)

    start = time.monotonic()
    threads = [threading.Thread(target=body, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BODY_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert time.monotonic() - start < 0.6
    assert results["a"][0] is not results["b"][0]
    assert all(0.19 <= elapsed < 0.6 for _, elapsed in results.values())


# -- sleeping and scheduling -------------------------------------------------------------------


@isolated
def test_twenty_concurrent_sleeps():
    start = time.monotonic()
    gs = [H.spawn(H.sleep, 0.2) for _ in range(20)]
    done = H.joinall(gs, timeout=5)
    elapsed = time.monotonic() - start
    assert len(done) == 20 and all(g.successful() for g in gs)
    assert 0.19 <= elapsed < 0.6


@isolated
def test_sleep_zero_round_robin():
    order = []

    def worker(name):
        for i in range(3):
            order.append((name, i))
            H.sleep(0)

    gs = [H.spawn(worker, n) for n in "abc"]
    assert order == []                  # spawn only schedules
    H.joinall(gs, timeout=5)
    assert order == [(n, i) for i in range(3) for n in "abc"]


@isolated
def test_sleep_zero_in_main_lets_spawned_run():
    ran = []
    H.spawn(ran.append, 1)
    H.sleep(0)
    assert ran == [1]


@isolated
def test_ticker_keeps_ticking_while_others_wait():
    a, b = pair()
    ticks = []

    def ticker():
        for _ in range(1000):
            ticks.append(time.monotonic())
            H.sleep(0.01)

    t = H.spawn(ticker)
    hub = H.get_hub()
    waiters = [H.spawn(hub.wait_fd, a.fileno(), POLLIN, 0.3) for _ in range(3)]
    sleeper = H.spawn(H.sleep, 0.3)
    H.joinall(waiters + [sleeper], timeout=5)
    t.kill(timeout=5)
    assert [w.value for w in waiters] == [False] * 3
    assert len(ticks) >= 15             # ~30 expected at 10 ms; allow a slow machine
    a.close()
    b.close()


@isolated
def test_run_returns_when_nothing_is_left():
    out = []
    H.spawn(lambda: (H.sleep(0.05), out.append(1)))
    H.spawn(lambda: (H.sleep(0.1), out.append(2)))
    forever = H.spawn(lambda: H.get_hub().wait_fds([], None))   # parks with no way back
    start = time.monotonic()
    H.run()
    assert out == [1, 2]
    assert 0.09 <= time.monotonic() - start < 1
    assert not forever.ready()
    H.run()                             # nothing at all: returns at once


# -- waiting on fds ---------------------------------------------------------------------------


@isolated
def test_wait_fd_wakes_when_peer_writes():
    a, b = pair()
    hub = H.get_hub()

    def writer():
        H.sleep(0.05)
        b.send(b"x")

    start = time.monotonic()
    w = H.spawn(writer)
    assert hub.wait_fd(a.fileno(), POLLIN, 5) is True
    assert 0.04 <= time.monotonic() - start < 2
    assert a.recv(1) == b"x"
    assert w.get(timeout=1) is None
    assert registered(hub) == {}


@isolated
def test_wait_fd_timeout_returns_false():
    a, b = pair()
    hub = H.get_hub()
    start = time.monotonic()
    assert hub.wait_fd(a.fileno(), POLLIN, 0.2) is False
    assert 0.19 <= time.monotonic() - start < 0.5
    assert registered(hub) == {}
    start = time.monotonic()
    assert hub.wait_fd(a.fileno(), POLLIN, 0) is False
    assert hub.wait_fd(a.fileno(), POLLIN, -1) is False
    assert time.monotonic() - start < 0.05
    assert hub.wait_fd(a.fileno(), POLLOUT, 1) is True     # writable at once
    assert registered(hub) == {}


@isolated
def test_same_fd_in_and_out_at_once():
    a, b = pair()
    hub = H.get_hub()
    fd = a.fileno()
    fill_send_buffer(a)                 # so POLLOUT has to wait as well

    reader = H.spawn(hub.wait_fd, fd, POLLIN, 5)
    writer = H.spawn(hub.wait_fd, fd, POLLOUT, 5)
    H.sleep(0.05)
    mask, nwaiters = registered(hub)[fd]
    assert nwaiters == 2
    assert mask & POLLIN and mask & POLLOUT
    assert not reader.ready() and not writer.ready()

    drain(b)                            # a becomes writable, still nothing to read
    writer.join(2)
    assert writer.value is True
    H.sleep(0.02)
    assert not reader.ready()
    mask, nwaiters = registered(hub)[fd]
    assert nwaiters == 1 and not mask & POLLOUT     # the mask narrowed with the waiter gone

    b.send(b"x")
    reader.join(2)
    assert reader.value is True
    assert registered(hub) == {}


@isolated
def test_two_readers_same_fd_both_woken():
    a, b = pair()
    hub = H.get_hub()
    readers = [H.spawn(hub.wait_fd, a.fileno(), POLLIN, 5) for _ in range(2)]
    H.sleep(0.02)
    assert registered(hub)[a.fileno()][1] == 2
    b.send(b"x")
    H.joinall(readers, timeout=2)
    assert [r.value for r in readers] == [True, True]
    assert registered(hub) == {}


@isolated
def test_hangup_wakes_every_waiter():
    a, b = pair()
    hub = H.get_hub()
    fill_send_buffer(a)
    waiters = [H.spawn(hub.wait_fd, a.fileno(), ev, 5) for ev in (POLLIN, POLLOUT, POLLERR)]
    H.sleep(0.02)
    b.close()
    H.joinall(waiters, timeout=2)
    assert [w.value for w in waiters] == [True, True, True]
    assert registered(hub) == {}


@isolated
def test_wait_fds_several():
    a1, b1 = pair()
    a2, b2 = pair()
    hub = H.get_hub()
    fds = [(a1.fileno(), POLLIN), (a2.fileno(), POLLIN), (a2.fileno(), POLLPRI), (-1, POLLIN)]
    assert hub.wait_fds(fds, 0.05) is False
    assert registered(hub) == {}

    H.spawn(lambda: (H.sleep(0.05), b2.send(b"x")))
    assert hub.wait_fds(fds, 5) is True
    assert registered(hub) == {}

    # Both ready in the same iteration: one wake, no stale registration, no rebuild.
    b1.send(b"y")
    epoll = hub._epoll
    assert hub.wait_fds(fds, 5) is True
    H.sleep(0.01)
    assert hub._epoll is epoll
    assert registered(hub) == {}

    # Only negative fds: a plain sleep.
    start = time.monotonic()
    assert hub.wait_fds([(-1, POLLIN)], 0.05) is False
    assert hub.wait_fd(-1, POLLIN, 0.05) is False
    assert time.monotonic() - start >= 0.09


@isolated
def test_regular_file_is_always_ready():
    hub = H.get_hub()
    with tempfile.TemporaryFile() as f:
        start = time.monotonic()
        assert hub.wait_fd(f.fileno(), POLLIN, 5) is True
        assert hub.wait_fds([(f.fileno(), POLLOUT), (f.fileno(), POLLIN)], 5) is True
        assert time.monotonic() - start < 0.5
    assert registered(hub) == {}


@isolated
def test_closed_fd_is_ready_like_poll_nval():
    hub = H.get_hub()
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert hub.wait_fd(r, POLLIN, 5) is True
    assert registered(hub) == {}


# -- interrupting a waiter ----------------------------------------------------------------------


@isolated
def test_kill_interrupts_waiter_and_unregisters():
    a, b = pair()
    hub = H.get_hub()
    fd = a.fileno()
    cleaned = []

    def waiter():
        try:
            hub.wait_fd(fd, POLLIN, None)
        finally:
            cleaned.append(registered(hub).get(fd))

    g = H.spawn(waiter)
    H.sleep(0.02)
    assert fd in registered(hub)
    g.kill(timeout=2)
    assert g.dead and g.ready() and g.successful()
    assert isinstance(g.value, GreenletExit)
    assert cleaned == [None]            # unregistered before the exception left wait_fd
    assert registered(hub) == {}
    with pytest.raises(OSError) as info:
        hub._epoll.unregister(fd)       # the kernel agrees: not registered any more
    assert info.value.errno == errno.ENOENT

    # Close it, get new fds (very likely the same numbers), wait again.
    a.close()
    b.close()
    a, b = pair()
    H.spawn(lambda: (H.sleep(0.02), b.send(b"x")))
    assert hub.wait_fd(a.fileno(), POLLIN, 5) is True
    assert registered(hub) == {}


@isolated
def test_kill_with_exception():
    a, b = pair()
    hub = H.get_hub()
    g = H.spawn(hub.wait_fd, a.fileno(), POLLIN, None)
    H.sleep(0.01)
    g.kill(ValueError("stop"), timeout=2)
    assert g.dead and not g.successful()
    assert isinstance(g.exception, ValueError)
    with pytest.raises(ValueError):
        g.get()
    assert registered(hub) == {}


@isolated
def test_timeout_interrupts_waiter_and_unregisters():
    a, b = pair()
    hub = H.get_hub()
    start = time.monotonic()
    t = H.Timeout(0.1)
    with pytest.raises(H.Timeout) as info:
        with t:
            hub.wait_fd(a.fileno(), POLLIN, None)
    assert info.value is t
    assert 0.09 <= time.monotonic() - start < 1
    assert registered(hub) == {}
    assert not hub._timers or all(e[2].callback is None for e in hub._timers)

    # A sleep interrupted by a Timeout leaves no timer that could wake a later sleep early.
    with pytest.raises(H.Timeout):
        with H.Timeout(0.05):
            hub.sleep(0.1)
    start = time.monotonic()
    hub.sleep(0.15)
    assert time.monotonic() - start >= 0.14


@isolated
def test_timeout_variants():
    hub = H.get_hub()
    with pytest.raises(KeyError):
        with H.Timeout(0.02, KeyError):
            hub.sleep(1)
    with H.Timeout(0.02, False):        # gevent's "silent" timeout
        hub.sleep(1)
    with H.Timeout(None):               # never fires
        hub.sleep(0.02)
    with H.Timeout(1):                  # cancelled when the block ends early
        hub.sleep(0.01)
    hub.sleep(0.02)

    t = H.Timeout(0.05).start()
    assert t.pending
    t.cancel()
    assert not t.pending
    hub.sleep(0.08)

    # In a spawned greenlet, it ends the greenlet with the Timeout.
    g = H.spawn(lambda: H.Timeout(0.02).start() and hub.sleep(1))
    g.join(2)
    assert isinstance(g.exception, H.Timeout)


@isolated
def test_kill_before_start_never_runs():
    ran = []
    g = H.spawn(ran.append, 1)
    g.kill()
    assert g.dead and g.ready() and g.successful()
    assert isinstance(g.value, GreenletExit)
    H.sleep(0.01)
    assert ran == []
    g.join()
    assert g.get() is g.value


# -- greenlets: results, errors, links --------------------------------------------------------


@isolated
def test_greenlet_results_and_joinall():
    def add(x, y=0):
        H.sleep(0.01)
        return x + y

    g = H.spawn(add, 1, y=2)
    assert not g.ready() and not g.dead
    assert g.get(timeout=2) == 3
    assert g.dead and g.successful() and g.exception is None

    slow = H.spawn(H.sleep, 5)
    fast = H.spawn(H.sleep, 0.01)
    done = H.joinall([slow, fast], timeout=0.1)
    assert done == [fast]
    slow.join(0.01)
    assert not slow.ready()
    with pytest.raises(H.Timeout):
        slow.get(timeout=0.01)
    slow.kill(timeout=2)
    assert slow.dead


@isolated
def test_joinall_raise_error_stops_at_first_failure():
    def boom():
        H.sleep(0.01)
        raise KeyError("boom")

    slow = H.spawn(H.sleep, 5)
    bad = H.spawn(boom)
    start = time.monotonic()
    with pytest.raises(KeyError):
        H.joinall([slow, bad], raise_error=True)
    assert time.monotonic() - start < 1
    slow.kill(timeout=2)


@isolated
def test_error_stored_and_printed_once(capsys):
    def boom():
        raise ValueError("kaboom")

    g = H.spawn(boom)
    g.join(2)
    assert isinstance(g.exception, ValueError)
    with pytest.raises(ValueError):
        g.get()
    quiet = H.spawn(H.sleep, 5)
    H.sleep(0.01)
    quiet.kill(timeout=2)
    H.sleep(0.01)
    err = capsys.readouterr().err
    assert err.count("ValueError: kaboom") == 1
    assert "failed with ValueError" in err
    assert "GreenletExit" not in err


@isolated
def test_links():
    seen = []
    g = H.spawn(lambda: 42)
    g.rawlink(lambda src: seen.append(("raw", src.value)))
    g.link(lambda src: (H.sleep(0), seen.append(("spawned", src.value))))
    g.join(2)
    H.sleep(0.01)
    assert sorted(seen) == [("raw", 42), ("spawned", 42)]
    g.rawlink(lambda src: seen.append("late"))      # already done: still called
    H.sleep(0.01)
    assert seen[-1] == "late"


@isolated
def test_hub_greenlet_cannot_block():
    hub = H.get_hub()
    seen = []

    def callback():
        seen.append(hub.can_switch())
        for call in (lambda: hub.sleep(0), lambda: hub.wait_fd(0, POLLIN, 1),
                     lambda: H.spawn(H.sleep, 1).join()):
            try:
                call()
            except H.BlockingSwitchOutError:
                seen.append("refused")

    hub.run_callback(callback)
    H.sleep(0.01)
    assert seen == [False, "refused", "refused", "refused"]


# -- unref'd and repeating timers ---------------------------------------------------------------


@isolated
def test_unref_timer_does_not_keep_the_loop_alive():
    hub = H.get_hub()
    fired = []
    t = hub.timer(1.0, fired.append, 1, ref=False)
    assert t.pending and not hub.has_work()
    start = time.monotonic()
    H.run()                             # nothing but the unref'd timer: returns at once
    assert time.monotonic() - start < 0.3
    assert hub.exited and fired == [] and t.pending
    H.spawn(H.sleep, 0.05)
    assert hub.has_work()
    H.run()                             # waits for the sleeper, not for the timer
    assert 0.04 <= time.monotonic() - start < 0.6
    assert fired == [] and t.pending
    t.cancel()
    assert not t.pending and "unref_timers=0" in repr(hub)


@isolated
def test_unref_timer_fires_while_other_work_keeps_the_loop_running():
    hub = H.get_hub()
    start = time.monotonic()
    fired = []
    hub.timer(0.05, lambda: fired.append(time.monotonic() - start), ref=False)
    H.sleep(0.2)                        # a ref'd timer keeps the loop alive
    assert len(fired) == 1 and 0.04 <= fired[0] < 0.15

    # An fd waiter with no timeout (a poll that would otherwise wait forever).
    a, b = pair()
    fired.clear()
    start = time.monotonic()
    hub.timer(0.05, lambda: fired.append(time.monotonic() - start), ref=False)
    writer = threading.Timer(0.25, b.send, (b"x",))
    writer.start()
    try:
        assert hub.wait_fd(a.fileno(), POLLIN, None) is True
    finally:
        writer.join()
    assert len(fired) == 1 and 0.04 <= fired[0] < 0.2


@isolated
def test_unref_timer_callback_may_add_work():
    hub = H.get_hub()
    done = []

    def later():
        H.sleep(0.05)
        done.append(1)

    hub.timer(0.01, lambda: H.spawn(later), ref=False)
    H.sleep(0.02)
    H.run()                             # the greenlet it spawned is work: run waits for it
    assert done == [1]


@isolated
def test_loop_exit_with_only_unref_timers_pending():
    hub = H.get_hub()
    fired = []
    hub.timer(1.0, fired.append, 1, ref=False)
    hub.timer(1.0, fired.append, 2, ref=False, repeat=1.0)
    start = time.monotonic()
    with pytest.raises(H.LoopExit):
        hub.wait_fds([], None)          # main waits on nothing: LoopExit, no wait for them
    stuck = H.spawn(lambda: hub.wait_fds([], None))
    with pytest.raises(H.LoopExit):
        stuck.join()
    assert time.monotonic() - start < 0.5 and fired == []
    stuck.kill(timeout=1)


@isolated
def test_unref_timer_due_while_stopped_fires_when_the_loop_starts():
    hub = H.get_hub()
    fired = []
    hub.timer(0.01, fired.append, 1, ref=False)
    time.sleep(0.03)                    # no loop running: nothing can fire
    assert fired == []
    H.sleep(0)                          # the loop starts: the overdue timer fires first
    assert fired == [1]


@isolated
def test_repeating_timer():
    hub = H.get_hub()
    calls = []
    start = time.monotonic()
    t = hub.timer(0.02, lambda: calls.append(time.monotonic() - start), repeat=0.02)
    assert hub.has_work()               # a ref'd repeating timer keeps the loop alive
    H.sleep(0.21)
    assert 4 <= len(calls) <= 10 and t.pending
    # Never early: call k no sooner than (k + 1) periods after the start.
    assert all(when >= (k + 1) * 0.02 - 1e-6 for k, when in enumerate(calls))
    t.cancel()
    assert not t.pending and not hub.has_work()
    n = len(calls)
    H.sleep(0.06)
    assert len(calls) == n

    # Cancelled from its own callback: run() returns once it is gone.
    count = []

    def tick():
        count.append(1)
        if len(count) == 3:
            t2.cancel()

    t2 = hub.timer(0.01, tick, repeat=0.01)
    H.run()
    assert len(count) == 3 and not t2.pending

    with pytest.raises(ValueError):
        hub.timer(1, tick, repeat=0)


@isolated
def test_unref_repeating_timer_resumes_when_the_loop_restarts():
    hub = H.get_hub()
    beats = []
    t = hub.timer(0.02, lambda: beats.append(time.monotonic()), ref=False, repeat=0.02)
    H.run()
    assert beats == [] and hub.exited   # does not keep the loop alive
    cpu = time.thread_time()
    H.sleep(0.2)                        # beats while something else keeps the loop running
    assert not hub.exited
    assert 4 <= len(beats) <= 10
    assert time.thread_time() - cpu < 0.1       # a timer, not a spin
    H.run()                             # stops again at once
    assert hub.exited
    n = len(beats)
    time.sleep(0.1)                     # stopped: no beats, and no burst of them later
    assert len(beats) == n
    H.sleep(0)                          # restart: the overdue beat fires once, first thing
    assert len(beats) == n + 1 and not hub.exited
    H.sleep(0.2)
    assert len(beats) >= n + 3 and t.pending
    t.cancel()
    n = len(beats)
    H.sleep(0.05)
    assert not t.pending and len(beats) == n


@isolated
def test_many_cancelled_unref_timers_are_compacted():
    hub = H.get_hub()
    for _ in range(2000):
        hub.timer(60, lambda: None, ref=False).cancel()
    assert len(hub._unref_timers) < 1000


# -- LoopExit ------------------------------------------------------------------------------------


@isolated
def test_loop_exit_instead_of_hanging():
    hub = H.get_hub()
    with pytest.raises(H.LoopExit):
        hub.wait_fds([], None)

    # Joining a greenlet that can never finish.
    stuck = H.spawn(lambda: hub.wait_fds([], None))
    with pytest.raises(H.LoopExit):
        stuck.join()

    # Plain sleeps still work afterwards, and a timed wait is not "forever".
    start = time.monotonic()
    H.sleep(0.02)
    stuck.join(0.02)
    assert time.monotonic() - start >= 0.035
    stuck.kill(timeout=1)
    assert stuck.dead


# -- robustness -----------------------------------------------------------------------------------


@isolated
def test_stale_registration_is_dropped():
    # A waited-on fd closed while a dup keeps the file open: epoll keeps reporting it under
    # the old number and DEL cannot reach it any more.  The hub must notice and rebuild
    # instead of spinning.
    a, b = pair()
    hub = H.get_hub()
    fd = a.fileno()
    keep = os.dup(fd)
    try:
        g = H.spawn(hub.wait_fd, fd, POLLIN, 0.5)
        H.sleep(0.01)
        a.close()                       # fd number free; the file lives on through `keep`
        b.send(b"x")                    # now readable: the stale registration fires
        g.join(2)
        assert g.value is True          # spurious but allowed: the caller re-checks
        old = hub._epoll
        H.sleep(0.05)
        assert hub._epoll is not old
        assert hub._epoll.poll(0) == []
        assert registered(hub) == {}
    finally:
        os.close(keep)


@isolated
def test_many_cancelled_timers_are_compacted():
    a, b = pair()
    hub = H.get_hub()
    b.send(b"x")
    for _ in range(2000):
        assert hub.wait_fd(a.fileno(), POLLIN, 60) is True
    assert len(hub._timers) < 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@isolated
def test_fork_child_gets_its_own_epoll():
    a, b = pair()
    hub = H.get_hub()
    parent_waiter = H.spawn(hub.wait_fd, a.fileno(), POLLIN, 5)
    H.sleep(0.01)
    parent_epoll_fd = hub._epoll.fileno()
    pid = os.fork()
    if pid == 0:    # pragma: no cover - child
        code = 1
        try:
            h = H.get_hub()
            ok = h is hub and h._epoll.fileno() != parent_epoll_fd
            # The child's copy of the waiter leaves: with a shared epoll set this DEL would
            # take the parent's registration with it.
            parent_waiter.kill(timeout=1)
            c1, c2 = pair()
            ok = ok and parent_waiter.dead and h.wait_fd(c1.fileno(), POLLIN, 0.02) is False
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert registered(hub)[a.fileno()][1] == 1
    b.send(b"x")
    parent_waiter.join(2)
    assert parent_waiter.value is True


# -- registrations kept across waits (wait_fd_gen) ------------------------------------------


@isolated
def test_kept_registration_outlives_loop_turns_and_goes_when_it_fires_unwanted():
    # The hooks' generation says "same file": the registration stays in the kernel between
    # two waits even when the loop polls in between (a driver's next query re-arms nothing).
    a, b = pair()
    hub = H.get_hub()
    fd = a.fileno()
    for i in range(3):
        H.spawn(lambda: (H.sleep(0.02), b.send(b"q")))
        assert hub.wait_fd_gen(fd, POLLIN, 5, 7) is True
        assert a.recv(8) == b"q"
        H.sleep(0.03)                   # several loop turns with nobody waiting on fd
        assert fd in hub._idle and registered(hub) == {}, i
    with pytest.raises(FileExistsError):
        hub._epoll.register(fd, select.EPOLLIN)     # the kernel still has it

    # Unsolicited data with nobody waiting: one event, the registration removed, no spinning.
    b.send(b"unsolicited")
    c0 = time.process_time()
    H.sleep(0.2)
    assert time.process_time() - c0 < 0.1
    assert fd not in hub._idle and registered(hub) == {}
    with pytest.raises(FileNotFoundError):
        hub._epoll.unregister(fd)
    # The next wait adds it again (data is there: at once).
    assert hub.wait_fd_gen(fd, POLLIN, 5, 7) is True
    assert a.recv(64) == b"unsolicited"

    # A peer that hangs up while nobody waits (EPOLLHUP is reported whatever the mask): the
    # same, once.
    H.sleep(0.03)
    assert fd in hub._idle
    b.close()
    c0 = time.process_time()
    H.sleep(0.2)
    assert time.process_time() - c0 < 0.1
    assert fd not in hub._idle


@isolated
def test_kept_registration_of_a_number_reused_behind_our_back():
    # The number closed and reused while its registration is kept: a new generation re-arms
    # it for the new file (MOD fails with ENOENT, ADD); the old file, kept alive by a dup and
    # readable, never wakes the wait.
    a, b = pair()
    hub = H.get_hub()
    fd = a.fileno()
    H.spawn(lambda: (H.sleep(0.02), b.send(b"1")))
    assert hub.wait_fd_gen(fd, POLLIN, 5, 1) is True
    a.recv(8)
    keep = os.dup(fd)
    c, d = socket.socketpair()
    os.dup2(d.fileno(), fd)             # fd now names d's file; a's file lives on in keep
    d.close()
    try:
        b.send(b"old")                  # the old file is readable
        H.spawn(lambda: (H.sleep(0.15), c.send(b"new")))
        t0 = time.monotonic()
        assert hub.wait_fd_gen(fd, POLLIN, 5, 2) is True
        assert 0.14 <= time.monotonic() - t0 <= 1.0
        assert os.read(fd, 8) == b"new"
    finally:
        os.close(keep)
        c.close()
