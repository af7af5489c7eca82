#!/usr/bin/env python3
"""Throwaway database/cache/HTTP servers on 127.0.0.1 for greenhook's driver tests.

    python scripts/services.py start  --dir D [--services mysql,postgres,memcached,http]
                                      [--memcached-delay 0.3] [--timeout 60]
    python scripts/services.py status --dir D
    python scripts/services.py stop   --dir D [--clean]

``start`` initialises fresh data directories under D, starts every requested
service bound to 127.0.0.1 on free ports, waits until each answers (bounded),
and writes ``D/services.json`` (see docs/SERVICES.md for its schema). A previous
run's leftovers in D are stopped and removed first. If a service does not come
up, the tail of its log is printed, whatever was started is stopped, and the
exit status is 1.

``stop`` stops exactly the processes ``start`` recorded (by PID, checked against
the process start time so a recycled PID is never signalled): PostgreSQL with
``pg_ctl stop``, the others with SIGTERM, then SIGKILL after a bounded wait. It
is safe to call twice. ``--clean`` also removes the data directories.

``status`` prints services.json (stdout) and which recorded processes are alive
(stderr); exit status 0 when every one is alive, 3 otherwise.

Services:
  mysql      MariaDB (mariadb-install-db + mariadbd), root without password,
             TCP and a unix socket, database ``greenhook`` created.
  postgres   PostgreSQL from /usr/lib/postgresql/<highest version>/bin, run as the
             ``postgres`` user, trust authentication, TLS on (self-signed
             certificate) so ``sslmode=require`` works.
  memcached  memcached, plus a delaying TCP proxy in front of it (each chunk sent
             by a client reaches memcached ``--memcached-delay`` seconds later;
             memcached has no server-side sleep).
  http       an asyncio HTTP/1.1 server: ``GET /delay/<ms>`` answers after <ms>
             milliseconds (also ``/bytes/<n>``, ``/echo``, ``/health``, ``/stats``).
  redis      redis-server, no persistence: the Celery broker of tests/deploy.

Standard library only; Python 3.9+. Linux only.
"""
import argparse
import asyncio
import concurrent.futures
import datetime
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
SCHEMA = 1
ALL_SERVICES = ("mysql", "postgres", "memcached", "http", "slapd", "redis")
JSON_NAME = "services.json"
# Sub-directories of D that start creates (and stop --clean / a new start removes).
OWNED = ("mysql", "pg", "logs", "run", "ldap")
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.<port>"
IS_ROOT = os.geteuid() == 0
SBIN_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


class ServiceError(Exception):
    """A service failed to initialise or to come up; the message says why."""


# --------------------------------------------------------------------------------------------
# small helpers


def log(msg):
    print("services.py: %s" % msg, file=sys.stderr, flush=True)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def which(name):
    return shutil.which(name, path=SBIN_PATH)


def need(*names):
    """Return the path of the first program found among ``names``, else raise."""
    for name in names:
        path = which(name)
        if path:
            return path
    raise ServiceError(
        "none of %s found on PATH (run scripts/install_system_deps.sh)" % ", ".join(names)
    )


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(no log: %s)" % exc
    return "\n".join(data.splitlines()[-lines:])


def proc_starttime(pid):
    """Start time (clock ticks since boot) of ``pid``, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    fields = data[data.rfind(")") + 2:].split()
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()[0]


def is_alive(pid, starttime=None):
    """True when ``pid`` runs (not a zombie) and, if given, started at ``starttime``."""
    if not pid:
        return False
    _reap(pid)
    st = proc_starttime(pid)
    if st is None:
        return False
    if starttime is not None and st != starttime:
        return False  # the PID was recycled: not ours
    return proc_state(pid) not in ("Z", "X", None)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def wait_gone(pid, starttime, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid, starttime):
            return True
        time.sleep(0.05)
    return not is_alive(pid, starttime)


def kill_process(name, pid, starttime, timeout=30.0):
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Never signals a recycled PID."""
    if not is_alive(pid, starttime):
        return "not running"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    if wait_gone(pid, starttime, timeout):
        return "stopped (SIGTERM)"
    log("%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL" % (name, pid, timeout))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped (SIGTERM)"
    wait_gone(pid, starttime, 10.0)
    return "killed (SIGKILL)"


def postgres_ids():
    import pwd

    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def as_postgres_kwargs(home):
    """subprocess keyword arguments that run a command as the ``postgres`` user (when root)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", HOME=home)
    kw = {"env": env, "cwd": home}
    if IS_ROOT:
        uid, gid = postgres_ids()
        kw.update(user=uid, group=gid, extra_groups=[])
    return kw


def chown_postgres(path):
    if IS_ROOT:
        uid, gid = postgres_ids()
        os.chown(path, uid, gid)


def traversable_by_postgres(path):
    """True when the ``postgres`` user can reach ``path`` (x permission on every ancestor)."""
    if not IS_ROOT:
        return True
    uid, gid = postgres_ids()
    import grp

    gids = {gid} | {g.gr_gid for g in grp.getgrall() if "postgres" in g.gr_mem}
    path = os.path.abspath(path)
    parts = [path]
    while os.path.dirname(parts[-1]) != parts[-1]:
        parts.append(os.path.dirname(parts[-1]))
    for p in parts:
        try:
            st = os.stat(p)
        except OSError:
            return False
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def spawn(cmd, logfile, **kw):
    """Start a long-running server detached from our session; output goes to ``logfile``."""
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            **kw
        )
    return proc


def run(cmd, logfile=None, timeout=120, check=True, **kw):
    """Run a command to completion; on failure raise ServiceError with its output."""
    try:
        res = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            **kw
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError("%s timed out after %s s" % (cmd[0], timeout)) from exc
    out = res.stdout.decode("utf-8", "replace")
    if logfile:
        with open(logfile, "a") as f:
            f.write("$ %s\n%s\n" % (" ".join(cmd), out))
    if check and res.returncode != 0:
        raise ServiceError(
            "%s exited with %d:\n%s" % (" ".join(cmd), res.returncode, "\n".join(out.splitlines()[-40:]))
        )
    return res.returncode, out


def wait_ready(name, probe, proc_alive, timeout, logs):
    """Call ``probe()`` until it returns True; fail loudly when the server died or time ran out."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            if probe():
                return
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not yet"
            last_exc = exc
        if not proc_alive():
            raise ServiceError(
                "%s exited during start-up%s\n%s" % (name, _why(last_exc), _log_tails(logs))
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                "%s not ready after %.0f s%s\n%s" % (name, timeout, _why(last_exc), _log_tails(logs))
            )
        time.sleep(0.1)


def _why(exc):
    return " (last probe error: %s)" % exc if exc else ""


def _log_tails(logs):
    return "\n".join("--- tail of %s ---\n%s" % (p, tail(p)) for p in logs if p)


def port_in_use(logs):
    text = "\n".join(tail(p, 80) for p in logs if p).lower()
    return "already in use" in text or "address in use" in text


def tcp_probe(port, send=None, expect=None, timeout=2.0):
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        if send is None:
            return True
        s.sendall(send)
        data = b""
        while expect not in data:
            chunk = s.recv(4096)
            if not chunk:
                return False
            data += chunk
        return True


# --------------------------------------------------------------------------------------------
# the state file


class State:
    """services.json, rewritten atomically after every change (so a crash mid-start can be
    cleaned up by the next start or stop)."""

    def __init__(self, root):
        self.root = root
        self.path = os.path.join(root, JSON_NAME)
        self.lock = threading.Lock()
        self.data = {
            "schema": SCHEMA,
            "dir": root,
            "host": HOST,
            "state": "starting",
            "started_at": now_iso(),
            "stopped_at": None,
            "timings": {},
            "services": {},
            "processes": [],
            "cleanup_dirs": [],
        }

    def add_process(self, rec):
        with self.lock:
            self.data["processes"].append(rec)
            self._write()

    def add_cleanup_dir(self, path):
        with self.lock:
            self.data["cleanup_dirs"].append(path)
            self._write()

    def set_service(self, name, info, seconds):
        with self.lock:
            self.data["services"][name] = info
            self.data["timings"][name] = round(seconds, 2)
            self._write()

    def set(self, **kw):
        with self.lock:
            self.data.update(kw)
            self._write()

    def _write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, self.path)


def read_state(root):
    path = os.path.join(root, JSON_NAME)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log("cannot read %s: %s" % (path, exc))
        return None


def process_record(name, pid, kind="signal", **extra):
    rec = {"name": name, "pid": pid, "starttime": proc_starttime(pid), "stop": kind}
    rec.update(extra)
    return rec


# --------------------------------------------------------------------------------------------
# MariaDB


def start_mysql(ctx):
    root, logs, state, timeout = ctx["root"], ctx["logs"], ctx["state"], ctx["timeout"]
    install_db = need("mariadb-install-db", "mysql_install_db")
    mariadbd = need("mariadbd", "mysqld")
    admin = need("mariadb-admin", "mysqladmin")
    client = need("mariadb", "mysql")

    base = os.path.join(root, "mysql")
    datadir = os.path.join(base, "data")
    tmpdir = os.path.join(base, "tmp")
    os.makedirs(datadir)
    os.makedirs(tmpdir)
    sock = os.path.join(ctx["sockdir"], "mysql.sock")
    pidfile = os.path.join(base, "mariadbd.pid")
    install_log = os.path.join(logs, "mysql-install.log")
    errlog = os.path.join(logs, "mysql.log")
    outlog = os.path.join(logs, "mysql.stdout.log")

    install_cmd = [
        install_db, "--no-defaults", "--datadir=" + datadir, "--auth-root-authentication-method=normal",
        "--skip-test-db", "--skip-name-resolve",
    ]
    if IS_ROOT:
        install_cmd.append("--user=root")
    run(install_cmd, logfile=install_log, timeout=max(timeout, 120))

    for attempt in range(3):
        port = free_port()
        cmd = [
            mariadbd, "--no-defaults", "--datadir=" + datadir, "--socket=" + sock, "--port=%d" % port,
            "--bind-address=" + HOST, "--pid-file=" + pidfile, "--log-error=" + errlog, "--tmpdir=" + tmpdir,
            "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=0", "--max-connections=500", "--max-allowed-packet=64M",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
        ]
        if IS_ROOT:
            cmd.append("--user=root")
        proc = spawn(cmd, outlog)
        state.add_process(process_record("mysql", proc.pid))
        ping = [admin, "--no-defaults", "--protocol=TCP", "-h", HOST, "-P", str(port), "-uroot",
                "--connect-timeout=2", "ping"]
        try:
            wait_ready(
                "mariadbd",
                lambda: subprocess.run(ping, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       timeout=5).returncode == 0,
                lambda: proc.poll() is None,
                timeout,
                [errlog, outlog],
            )
        except ServiceError:
            if proc.poll() is not None and port_in_use([errlog, outlog]) and attempt < 2:
                log("mysql: port %d was taken, retrying with another" % port)
                continue
            raise
        break

    sql = ["CREATE DATABASE IF NOT EXISTS greenhook"]
    _, version = run([client, "--no-defaults", "-S", sock, "-uroot", "-N", "-B",
                      "-e", "; ".join(sql + ["SELECT VERSION()"])], timeout=30)
    connect = {"host": HOST, "port": port, "user": "root", "password": "", "database": "greenhook"}
    return {
        "pid": proc.pid,
        "host": HOST,
        "port": port,
        "unix_socket": sock,
        "user": "root",
        "password": "",
        "database": "greenhook",
        "version": version.strip().splitlines()[-1] if version.strip() else "",
        "datadir": datadir,
        "log": errlog,
        "connect": connect,
        "connect_unix": {"unix_socket": sock, "user": "root", "password": "", "database": "greenhook"},
    }


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _version_key(name):
    return tuple(int(x) for x in re.findall(r"\d+", name)) or (0,)


def postgres_bindir():
    """``/usr/lib/postgresql/<highest version>/bin`` (override: GREENHOOK_PG_BINDIR)."""
    override = os.environ.get("GREENHOOK_PG_BINDIR")
    if override:
        return override
    base = "/usr/lib/postgresql"
    cands = []
    if os.path.isdir(base):
        for name in os.listdir(base):
            b = os.path.join(base, name, "bin")
            if all(os.access(os.path.join(b, t), os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
                cands.append((_version_key(name), b))
    if cands:
        return max(cands)[1]
    initdb = which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    raise ServiceError("no PostgreSQL server binaries (initdb, pg_ctl, postgres) under %s" % base)


def make_tls_cert(datadir, logfile):
    openssl = need("openssl")
    crt = os.path.join(datadir, "server.crt")
    key = os.path.join(datadir, "server.key")
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", key, "-out", crt], logfile=logfile, timeout=60)
    os.chmod(key, 0o600)
    os.chmod(crt, 0o644)
    chown_postgres(key)
    chown_postgres(crt)
    return crt, key


def start_postgres(ctx):
    root, logs, state, timeout = ctx["root"], ctx["logs"], ctx["state"], ctx["timeout"]
    bindir = postgres_bindir()
    version = os.path.basename(os.path.dirname(bindir))

    base = os.path.join(root, "pg")
    reachable = traversable_by_postgres(root)
    if not reachable:
        # The postgres user cannot reach D (e.g. under a 0700 home or tmp dir): keep the
        # cluster in a private temporary directory instead, removed by stop.
        base = tempfile.mkdtemp(prefix="greenhook-pg-")
        os.chmod(base, 0o755)
        state.add_cleanup_dir(base)
        log("postgres: %s is not reachable by the postgres user; cluster in %s" % (root, base))
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)  # the data directory inside is 0700; clients must reach the socket dir
    chown_postgres(base)
    datadir = os.path.join(base, "data")
    sockdir = os.path.join(ctx["sockdir"], "pg")
    if not reachable or len(sockdir) + len("/.s.PGSQL.65535") > SOCKET_PATH_MAX:
        sockdir = os.path.join(base, "s")
    os.makedirs(sockdir, exist_ok=True)
    os.chmod(sockdir, 0o755)
    chown_postgres(sockdir)
    # The server writes its log itself, as postgres: it must be able to reach it.
    pglog = os.path.join(logs if reachable else base, "postgres.log")
    initlog = os.path.join(logs, "postgres-initdb.log")
    for p in (pglog, initlog):
        open(p, "a").close()
        chown_postgres(p)

    pgkw = as_postgres_kwargs(base)
    run([os.path.join(bindir, "initdb"), "-D", datadir, "--auth=trust", "--username=postgres",
         "--encoding=UTF8", "--locale=C", "--no-sync"], logfile=initlog, timeout=max(timeout, 120), **pgkw)
    crt, _ = make_tls_cert(datadir, initlog)
    with open(os.path.join(datadir, "postgresql.conf"), "a") as f:
        f.write(
            "\n# greenhook scripts/services.py\n"
            "listen_addresses = '%s'\n"
            "unix_socket_directories = '%s'\n"
            "max_connections = 300\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "ssl = on\n"
            "ssl_cert_file = 'server.crt'\n"
            "ssl_key_file = 'server.key'\n"
            "logging_collector = off\n" % (HOST, sockdir)
        )
    pg_ctl = os.path.join(bindir, "pg_ctl")
    isready = os.path.join(bindir, "pg_isready")
    psql = os.path.join(bindir, "psql")
    postmaster_pid = os.path.join(datadir, "postmaster.pid")

    for attempt in range(3):
        port = free_port()
        code, out = run([pg_ctl, "-D", datadir, "-l", pglog, "-o", "-p %d" % port, "-w", "-t", str(int(timeout)),
                         "start"], check=False, timeout=timeout + 30, **pgkw)
        pid = _read_pid(postmaster_pid)
        if pid:
            state.add_process(process_record("postgres", pid, kind="pg_ctl", datadir=datadir, bindir=bindir,
                                             base=base))
        if code != 0:
            if port_in_use([pglog]) and attempt < 2 and not (pid and is_alive(pid)):
                log("postgres: port %d was taken, retrying with another" % port)
                continue
            raise ServiceError("pg_ctl start failed (%d):\n%s\n%s" % (code, out.strip(), _log_tails([pglog])))
        break
    if not pid:
        raise ServiceError("postgres started but %s has no PID\n%s" % (postmaster_pid, _log_tails([pglog])))

    wait_ready(
        "postgres",
        lambda: subprocess.run([isready, "-h", HOST, "-p", str(port), "-t", "2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=5).returncode == 0,
        lambda: is_alive(pid),
        timeout,
        [pglog],
    )
    dsn = "host=%s port=%d user=postgres dbname=postgres" % (HOST, port)
    # Prove TLS works end to end: pg_stat_ssl must say this very connection is encrypted.
    _, out = run([psql, dsn + " sslmode=require", "-Atc",
                  "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                 timeout=30, env=pgkw["env"])
    if not out.strip().startswith("t|"):
        raise ServiceError("postgres: sslmode=require connection is not encrypted: %r" % out)
    tls_version = out.strip().split("|", 1)[1]
    _, server_version = run([psql, dsn, "-Atc", "SHOW server_version"], timeout=30, env=pgkw["env"])
    return {
        "pid": pid,
        "host": HOST,
        "port": port,
        "unix_socket_dir": sockdir,
        "user": "postgres",
        "password": "",
        "dbname": "postgres",
        "version": server_version.strip(),
        "major": version,
        "bin_dir": bindir,
        "datadir": datadir,
        "log": pglog,
        "ssl": True,
        "ssl_version": tls_version,
        "ssl_cert": crt,
        "sslmodes": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
        "connect": {"host": HOST, "port": port, "user": "postgres", "dbname": "postgres"},
        "dsn": dsn,
        "dsn_ssl": dsn + " sslmode=require",
        "dsn_nossl": dsn + " sslmode=disable",
        "dsn_unix": "host=%s port=%d user=postgres dbname=postgres" % (sockdir, port),
    }


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# memcached + delaying proxy


def start_memcached(ctx):
    logs, state, timeout = ctx["logs"], ctx["state"], ctx["timeout"]
    memcached = need("memcached")
    mlog = os.path.join(logs, "memcached.log")
    plog = os.path.join(logs, "memcached-proxy.log")
    delay = ctx["memcached_delay"]

    for attempt in range(3):
        port = free_port()
        cmd = [memcached, "-l", HOST, "-p", str(port), "-U", "0", "-m", "64", "-c", "4096", "-t", "2"]
        if IS_ROOT:
            cmd[1:1] = ["-u", "root"]
        proc = spawn(cmd, mlog)
        state.add_process(process_record("memcached", proc.pid))
        try:
            wait_ready("memcached", lambda: tcp_probe(port, b"version\r\n", b"\r\n"),
                       lambda: proc.poll() is None, timeout, [mlog])
        except ServiceError:
            if proc.poll() is not None and port_in_use([mlog]) and attempt < 2:
                continue
            raise
        break
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"version\r\n")
        version = s.recv(256).decode("ascii", "replace").strip().replace("VERSION ", "")

    pproc, pport = start_python_server(
        ctx, "memcached-proxy", ["_proxy", "--target-port", str(port), "--delay", repr(delay)], plog,
        lambda p: tcp_probe(p, b"version\r\n", b"\r\n", timeout=delay + 5),
    )
    return {
        "pid": proc.pid,
        "host": HOST,
        "port": port,
        "servers": ["%s:%d" % (HOST, port)],
        "version": version,
        "log": mlog,
        "proxy_pid": pproc.pid,
        "proxy_port": pport,
        "proxy_delay": delay,
        "proxy_servers": ["%s:%d" % (HOST, pport)],
        "proxy_log": plog,
    }


def start_python_server(ctx, name, args, logfile, probe):
    """Run this very script's hidden sub-command ``args`` as a detached server."""
    state, timeout = ctx["state"], ctx["timeout"]
    for attempt in range(3):
        port = free_port()
        cmd = [sys.executable, "-u", os.path.abspath(__file__)] + args + ["--port", str(port)]
        proc = spawn(cmd, logfile)
        state.add_process(process_record(name, proc.pid))
        try:
            wait_ready(name, lambda: probe(port), lambda: proc.poll() is None, timeout, [logfile])
        except ServiceError:
            if proc.poll() is not None and port_in_use([logfile]) and attempt < 2:
                continue
            raise
        return proc, port


def start_http(ctx):
    hlog = os.path.join(ctx["logs"], "http.log")
    proc, port = start_python_server(
        ctx, "http", ["_http"], hlog,
        lambda p: tcp_probe(p, b"GET /health HTTP/1.0\r\n\r\n", b"\r\n\r\nok"),
    )
    base = "http://%s:%d" % (HOST, port)
    return {
        "pid": proc.pid,
        "host": HOST,
        "port": port,
        "base_url": base,
        "delay_url": base + "/delay/{ms}",
        "log": hlog,
    }


# --------------------------------------------------------------------------------------------
# slapd (OpenLDAP) + delaying proxy: python-ldap's libldap under auto mode (issue 10).
# Its own throwaway config and database under D/ldap; the Debian package's default instance
# (/etc/ldap/slapd.d) is never used (install_system_deps.sh keeps it from starting).

LDAP_SUFFIX = "dc=greenhook,dc=test"
LDAP_PEOPLE = 20   # uid=user0..user19 under ou=people


def _slapd_modulepath():
    for d in ("/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap"):
        if os.path.exists(os.path.join(d, "back_mdb.so")):
            return d
    return None


def start_slapd(ctx):
    logs, state, timeout = ctx["logs"], ctx["state"], ctx["timeout"]
    slapd, slapadd = need("slapd"), need("slapadd")
    home = os.path.join(ctx["root"], "ldap")
    db = os.path.join(home, "db")
    os.makedirs(db)
    llog = os.path.join(logs, "slapd.log")
    plog = os.path.join(logs, "slapd-proxy.log")
    modpath = _slapd_modulepath()
    conf = os.path.join(home, "slapd.conf")
    with open(conf, "w") as f:
        f.write("include /etc/ldap/schema/core.schema\n"
                "include /etc/ldap/schema/cosine.schema\n"
                "include /etc/ldap/schema/inetorgperson.schema\n"
                "pidfile %s\n" % os.path.join(home, "slapd.pid"))
        if modpath:
            f.write("modulepath %s\nmoduleload back_mdb\n" % modpath)
        f.write("database mdb\nmaxsize 67108864\nsuffix \"%s\"\nrootdn \"cn=admin,%s\"\n"
                "rootpw secret\ndirectory %s\naccess to * by * read\n"
                % (LDAP_SUFFIX, LDAP_SUFFIX, db))
    ldif = os.path.join(home, "data.ldif")
    with open(ldif, "w") as f:
        f.write("dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: greenhook\n"
                "dc: greenhook\n\ndn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n"
                % (LDAP_SUFFIX, LDAP_SUFFIX))
        for i in range(LDAP_PEOPLE):
            f.write("dn: uid=user%d,ou=people,%s\nobjectClass: inetOrgPerson\nuid: user%d\n"
                    "cn: User %d\nsn: %d\n\n" % (i, LDAP_SUFFIX, i, i, i))
    run([slapadd, "-f", conf, "-l", ldif], logfile=llog)
    for attempt in range(3):
        port = free_port()
        # -d 0: stay in the foreground (so the PID is ours to stop), log nothing extra
        proc = spawn([slapd, "-f", conf, "-h", "ldap://%s:%d/" % (HOST, port), "-d", "0"], llog)
        state.add_process(process_record("slapd", proc.pid))
        try:
            wait_ready("slapd", lambda: tcp_probe(port), lambda: proc.poll() is None,
                       timeout, [llog])
        except ServiceError:
            if proc.poll() is not None and attempt < 2:
                continue
            raise
        break
    delay = 0.3
    pproc, pport = start_python_server(
        ctx, "slapd-proxy", ["_proxy", "--target-port", str(port), "--delay", repr(delay)], plog,
        lambda p: tcp_probe(p))
    return {
        "pid": proc.pid,
        "host": HOST,
        "port": port,
        "uri": "ldap://%s:%d" % (HOST, port),
        "base": LDAP_SUFFIX,
        "people": LDAP_PEOPLE,
        "log": llog,
        "proxy_pid": pproc.pid,
        "proxy_port": pport,
        "proxy_delay": delay,
        "proxy_uri": "ldap://%s:%d" % (HOST, pport),
    }


# --------------------------------------------------------------------------------------------
# redis (the Celery broker of the deployment tests)


def start_redis(ctx):
    logs, state, timeout = ctx["logs"], ctx["state"], ctx["timeout"]
    redis = need("redis-server")
    rlog = os.path.join(logs, "redis.log")
    for attempt in range(3):
        port = free_port()
        # No persistence, no config file: a throwaway broker on loopback.
        cmd = [redis, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--dir", logs, "--logfile", "", "--maxclients", "1000"]
        proc = spawn(cmd, rlog)
        state.add_process(process_record("redis", proc.pid))
        try:
            wait_ready("redis", lambda: tcp_probe(port, b"PING\r\n", b"+PONG"),
                       lambda: proc.poll() is None, timeout, [rlog])
        except ServiceError:
            if proc.poll() is not None and port_in_use([rlog]) and attempt < 2:
                continue
            raise
        break
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"INFO server\r\n")
        info = s.recv(4096).decode("ascii", "replace")
    version = re.search(r"redis_version:(\S+)", info)
    return {
        "pid": proc.pid,
        "host": HOST,
        "port": port,
        "url": "redis://%s:%d/0" % (HOST, port),
        "version": version.group(1) if version else None,
        "log": rlog,
    }


STARTERS = {
    "mysql": start_mysql,
    "postgres": start_postgres,
    "memcached": start_memcached,
    "http": start_http,
    "slapd": start_slapd,
    "redis": start_redis,
}


# --------------------------------------------------------------------------------------------
# start / stop / status


def _short_sockdir(root, state):
    sockdir = os.path.join(root, "run")
    if len(os.path.join(sockdir, "pg", ".s.PGSQL.65535")) <= SOCKET_PATH_MAX:
        return sockdir
    short = tempfile.mkdtemp(prefix="gh-sock-")
    os.chmod(short, 0o755)
    state.add_cleanup_dir(short)
    return short


def cmd_start(args):
    root = os.path.abspath(args.dir)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = sorted(set(services) - set(ALL_SERVICES))
    if unknown:
        log("unknown service(s): %s (known: %s)" % (", ".join(unknown), ", ".join(ALL_SERVICES)))
        return 2
    os.makedirs(root, exist_ok=True)
    # Leftovers from a previous run: stop them, then remove what we own.
    if read_state(root) is not None or any(os.path.exists(os.path.join(root, d)) for d in OWNED):
        log("cleaning up a previous run in %s" % root)
        stop_all(root, timeout=args.timeout, quiet=True)
        clean_dir(root)

    state = State(root)
    logs = os.path.join(root, "logs")
    os.makedirs(logs)
    os.makedirs(os.path.join(root, "run"))
    state._write()
    ctx = {
        "root": root,
        "logs": logs,
        "state": state,
        "timeout": args.timeout,
        "memcached_delay": args.memcached_delay,
        "sockdir": _short_sockdir(root, state),
    }
    t_all = time.monotonic()
    errors = {}

    def one(name):
        t0 = time.monotonic()
        info = STARTERS[name](ctx)
        state.set_service(name, info, time.monotonic() - t0)
        log("%-9s up in %5.1f s  (port %s)" % (name, time.monotonic() - t0, info.get("port")))

    # The services are independent: start them side by side (initdb and mariadb-install-db
    # dominate and overlap well even on two cores).
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = {pool.submit(one, name): name for name in services}
        for fut in concurrent.futures.as_completed(futures):
            name = futures[fut]
            try:
                fut.result()
            except ServiceError as exc:
                errors[name] = str(exc)
            except Exception as exc:  # noqa: BLE001 - report anything, then clean up
                errors[name] = "%s: %s" % (type(exc).__name__, exc)

    if errors:
        for name, msg in errors.items():
            log("FAILED to start %s: %s" % (name, msg))
        state.set(state="failed")
        stop_all(root, timeout=30, quiet=True)
        return 1
    state.data["timings"]["total"] = round(time.monotonic() - t_all, 2)
    state.set(state="running")
    log("all up in %.1f s; export GREENHOOK_SERVICES=%s" % (time.monotonic() - t_all, state.path))
    return 0


def _pg_ctl_stop(rec, timeout):
    pg_ctl = os.path.join(rec.get("bindir") or postgres_bindir(), "pg_ctl")
    datadir = rec["datadir"]
    if not os.path.exists(os.path.join(datadir, "postmaster.pid")):
        return None
    home = rec.get("base") or os.path.dirname(datadir)
    try:
        code, out = run([pg_ctl, "-D", datadir, "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
                        check=False, timeout=timeout + 15, **as_postgres_kwargs(home))
    except ServiceError as exc:
        return "pg_ctl stop: %s" % exc
    return None if code == 0 else "pg_ctl stop exited %d: %s" % (code, out.strip())


def _fallback_records(root):
    """Processes to stop when services.json is missing or unreadable: PID files in D."""
    recs = []
    for name, path in (("mysql", os.path.join(root, "mysql", "mariadbd.pid")),):
        pid = _read_pid(path)
        if pid:
            recs.append({"name": name, "pid": pid, "starttime": None, "stop": "signal", "verify_cmdline": root})
    pm = os.path.join(root, "pg", "data", "postmaster.pid")
    pid = _read_pid(pm)
    if pid:
        recs.append({"name": "postgres", "pid": pid, "starttime": None, "stop": "pg_ctl",
                     "datadir": os.path.join(root, "pg", "data"), "verify_cmdline": root})
    return recs


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def stop_all(root, timeout=30.0, quiet=False):
    data = read_state(root)
    recs = list(data.get("processes", [])) if data else []
    if not recs:
        recs = _fallback_records(root)
    problems = 0
    # Stop in reverse start order: proxies before their servers.
    for rec in reversed(recs):
        pid, st = rec.get("pid"), rec.get("starttime")
        name = rec.get("name", "?")
        if rec.get("verify_cmdline") and rec["verify_cmdline"] not in _cmdline(pid or 0):
            continue  # a PID file's PID now belongs to someone else
        if not is_alive(pid, st):
            if not quiet:
                log("%-16s pid %-7s not running" % (name, pid))
            continue
        how = None
        if rec.get("stop") == "pg_ctl":
            err = _pg_ctl_stop(rec, timeout)
            if err:
                log("postgres: %s; falling back to signals" % err)
            elif wait_gone(pid, st, 10.0):
                how = "stopped (pg_ctl stop -m fast)"
        if how is None:
            how = kill_process(name, pid, st, timeout)
        if is_alive(pid, st):
            problems += 1
            how = "STILL RUNNING"
        if not quiet or problems:
            log("%-16s pid %-7s %s" % (name, pid, how))
    if data:
        for d in data.get("cleanup_dirs", []):
            shutil.rmtree(d, ignore_errors=True)
        data["state"] = "stopped" if not problems else "stop-failed"
        data["stopped_at"] = now_iso()
        st = State(root)
        st.data = data
        try:
            st._write()
        except OSError:
            pass
    return problems


def clean_dir(root):
    for d in OWNED:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    for f in (JSON_NAME, JSON_NAME + ".tmp"):
        try:
            os.unlink(os.path.join(root, f))
        except FileNotFoundError:
            pass


def cmd_stop(args):
    root = os.path.abspath(args.dir)
    if not os.path.isdir(root):
        log("%s does not exist: nothing to stop" % root)
        return 0
    problems = stop_all(root, timeout=args.timeout)
    if args.clean and not problems:
        clean_dir(root)
    return 1 if problems else 0


def cmd_status(args):
    root = os.path.abspath(args.dir)
    data = read_state(root)
    if data is None:
        log("no %s in %s" % (JSON_NAME, root))
        return 3
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
    all_alive = bool(data.get("processes"))
    for rec in data.get("processes", []):
        alive = is_alive(rec.get("pid"), rec.get("starttime"))
        all_alive = all_alive and alive
        log("%-16s pid %-7s %s" % (rec.get("name"), rec.get("pid"), "alive" if alive else "NOT running"))
    return 0 if all_alive and data.get("state") == "running" else 3


# --------------------------------------------------------------------------------------------
# the Python servers (hidden sub-commands, run by start in their own processes)


async def _proxy_main(port, target_port, delay):
    """Forward 127.0.0.1:port <-> 127.0.0.1:target_port; client->server data is held ``delay`` s.

    Each chunk is forwarded ``delay`` seconds after it arrived (a latency, not a throttle:
    pipelined chunks are not delayed one after the other). Server->client data flows at once.
    """
    loop = asyncio.get_running_loop()

    async def handle(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(HOST, target_port)
        except OSError:
            cwriter.close()
            return
        queue = asyncio.Queue()

        async def read_client():
            try:
                while True:
                    data = await creader.read(65536)
                    queue.put_nowait((loop.time() + delay, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                queue.put_nowait((loop.time(), b""))

        async def write_server():
            try:
                while True:
                    due, data = await queue.get()
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not data:
                        break
                    swriter.write(data)
                    await swriter.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                swriter.close()

        async def server_to_client():
            try:
                while True:
                    data = await sreader.read(65536)
                    if not data:
                        break
                    cwriter.write(data)
                    await cwriter.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                cwriter.close()

        tasks = [asyncio.ensure_future(c) for c in (read_client(), write_server(), server_to_client())]
        await asyncio.gather(*tasks, return_exceptions=True)

    server = await asyncio.start_server(handle, HOST, port, backlog=4096, reuse_address=True)
    print("proxy 127.0.0.1:%d -> 127.0.0.1:%d delay %.3f s" % (port, target_port, delay), flush=True)
    async with server:
        await server.serve_forever()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def _http_main(port):
    """A small HTTP/1.1 server (keep-alive, Content-Length bodies) for delay tests.

    GET /delay/<ms>[?size=N]  answer after <ms> ms (body: "delayed <ms>\\n", or N bytes)
    GET /bytes/<n>[?delay=ms] answer with n bytes
    POST|PUT /echo             answer with the request body
    GET /health                "ok"
    GET /stats                 JSON: requests served, connections open / max open / total
    """
    stats = {"requests": 0, "open": 0, "max_open": 0, "connections": 0}

    def qs(target):
        path, _, query = target.partition("?")
        params = {}
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k:
                params[k] = v
        return path, params

    async def route(method, target, body):
        path, params = qs(target)
        parts = [p for p in path.split("/") if p]
        try:
            if parts == ["health"]:
                return 200, b"ok\n", "text/plain"
            if parts == ["stats"]:
                return 200, json.dumps(stats).encode() + b"\n", "application/json"
            if len(parts) == 2 and parts[0] == "delay":
                ms = float(parts[1])
                await asyncio.sleep(ms / 1000.0)
                size = params.get("size")
                if size is not None:
                    return 200, b"x" * int(size), "application/octet-stream"
                return 200, ("delayed %s\n" % parts[1]).encode(), "text/plain"
            if len(parts) == 2 and parts[0] == "bytes":
                if "delay" in params:
                    await asyncio.sleep(float(params["delay"]) / 1000.0)
                return 200, b"x" * int(parts[1]), "application/octet-stream"
            if parts == ["echo"]:
                if method not in ("POST", "PUT"):
                    return 405, b"POST or PUT\n", "text/plain"
                return 200, body, "application/octet-stream"
        except ValueError:
            return 400, b"bad number\n", "text/plain"
        return 404, b"not found\n", "text/plain"

    async def handle(reader, writer):
        stats["open"] += 1
        stats["connections"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = b""
                length = int(headers.get("content-length", "0") or "0")
                if length:
                    body = await reader.readexactly(length)
                conn = headers.get("connection", "").lower()
                keep = (version == "HTTP/1.1" and conn != "close") or (version == "HTTP/1.0" and conn == "keep-alive")
                status, payload, ctype = await route(method, target, body)
                stats["requests"] += 1
                out = [
                    "HTTP/1.1 %d %s" % (status, _REASONS.get(status, "")),
                    "Content-Type: %s" % ctype,
                    "Content-Length: %d" % len(payload),
                    "Connection: %s" % ("keep-alive" if keep else "close"),
                    "", "",
                ]
                writer.write("\r\n".join(out).encode("latin-1"))
                if method != "HEAD":
                    writer.write(payload)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            stats["open"] -= 1
            writer.close()

    server = await asyncio.start_server(handle, HOST, port, backlog=4096, reuse_address=True)
    print("http on 127.0.0.1:%d" % port, flush=True)
    async with server:
        await server.serve_forever()


def _serve(coro):
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        asyncio.run(coro)
    except (KeyboardInterrupt, SystemExit):
        pass


# --------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    default_dir = os.environ.get("GREENHOOK_SERVICES_DIR")

    def add_dir(sp):
        sp.add_argument("--dir", default=default_dir, required=default_dir is None,
                        help="state directory (default: $GREENHOOK_SERVICES_DIR)")

    sp = sub.add_parser("start", help="initialise and start the services")
    add_dir(sp)
    sp.add_argument("--services", default=",".join(ALL_SERVICES),
                    help="comma-separated subset of %s" % ",".join(ALL_SERVICES))
    sp.add_argument("--memcached-delay", type=float, default=0.3,
                    help="seconds the memcached proxy holds each client chunk (default 0.3)")
    sp.add_argument("--timeout", type=float, default=60.0, help="seconds each service may take to come up")
    sp = sub.add_parser("stop", help="stop what start started")
    add_dir(sp)
    sp.add_argument("--clean", action="store_true", help="also remove the data directories")
    sp.add_argument("--timeout", type=float, default=30.0, help="seconds to wait after SIGTERM")
    sp = sub.add_parser("status", help="print services.json; exit 0 when all alive")
    add_dir(sp)
    sp = sub.add_parser("_proxy")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--target-port", type=int, required=True)
    sp.add_argument("--delay", type=float, required=True)
    sp = sub.add_parser("_http")
    sp.add_argument("--port", type=int, required=True)

    args = p.parse_args(argv)
    if args.cmd == "start":
        return cmd_start(args)
    if args.cmd == "stop":
        return cmd_stop(args)
    if args.cmd == "status":
        return cmd_status(args)
    if args.cmd == "_proxy":
        _serve(_proxy_main(args.port, args.target_port, args.delay))
        return 0
    if args.cmd == "_http":
        _serve(_http_main(args.port))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
