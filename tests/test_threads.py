"""``greenhook.enable_thread()`` / ``disable_thread()``: a second OS thread running its own
built-in hub waits greenly on it, while the main thread's hub runs its own greened calls at
the same time; once disabled, that thread's calls pass straight through to libc.

The scenario (``scenarios/two_hubs.py``) runs in a fresh interpreter (GOT patches are
process-wide) against the sample library, like test_semantics.py.
"""
import os

import pytest

from greenhook_test_support import SCENARIO_DIR, run_checked, skip_or_fail

N, N_SERIAL, DELAY = 20, 5, 0.2
#: N overlapped calls of DELAY s: ideally DELAY.  The bound is 2x that plus a fixed margin:
#: if k of the calls were serialized (blocking their thread) the run would take about
#: (k + 1) * DELAY, so two serialized calls already fail it.
GREEN_BOUND = 2 * DELAY + 0.2
#: a 10 ms ticker ticks ~20 times in a 0.2 s green run, 0-1 times while its thread blocks
MIN_TICKS = 10


@pytest.fixture
def main_hub(hub):
    return hub


def delta(before, after, symbol, key):
    return after.get(symbol, {}).get(key, 0) - before.get(symbol, {}).get(key, 0)


def assert_green_batch(b, who):
    assert b["ok"], "%s: wrong replies: %r" % (who, b)
    assert DELAY * 0.95 <= b["elapsed"] <= GREEN_BOUND, (
        "%s: %d greened calls of %.1f s took %.2f s (bound %.2f s, serialized %.1f s)"
        % (who, N, DELAY, b["elapsed"], GREEN_BOUND, N * DELAY))
    assert b["ticks"] >= MIN_TICKS, "%s: its hub did not run while the calls waited: %r" % (who, b)


@pytest.mark.parametrize("gil", ["released", "held"])
def test_second_thread_with_its_own_hub(main_hub, gil):
    r = run_checked(os.path.join(SCENARIO_DIR, "two_hubs.py"), timeout=60, args=(main_hub, gil))
    second, snaps = r["second"], r["snaps"]

    # bound only after enable_thread, to the backend it named; unbound again after disable
    assert second["unbound"] == "None", second
    assert second["enabled"] == "BuiltinBackend", second
    assert second["disabled"] == "None", second
    assert second["own_hub"], "the second thread's greenlets ran on another thread's hub"
    assert r["main_backend"] == ("BuiltinBackend" if main_hub == "builtin" else "GeventBackend")

    # phase 1: both threads' N calls overlapped, each on its own hub, at the same time
    main_green, green = r["main_green"], second["green"]
    assert_green_batch(main_green, "main thread (%s hub)" % main_hub)
    assert_green_batch(green, "second thread (built-in hub)")
    assert max(main_green["start"], green["start"]) < min(main_green["end"], green["end"]), (
        "the two batches did not run at the same time: %r" % r)
    before, mid, end = snaps["start"], snaps["phase1"], snaps["end"]
    assert delta(before, mid, "connect", "calls") == 2 * N, (before, mid)
    for sym in mid:
        assert delta(before, mid, sym, "passthrough") == 0, (sym, before, mid)
        assert delta(before, mid, sym, "blocked") == 0, (sym, before, mid)
    assert sum(delta(before, mid, s, "waits") for s in mid) >= 2 * N, mid

    # phase 2: disabled, the second thread's calls pass through: serialized, its hub starved,
    # counted as passthrough and nothing else -- and the main thread's hub kept running
    serial = second["passthrough"]
    assert serial["ok"], serial
    assert 0.95 * N_SERIAL * DELAY <= serial["elapsed"] <= N_SERIAL * DELAY + 0.25, serial
    assert serial["ticks"] <= N_SERIAL + 1, serial
    assert delta(mid, end, "connect", "passthrough") == N_SERIAL, (mid, end)
    assert delta(mid, end, "recv", "passthrough") >= N_SERIAL, (mid, end)
    for sym in end:
        for key in ("fast", "green", "waits", "blocked", "timeouts", "cancelled"):
            assert delta(mid, end, sym, key) == 0, (sym, key, mid, end)
    during = r["main_during"]
    assert during["ticks"] >= 0.5 * during["elapsed"] / 0.01, (
        "the main thread's hub stalled while the second thread blocked: %r" % during)
