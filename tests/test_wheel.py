"""The repaired manylinux wheel in a fresh venv with no compiler reachable: no gcc/cc on PATH,
``CC=/bin/false``, no checkout on the path.  ``greenhook verify`` passes on every sample link
variant, and a real driver (psycopg2-binary, a wheel too) is greened against the test
PostgreSQL server.

The wheel is the one tests/test_packaging.py builds (``packaging_support.dists()``: built from
the sdist, then ``auditwheel repair``).  Measured on the 2-core machine: venv + installs ~15 s,
verify ~8 s, the driver scenario ~2 s.
"""
import json
import os
import subprocess
import venv

import pytest

from greenhook_test_support import build_mismatch, skip_or_fail
from packaging_support import dists, no_compiler_env, run, wheel_tag

HERE = os.path.dirname(os.path.abspath(__file__))
PG_SCENARIO = os.path.join(HERE, "drivers", "scenarios", "pg.py")
PSYCOPG2_BINARY = "psycopg2-binary==2.9.13"   # as scripts/install_drivers.sh
N, SLEEP = 20, 0.3
BOUND = 2 * SLEEP + 0.2                        # serialized: 6 s


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = no_compiler_env(str(tmp))
    env_dir = tmp / "venv"
    venv.create(str(env_dir), with_pip=True)
    py = str(env_dir / "bin" / "python")
    wheel = dists()["repaired"]
    assert wheel_tag(wheel).startswith("manylinux_"), wheel
    # binaries only: nothing may be built (there is no compiler to build it with)
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary", ":all:",
         wheel, PSYCOPG2_BINARY], env=env, timeout=600)
    return py, tmp, env


def _greenhook(wheel_venv, *args, timeout=300):
    py, tmp, env = wheel_venv
    return subprocess.run([py, "-m", "greenhook", *args], cwd=str(tmp), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_holds_the_samples_and_no_sources(wheel_venv):
    py, tmp, env = wheel_venv
    out = subprocess.run([py, "-c", "import greenhook, greenhook.samples as s, os; "
                          "d = os.path.dirname(greenhook.__file__); "
                          "print(s.library_path('now')); "
                          "print(sorted(f for r, _, fs in os.walk(d) for f in fs "
                          "if f.endswith(('.c', '.pyx', '.pxd'))))"],
                         cwd=str(tmp), env=env, capture_output=True, text=True, check=True)
    lib, sources = out.stdout.splitlines()
    assert lib.startswith(str(tmp)) and lib.endswith("libghsample_now.so")
    assert sources == "[]"
    # the wheel carries the build stamp of the checkout it was built from
    assert build_mismatch(py) is None, build_mismatch(py)


def test_verify_passes_from_the_wheel(wheel_venv):
    res = _greenhook(wheel_venv, "verify", "--hub", "builtin", "--style", "send_recv",
                     "--style", "poll_nonblock", "--style", "usleep")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("builtin")]
    assert len(rows) == 5 * 3 * 2 and all("PASS" in r for r in rows), res.stdout
    for variant in ("lazy", "now", "noplt", "addrtaken", "fortify"):
        assert any(r.split()[1] == variant for r in rows), variant
    assert "30 passed, 0 failed" in res.stdout


def test_verify_fails_readably_when_left_unpatched(wheel_venv):
    res = _greenhook(wheel_venv, "verify", "--hub", "builtin", "--variant", "lazy",
                     "--style", "send_recv", "--n", "5", "--leave-unpatched")
    assert res.returncode == 1, res.stdout + res.stderr
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("builtin")]
    assert len(rows) == 2 and all("FAIL" in r for r in rows), res.stdout
    assert "expected < " in res.stdout and "0 passed, 2 failed" in res.stdout


def test_real_driver_greened_from_the_wheel(wheel_venv):
    """psycopg2-binary's bundled libpq, greened by the wheel's greenhook on the built-in hub:
    20 x pg_sleep(0.3) overlap, the ticker ticks."""
    path = os.environ.get("GREENHOOK_SERVICES")
    if not path:
        skip_or_fail("GREENHOOK_SERVICES is not set: run the test command (scripts/test.sh)")
    with open(path) as f:
        pg = json.load(f).get("services", {}).get("postgres")
    if not pg:
        skip_or_fail("no postgres service in %s" % path)
    py, tmp, env = wheel_venv
    args = {"module": "psycopg2._psycopg", "case": "concurrent", "hub": "builtin",
            "patch": True, "n": N, "sleep": SLEEP, "dsn": pg["dsn_nossl"]}
    proc = subprocess.run([py, PG_SCENARIO, json.dumps(args)], cwd=str(tmp), env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and len(lines) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(lines[0][len("RESULT "):])
    print("\n[wheel] psycopg2-binary %d x pg_sleep(%.1f) greened: %.3f s, %d ticks"
          % (N, SLEEP, res["elapsed"], res["ticks"]))
    assert res["errors"] == {} and res["unfinished"] == 0, res
    assert len(res["results"]) == N and all(r is not None for r in res["results"])
    assert sorted(r["row"][0][1] for r in res["results"]) == list(range(N))
    assert res["elapsed"] <= BOUND, res["elapsed"]
    assert res["ticks"] >= 15, res["ticks"]
    pq = [r for r in res["reports"] if "psycopg2_binary.libs/libpq-" in r["library"]]
    assert pq and pq[0]["library"].startswith(str(tmp)), [r["library"] for r in res["reports"]]
    assert pq[0]["symbols"].get("poll", 0) >= 1, pq[0]["symbols"]
    assert res["stats"].get("poll", {}).get("green", 0) >= N, res["stats"]
