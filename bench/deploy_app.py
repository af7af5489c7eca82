"""The WSGI app of the gunicorn deployment test and benchmark (bench/deploy_gunicorn.py).

Each request takes a MySQL connection from a small per-process pool and runs
``SELECT SLEEP(0.05)`` through mysqlclient (libmariadb: blocking C calls).  ``/greenhook``
answers what greenhook did in this process (JSON), for the tests.

Environment: ``DEPLOY_MYSQL`` (JSON keyword arguments of ``MySQLdb.connect``),
``DEPLOY_SLEEP`` (seconds, default 0.05), ``DEPLOY_GREEN`` (``0``: no ``patch_module`` here --
the baseline, or greenhook enabled elsewhere: a gunicorn hook, ``GREENHOOK_AUTO=1``).
"""
import json
import os

import MySQLdb

import greenhook

CONNECT = json.loads(os.environ.get("DEPLOY_MYSQL", "{}"))
SLEEP = float(os.environ.get("DEPLOY_SLEEP", "0.05"))
GREEN = os.environ.get("DEPLOY_GREEN", "1") != "0"

# ---- greenhook, explicitly: one line after the driver's import -----------------------------
# (Or no line at all: run gunicorn with GREENHOOK_AUTO=1 -- the "GREENHOOK_AUTO=1" cases.)
if GREEN:
    greenhook.patch_module("MySQLdb._mysql")
IMPORTED_IN = os.getpid()   # with --preload: gunicorn's master (the workers inherit the patch)
# --------------------------------------------------------------------------------------------

_pool = []      # idle connections of this worker process (greenlet-safe: list ops never switch)


def _query():
    conn = _pool.pop() if _pool else MySQLdb.connect(**CONNECT)
    try:
        cur = conn.cursor()
        cur.execute("SELECT SLEEP(%s), CONNECTION_ID()", (SLEEP,))
        row = cur.fetchone()
    except BaseException:
        conn.close()
        raise
    _pool.append(conn)
    return row


def _greenhook_state():
    backend = greenhook.current_backend()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "imported_in": IMPORTED_IN,
        "patched": sorted(os.path.basename(r.library) for r in greenhook.patched_libraries()),
        "backend": backend.name if backend is not None else None,
        "poll": greenhook.stats().get("poll", {}),
        "pool": len(_pool),
    }


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/greenhook":
        body = json.dumps(_greenhook_state()).encode()
        ctype = "application/json"
    else:
        slept, conn_id = _query()
        body = b"slept %d on connection %d\n" % (slept, conn_id)
        ctype = "text/plain"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
