"""Concurrency and every cancellation delivery path, on one hub: run by tests/test_pythons.py
with each CPython 3.9-3.13 (the delivery uses a C-level trace function, whose behaviour
differs between versions).

``python cancel_paths.py HUB``.  Reports:

* ``concurrent``: 20 greened requests of 0.2 s (sample extension, GIL released): wall, ticks,
  replies correct.
* ``driver_error``: Timeout(0.2) around an extension call that turns the cancelled call's
  -1/ETIMEDOUT into OSError: the caller catches the Timeout, the OSError is its __context__.
* ``normal_return``: ``seen.append(recv(...))`` under Timeout(0.2), where ``recv`` is a ctypes
  call that returns -1 normally: the Timeout is raised right after the C call returns, before
  ``append`` runs (the C result is recorded as it returns).
* ``kill_statement`` / ``kill_return``: kill() of a greenlet parked in recv, with code after
  the call / the call as the function's return value: the greenlet ends with GreenletExit.
* ``silent``: ``with Timeout(0.2, False):`` around the call: execution goes on after the block.
"""
import ctypes
import errno
import sys

import greenhook
from greenhook import samples
from greenhook.samples.server import DelayServer

from ghscen import Ticker, c_recv, now, recording, report, setup, unix_pair


def main(hub_name):
    H, lib = setup(hub_name, "now")
    mod = samples.load("now")
    # the cancelled sockets are reused below; the default shuts them down
    greenhook.configure(shutdown_cancelled_sockets=False)
    out = {"version": list(sys.version_info[:3]), "ETIMEDOUT": errno.ETIMEDOUT}
    ticker = Ticker(H)
    H.sleep(0.03)

    with DelayServer() as srv:
        payloads = [b"p%d" % i for i in range(20)]
        ticks0, t0 = ticker.count, now()
        gs = [H.spawn(mod.request, "send_recv", srv.tcp_port, 200, p, True) for p in payloads]
        H.join(gs, timeout=30)
        out["concurrent"] = {"wall": now() - t0, "ticks": ticker.count - ticks0,
                             "ok": [g.get() for g in gs] == payloads}

        def driver_error():
            t0 = now()
            try:
                with H.Timeout(0.2):
                    mod.request("send_recv", srv.tcp_port, 3000, b"slow", True)
                return {"returned": True}
            except H.Timeout as exc:
                ctx = exc.__context__
                return {"caught": type(exc).__name__, "elapsed": now() - t0,
                        "context": [type(ctx).__name__, getattr(ctx, "errno", None)]}
        out["driver_error"] = H.call(driver_error)

    a, b = unix_pair()
    buf = ctypes.create_string_buffer(64)

    def normal_return():
        rec, seen = {}, []
        recv = recording(lib, "ghs_recv", rec)
        t0 = now()
        try:
            with H.Timeout(0.2):
                seen.append(recv(a.fileno(), buf, 64, 0))
        except H.Timeout as exc:
            return {"caught": type(exc).__name__, "elapsed": now() - t0, "seen": seen, "rec": rec}
        return {"returned": True, "seen": seen, "rec": rec}
    out["normal_return"] = H.call(normal_return)

    def kill(position):
        rec, trail = {}, []
        recv = recording(lib, "ghs_recv", rec)

        def statement():
            try:
                recv(a.fileno(), buf, 64, 0)
                trail.append("returned")
            except BaseException as exc:
                trail.append("raised " + type(exc).__name__)
                raise

        def as_return():
            return recv(a.fileno(), buf, 64, 0)

        g = H.spawn(statement if position == "statement" else as_return)
        H.sleep(0.1)
        t0 = now()
        g.kill(timeout=3)
        from greenlet import GreenletExit
        return {"took": now() - t0, "dead": g.dead, "exit": isinstance(g.value, GreenletExit),
                "trail": trail, "rec": rec}
    out["kill_statement"] = kill("statement")
    out["kill_return"] = kill("return")

    def silent():
        rec = {}
        recv = recording(lib, "ghs_recv", rec)
        t0 = now()
        with H.Timeout(0.2, False):
            recv(a.fileno(), buf, 64, 0)
            return {"returned": True}
        return {"went_on": True, "elapsed": now() - t0, "rec": rec}
    out["silent"] = H.call(silent)

    # the socket still works after all that
    H.spawn_later(0.05, b.send, b"after")
    out["after"] = H.call(lambda: c_recv(lib, a.fileno()))
    out["recv"] = greenhook.stats().get("recv")
    report(**out)


if __name__ == "__main__":
    main(sys.argv[1])
