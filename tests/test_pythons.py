"""The package builds, greens and delivers every kind of cancellation on each CPython 3.9-3.13.

Cancellation delivery uses a one-shot C-level trace function, whose behaviour differs
between CPython versions, so every version is checked, not a sample: for each of 3.9, 3.10,
3.11, 3.12 and 3.13, ``python3.X`` on PATH (or pyenv's ``versions/3.X.*``; under ``CI=true`` a
missing one is a failure) gets a venv with greenhook built from this checkout and runs
``scenarios/cancel_paths.py`` on both hubs: 20 overlapped calls, the driver's error replaced
by the Timeout, the "C call returns normally" path (the Timeout is raised before the rest of
the line runs), kills with and without code after the call, and a silent Timeout; and that
interpreter's pytest runs tests/test_semantics.py on the built-in hub (68 tests: the libc
contract of every hook).

The venvs are kept in ``.run/pythons/`` and rebuilt only when the checkout's sources changed
(the build stamp, ``scripts/source_digest.py``).  Measured on the 2-core machine: a first
build 29-41 s per interpreter (with the build tools, gevent and pytest), a cached
cancellation run ~1.5 s per test, the semantics subset 21-25 s per interpreter (15 tests:
~130 s cached; cold, as in CI's fresh clone: 325 s).  ``$GREENHOOK_TEST_PYTHONS`` (colon-separated
interpreter paths) replaces the search.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from greenhook_test_support import ROOT, SCENARIO_DIR, build_mismatch, skip_or_fail

VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
CACHE = os.path.join(ROOT, ".run", "pythons")
N, DELAY = 20, 0.2
#: 20 overlapped calls of 0.2 s: a run with two of them serialized takes >= 0.6 s
CONCURRENT_BOUND = 2 * DELAY + 0.2
#: a Timeout(0.2) delivered at once, give or take the scheduler
CANCEL_BOUND = 0.2 + 0.15

_VERSION = "import platform, sys; print(platform.python_implementation(), '%d.%d' % sys.version_info[:2])"


def _reports(exe):
    """``(implementation, "3.X")`` of ``exe``, or None if it does not run (e.g. a pyenv shim
    for a version that is installed but not selected)."""
    try:
        out = subprocess.run([exe, "-c", _VERSION], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    parts = out.stdout.split()
    return tuple(parts) if out.returncode == 0 and len(parts) == 2 else None


def find_interpreter(version):
    """A CPython ``version`` interpreter: ``python<version>`` on PATH, else the newest pyenv
    install of it; None if there is none."""
    env = os.environ.get("GREENHOOK_TEST_PYTHONS")
    if env:
        candidates = [p for p in env.split(":") if p]
    else:
        candidates = [shutil.which("python" + version)]
        pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
        installs = glob.glob(os.path.join(pyenv_root, "versions", version + ".*", "bin",
                                          "python" + version))
        pattern = re.compile(r"/%s\.(\d+)/bin/" % re.escape(version))
        installs = [p for p in installs if pattern.search(p)]
        candidates += sorted(installs, key=lambda p: int(pattern.search(p).group(1)), reverse=True)
    for exe in candidates:
        if exe and _reports(exe) == ("CPython", version):
            return exe
    return None


def _run(cmd, timeout, what):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(ROOT), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, "%s failed (exit %s)\n%s\n%s" % (
        what, proc.returncode, proc.stdout[-3000:], proc.stderr[-5000:])
    return proc


#: build times, for the summary line of each test (``-s`` shows them)
BUILD_SECONDS = {}


@pytest.fixture(scope="module", params=VERSIONS)
def venv_python(request):
    """The python of a cached venv (``.run/pythons/cpython3.X``) whose greenhook is built from
    this checkout as it is now."""
    version = request.param
    exe = find_interpreter(version)
    if exe is None:
        skip_or_fail("no CPython %s: neither python%s on PATH nor a pyenv install of it"
                     % (version, version))
    env_dir = os.path.join(CACHE, "cpython" + version)
    py = os.path.join(env_dir, "bin", "python")
    if _reports(py) != ("CPython", version):
        _run([exe, "-m", "venv", "--clear", env_dir], 300, "venv for %s" % exe)
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if build_mismatch(py):
        t0 = time.monotonic()
        # build tools and runtime dependencies (wheels: the newest gevent for 3.9 is an sdist
        # that takes minutes to build); then greenhook without build isolation
        _run(pip + ["--prefer-binary", "Cython>=3.0", "setuptools>=77", "wheel", "greenlet>=2.0",
                    "gevent>=22.10", "pytest>=7"],
             900, "installing the build tools with %s" % py)
        _run(pip + ["--no-deps", "--no-build-isolation", "--force-reinstall", ROOT], 900,
             "building greenhook with %s" % py)
        BUILD_SECONDS[version] = time.monotonic() - t0
    problem = build_mismatch(py)
    assert problem is None, problem
    return py


@pytest.mark.parametrize("hub", ["builtin", "gevent"])
def test_cancellation_paths(venv_python, hub):
    proc = _run([venv_python, os.path.join(SCENARIO_DIR, "cancel_paths.py"), hub], 120,
                "scenarios/cancel_paths.py %s" % hub)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("GHRESULT ")]
    assert len(lines) == 1, proc.stdout
    r = json.loads(lines[0][len("GHRESULT "):])
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    version = "%d.%d" % tuple(r["version"][:2])
    print("\n[pythons] CPython %s %s: 20 x 0.2 s in %.3f s; build %s"
          % (".".join(map(str, r["version"])), hub, r["concurrent"]["wall"],
             "%.0f s" % BUILD_SECONDS[version] if version in BUILD_SECONDS else "cached"))
    ETIMEDOUT = r["ETIMEDOUT"]
    timeout_name = "Timeout"

    c = r["concurrent"]
    assert c["ok"], r
    assert DELAY * 0.95 <= c["wall"] <= CONCURRENT_BOUND, c      # serialized: 4 s
    assert c["ticks"] >= 10, c

    d = r["driver_error"]
    assert d.get("caught") == timeout_name, d
    assert 0.18 <= d["elapsed"] <= CANCEL_BOUND, d
    assert d["context"] == ["TimeoutError", ETIMEDOUT], "the driver's OSError is not the __context__: %r" % d

    n = r["normal_return"]
    assert n.get("caught") == timeout_name, n
    assert n["seen"] == [], "the line went on after the cancelled C call returned: %r" % n
    assert n["rec"] == {"result": -1, "errno": ETIMEDOUT}, n
    assert 0.18 <= n["elapsed"] <= CANCEL_BOUND, n

    for position in ("kill_statement", "kill_return"):
        k = r[position]
        assert k["dead"] and k["exit"], (position, k)
        assert k["rec"] == {"result": -1, "errno": ETIMEDOUT}, (position, k)
        assert k["took"] < 0.15, (position, k)
    assert r["kill_statement"]["trail"] == ["raised GreenletExit"], r["kill_statement"]

    s = r["silent"]
    assert s.get("went_on") and 0.18 <= s["elapsed"] <= CANCEL_BOUND, s
    assert s["rec"] == {"result": -1, "errno": ETIMEDOUT}, s

    assert r["after"][0] == 5 and r["after"][2] == "after", r
    assert r["recv"]["cancelled"] == 5, r["recv"]


def test_core_semantics(venv_python):
    """tests/test_semantics.py (the libc contract of every hook: fast path, green waits,
    timeouts, EINTR, errors, O_NONBLOCK, MSG_DONTWAIT, threads) on the built-in hub, run by
    this interpreter's pytest against its own build (the gevent hub's semantics are the
    session's own run of the file; cancellation on both hubs is test_cancellation_paths)."""
    version = _reports(venv_python)[1]
    t0 = time.monotonic()
    proc = _run([venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "builtin",
                 os.path.join(ROOT, "tests", "test_semantics.py")], 600,
                "tests/test_semantics.py -k builtin with CPython %s" % version)
    summary = proc.stdout.strip().splitlines()[-1]
    print("\n[pythons] CPython %s test_semantics -k builtin: %s (%.0f s)"
          % (version, summary, time.monotonic() - t0))
    m = re.search(r"(\d+) passed", summary)
    assert m and int(m.group(1)) >= 60, summary
    assert not re.search(r"failed|error|skipped", summary), summary
