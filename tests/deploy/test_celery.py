"""Celery ``-P gevent -c 200`` with a Redis broker (scripts/services.py's ``redis``): 200
tasks of a 0.2 s mysqlclient query finish together on one worker process (serialized: 40 s);
then two worker processes share 400 tasks through the broker, each doing part of them.

The workers run tests/deploy/celery_tasks.py: the single worker enables greenhook with one
``patch_module`` line in it, the two workers with ``GREENHOOK_AUTO=1`` and no line at all.
This process is only the client: it sends tasks by name and never imports (or patches) the
task module.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from greenhook_test_support import skip_or_fail

HERE = os.path.dirname(os.path.abspath(__file__))
SLEEP = 0.2


@pytest.fixture(scope="module")
def celery_env(mysql_server, redis_server, tmp_path_factory):
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        skip_or_fail("celery[redis] is not installed (%s): scripts/install_drivers.sh VENV" % exc)
    env = dict(os.environ, DEPLOY_BROKER=redis_server["url"],
               DEPLOY_MYSQL=json.dumps(mysql_server["connect"]), PYTHONPATH=HERE)
    for var in ("GREENHOOK_WATCH", "GREENHOOK_AUTO", "GREENHOOK_SKIP", "GREENHOOK_ALLOW"):
        env.pop(var, None)
    return env, redis_server["url"], tmp_path_factory.mktemp("celery")


def client(url):
    from celery import Celery
    app = Celery("deploy_client", broker=url, backend=url)
    return app


class Workers:
    """Start ``n`` gevent-pool workers, wait until each answers a ping; stop them (SIGTERM,
    then SIGKILL) on exit."""

    def __init__(self, env, logdir, n, concurrency=200, **extra_env):
        env = dict(env, **extra_env)
        self.env, self.logdir, self.n, self.concurrency = env, logdir, n, concurrency
        self.procs = []

    def __enter__(self):
        for k in range(self.n):
            log = open(os.path.join(self.logdir, "worker%d.log" % k), "w")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "-P", "gevent",
                 "-c", str(self.concurrency), "-n", "w%d@deploy" % k, "--loglevel", "WARNING",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                env=self.env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))
            log.close()
        return self

    def wait_ready(self, app, timeout=60):
        names = {"w%d@deploy" % k for k in range(self.n)}
        deadline = time.monotonic() + timeout
        while True:
            dead = [p for p in self.procs if p.poll() is not None]
            assert not dead, "a worker exited:\n" + self.logs()
            seen = {name for reply in app.control.ping(timeout=1.0) for name in reply}
            if names <= seen:
                return
            assert time.monotonic() < deadline, "workers not ready (%s)\n%s" % (seen, self.logs())

    def logs(self):
        out = []
        for k in range(self.n):
            with open(os.path.join(self.logdir, "worker%d.log" % k)) as f:
                out.append("--- worker %d\n%s" % (k, f.read()[-3000:]))
        return "\n".join(out)

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_tasks(app, n, task="deploy.query"):
    """Send ``n`` tasks; returns (seconds from the first send until the last task ended in
    its worker, the results)."""
    from celery import group
    w0 = time.time()
    res = group(app.signature(task, args=(i, SLEEP)) for i in range(n)).apply_async()
    sent = time.time() - w0
    values = res.get(timeout=60)
    done = max(v["ended"] for v in values) - w0
    print("  %d x %s: sent in %.2f s, last started at %.2f s, last ended at %.2f s, results "
          "in at %.2f s" % (n, task, sent, max(v["started"] for v in values) - w0, done,
                            time.time() - w0))
    return done, values


def check(values, n):
    assert sorted(v["row"][1] for v in values) == list(range(n))
    assert all(v["row"][0] == 0 for v in values)
    assert {v["backend"] for v in values} == {"gevent"}
    assert all(v["blocked"] == 0 for v in values), values[:3]


def test_one_worker_200_tasks(celery_env):
    env, url, logdir = celery_env
    app = client(url)
    with Workers(env, str(logdir), 1, DEPLOY_EXPLICIT="1") as w:
        w.wait_ready(app)
        run_tasks(app, 200)         # warm-up: the worker's connection pool fills up
        # Best of two batches: the machine is shared, and Celery's own dispatch (a few ms of
        # CPU per task) is most of the time here.
        runs = [run_tasks(app, 200) for _ in range(2)]
        run_tasks(app, 200, "deploy.nap")   # Celery's own floor (printed, for the record)
    for _, values in runs:
        check(values, 200)
        assert len({v["pid"] for v in values}) == 1
    wall = min(w for w, _ in runs)
    print("200 tasks x %.1f s on one worker: all done in %.2f s (best of %s)"
          % (SLEEP, wall, [round(w, 2) for w, _ in runs]))
    assert wall < 2.0, "200 x %.1f s took %.2f s (serialized: %.0f s)" % (SLEEP, wall, 200 * SLEEP)


def test_two_workers_share_400_tasks(celery_env):
    env, url, logdir = celery_env
    app = client(url)
    with Workers(env, str(logdir), 2, GREENHOOK_AUTO="1") as w:
        w.wait_ready(app)
        run_tasks(app, 400)         # warm-up: the connection pools fill up
        wall, values = run_tasks(app, 400)
        pids = {p.pid for p in w.procs}
    check(values, 400)
    done = {}
    for v in values:
        done[v["pid"]] = done.get(v["pid"], 0) + 1
    print("400 tasks x %.1f s on two workers: %.2f s, per worker %s" % (SLEEP, wall, done))
    assert set(done) == pids, done      # both workers did part of the work
    assert all(c > 0 for c in done.values()), done
    # Serialized: 80 s; one worker with -c 200: two rounds.  Celery's dispatch (a few ms of
    # CPU per task, on cores the client, the broker and MariaDB share) dominates here.
    assert wall < 4.0, "400 x %.1f s took %.2f s on two workers" % (SLEEP, wall)
