"""Bad settings given to greenhook.watch and GREENHOOK_WATCH, and failures inside the monitor.

The rule (docs/TOOLS.md, "Bad settings"):

* ``watch()`` raises ``greenhook.InvalidArgument`` at once for a threshold that is not a number
  from 1 ms to a day (NaN, inf, 0, negative, "0.1", True, 1e300 ...) and for a ``report`` that
  is neither None nor callable; nothing is started.
* ``GREENHOOK_WATCH`` (read by ``from_env``, i.e. ``greenhook.use()``): unset, empty or 0 is off;
  any other value ``watch()`` would refuse starts nothing and warns (``RuntimeWarning`` naming
  the variable and the value, attributed to the caller of ``use()``).
* Errors inside the monitor thread go to ``sys.unraisablehook`` and the watch carries on (a
  failing report function, an unreadable native stack, a failing patch registry); a failure of
  the monitor itself is reported too, and the watch is then stopped.
"""
import decimal
import fractions
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from greenhook_test_support import in_hub_thread

from greenhook import InvalidArgument
from greenhook import _watch
from greenhook import hub as H
from greenhook.backends import Backend

NAN, INF = float("nan"), float("inf")
BODY_TIMEOUT = 20

BAD_THRESHOLDS = [0, 0.0, -0.0, -1, NAN, INF, -INF, 1e300, 10 ** 400, 1e-9, 0.0009, 86400.5,
                  "0.1", "x", b"1", None, True, False, complex(0.1, 0), [0.1], object(),
                  decimal.Decimal("NaN")]


def in_thread(fn):
    """Run ``fn`` in a new thread (its own hub), bounded; destroy that hub after."""
    return in_hub_thread(fn, BODY_TIMEOUT)


def monitor_threads():
    return [t for t in threading.enumerate() if t.name == "greenhook-watch" and t.is_alive()]


# -- watch() ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_THRESHOLDS, ids=repr)
def test_watch_refuses_a_bad_threshold_at_once_and_starts_nothing(bad):
    def body():
        before = monitor_threads()
        with pytest.raises(InvalidArgument) as info:
            _watch.watch(bad, hub="builtin")
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
        msg = str(info.value)
        assert "watch threshold must be a number of seconds from 0.001 to 86400" in msg
        assert msg.endswith("got %r" % (bad,))
        assert monitor_threads() == before
        assert H.get_hub_if_exists() is None        # refused before the hub was made
        return True

    assert in_thread(body)


@pytest.mark.parametrize("good", [0.001, 86400, decimal.Decimal("0.05"), fractions.Fraction(1, 20),
                                  1], ids=repr)
def test_watch_takes_any_number_in_range_and_stops_at_once(good):
    def body():
        w = _watch.watch(good, hub="builtin")
        assert isinstance(w.threshold, float) and w.threshold == float(good)
        H.sleep(0.01)
        start = time.monotonic()
        w.stop()            # the monitor waits on an Event: a day-long threshold stops at once
        return time.monotonic() - start, w._thread.is_alive(), w._heartbeat._timer.pending

    took, alive, beating = in_thread(body)
    assert took < 0.5 and not alive and not beating


@pytest.mark.parametrize("bad", [123, "print", object(), [print]], ids=repr)
def test_watch_refuses_a_report_that_is_not_callable(bad):
    def body():
        before = monitor_threads()
        with pytest.raises(InvalidArgument, match="watch report must be a callable"):
            _watch.watch(0.1, report=bad, hub="builtin")
        assert monitor_threads() == before
        return True

    assert in_thread(body)


# -- GREENHOOK_WATCH ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "abc", "-1", "inf", "-inf", "1e-9", "1e300", "0x10",
                                   "0.1s", "NaN "])
def test_bad_env_value_warns_naming_the_variable_and_starts_nothing(value, monkeypatch):
    monkeypatch.setenv(_watch.ENV, value)

    def body():
        before = monitor_threads()
        with pytest.warns(RuntimeWarning) as record:
            assert _watch.from_env("builtin") is None
        assert len(record) == 1
        msg = str(record[0].message)
        assert msg.startswith("greenhook: GREENHOOK_WATCH=%r ignored, no watch started: "
                              % value), msg
        assert "expected a threshold in seconds from 0.001 to 86400, e.g. 0.1, or 0 for off" in msg
        assert monitor_threads() == before
        return True

    assert in_thread(body)


@pytest.mark.parametrize("value", ["", "  ", "0", "0.0", "-0", " 0 "], ids=repr)
def test_env_off_values_are_silent(value, monkeypatch):
    monkeypatch.setenv(_watch.ENV, value)

    def body():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _watch.from_env("builtin") is None
        return True

    assert in_thread(body)


def test_env_value_with_spaces_starts_a_watch(monkeypatch):
    monkeypatch.setenv(_watch.ENV, " 0.25 ")

    def body():
        w = _watch.from_env("builtin")
        try:
            assert w.threshold == 0.25 and not w.stopped
        finally:
            w.stop()
        return True

    assert in_thread(body)


def test_env_with_a_backend_that_has_no_heartbeat_warns(monkeypatch):
    class NoBeat(Backend):
        name = "nobeat"

    monkeypatch.setenv(_watch.ENV, "0.1")

    def body():
        before = monitor_threads()
        with pytest.warns(RuntimeWarning, match=r"GREENHOOK_WATCH='0.1' ignored, no watch "
                                                r"started: the 'nobeat' backend has no heartbeat"):
            assert _watch.from_env(NoBeat()) is None
        assert monitor_threads() == before
        return True

    assert in_thread(body)


SCRIPT = textwrap.dedent('''\
    import greenhook
    greenhook.use("builtin")
    print("alive")
''')


@pytest.mark.parametrize("strict", [False, True], ids=["default", "-W error"])
def test_bad_env_value_through_use(strict, tmp_path):
    """The whole path: the application goes on, with the warning on stderr pointing at its
    ``use()`` line; ``-W error::RuntimeWarning`` turns it into an error at ``use()``."""
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable] + (["-W", "error::RuntimeWarning"] if strict else []) + [str(script)]
    env = dict(os.environ, GREENHOOK_WATCH="nan")
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path))
    expected = "RuntimeWarning: greenhook: GREENHOOK_WATCH='nan' ignored, no watch started"
    assert expected in proc.stderr, proc.stderr
    if strict:
        assert proc.returncode == 1 and proc.stdout == ""
        assert 'greenhook.use("builtin")' in proc.stderr        # raised at the use() line
    else:
        assert proc.returncode == 0 and proc.stdout == "alive\n", proc.stderr
        assert "%s:2: RuntimeWarning" % script in proc.stderr    # attributed to use()'s caller


# -- failures inside the monitor are reported, not swallowed ------------------------------------


def blocked_hub(threshold, block, report, stalls=1):
    """In a new thread: watch the built-in hub, block it ``stalls`` times for ``block`` s (an
    unpatched sleep in a spawned greenlet), stop; returns the Watch."""
    def body():
        w = _watch.watch(threshold, report=report, hub="builtin")
        try:
            for _ in range(stalls):
                H.spawn(time.sleep, block).join()
                H.sleep(threshold / 2)
        finally:
            w.stop()
        return w

    return in_thread(body)


@pytest.fixture
def unraisable(monkeypatch):
    got = []
    monkeypatch.setattr(sys, "unraisablehook", got.append)
    return got


def test_failing_report_function_goes_to_unraisablehook_and_the_watch_goes_on(unraisable):
    def report(stall):
        raise ZeroDivisionError("report broke")

    w = blocked_hub(0.05, 0.2, report, stalls=2)
    assert len(w.stalls) == 2                   # the second stall was still seen
    assert len(unraisable) == 2
    for args in unraisable:
        assert args.err_msg == "greenhook.watch: the report function failed"
        assert args.object is report
        assert args.exc_type is ZeroDivisionError and str(args.exc_value) == "report broke"
        assert args.exc_traceback is not None


def test_unreadable_native_stack_is_reported_and_the_stall_still_is(unraisable, monkeypatch):
    def broken(addr):
        raise MemoryError("dladdr broke")

    monkeypatch.setattr(_watch, "_symbolize", broken)
    # A stall seen in the act (not late) reads the native stack; a starved monitor (loaded
    # machine) reports late and never gets there: retry until one is seen in the act.
    for _ in range(4):
        del unraisable[:]
        got = []
        blocked_hub(0.1, 0.35, got.append)
        assert len(got) == 1
        if not got[0].late:
            break
    stall = got[0]
    assert not stall.late, "every stall was reported late: the machine is too loaded"
    assert stall.syscall and stall.native == [] and stall.entry is None
    assert [a.err_msg for a in unraisable] == [
        "greenhook.watch: reading the native stack of thread %s failed" % stall.thread_name]
    assert unraisable[0].exc_type is MemoryError


def test_failing_patch_registry_is_reported(unraisable, monkeypatch):
    from greenhook import _patch

    def broken():
        raise RuntimeError("registry broke")

    monkeypatch.setattr(_patch, "patched_libraries", broken)
    got = []
    blocked_hub(0.05, 0.2, got.append)
    assert len(got) == 1 and got[0].patched == []
    msgs = {a.err_msg for a in unraisable}
    assert msgs == {"greenhook.watch: listing the patched libraries failed"}
    assert all(a.exc_type is RuntimeError for a in unraisable)


def test_monitor_failure_is_reported_and_stops_the_watch(unraisable, monkeypatch):
    def broken(self, *args):
        raise LookupError("describe broke")

    monkeypatch.setattr(_watch.Watch, "_describe", broken)

    def body():
        w = _watch.watch(0.05, report=print, hub="builtin")
        H.spawn(time.sleep, 0.2).join()
        w._thread.join(5)
        state = (w.stopped, w._thread.is_alive(), w._heartbeat.cancelled)
        w.stop()
        return w, state

    w, (stopped, alive, cancelled) = in_thread(body)
    assert stopped and not alive and cancelled
    assert len(unraisable) == 1
    args = unraisable[0]
    assert args.err_msg == "greenhook.watch: the monitor thread failed; this watch has stopped"
    assert args.object is w and args.exc_type is LookupError


def test_default_report_on_a_broken_stderr_is_reported(unraisable, monkeypatch):
    class BrokenStream:
        def write(self, text):
            raise OSError(5, "stderr broke")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", BrokenStream())
    w = blocked_hub(0.05, 0.2, None)
    assert len(w.stalls) == 1
    assert [a.err_msg for a in unraisable] == ["greenhook.watch: the report function failed"]
    assert unraisable[0].object is _watch.print_report
    assert unraisable[0].exc_type is OSError


def test_with_the_default_hook_the_report_is_printed_like_python_does(monkeypatch, capsys):
    # CPython's own hook takes only its private argument type: greenhook writes the same
    # format itself ("<err_msg>: <object repr>" and the traceback).
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)

    def report(stall):
        raise ZeroDivisionError("report broke")

    blocked_hub(0.05, 0.2, report)
    err = capsys.readouterr().err
    assert "greenhook.watch: the report function failed: %r\n" % (report,) in err
    assert "Traceback (most recent call last):" in err
    assert "ZeroDivisionError: report broke" in err


def test_a_failing_unraisablehook_still_gets_the_report_out(monkeypatch, capsys):
    def hook(args):
        raise RuntimeError("hook broke")

    monkeypatch.setattr(sys, "unraisablehook", hook)

    def report(stall):
        raise ZeroDivisionError("report broke")

    blocked_hub(0.05, 0.2, report)
    err = capsys.readouterr().err
    assert ("Exception ignored in sys.unraisablehook, then: greenhook.watch: the report "
            "function failed" in err)
    assert "ZeroDivisionError: report broke" in err
