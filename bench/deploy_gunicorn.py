"""gunicorn ``-k gevent``, one worker, under ``wrk``: with greenhook vs without.

    python bench/deploy_gunicorn.py [--seconds 10] [--connections 100] [--services D/services.json]
                                    [--out bench/results/deploy.md]

Each case starts ``gunicorn -k gevent -w 1`` serving bench/deploy_app.py (every request runs
``SELECT SLEEP(0.05)`` through mysqlclient) on a free 127.0.0.1 port, checks one answer,
points ``wrk --latency`` at it for ``--seconds`` with ``--connections`` connections, reads
``/greenhook`` (where the patch was made, what was greened) and stops gunicorn.  Cases:
greenhook off (the baseline), greenhook patched in the app, the same with ``--preload``
(patched in the master, inherited by the forked worker), patched in a gunicorn
``post_fork`` hook, and ``GREENHOOK_AUTO=1`` (no greenhook line at all; with and without
``--preload``).  The ideal with greenhook is ``connections / 0.05`` req/s; without it,
``1 / 0.05`` = 20 req/s.

The servers come from ``scripts/services.py`` (``--services`` or ``$GREENHOOK_SERVICES``);
``tests/deploy/test_gunicorn.py`` runs the same cases, shorter.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

#: case name -> (DEPLOY_GREEN, gunicorn --preload, post_fork hook config, extra environment)
CASES = {
    "off": ("0", False, False, {}),
    "app": ("1", False, False, {}),
    "app --preload": ("1", True, False, {}),
    "post_fork hook": ("0", False, True, {}),
    # No greenhook line anywhere: gevent's monkey.patch_all() in the worker runs greenhook's
    # did_patch_all plugin, i.e. patch_all("gevent").
    "GREENHOOK_AUTO=1": ("0", False, False, {"GREENHOOK_AUTO": "1"}),
    "GREENHOOK_AUTO=1 --preload": ("0", True, False, {"GREENHOOK_AUTO": "1"}),
}

# The gunicorn config-file recipe (docs/DEPLOYING.md): patch in each worker right after fork.
POST_FORK_CONF = '''\
def post_fork(server, worker):
    import MySQLdb, greenhook
    greenhook.patch_module("MySQLdb._mysql")
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def _ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(text):
    """req/s, total requests, latency percentiles (ms), errors from ``wrk --latency``."""
    out = {"req_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
           "requests": int(re.search(r"(\d+) requests in", text).group(1))}
    dist = re.search(r"Latency Distribution\n((?:[ \t]+\d+%[ \t]+[\d.]+\w+[ \t]*\n)+)", text)
    for pct, value, unit in re.findall(r"(\d+)%\s+([\d.]+)(us|ms|s|m)\b", dist.group(1)):
        out["p%s_ms" % pct] = round(_ms(value, unit), 2)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    return out


def run_case(name, connect, seconds=10, connections=100, python=sys.executable, log=print):
    """Start gunicorn for case ``name``, load it with wrk, stop it; returns the figures."""
    green, preload, hook, extra = CASES[name]
    port = free_port()
    env = dict(os.environ, DEPLOY_MYSQL=json.dumps(connect), DEPLOY_GREEN=green,
               PYTHONPATH=HERE)
    for var in ("GREENHOOK_WATCH", "GREENHOOK_AUTO", "GREENHOOK_SKIP", "GREENHOOK_ALLOW"):
        env.pop(var, None)
    env.update(extra)
    with tempfile.TemporaryDirectory(prefix="gh-deploy-") as tmp:
        cmd = [python, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections",
               "1000", "--backlog", "2048", "-b", "127.0.0.1:%d" % port, "--timeout", "120",
               "--log-level", "warning", "--chdir", HERE]
        if preload:
            cmd.append("--preload")
        if hook:
            conf = os.path.join(tmp, "gunicorn.conf.py")
            with open(conf, "w") as f:
                f.write(POST_FORK_CONF)
            cmd += ["-c", conf]
        cmd.append("deploy_app:app")
        errlog = os.path.join(tmp, "gunicorn.log")
        with open(errlog, "w") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            base = "http://127.0.0.1:%d" % port
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, body = _get(base + "/")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("gunicorn did not come up:\n" + open(errlog).read())
                    time.sleep(0.1)
            if status != 200 or not body.startswith(b"slept 0 on connection "):
                raise RuntimeError("unexpected answer %r %r" % (status, body))
            wrk = subprocess.run(
                ["wrk", "-t", "2", "-c", str(connections), "-d", "%ds" % seconds, "--latency",
                 "--timeout", "10s", base + "/"],
                capture_output=True, text=True, timeout=seconds + 60)
            if wrk.returncode != 0:
                raise RuntimeError("wrk failed: %s%s" % (wrk.stdout, wrk.stderr))
            res = parse_wrk(wrk.stdout)
            res["greenhook"] = json.loads(_get(base + "/greenhook", timeout=30)[1])
            res["master_pid"] = proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        res["log"] = open(errlog).read()[-2000:]
    res.update(case=name, seconds=seconds, connections=connections)
    log("%-15s %8.1f req/s  p50 %8.1f ms  p99 %8.1f ms  (%d requests, errors %s)"
        % (name, res["req_s"], res.get("p50_ms", -1), res.get("p99_ms", -1), res["requests"],
           res["socket_errors"]))
    return res


def _connect_from(services_path):
    with open(services_path) as f:
        return json.load(f)["services"]["mysql"]["connect"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--services", default=os.environ.get("GREENHOOK_SERVICES"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "deploy.md"))
    a = ap.parse_args()
    if not a.services:
        ap.error("--services D/services.json (scripts/services.py start --dir D) is required")
    connect = _connect_from(a.services)
    results = [run_case(name, connect, a.seconds, a.connections) for name in CASES]
    off = results[0]["req_s"]
    ideal = a.connections / 0.05
    lines = [
        "# gunicorn -k gevent, one worker, wrk: greenhook vs without",
        "",
        "`python bench/deploy_gunicorn.py --seconds %d --connections %d`, %s UTC; each request "
        "runs `SELECT SLEEP(0.05)` through mysqlclient. Ideal with greenhook: %d req/s "
        "(%d connections / 0.05 s); without: 20 req/s. Load average at the end: %s."
        % (a.seconds, a.connections, time.strftime("%Y-%m-%d %H:%M", time.gmtime()), ideal,
           a.connections, " ".join(open("/proc/loadavg").read().split()[:3])),
        "",
        "wrk's percentiles cover completed requests only: without greenhook most of the "
        "connections wait in the listen queue, and what they waited shows only as p99.",
        "",
        "| case | req/s | vs off | p50 ms | p99 ms | requests | socket errors | patched in |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        gh = r["greenhook"]
        where = ("-" if not gh["patched"] else
                 "worker, at gevent's monkey.patch_all()" if "AUTO" in r["case"] else
                 "worker, post_fork" if "post_fork" in r["case"] else
                 "master, inherited" if gh["imported_in"] != gh["pid"] else "worker")
        lines.append("| %s | %.1f | %.1fx | %.1f | %.1f | %d | %s | %s |" % (
            r["case"], r["req_s"], r["req_s"] / off if off else float("inf"),
            r.get("p50_ms", float("nan")), r.get("p99_ms", float("nan")), r["requests"],
            sum(r["socket_errors"].values()), where))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    for r in results:       # the logs hold machine paths: keep only whether they are clean
        log = r.pop("log")
        r["log_clean"] = not any(w in log for w in ("Traceback", "Exception ignored"))
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
