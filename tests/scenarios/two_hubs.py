"""Two OS threads, each running its own hub, both making greened calls at the same time.

``python two_hubs.py HUB GIL``: the main thread binds ``HUB`` ("builtin" or "gevent") and
patches ``libghsample_now.so``; a second OS thread calls ``greenhook.enable_thread("builtin")``
and runs greenhook's built-in hub (its own, per thread).

1. Both threads start N greened requests (the delay server answers each after DELAY s) in
   greenlets of their own hub, next to their own 10 ms ticker, at the same moment.  The
   C extension holds or releases the GIL as ``GIL`` says.
2. The second thread calls ``greenhook.disable_thread()`` and makes N_SERIAL more requests
   the same way: they pass straight through to libc and block that thread only (GIL
   released), one after the other, while the main thread's hub keeps ticking.

Reports per phase: elapsed, ticks, replies correct, start/end times, and greenhook.stats()
snapshots (after setup, after phase 1, at the end).
"""
import sys
import threading

import greenhook
from greenhook import hub as builtin_hub
from greenhook import samples
from greenhook.samples.server import DelayServer

from ghscen import Hub, Ticker, Worker, now, report, setup

N, N_SERIAL, DELAY = 20, 5, 0.2


def batch(H, mod, port, n, tag, gil_released):
    """``n`` concurrent requests in greenlets of ``H``'s hub, measured next to a ticker."""
    ticker = Ticker(H)
    H.sleep(0.03)
    payloads = [b"%s-%d" % (tag, i) for i in range(n)]
    ticks0, t0 = ticker.count, now()
    gs = [H.spawn(mod.request, "send_recv", port, int(DELAY * 1000), p, gil_released)
          for p in payloads]
    H.join(gs, timeout=30)
    t1 = now()
    ticks = ticker.count - ticks0
    ticker.stop()
    return {"elapsed": t1 - t0, "ticks": ticks, "start": t0, "end": t1,
            "ok": [g.get() for g in gs] == payloads}


def main(hub_name, gil):
    H, _lib = setup(hub_name, "now")
    mod = samples.load("now")
    gil_released = gil == "released"
    snaps = {"start": greenhook.stats()}
    start = threading.Barrier(2, timeout=30)
    # the action runs once both threads are past phase 1, before either goes on
    middle = threading.Barrier(2, timeout=30,
                               action=lambda: snaps.update(phase1=greenhook.stats()))

    def second_thread(port):
        out = {"unbound": repr(greenhook.current_backend())}
        greenhook.enable_thread("builtin")
        out["enabled"] = type(greenhook.current_backend()).__name__
        H2 = Hub("builtin")
        start.wait()
        out["green"] = batch(H2, mod, port, N, b"second", gil_released)
        out["hub"] = builtin_hub.get_hub_if_exists()     # this thread's own hub
        greenhook.disable_thread()
        out["disabled"] = repr(greenhook.current_backend())
        middle.wait()
        out["passthrough"] = batch(H2, mod, port, N_SERIAL, b"serial", True)
        return out

    with DelayServer() as srv:
        worker = Worker(second_thread, srv.tcp_port)
        worker.start()
        start.wait()
        main_green = batch(H, mod, srv.tcp_port, N, b"main", gil_released)
        middle.wait()
        # phase 2: the second thread blocks in libc; this thread's hub must keep running
        ticker = Ticker(H)
        ticks0, t0 = ticker.count, now()
        second = H.wait_thread(worker, timeout=30)
        theirs, mine = second.pop("hub"), builtin_hub.get_hub_if_exists()  # mine: None under gevent
        second["own_hub"] = theirs is not None and theirs is not mine
        main_during = {"elapsed": now() - t0, "ticks": ticker.count - ticks0}
        ticker.stop()
    report(main_green=main_green, main_during=main_during, second=second,
           main_backend=type(greenhook.current_backend()).__name__,
           snaps=dict(snaps, end=greenhook.stats()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
