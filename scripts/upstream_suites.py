#!/usr/bin/env python3
"""The C drivers' own test suites, from their sdists, run plain and greened.

    python scripts/upstream_suites.py fetch [--dir D]
    VENV/bin/python scripts/upstream_suites.py run DRIVER [--modes plain,gevent,builtin]
                                                   [--services S/services.json] [--dir D]

``fetch`` downloads the sdists of the versions ``scripts/install_drivers.sh`` pins
(``pip download --no-binary :all: --no-deps``) into D (default ``.run/upstream``) and unpacks
them there; it does nothing for a version already unpacked.

``run`` runs one driver's suite once per mode with ``tests/drivers/scenarios/upstream_runner.py``
(``plain``: no greenhook; ``gevent``/``builtin``: the driver patched with
``greenhook.patch_module`` and the whole suite run inside a greenlet of that hub), against the
servers of ``services.json`` (``$GREENHOOK_SERVICES``), and prints per mode the counts of
outcomes and then every test whose outcome differs from the plain run.  Run it with the
interpreter of the venv the drivers are installed in.

Drivers: psycopg2 (unittest, ``tests.test_suite``; database ``psycopg2_test``), mysqlclient
(pytest, ``tests/``; database ``mysqldb_test``, a ``TESTDB`` option file), pylibmc (pytest,
``tests/``; ``MEMCACHED_HOST``/``MEMCACHED_PORT`` point at the services' memcached).  Each
run starts from a fresh database (or an emptied memcached).  A test that hangs (more than
``test_timeout`` s) or crashes the interpreter is recorded as ``hang``/``crash`` and the suite
resumes after it in a new process.  tests/drivers/test_upstream.py drives this from pytest.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "drivers", "scenarios", "upstream_runner.py")
INSTALL_DRIVERS = os.path.join(ROOT, "scripts", "install_drivers.sh")
DEFAULT_DIR = os.path.join(ROOT, ".run", "upstream")
MODES = ("plain", "gevent", "builtin")

SUITES = {
    "psycopg2": {
        "dist": "psycopg2", "pin": "PSYCOPG2_VERSION", "import_name": "psycopg2",
        "module": "psycopg2._psycopg", "framework": "unittest", "target": "tests.test_suite",
    },
    "mysqlclient": {
        "dist": "mysqlclient", "pin": "MYSQLCLIENT_VERSION", "import_name": "MySQLdb",
        "module": "MySQLdb._mysql", "framework": "pytest", "target": ["tests"],
    },
    "pylibmc": {
        "dist": "pylibmc", "pin": "PYLIBMC_VERSION", "import_name": "pylibmc",
        "module": "_pylibmc", "framework": "pytest", "target": ["tests"],
    },
}


def log(msg):
    sys.stderr.write("upstream_suites.py: %s\n" % msg)
    sys.stderr.flush()


def pins():
    """{VARIABLE: version} from install_drivers.sh (the one place versions are pinned)."""
    with open(INSTALL_DRIVERS) as f:
        return dict(re.findall(r"^([A-Z0-9_]+_VERSION)=(\S+)\s*$", f.read(), re.M))


def _safe_extract(tar, dest):
    base = os.path.realpath(dest)
    for m in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, m.name))
        if not (target == base or target.startswith(base + os.sep)) or m.issym() or m.islnk():
            raise RuntimeError("refusing to unpack %r from the sdist" % m.name)
    tar.extractall(dest)


def fetch(dest=DEFAULT_DIR, python=None, drivers=None):
    """Download and unpack the pinned sdists; returns {driver: {"version", "root"}}."""
    python = python or sys.executable
    versions = pins()
    os.makedirs(dest, exist_ok=True)
    out = {}
    for name in drivers or SUITES:
        suite = SUITES[name]
        version = versions[suite["pin"]]
        root = os.path.join(dest, "%s-%s" % (suite["dist"], version))
        if not os.path.isdir(os.path.join(root, "tests")):
            dl = tempfile.mkdtemp(dir=dest, prefix=".download-")
            try:
                log("downloading the %s %s sdist" % (suite["dist"], version))
                subprocess.run([python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                                "--no-binary", ":all:", "--no-deps", "-d", dl,
                                "%s==%s" % (suite["dist"], version)], check=True)
                archives = [f for f in os.listdir(dl) if f.endswith(".tar.gz")]
                if len(archives) != 1:
                    raise RuntimeError("pip download gave %r, expected one .tar.gz" % archives)
                unpack = tempfile.mkdtemp(dir=dest, prefix=".unpack-")
                with tarfile.open(os.path.join(dl, archives[0])) as tar:
                    _safe_extract(tar, unpack)
                top = os.path.join(unpack, "%s-%s" % (suite["dist"], version))
                if not os.path.isdir(os.path.join(top, "tests")):
                    raise RuntimeError("%s has no tests/ directory" % archives[0])
                shutil.rmtree(root, ignore_errors=True)
                os.rename(top, root)
                shutil.rmtree(unpack)
            finally:
                shutil.rmtree(dl, ignore_errors=True)
        out[name] = {"version": version, "root": root}
    return out


# ------------------------------------------------------------------------------ preparation


def _venv_exec(python, code, *args):
    subprocess.run([python, "-c", code] + [str(a) for a in args], check=True, timeout=60,
                   stdout=subprocess.DEVNULL)


def prepare(name, services, python, workdir):
    """Fresh server-side state for one run of ``name``'s suite; returns its env variables."""
    svc = services["services"]
    if name == "psycopg2":
        pg = svc["postgres"]
        _venv_exec(python, """if 1:
            import sys, psycopg2
            conn = psycopg2.connect(sys.argv[1]); conn.autocommit = True
            cur = conn.cursor()
            cur.execute("DROP DATABASE IF EXISTS psycopg2_test WITH (FORCE)")
            cur.execute("CREATE DATABASE psycopg2_test")
            conn.close()""", pg["dsn_nossl"])
        return {"PSYCOPG2_TESTDB": "psycopg2_test", "PSYCOPG2_TESTDB_HOST": pg["host"],
                "PSYCOPG2_TESTDB_PORT": str(pg["port"]), "PSYCOPG2_TESTDB_USER": pg["user"]}
    if name == "mysqlclient":
        my = svc["mysql"]
        _venv_exec(python, """if 1:
            import sys, MySQLdb
            conn = MySQLdb.connect(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3])
            cur = conn.cursor()
            cur.execute("DROP DATABASE IF EXISTS mysqldb_test")
            cur.execute("CREATE DATABASE mysqldb_test DEFAULT CHARACTER SET utf8mb4")
            conn.close()""", my["host"], my["port"], my["user"])
        cnf = os.path.join(workdir, "mysqldb-tests.cnf")
        with open(cnf, "w") as f:
            f.write("[MySQLdb-tests]\nhost = %s\nport = %d\nuser = %s\ndatabase = mysqldb_test\n"
                    "default-character-set = utf8mb4\n" % (my["host"], my["port"], my["user"]))
        return {"TESTDB": cnf}
    if name == "pylibmc":
        mc = svc["memcached"]
        with socket.create_connection((mc["host"], mc["port"]), timeout=10) as s:
            s.sendall(b"flush_all\r\n")
            if not s.recv(100).startswith(b"OK"):
                raise RuntimeError("memcached did not answer flush_all with OK")
        return {"MEMCACHED_HOST": mc["host"], "MEMCACHED_PORT": str(mc["port"])}
    raise ValueError(name)


# ------------------------------------------------------------------------------ running


def run_suite(name, mode, root, services, python, workdir, test_timeout=60,
              total_timeout=600, max_restarts=8):
    """Run ``name``'s suite in ``mode`` until it has run to the end; resume after a test
    that hangs or crashes.  Returns {"outcomes": {id: outcome}, "details": {id: text},
    "info": the runner's last info, "restarts": [{"id", "outcome", "status"}], "seconds"}."""
    suite = SUITES[name]
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(prepare(name, services, python, workdir), PYTHONFAULTHANDLER="1",
               PYTHONDONTWRITEBYTECODE="1")
    out = os.path.join(workdir, "%s-%s.jsonl" % (name, mode))
    if os.path.exists(out):
        os.remove(out)
    ini = os.path.join(workdir, "empty-pytest.ini")
    with open(ini, "w") as f:
        f.write("[pytest]\n")
    outcomes, details, restarts, info = {}, {}, [], None
    t0 = time.monotonic()
    while True:
        args = {"framework": suite["framework"], "target": suite["target"], "root": root,
                "mode": mode, "module": suite["module"], "import_name": suite["import_name"],
                "out": out, "exclude": sorted(outcomes), "test_timeout": test_timeout,
                "ini": ini}
        left = total_timeout - (time.monotonic() - t0)
        log_path = os.path.join(workdir, "%s-%s.log" % (name, mode))
        with open(log_path, "ab") as logf:
            try:
                proc = subprocess.run([python, RUNNER, json.dumps(args)], cwd=root, env=env,
                                      stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                      timeout=max(left, 1))
                status = proc.returncode
            except subprocess.TimeoutExpired:
                status = "timeout"
        last, done = None, False
        with open(out) as f:
            for line in f:
                rec = json.loads(line)
                if "start" in rec:
                    last = rec["start"]
                elif rec.get("done"):
                    done, info = True, rec["info"]
                elif rec["id"] not in outcomes or rec["outcome"] == "hang":
                    outcomes[rec["id"]] = rec["outcome"]
                    if rec.get("detail"):
                        details[rec["id"]] = rec["detail"]
        if done and status == 0:
            break
        # Interrupted: the last test started hung (the runner's watchdog wrote "hang" and
        # exited 3, or our timeout fired) or crashed the interpreter (killed by a signal).
        if last is not None and (last not in outcomes or outcomes[last] == "hang"):
            if last not in outcomes:
                outcomes[last] = "crash" if isinstance(status, int) and status < 0 else "hang"
            details[last] = "exit status %s; see %s" % (status, log_path)
        else:
            last = None
        restarts.append({"id": last, "outcome": outcomes.get(last), "status": status})
        if last is None or status == "timeout" or len(restarts) > max_restarts \
                or [r["id"] for r in restarts].count(last) > 1:
            info = {"aborted": "status %s after %d restarts; see %s"
                               % (status, len(restarts), log_path)}
            break
        log("%s %s: %s %s, resuming after it" % (name, mode, last, outcomes[last]))
    return {"outcomes": outcomes, "details": details, "info": info, "restarts": restarts,
            "seconds": round(time.monotonic() - t0, 1)}


def counts(outcomes):
    c = {}
    for o in outcomes.values():
        c[o] = c.get(o, 0) + 1
    return dict(sorted(c.items()))


def differences(plain, other):
    """{id: (plain outcome, other outcome)} for the tests that passed plain and did not pass
    in ``other`` (missing there counts as "not run")."""
    return {i: ("passed", other.get(i, "not run")) for i, o in sorted(plain.items())
            if o == "passed" and other.get(i) != "passed"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--dir", default=DEFAULT_DIR)
    r = sub.add_parser("run")
    r.add_argument("driver", choices=sorted(SUITES))
    r.add_argument("--modes", default=",".join(MODES))
    r.add_argument("--dir", default=DEFAULT_DIR)
    r.add_argument("--services", default=os.environ.get("GREENHOOK_SERVICES"))
    r.add_argument("--test-timeout", type=float, default=60)
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        print(json.dumps(fetch(args.dir), indent=2))
        return 0
    if not args.services:
        ap.error("--services or $GREENHOOK_SERVICES is required")
    with open(args.services) as fh:
        services = json.load(fh)
    root = fetch(args.dir, drivers=[args.driver])[args.driver]["root"]
    work = os.path.join(args.dir, "work")
    results = {}
    for mode in args.modes.split(","):
        res = results[mode] = run_suite(args.driver, mode, root, services, sys.executable, work,
                                        test_timeout=args.test_timeout)
        print("%s %-8s %6.1f s  %s  restarts=%s  info=%s" % (
            args.driver, mode, res["seconds"], counts(res["outcomes"]), res["restarts"],
            {k: v for k, v in (res["info"] or {}).items() if k != "patched"}))
    if "plain" in results:
        for mode, res in results.items():
            if mode == "plain":
                continue
            for tid, (a, b) in differences(results["plain"]["outcomes"], res["outcomes"]).items():
                print("  %s: %s plain, %s %s\n      %s" % (
                    tid, a, b, mode, (res["details"].get(tid) or "").strip().splitlines()[-1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
