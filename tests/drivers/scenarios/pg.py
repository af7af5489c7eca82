"""psycopg2 (-> libpq) scenarios, for psycopg2 built from source and psycopg2-binary alike.
See _common.py for the protocol.  No psycogreen: only greenhook makes libpq cooperative.

cases:
  concurrent   n greenlets, each its own connection (``dsn``), ``SELECT pg_sleep(s), i``,
               then ``SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()``
  timeout      one greenlet: Timeout(0.2) around ``SELECT pg_sleep(1), 'first'``, then
               ``SELECT 7`` and ``SELECT 8`` on the same connection
  shared       two greenlets run ``SELECT pg_sleep(s), i`` on one shared connection
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import psycopg2  # noqa: E402


def loaded(name):
    """Paths of the loaded objects whose file name contains ``name``."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if name in line and "/" in line})


def main():
    a = _common.args()
    a.setdefault("module", "psycopg2._psycopg")
    hub, reports = _common.setup(a)
    dsn = a["dsn"]
    out = {"case": a["case"], "hub": hub.name, "patch": bool(a.get("patch")), "reports": reports,
           "psycopg2": psycopg2.__version__, "libpq_loaded": loaded("libpq")}

    if a["case"] == "concurrent":
        sleep, n = a.get("sleep", 0.3), a.get("n", 20)

        def one(i):
            t0 = time.monotonic()
            conn = psycopg2.connect(dsn)
            t1 = time.monotonic()
            try:
                cur = conn.cursor()
                cur.execute("SELECT pg_sleep(%s), %s", (sleep, i))
                row = cur.fetchall()
                t2 = time.monotonic()
                cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                ssl = cur.fetchone()[0]
            finally:
                conn.close()
            return {"row": [[str(r[0]), r[1]] for r in row], "ssl": ssl,
                    "connect": round(t1 - t0, 4), "query": round(t2 - t1, 4)}

        out.update(_common.run_concurrent(hub, n, one))

    elif a["case"] == "timeout":
        conn = psycopg2.connect(dsn)

        def q(sql):
            try:
                cur = conn.cursor()
                cur.execute(sql)
                return {"rows": [[str(c) for c in r] for r in cur.fetchall()]}
            except Exception as exc:
                return {"error": "%s: %s" % (type(exc).__name__, exc)}

        def body():
            res = {"cancelled": _common.timed_out(hub, a.get("timeout", 0.2),
                                                  lambda: q("SELECT pg_sleep(1), 'first'"))}
            res["closed_after_cancel"] = conn.closed
            t0 = time.monotonic()
            res["next"] = [q("SELECT 7"), q("SELECT 8")]
            res["next_after"] = round(time.monotonic() - t0, 4)
            return res

        out.update(_common.run_one(hub, body))
        conn.close()

    elif a["case"] == "shared":
        sleep = a.get("sleep", 0.3)
        conn = psycopg2.connect(dsn)
        events = []

        def one(i):
            t0 = time.monotonic()
            events.append("start %d" % i)
            try:
                cur = conn.cursor()
                cur.execute("SELECT pg_sleep(%s), %s", (sleep, i))
                row = [[str(r[0]), r[1]] for r in cur.fetchall()]
                events.append("done %d" % i)
                return {"row": row, "after": round(time.monotonic() - t0, 4)}
            except Exception as exc:
                events.append("error %d" % i)
                return {"error": "%s: %s" % (type(exc).__name__, exc),
                        "after": round(time.monotonic() - t0, 4)}

        # Fires only if the main thread is stuck in C with the GIL released (the mutex).
        live = {}
        _common.watchdog(a.get("watchdog", 3.0),
                         lambda: dict(out, outcome="hung", events=list(events),
                                      ticks=live.get("ticks"), stats=_common.stats()))
        out.update(_common.run_concurrent(hub, 2, one, live=live))
        out["events"] = events
        out["outcome"] = "completed"
        conn.close()

    out["stats"] = _common.stats() if a.get("patch") else {}
    _common.emit(out)


if __name__ == "__main__":
    main()
