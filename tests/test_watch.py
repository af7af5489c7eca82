"""The blocking detector (greenhook.watch) against the sample C clients and the delay server.

GOT patches are process-wide, so every scenario runs in its own interpreter with a timeout:
``SCENARIO`` below, written to a file so that reports can show its source lines.  The child
prints each stall report to stderr (the default report) and one JSON summary to stdout.
"""
import json
import subprocess
import sys

import pytest

from greenhook_test_support import skip_or_fail

if not sys.platform.startswith("linux"):
    skip_or_fail("greenhook patches ELF objects on Linux only", allow_module_level=True)

from greenhook.samples.server import DelayServer  # noqa: E402

HUBS = ["builtin", pytest.param("gevent", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("gevent") is None, reason="gevent not installed"))]

SCENARIO = r'''
import json, sys, threading, time
import greenhook
from greenhook import samples
from greenhook._watch import watch

case, hubname, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
mod = samples.load("now")
greenhook.use(hubname)
if hubname == "gevent":
    import gevent
    spawn, sleep = gevent.spawn, gevent.sleep
    def run_callback(fn):
        gevent.get_hub().loop.run_callback(fn)
else:
    from greenhook import hub as H
    spawn, sleep = H.spawn, H.sleep
    def run_callback(fn):
        H.get_hub().run_callback(fn)

def blocking_client(gil_released=True):
    return mod.request("send_recv", port, 300, b"ping", gil_released)

def spin(seconds):
    t = time.thread_time()      # CPU time: the same work on a loaded machine
    while time.thread_time() - t < seconds:
        pass

if case.startswith("hooked") or case == "greened":
    greenhook.patch_library(samples.library_path("now"))
w = watch(0.1)
t0 = time.monotonic()
if case == "unpatched":
    spawn(blocking_client).join()
elif case == "unpatched_gil_held":
    spawn(blocking_client, False).join()
elif case == "hooked_in_callback":
    run_callback(blocking_client)
    sleep(0.5)
elif case == "greened":
    gs = [spawn(blocking_client) for _ in range(20)]
    for g in gs:
        g.join()
elif case == "cpu":
    spawn(spin, 0.3).join()
elif case == "main_sync":
    sleep(0.05)
    time.sleep(0.4)          # the main greenlet, nothing scheduled on the hub: not a stall
elif case == "two_stalls":
    spawn(blocking_client).join()
    sleep(0.2)
    spawn(blocking_client).join()
elapsed = time.monotonic() - t0
sleep(0.15)
w.stop()
print(json.dumps({
    "elapsed": elapsed,
    "stalls": [{"seconds": s.seconds, "duration": s.duration, "in_flight": s.in_flight,
                "syscall": s.syscall, "late": s.late, "greenlet": s.greenlet,
                "native_library": s.native_library, "blocked": s.blocked,
                "cpu_share": s.cpu_share, "overloaded": s.overloaded,
                "cpu_bound": s.cpu_bound} for s in w.stalls],
    "monitor_alive": w._thread.is_alive(),
}))
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    script = tmp_path_factory.mktemp("watch") / "scenario.py"
    script.write_text(SCENARIO)
    with DelayServer() as srv:
        srv.scenario = str(script)
        yield srv


def run(case, hub, server, timeout=60):
    proc = subprocess.run([sys.executable, server.scenario, case, hub, str(server.tcp_port)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary, proc.stderr


@pytest.mark.parametrize("hub", HUBS)
def test_unpatched_blocking_call_is_reported_with_its_stack(hub, server):
    summary, err = run("unpatched", hub, server)
    assert len(summary["stalls"]) == 1, err            # once per stall, not every interval
    stall = summary["stalls"][0]
    assert stall["in_flight"] is None and not stall["late"]
    assert stall["syscall"] == "recvfrom"
    assert stall["native_library"].endswith("libghsample_now.so")
    assert stall["duration"] > 0.2
    assert err.count("greenhook.watch: the %r hub in thread MainThread has not run its loop"
                     % hub) == 1
    assert "no patched call in flight: something unpatched is blocking" in err
    assert "called from libghsample_now.so" in err
    assert "greenhook audit " in err
    # The Python stack line that made the blocking call.
    assert ", in blocking_client\n" in err
    assert 'return mod.request("send_recv", port, 300, b"ping", gil_released)' in err
    assert not summary["monitor_alive"]


@pytest.mark.parametrize("hub", HUBS)
def test_hooked_call_that_cannot_switch_is_named(hub, server):
    summary, err = run("hooked_in_callback", hub, server)
    assert len(summary["stalls"]) == 1, err
    stall = summary["stalls"][0]
    assert stall["in_flight"][0] == "recv"
    assert stall["greenlet"] == "hub"
    assert ("blocking: recv, a patched call, is blocking the OS thread for real" in err
            and "in libghsample_now.so" in err)
    assert "it runs in the hub greenlet (a loop callback)" in err
    assert "Python stack of the hub greenlet" in err and ", in blocking_client\n" in err


def test_gil_held_stall_is_reported_late(server):
    summary, err = run("unpatched_gil_held", "builtin", server)
    assert len(summary["stalls"]) == 1, err
    stall = summary["stalls"][0]
    assert stall["late"] and stall["seconds"] > 0.2
    assert stall["cpu_share"] < 0.1                    # waiting, not computing
    assert "reported late: the monitor thread could not run during the stall" in err
    assert "no patched call blocked: something unpatched held the thread" in err
    assert ", in blocking_client\n" in err


@pytest.mark.parametrize("hub", HUBS)
def test_greened_workload_is_quiet(hub, server):
    summary, err = run("greened", hub, server)
    assert summary["elapsed"] < 0.3 * 2 + 0.2     # 20 x 0.3 s overlapped: 0.3 s ideal
    # A loaded machine may keep the thread off the CPU: reported as such, never as blocking.
    assert all(s["overloaded"] for s in summary["stalls"]), err
    assert "blocking" not in err


def test_cpu_bound_greenlet_is_reported_as_running(server):
    summary, err = run("cpu", "builtin", server)
    assert len(summary["stalls"]) == 1, err
    stall = summary["stalls"][0]
    assert stall["cpu_bound"] and stall["in_flight"] is None
    # Seen in the act — running, or in futex taking back the GIL it dropped for the monitor
    # thread — or (the monitor starved on a loaded machine) from the CPU clock.
    assert stall["syscall"] in ("running", "futex") or stall["late"]
    # On a machine so loaded that the spinning thread waited for a CPU most of the stall, the
    # verdict names the load first (cpu_bound still says what the code did).
    verdicts = ["the thread is running on the CPU (CPU-bound work that does not yield)",
                "the thread was computing"]
    if stall["overloaded"]:
        verdicts.append("the machine is overloaded, not the code")
    assert any(v in err for v in verdicts), err
    assert ", in spin\n" in err


@pytest.mark.parametrize("hub", HUBS)
def test_main_greenlet_sync_work_with_nothing_scheduled_is_not_a_stall(hub, server):
    summary, err = run("main_sync", hub, server)
    assert summary["stalls"] == [], err


def test_each_stall_is_reported_once(server):
    summary, err = run("two_stalls", "builtin", server)
    assert len(summary["stalls"]) == 2, err
    assert err.count("greenhook.watch:") == 2


# --- in-process: no patching involved ---------------------------------------------------------

def _in_thread(body):
    """Run ``body`` in a fresh thread (its own hub) and return its result or raise its error."""
    import threading
    out = {}

    def target():
        try:
            out["value"] = body()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "body hung"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_idle_builtin_loop_still_exits_and_stop_cancels_the_beat():
    import time

    from greenhook import hub as H
    from greenhook._watch import watch

    def body():
        hub = H.get_hub()
        w = watch(0.2, hub="builtin")
        beat = w._heartbeat._timer
        assert beat.pending and not hub.has_work()   # an unref'd hub timer, nothing wrapped
        assert "_loop" not in hub.__dict__
        H.spawn(H.sleep, 0.05)
        H.run()                      # returns: the heartbeat does not keep the loop alive
        assert not w._heartbeat.looping
        with pytest.raises(H.LoopExit):
            hub.wait_fds([], None)   # nothing can wake us: LoopExit, not a hang
        assert not w._heartbeat.looping
        before = w._heartbeat.last
        time.sleep(0.06)             # longer than the beat interval, the loop stopped
        H.sleep(0)                   # the loop starts again: looping, and beating at once
        assert w._heartbeat.looping and w._heartbeat.last >= before + 0.06
        w.stop()
        w.stop()                     # idempotent
        assert "_loop" not in hub.__dict__
        assert not beat.pending
        assert not w._thread.is_alive()
        hub.destroy()
        return list(w.stalls)

    assert _in_thread(body) == []


def test_gevent_loop_still_exits():
    try:
        import gevent
    except ImportError:
        skip_or_fail("gevent is not installed")
    from greenhook._watch import watch

    def body():
        w = watch(0.2, hub="gevent")
        gevent.spawn(gevent.sleep, 0.05)
        assert gevent.wait(timeout=5)     # True: the loop ran out of work
        w.stop()
        gevent.get_hub().destroy(destroy_loop=True)
        return list(w.stalls)

    assert _in_thread(body) == []


def test_custom_report_and_context_manager():
    from greenhook import hub as H
    from greenhook._watch import Stall, watch

    def body():
        got = []
        with watch(0.05, report=got.append, hub="builtin") as w:
            def spin():
                import time
                t = time.monotonic()
                while time.monotonic() - t < 0.2:
                    pass
            H.spawn(spin).join()
            H.sleep(0.1)
        assert w.stopped
        H.get_hub().destroy()
        return got

    got = _in_thread(body)
    assert len(got) == 1 and isinstance(got[0], Stall)
    assert got[0].duration is not None and got[0].duration >= 0.1
    assert "has not run its loop" in str(got[0])


def test_from_env(monkeypatch):
    # Bad values and the exact rule for each: tests/test_inputs_watch.py.
    from greenhook import _watch

    monkeypatch.delenv(_watch.ENV, raising=False)
    assert _watch.from_env("builtin") is None
    monkeypatch.setenv(_watch.ENV, "0")
    assert _watch.from_env("builtin") is None
    monkeypatch.setenv(_watch.ENV, "soon")
    with pytest.warns(RuntimeWarning, match="GREENHOOK_WATCH='soon' ignored"):
        assert _watch.from_env("builtin") is None

    def body():
        from greenhook import hub as H
        monkeypatch.setenv(_watch.ENV, "0.25")
        w = _watch.from_env("builtin")
        try:
            assert w.threshold == 0.25 and w.hub == "builtin"
            assert _watch.from_env("builtin") is w        # once per thread and hub
        finally:
            w.stop()
            H.get_hub().destroy()
        return True

    assert _in_thread(body)
