"""The Celery app of tests/deploy/test_celery.py: one task that runs ``SELECT SLEEP(s)``
through mysqlclient.  Run by ``celery -A celery_tasks worker -P gevent -c 200``.

Environment: ``DEPLOY_BROKER`` (a redis:// URL; also the result backend), ``DEPLOY_MYSQL``
(JSON keyword arguments of ``MySQLdb.connect``), ``DEPLOY_EXPLICIT=1`` (patch here) or
``GREENHOOK_AUTO=1`` (patch nothing here).
"""
import json
import os
import time

import MySQLdb
from celery import Celery

import greenhook

# ---- greenhook: either no line at all (run the worker with GREENHOOK_AUTO=1: Celery's gevent
# pool calls gevent's monkey.patch_all(), which runs greenhook's patch_all plugin), or this
# one line after the driver's import.  The tests run both (DEPLOY_EXPLICIT=1: the line).
if os.environ.get("DEPLOY_EXPLICIT") == "1":
    greenhook.patch_module("MySQLdb._mysql")
# --------------------------------------------------------------------------------------------

app = Celery("celery_tasks", broker=os.environ["DEPLOY_BROKER"],
             backend=os.environ["DEPLOY_BROKER"])
app.conf.worker_prefetch_multiplier = 1     # a worker holds at most -c tasks at once
CONNECT = json.loads(os.environ.get("DEPLOY_MYSQL", "{}"))
_pool = []      # idle connections of this worker (greenlet-safe: list ops never switch)


@app.task(name="deploy.query")
def query(i, seconds):
    started = time.time()
    conn = _pool.pop() if _pool else MySQLdb.connect(**CONNECT)
    try:
        cur = conn.cursor()
        cur.execute("SELECT SLEEP(%s), %s", (seconds, i))
        row = list(cur.fetchone())
    except BaseException:
        conn.close()
        raise
    _pool.append(conn)
    backend = greenhook.current_backend()
    return {"row": row, "pid": os.getpid(), "started": started, "ended": time.time(), "backend": backend and backend.name,
            "green": greenhook.stats().get("poll", {}).get("green", 0),
            "blocked": greenhook.stats().get("poll", {}).get("blocked", 0)}


@app.task(name="deploy.nap")
def nap(i, seconds):
    """The same shape without a database: Celery's own cost per task, for comparison."""
    import gevent
    started = time.time()
    gevent.sleep(seconds)
    return {"row": [0, i], "pid": os.getpid(), "started": started, "ended": time.time()}
