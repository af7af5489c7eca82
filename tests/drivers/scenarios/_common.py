"""Shared pieces of the driver scenarios.

A scenario is a small program run in a fresh interpreter (GOT patches are process-wide):
``python scenarios/<driver>.py '<json args>'``.  It prints exactly one line starting with
``RESULT `` followed by a JSON object, which the test parses and asserts on.  Anything else
on stdout/stderr is diagnostics, shown by the test when it fails.

Common arguments (in the JSON object): ``hub`` ("gevent" or "builtin"), ``patch`` (bool).
"""
import json
import os
import sys
import threading
import time
import traceback

RESULT_PREFIX = "RESULT "


def args():
    return json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


def emit(result):
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=repr) + "\n")
    sys.stdout.flush()


def watchdog(seconds, result_fn, note="watchdog"):
    """Print a RESULT built by ``result_fn()`` and exit the process (status 0) if the scenario
    is still running after ``seconds``.  Runs in a plain thread, so it fires only if the main
    thread released the GIL (blocked in C, e.g. on a mutex); the test's subprocess timeout is
    the backstop for the rest."""
    def fire():
        try:
            res = result_fn()
        except BaseException as exc:  # pragma: no cover - diagnostics only
            res = {"watchdog_error": repr(exc)}
        res[note] = seconds
        res.update(main_thread_state())
        emit(res)
        os._exit(0)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def main_thread_state():
    """Where the main OS thread is: its Python stack (innermost last) and its kernel wait
    channel (``futex_wait_queue`` when blocked on a pthread mutex)."""
    main = threading.main_thread()
    frame = sys._current_frames().get(main.ident)
    stack = traceback.format_stack(frame) if frame is not None else []
    wchan = state = None
    try:
        with open("/proc/self/task/%d/wchan" % main.native_id) as f:
            wchan = f.read().strip()
        with open("/proc/self/task/%d/stat" % main.native_id) as f:
            data = f.read()
            state = data[data.rfind(")") + 2:].split()[0]
    except OSError:
        pass
    return {"main_stack": [line.strip().splitlines()[0] for line in stack][-6:],
            "main_wchan": wchan, "main_state": state}


class Hub:
    """The few hub operations the scenarios need, on gevent's hub or greenhook's own."""

    def __init__(self, name, greened):
        self.name = name
        if name == "gevent":
            import gevent
            self._spawn, self._sleep = gevent.spawn, gevent.sleep
            self.Timeout = gevent.Timeout
            self._joinall = lambda gs, timeout: gevent.joinall(gs, timeout=timeout)
        elif name == "builtin":
            from greenhook import hub
            self._spawn, self._sleep = hub.spawn, hub.sleep
            self.Timeout = hub.Timeout
            self._joinall = lambda gs, timeout: hub.joinall(gs, timeout=timeout)
        else:
            raise ValueError("unknown hub %r" % (name,))
        if greened:
            import greenhook
            greenhook.use(name)

    def spawn(self, fn, *a, **kw):
        return self._spawn(fn, *a, **kw)

    def sleep(self, seconds):
        self._sleep(seconds)

    def joinall(self, greenlets, timeout=None):
        return self._joinall(greenlets, timeout)


def setup(a):
    """Patch ``a["module"]`` when ``a["patch"]``; return (Hub, [PatchReport dicts])."""
    reports = []
    if a.get("patch"):
        import greenhook
        reports = [r.as_dict() for r in greenhook.patch_module(a["module"])]
    return Hub(a.get("hub", "gevent"), bool(a.get("patch"))), reports


def run_concurrent(hub, n, fn, timeout=30.0, tick=0.01, live=None):
    """Run ``fn(i)`` for i in range(n), each in its own greenlet, next to a ``tick``-second
    ticker greenlet.  Returns {elapsed, ticks, results (by i, None for failures), errors}.
    ``live``: a dict that gets the running tick count (for a watchdog)."""
    results = [None] * n
    errors = {}
    state = {"ticks": 0, "stop": False} if live is None else live
    state.update(ticks=0, stop=False)

    def ticker():
        while not state["stop"]:
            state["ticks"] += 1
            hub.sleep(tick)

    def worker(i):
        try:
            results[i] = fn(i)
        except BaseException as exc:
            errors[i] = "%s: %s" % (type(exc).__name__, exc)
            traceback.print_exc()

    tk = hub.spawn(ticker)
    hub.sleep(0)
    hub.sleep(0)
    state["ticks"] = 0
    t0 = time.monotonic()
    gs = [hub.spawn(worker, i) for i in range(n)]
    hub.joinall(gs, timeout=timeout)
    elapsed = time.monotonic() - t0
    ticks = state["ticks"]
    state["stop"] = True
    hub.joinall([tk], timeout=5)
    return {"elapsed": round(elapsed, 4), "ticks": ticks, "results": results,
            "errors": {str(k): v for k, v in errors.items()},
            "unfinished": sum(1 for g in gs if not g.dead)}


def run_one(hub, fn, timeout=30.0):
    """Run ``fn()`` in one greenlet (not the main one) and return its value."""
    box = {}

    def body():
        box["value"] = fn()

    g = hub.spawn(body)
    hub.joinall([g], timeout=timeout)
    if "value" not in box:
        raise RuntimeError("the greenlet did not finish: %r" % (getattr(g, "exception", None),))
    return box["value"]


def timed_out(hub, seconds, call):
    """Run ``call()`` under the hub's Timeout(seconds).  Returns a dict: "returned" (what the
    call returned, if it returned), "raised" (type name of what reached the caller),
    "context" (repr of its __context__: the driver's own error), "after" (seconds)."""
    t0 = time.monotonic()
    out = {}
    try:
        with hub.Timeout(seconds):
            out["returned"] = call()
    except BaseException as exc:  # the Timeout is a BaseException
        out["raised"] = type(exc).__name__
        out["is_timeout"] = isinstance(exc, hub.Timeout)
        out["context"] = repr(exc.__context__) if exc.__context__ is not None else None
    out["after"] = round(time.monotonic() - t0, 4)
    return out


def stats():
    import greenhook
    try:
        return greenhook.stats()
    except Exception as exc:  # unpatched runs may not have the core loaded: fine
        return {"error": repr(exc)}


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on (bound then released)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
