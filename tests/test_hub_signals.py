"""The built-in hub's epoll_wait (compiled, GIL released) and signals: a Python signal handler
runs while the loop sleeps (EINTR), and the wait goes on with the time that was left -- it
neither returns early nor sleeps the whole timeout again.  Runs in a subprocess: handlers run
in the main thread only."""
from greenhook_test_support import run_checked

SCENARIO = r'''
import signal, socket, threading, time
import ghscen as S
from greenhook import hub as H

fired = [0]
signal.signal(signal.SIGALRM, lambda *a: fired.__setitem__(0, fired[0] + 1))
signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
hub = H.get_hub()
a, b = socket.socketpair()

t0 = time.monotonic()
timed_out = hub.wait_fd(a.fileno(), 0x1, 0.3)
waited = time.monotonic() - t0
ticks_timeout = fired[0]

threading.Timer(0.15, b.send, (b"x",)).start()
t0 = time.monotonic()
ready = hub.wait_fd(a.fileno(), 0x1, 5)
woke = time.monotonic() - t0

t0 = time.monotonic()
H.sleep(0.2)
slept = time.monotonic() - t0
signal.setitimer(signal.ITIMER_REAL, 0)
S.report(timed_out=timed_out, waited=waited, ticks_timeout=ticks_timeout, ready=ready,
         woke=woke, slept=slept, fired=fired[0])
'''


def test_signal_handlers_run_during_the_hub_wait_and_the_wait_keeps_its_deadline():
    r = run_checked(SCENARIO, timeout=60)
    assert r["timed_out"] is False and 0.3 <= r["waited"] <= 0.3 * 2 + 0.5, r
    assert r["ticks_timeout"] >= 5, r      # the handler ran while the loop slept (~15 due)
    assert r["ready"] is True and 0.15 <= r["woke"] <= 0.15 * 2 + 0.5, r
    assert 0.2 <= r["slept"] <= 0.2 * 2 + 0.5, r
