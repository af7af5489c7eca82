"""Shared pieces of the benchmarks: child processes, interleaving, statistics, the report.

Every measurement runs in a child process of its own (``python bench/<scenario>.py child
'<json params>'``): GOT patches are process-wide, greenify and greenhook must never meet in one
process, and peak RSS is per process.  The child prints one line ``@@BENCH@@ <json>``.

The cases of a scenario run round-robin, ``runs`` times: round r starts at case r (A B C,
B C A, C A B, ...), so a burst of load from another process on this shared machine lands on
every case alike instead of on whichever ran all its repeats at that moment.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULT_MARK = "@@BENCH@@ "


# --- child side ------------------------------------------------------------------------------

def emit(result):
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def child_main(run):
    """``python bench/x.py child '<json>'``: call ``run(params)`` and print its result."""
    if len(sys.argv) >= 3 and sys.argv[1] == "child":
        params = json.loads(sys.argv[2])
        emit(run(params))
        return True
    return False


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (1000 clients need > 1024 fds)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib():
    """Current resident set size (KiB) from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib():
    """Peak RSS (KiB) of this process: VmHWM from /proc/self/status.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the high-water mark across
    fork/vfork + execve (signal->maxrss takes the old mm's), so a child started by a 27 MiB
    parent reports at least 27 MiB whatever it does itself.  VmHWM belongs to the process's
    own address space, which execve replaced."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def proc_cpu_seconds(pid):
    """user + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open("/proc/%d/stat" % int(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


# --- parent side -----------------------------------------------------------------------------

class Case:
    """One thing to measure: ``script`` (a file in bench/) run with ``params``."""

    def __init__(self, key, script, params, timeout=120):
        self.key = key
        self.script = script
        self.params = params
        self.timeout = timeout

    def __repr__(self):
        return "<Case %s>" % self.key


def run_child(case):
    cmd = [sys.executable, os.path.join(HERE, case.script), "child", json.dumps(case.params)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=case.timeout)
    except subprocess.TimeoutExpired as exc:
        return {"error": "timed out after %ss" % case.timeout,
                "stderr": _tail(exc.stderr), "elapsed": time.monotonic() - t0}
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
    if result is None:
        result = {"error": "exit status %d, no result" % proc.returncode}
    if proc.returncode != 0 and "error" not in result:
        result["error"] = "exit status %d" % proc.returncode
    if "error" in result:
        result["stderr"] = _tail(proc.stderr)
    result["elapsed"] = round(time.monotonic() - t0, 3)
    return result


def _tail(text, n=1500):
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-n:]


def interleave(name, cases, runs, log=print):
    """Run every case ``runs`` times, round-robin with a rotating start; {key: [results]}."""
    out = {c.key: [] for c in cases}
    n = len(cases)
    t0 = time.monotonic()
    for r in range(runs):
        order = cases[r % n:] + cases[:r % n]
        for c in order:
            res = run_child(c)
            res["run"] = r
            out[c.key].append(res)
            if "error" in res:
                log("  %s run %d/%d %-40s ERROR %s\n%s" % (name, r + 1, runs, c.key, res["error"],
                                                          res.get("stderr", "")))
        log("  %s: round %d/%d done (%.0f s)" % (name, r + 1, runs, time.monotonic() - t0))
    return out


def stats(values):
    """{"min", "median", "max", "n", "values"} of the numbers (None and errors left out)."""
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals:
        return {"min": None, "median": None, "max": None, "n": 0, "values": []}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals),
            "n": len(vals), "values": vals}


def field_stats(results, field):
    """stats() of ``result[field]`` over the runs of one case (runs with an error dropped)."""
    return stats([r.get(field) for r in results if "error" not in r])


def errors(results):
    return [r["error"] for r in results if "error" in r]


# --- formatting ------------------------------------------------------------------------------

def fmt(v, digits=3):
    if v is None:
        return "—"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v if digits > 3 else "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def mmm(s, digits=3):
    """'median (min–max)' of a stats dict."""
    if not s or s.get("median") is None:
        return "—"
    return "%s (%s–%s)" % (fmt(s["median"], digits), fmt(s["min"], digits), fmt(s["max"], digits))


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def syscalls_by_name(per):
    """``{name: [calls, failed]}`` (per round trip / request) as "sendto 2.00, recvfrom 4.00
    (2.00 failed), ...", the most frequent first."""
    by = sorted(per.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return ", ".join("%s %s%s" % (k, fmt(c), " (%s failed)" % fmt(e) if e else "")
                     for k, (c, e) in by)


def fmt_ratio(r):
    return "—" if r is None else "%.2fx" % r


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


TIE = "tie"


def not_slower(a, b, tolerance=0.95):
    """Is throughput stats ``a`` not below ``b``?  True / False, or TIE when the median ratio
    is within ``tolerance`` and the min–max ranges overlap (a difference the noise can make)."""
    if not a or not b or a.get("median") is None or b.get("median") is None:
        return None
    if a["median"] >= b["median"]:
        return True
    if a["median"] >= tolerance * b["median"] and a["max"] >= b["min"]:
        return TIE
    return False


def verdict(ok):
    if ok is None:
        return "n/a"
    if ok == TIE:
        return "**tie** (median within 5%, ranges overlap)"
    return "**met**" if ok else "**not met**"


# --- the machine -----------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def cpu_times():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def versions():
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("greenhook", "greenlet", "gevent", "greenify", "mysqlclient", "PyMySQL",
                 "psycopg2", "psycogreen", "pylibmc", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["greenhook_git"] = rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def machine():
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "platform": platform.platform(),
    }


# --- C helpers built with the system cc --------------------------------------------------------

BUILD_DIR = os.environ.get("GREENHOOK_BENCH_BUILD", os.path.join(ROOT, ".run", "bench-build"))
C_TOOLS = {
    # name: (source in bench/, output file, extra cc flags)
    "delayserver": ("delayserver.c", "delayserver", []),
    "ghbench": ("ghbench.c", "libghbench.so", ["-shared", "-fPIC"]),
}


def build_tool(name):
    """Path of C helper ``name`` (see C_TOOLS), compiled with ``cc -O2`` into BUILD_DIR when it
    is missing or older than its source.  Binaries are never committed: this builds them."""
    src, out, flags = C_TOOLS[name]
    src = os.path.join(HERE, src)
    out = os.path.join(BUILD_DIR, out)
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    os.makedirs(BUILD_DIR, exist_ok=True)
    tmp = "%s.%d.tmp" % (out, os.getpid())
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", tmp, src] + flags, check=True)
    os.replace(tmp, out)
    return out


class CDelayServer:
    """bench/delayserver.c as a subprocess: ``with CDelayServer() as srv: srv.tcp_port``."""

    def __init__(self, stderr=None):
        self.stderr = stderr
        self.proc = None

    def __enter__(self):
        import tempfile

        exe = build_tool("delayserver")
        self._dir = tempfile.mkdtemp(prefix="ghbench-delay-")
        ready = os.path.join(self._dir, "ready.json")
        self.proc = subprocess.Popen([exe, ready], stdin=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 10
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the C delay server did not start")
            time.sleep(0.01)
        with open(ready) as f:
            info = json.load(f)
        self.tcp_port, self.pid = info["tcp"], info["pid"]
        return self

    def __exit__(self, *exc):
        import shutil

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


class DelayServerStats:
    """One connection to the C delay server for its OP_STATS requests: ``read()`` returns
    (requests answered, CPU µs of the server so far).  Made before the burst and kept open,
    so that its own connect/accept/close is not charged to the requests measured."""

    def __init__(self, port):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def read(self):
        import struct

        self.sock.sendall(struct.pack("!HHII", 100, 0, 0, 0))
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack("!I", buf[:4])[0]:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("delay server closed the stats connection")
            buf += chunk
        answered, user, system = (int(x) for x in buf[4:].split())
        return answered, user + system

    def close(self):
        self.sock.close()
