"""Fork a process that has patched mysqlclient; every child keeps working green.

``python fork_mysql.py '{"hub": "builtin"|"gevent", "connect": {...}, "n": 20, "sleep": 0.2}'``

The parent binds a second OS thread (which does not survive the fork), starts a blocking
detector and a 10 ms ticker, patches ``MySQLdb._mysql`` and runs one round of ``n``
concurrent ``SELECT SLEEP(sleep)`` queries (so its hub and loop exist and have run).  Then it
forks one child with ``os.fork()``, one with multiprocessing's fork start method and, on the
gevent hub, one with ``gevent.fork()``; while they run their own round, the parent runs
another.  Each child reports:

* its round's wall time, rows and ticker ticks (the loop and its timers run in the child);
* whether its hub's epoll set is the parent's kernel object (``kcmp(KCMP_FILE)``);
* the OS threads still bound in greenhook (only the forking one may be);
* whether the detector's monitor thread runs again and reports a stall made in the child.

After the children the parent runs a last round: the parent still works.
"""
import ctypes
import json
import multiprocessing
import os
import platform
import sys
import threading
import time

import ghscen

import greenhook
from greenhook import _core

import MySQLdb

now = time.monotonic

SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
KCMP_FILE = 0
_libc = ctypes.CDLL(None, use_errno=True)


def same_file(pid1, fd1, pid2, fd2):
    """True when fd1 of pid1 and fd2 of pid2 are the same open file description."""
    r = _libc.syscall(SYS_KCMP, pid1, pid2, KCMP_FILE, fd1, fd2)
    if r < 0:
        raise OSError(ctypes.get_errno(), "kcmp")
    return r == 0


def main():
    a = json.loads(sys.argv[1])
    name, connect = a["hub"], a["connect"]
    n, sleep = a.get("n", 20), a.get("sleep", 0.2)
    hub = ghscen.Hub(name)
    greenhook.use(name)
    reports = greenhook.patch_module("MySQLdb._mysql")
    assert any("libmariadb" in r.library for r in reports), [r.library for r in reports]

    def query(i):
        conn = MySQLdb.connect(**connect)
        try:
            cur = conn.cursor()
            cur.execute("SELECT SLEEP(%s), %s", (sleep, i))
            return [list(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def round_():
        ticker = ghscen.Ticker(hub)
        t0 = now()
        gs = [hub.spawn(query, i) for i in range(n)]
        hub.join(gs, timeout=60)
        wall = now() - t0
        ticker.stop()
        return {"wall": round(wall, 3), "ticks": ticker.count,
                "rows": [g.get() for g in gs]}

    def epoll_fd():
        if name == "builtin":
            return greenhook.hub.get_hub()._epoll.fileno()
        import gevent
        return gevent.get_hub().loop.fileno()

    # A second OS thread bound in the parent: it will not exist in any child.
    bound, release = threading.Event(), threading.Event()

    def other_thread():
        greenhook.enable_thread()
        bound.set()
        release.wait(60)

    t = threading.Thread(target=other_thread, daemon=True)
    t.start()
    bound.wait(10)

    stalls = []
    watch = greenhook.watch(0.1, report=stalls.append)

    out = {"hub": name, "first": round_()}
    parent_pid, parent_epfd = os.getpid(), epoll_fd()
    out["kcmp_self"] = same_file(parent_pid, parent_epfd, parent_pid, parent_epfd)
    out["parent_bound_before"] = len(_core.hooks().thread_states())

    def child_body():
        """Runs in a child; returns what it found (JSON-able)."""
        res = {"pid": os.getpid()}
        res["bound_threads"] = [st.thread_ident for st in _core.hooks().thread_states()]
        res["me"] = threading.get_ident()
        res["round"] = round_()
        res["epoll_shared"] = same_file(parent_pid, parent_epfd, os.getpid(), epoll_fd())
        res["monitor_alive"] = watch._thread.is_alive() and not watch.stopped
        del stalls[:]       # the parent's, copied at the fork
        keep_busy = hub.spawn(hub.sleep, 1.0)       # somebody waits on the hub...
        hub.sleep(0)
        time.sleep(0.4)                             # ...while the thread blocks for real
        deadline = now() + 5
        while not stalls and now() < deadline:
            hub.sleep(0.02)
        keep_busy.kill()
        res["stalls"] = [{"thread": s.thread_ident, "seconds": round(s.seconds, 3)}
                         for s in stalls]
        res["green"] = greenhook.stats().get("poll", {}).get("green", 0)
        return res

    def run_child(write):
        code = 1
        try:
            res = child_body()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            res = {"error": repr(exc)}
        write(json.dumps(res))
        return code

    children = []      # (how, fetch result)

    # 1. os.fork()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            code = run_child(lambda s: os.write(w, s.encode()))
        finally:
            os._exit(code)
    os.close(w)

    def fetch_fork(r=r, pid=pid):
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        return json.loads(data.decode()), os.waitstatus_to_exitcode(status)
    children.append(("os.fork", fetch_fork))

    # 2. multiprocessing, fork start method
    ctx = multiprocessing.get_context("fork")
    rconn, wconn = ctx.Pipe(duplex=False)

    def mp_target():
        sys.exit(run_child(wconn.send))
    proc = ctx.Process(target=mp_target)
    proc.start()
    wconn.close()

    def fetch_mp():
        res = json.loads(rconn.recv())
        proc.join(30)
        return res, proc.exitcode
    children.append(("multiprocessing", fetch_mp))

    # 3. gevent.fork(), on the gevent hub
    if name == "gevent":
        import gevent
        r3, w3 = os.pipe()
        pid3 = gevent.fork()
        if pid3 == 0:
            os.close(r3)
            code = 1
            try:
                code = run_child(lambda s: os.write(w3, s.encode()))
            finally:
                os._exit(code)
        os.close(w3)
        children.append(("gevent.fork", lambda: fetch_fork(r3, pid3)))

    out["during"] = round_()        # the parent works while its children do
    out["children"] = {}
    for how, fetch in children:
        res, code = fetch()
        res["exitcode"] = code
        out["children"][how] = res
    out["after"] = round_()
    out["parent_bound_after"] = len(_core.hooks().thread_states())
    out["parent_monitor_alive"] = watch._thread.is_alive() and not watch.stopped
    out["parent_stalls"] = len(stalls)
    watch.stop()
    release.set()
    ghscen.report(**out)


if __name__ == "__main__":
    main()
