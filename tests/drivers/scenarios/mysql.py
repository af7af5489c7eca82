"""mysqlclient (MySQLdb -> libmariadb.so.3) scenarios.  See _common.py for the protocol.

cases:
  concurrent   n greenlets, each its own connection, ``SELECT SLEEP(s), i``
  read_timeout one connection with read_timeout=1 runs ``SELECT SLEEP(3)``
  refused      connect to a closed port
  timeout      one greenlet: Timeout(0.2) around ``SELECT SLEEP(1), 'first'``, then
               ``SELECT 7`` and ``SELECT 8`` on the same connection
  shared       two greenlets run ``SELECT SLEEP(s)`` on one shared connection
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import MySQLdb  # noqa: E402


def err(exc):
    return {"type": "%s.%s" % (type(exc).__module__, type(exc).__name__),
            "args": [a if isinstance(a, (int, str)) else repr(a) for a in exc.args]}


def main():
    a = _common.args()
    a.setdefault("module", "MySQLdb._mysql")
    hub, reports = _common.setup(a)
    connect = a["connect"]
    out = {"case": a["case"], "hub": hub.name, "patch": bool(a.get("patch")), "reports": reports}

    if a["case"] == "concurrent":
        sleep, n = a.get("sleep", 0.3), a.get("n", 20)

        def one(i):
            t0 = time.monotonic()
            conn = MySQLdb.connect(**connect)
            t1 = time.monotonic()
            try:
                cur = conn.cursor()
                cur.execute("SELECT SLEEP(%s), %s", (sleep, i))
                row = cur.fetchall()
                t2 = time.monotonic()
            finally:
                conn.close()
            return {"row": [list(r) for r in row], "connect": round(t1 - t0, 4),
                    "query": round(t2 - t1, 4)}

        out.update(_common.run_concurrent(hub, n, one))

    elif a["case"] == "read_timeout":
        conn = MySQLdb.connect(read_timeout=a.get("read_timeout", 1), **connect)

        def one(i):
            t0 = time.monotonic()
            try:
                cur = conn.cursor()
                cur.execute("SELECT SLEEP(%s)" % a.get("sleep", 3))
                return {"ok": [list(r) for r in cur.fetchall()],
                        "after": round(time.monotonic() - t0, 4)}
            except Exception as exc:
                return {"error": err(exc), "after": round(time.monotonic() - t0, 4)}

        out.update(_common.run_concurrent(hub, 1, one))

    elif a["case"] == "refused":
        port = _common.free_port()

        def one(i):
            t0 = time.monotonic()
            try:
                MySQLdb.connect(**dict(connect, port=port, connect_timeout=10))
                return {"ok": True, "after": round(time.monotonic() - t0, 4)}
            except Exception as exc:
                return {"error": err(exc), "after": round(time.monotonic() - t0, 4)}

        out.update(_common.run_concurrent(hub, 1, one))

    elif a["case"] == "timeout":
        conn = MySQLdb.connect(**connect)

        def q(sql):
            try:
                cur = conn.cursor()
                cur.execute(sql)
                return {"rows": [[str(c) for c in r] for r in cur.fetchall()]}
            except Exception as exc:
                return {"error": err(exc)}

        def body():
            res = {"cancelled": _common.timed_out(hub, a.get("timeout", 0.2),
                                                  lambda: q("SELECT SLEEP(1), 'first'"))}
            t0 = time.monotonic()
            res["next"] = [q("SELECT 7"), q("SELECT 8")]
            res["next_after"] = round(time.monotonic() - t0, 4)
            return res

        out.update(_common.run_one(hub, body))

    elif a["case"] == "shared":
        sleep = a.get("sleep", 0.3)
        conn = MySQLdb.connect(**connect)
        events = []

        def one(i):
            t0 = time.monotonic()
            events.append("start %d" % i)
            try:
                cur = conn.cursor()
                cur.execute("SELECT SLEEP(%s), %s", (sleep, i))
                row = [list(r) for r in cur.fetchall()]
                events.append("done %d" % i)
                return {"row": row, "after": round(time.monotonic() - t0, 4)}
            except Exception as exc:
                events.append("error %d" % i)
                return {"error": err(exc), "after": round(time.monotonic() - t0, 4)}

        live = {}
        _common.watchdog(a.get("watchdog", 5.0),
                         lambda: dict(out, outcome="hung", events=list(events),
                                      ticks=live.get("ticks")))
        out.update(_common.run_concurrent(hub, 2, one, live=live))
        # the connection is still usable afterwards
        cur = conn.cursor()
        cur.execute("SELECT 42")
        out["after_use"] = [list(r) for r in cur.fetchall()]
        out["events"] = events
        out["outcome"] = "completed"
        conn.close()

    out["stats"] = _common.stats() if a.get("patch") else {}
    _common.emit(out)


if __name__ == "__main__":
    main()
