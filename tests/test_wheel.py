"""`greenhook verify` from an installed wheel in a fresh venv: no checkout, no compiler."""

import os
import subprocess
import sys
import venv

import pytest

from greenhook_test_support import build_mismatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), ROOT],
                   check=True, timeout=600)
    wheels = list(dist.glob("greenhook-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheels[0])], check=True, timeout=600)
    return py, tmp


def _run(py, cwd, *args, timeout=300):
    # CC pointing at /bin/false: anything that tried to compile would fail loudly.
    env = dict(os.environ, CC="/bin/false", PYTHONPATH="")
    return subprocess.run([py, "-m", "greenhook", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_holds_the_samples_and_no_sources(wheel_venv):
    py, tmp = wheel_venv
    out = subprocess.run([py, "-c", "import greenhook, greenhook.samples as s, os; "
                          "d = os.path.dirname(greenhook.__file__); "
                          "print(s.library_path('now')); "
                          "print(sorted(f for r, _, fs in os.walk(d) for f in fs "
                          "if f.endswith(('.c', '.pyx', '.pxd'))))"],
                         cwd=tmp, capture_output=True, text=True, check=True)
    lib, sources = out.stdout.splitlines()
    assert lib.startswith(str(tmp)) and lib.endswith("libghsample_now.so")
    assert sources == "[]"
    # the wheel carries the build stamp of the checkout it was built from
    assert build_mismatch(py) is None, build_mismatch(py)


def test_verify_passes_from_the_wheel(wheel_venv):
    py, tmp = wheel_venv
    res = _run(py, tmp, "verify", "--hub", "builtin", "--variant", "now", "--variant", "noplt",
               "--style", "send_recv", "--style", "poll_nonblock", "--style", "usleep")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [l for l in res.stdout.splitlines() if l.startswith("builtin")]
    assert len(rows) == 2 * 3 * 2 and all("PASS" in r for r in rows), res.stdout
    assert "12 passed, 0 failed" in res.stdout


def test_verify_fails_readably_when_left_unpatched(wheel_venv):
    py, tmp = wheel_venv
    res = _run(py, tmp, "verify", "--hub", "builtin", "--variant", "lazy", "--style", "send_recv",
               "--n", "5", "--leave-unpatched")
    assert res.returncode == 1, res.stdout + res.stderr
    rows = [l for l in res.stdout.splitlines() if l.startswith("builtin")]
    assert len(rows) == 2 and all("FAIL" in r for r in rows), res.stdout
    assert "expected < " in res.stdout and "0 passed, 2 failed" in res.stdout
