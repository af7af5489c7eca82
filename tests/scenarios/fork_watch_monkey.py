"""The blocking detector in a process gevent has monkey-patched (as gunicorn's gevent worker,
Celery's gevent pool and Locust do), before and after a fork.

The main greenlet blocks the thread for real (libc's ``usleep`` through ctypes, 0.3 s) while
another greenlet waits on the hub: the detector must report it -- in the parent, in a child
made by the (monkey-patched) ``os.fork()``, and in the parent again afterwards.
"""
from gevent import monkey

monkey.patch_all()

import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

import gevent  # noqa: E402
import ghscen  # noqa: E402

import greenhook  # noqa: E402
from greenhook.backends.base import os_thread_ident  # noqa: E402

libc = ctypes.CDLL(None)


def blocked_once(stalls):
    """Block the hub's thread for 0.3 s while a greenlet waits on the hub; the stalls the
    detector reported meanwhile."""
    del stalls[:]
    waiting = gevent.spawn(gevent.sleep, 2)
    gevent.sleep(0.05)
    libc.usleep(300000)
    gevent.sleep(0.2)          # let the monitor see the end of the stall
    waiting.kill()
    return [{"thread": s.thread_ident, "seconds": round(s.seconds, 3),
             "duration": round(getattr(s, "duration", 0) or 0, 3)} for s in stalls]


def main():
    greenhook.use("gevent")
    stalls = []
    w = greenhook.watch(0.05, report=stalls.append)
    out = {"me": os_thread_ident(), "monitor_is_greenlet": isinstance(w._thread, gevent.Greenlet)}
    out["parent_before"] = blocked_once(stalls)
    # The child's answer goes through a file: a pipe's read end is not reliably closed to
    # EOF across gevent's monkey-patched fork (seen with gevent alone, without greenhook).
    result = tempfile.NamedTemporaryFile(prefix="gh-fork-", suffix=".json", delete=False)
    result.close()
    pid = os.fork()             # gevent's fork: monkey-patched
    if pid == 0:
        code = 1
        try:
            res = {"me": os_thread_ident(), "pid": os.getpid(),
                   "alive": w._thread.is_alive() and not w.stopped,
                   "stalls": blocked_once(stalls)}
            with open(result.name, "w") as f:
                json.dump(res, f)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    with open(result.name) as f:
        out["child"] = json.load(f)
    os.unlink(result.name)
    out["child_exit"] = os.waitstatus_to_exitcode(status)
    out["parent_after"] = blocked_once(stalls)
    w.stop()
    out["stopped"] = w.stopped and not w._thread.is_alive()
    ghscen.report(**out)


if __name__ == "__main__":
    main()
