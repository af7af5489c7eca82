"""Test helpers: prove that a call is cooperative, or say what blocked.

:func:`assert_cooperative` runs a function in a greenlet while a ticker greenlet measures how
long the hub's loop went without running, and fails with a diagnostic when that exceeds the
threshold.  It needs no pytest (a plain AssertionError); the pytest plugin
(``greenhook.pytest_plugin``) adds a ``greenhook_hub`` fixture around it.
"""

import os
import threading
import time
import traceback

from greenhook import _watch

__all__ = ["assert_cooperative", "HubRunner"]


class HubRunner:
    """spawn / sleep / wait for one hub backend, so a test can be written once for all."""

    def __init__(self, name):
        self.name = name
        if name == "gevent":
            import gevent
            self.spawn, self.sleep = gevent.spawn, gevent.sleep
        elif name == "builtin":
            from greenhook import hub
            self.spawn, self.sleep = hub.spawn, hub.sleep
        else:
            raise ValueError("unknown hub %r: expected 'builtin' or 'gevent'" % (name,))

    def __repr__(self):
        return "<greenhook HubRunner %r>" % self.name

    def join(self, glet, timeout=None):
        """Wait for ``glet`` (up to ``timeout``); True when it finished."""
        glet.join(timeout)
        return glet.ready()

    def assert_cooperative(self, fn, *args, threshold=0.05, **kwargs):
        __tracebackhide__ = True
        return assert_cooperative(fn, *args, hub=self.name, threshold=threshold, **kwargs)


class _Bound:
    """Hooked calls in this OS thread wait on one backend until ``restore()``."""

    def __init__(self, name):
        import greenhook
        self._gh = greenhook
        self.before = greenhook.current_backend()
        greenhook.enable_thread(name)

    def restore(self):
        if self.before is None:
            self._gh.disable_thread()
        else:
            self._gh.enable_thread(self.before)


class _Ticker:
    """Sleeps ``tick`` s at a time on the hub and keeps the longest gap between wakes.

    Time the OS kept the thread waiting for a CPU (``/proc`` schedstat) is the machine's
    doing, not the code's: it is taken out of each gap, and remembered to be said."""

    def __init__(self, runner, tick):
        self.runner = runner
        self.tick = tick
        self.ticks = 0
        self.gap = 0.0          # longest gap, CPU waits taken out
        self.gap_waited = 0.0   # the CPU wait taken out of it
        self._sched = _watch.SchedClock(threading.get_native_id())
        self._last = None
        self._waited = 0.0
        self._stop = False
        self._glet = None

    def _runqueue(self):
        got = self._sched.read()
        return got[1] if got else 0.0

    def note(self, now):
        waited = self._runqueue()
        gap_waited = waited - self._waited
        gap = now - self._last - gap_waited
        if gap > self.gap:
            self.gap, self.gap_waited = gap, gap_waited
        self._last, self._waited = now, waited

    def _run(self):
        self._last, self._waited = time.monotonic(), self._runqueue()
        while not self._stop:
            self.runner.sleep(self.tick)
            self.note(time.monotonic())
            self.ticks += 1

    def start(self):
        self._glet = self.runner.spawn(self._run)
        self.runner.sleep(0)        # ticking before anything else starts

    def stop(self):
        """Count the gap still open (a stall right before the end has not been ticked)."""
        self._stop = True
        if self._last is not None:
            self.note(time.monotonic())
        self._glet.kill()
        self._sched.close()

    @property
    def stalled(self):
        """How long, beyond one tick, no other greenlet could run."""
        return max(self.gap - self.tick, 0.0)


def assert_cooperative(fn, *args, hub="builtin", threshold=0.05, timeout=60.0, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a greenlet on ``hub`` and return its result; raise
    AssertionError when the hub's loop stalled for longer than ``threshold`` seconds.

    A ticker greenlet sleeps ``min(threshold / 5, 0.01)`` s at a time; its longest late wake
    is how long no other greenlet could run (minus any time the OS kept the thread waiting
    for a CPU: a loaded machine is not a blocking call).  Hooked calls in this OS thread wait
    on ``hub`` meanwhile (``greenhook.enable_thread``; the previous binding is restored).

    The failure message says what blocked: the patched symbols that had to block the thread
    for real (``greenhook.stats()`` "blocked" deltas) and the libraries importing them; or
    that no patched call blocked, with the system call and native caller that a
    ``greenhook.watch`` running alongside caught in the act; and the Python stack of the code
    that blocked.  An exception from ``fn`` propagates as is (the stall, if any, as a note).

    ``hub``, ``threshold`` and ``timeout`` are this function's: to pass arguments of those
    names to ``fn``, wrap it in ``functools.partial``.
    """
    __tracebackhide__ = True    # pytest: show the caller's frame, not this one
    import greenhook

    runner = HubRunner(hub)
    bound = _Bound(hub)
    stalls = []
    try:
        before = greenhook.stats()
        with _watch.watch(threshold / 2.0, report=stalls.append, hub=hub):
            ticker = _Ticker(runner, min(threshold / 5.0, 0.01))
            ticker.start()
            t0 = time.monotonic()
            g = runner.spawn(fn, *args, **kwargs)
            finished = runner.join(g, timeout)
            wall = time.monotonic() - t0
            ticker.stop()
        after = greenhook.stats()
    finally:
        bound.restore()
    if not finished:
        raise AssertionError("%s did not finish within %s s on the %r hub"
                             % (_describe_call(fn), timeout, hub))
    failure = None
    if ticker.stalled > threshold:
        failure = _diagnostic(fn, hub, threshold, ticker, wall, before, after, stalls)
    error = getattr(g, "exception", None)
    if error is not None:
        if failure is not None and hasattr(error, "add_note"):
            error.add_note("greenhook.testing.assert_cooperative: " + failure)
        raise error
    if failure is not None:
        raise AssertionError(failure)
    return g.get()


def _describe_call(fn):
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return "%s.%s()" % (module, name) if module and module != "builtins" else name + "()"


def _delta(before, after):
    out = {}
    for sym, row in after.items():
        old = before.get(sym, {})
        diff = {k: v - old.get(k, 0) for k, v in row.items() if k != "calls"}
        diff = {k: v for k, v in diff.items() if v}
        if diff:
            out[sym] = diff
    return out


def _diagnostic(fn, hub, threshold, ticker, wall, before, after, stalls):
    delta = _delta(before, after)
    blocked = {sym: d["blocked"] for sym, d in delta.items() if d.get("blocked")}
    stall = max(stalls, key=lambda s: s.seconds) if stalls else None
    reports = _watch._patch_reports()
    lines = ["the %r hub stalled for %.3f s while running %s (threshold %.3f s): for that "
             "long no other greenlet could run"
             % (hub, ticker.stalled, _describe_call(fn), threshold),
             "  (measured by a ticker greenlet sleeping %.0f ms at a time: %d ticks in %.3f s%s)"
             % (ticker.tick * 1000, ticker.ticks, wall,
                "; not counting %.3f s the thread waited for a CPU" % ticker.gap_waited
                if ticker.gap_waited > 0.005 else "")]
    if blocked:
        lines.append("what blocked: patched calls that could not park on the hub and blocked "
                     "the OS thread for real:")
        for sym, count in sorted(blocked.items()):
            libs = _watch._libraries_importing(sym)
            lines.append("  %s x%d%s" % (sym, count,
                                          " (imported by %s)" % ", ".join(libs) if libs else ""))
        lines.append("  " + _watch._why_no_switch(stall.greenlet if stall else None))
    elif stall is not None and stall.cpu_bound:
        lines.append("what blocked: no patched call blocked: the thread was busy on the CPU "
                     "(code that does not yield), see the stack below")
    else:
        lines.append("what blocked: no patched call blocked: the blocking call is in a library "
                     "greenhook has not patched \u2014 run `greenhook audit <lib>`")
        if stall is not None and stall.native_library:
            lines.append("  caught in the act: the %s system call (%s), called from %s (best "
                         "guess from the native stack)" % (stall.syscall, stall.entry,
                                                            stall.native[0]))
            lines.append("  try: greenhook audit %s" % stall.native_library)
        elif stall is not None and stall.syscall:
            lines.append("  caught in the act: the %s system call" % stall.syscall)
    if stall is not None:
        if stall.late:
            lines.append("  (seen only after the stall: the GIL was held, or the machine is "
                         "loaded; the stack below is where the thread was then)")
        if stall.stack:
            lines.append("  where (most recent call last):")
            frames = list(stall.stack)[-_watch.STACK_LIMIT:]
            for text in traceback.StackSummary.from_list(frames).format():
                lines.extend("  " + part for part in text.rstrip("\n").split("\n"))
    if reports:
        lines.append("patched libraries: " + ", ".join(
            "%s (%d symbols)" % (os.path.basename(r.library), len(r.symbols)) for r in reports))
    else:
        lines.append("patched libraries: none (greenhook.patch_library(...) was never called)")
    if delta:
        lines.append("hooked calls during the run: " + "; ".join(
            "%s %s" % (sym, ", ".join("%s=%d" % kv for kv in sorted(d.items())))
            for sym, d in sorted(delta.items())))
    else:
        lines.append("hooked calls during the run: none")
    return "\n".join(lines)
