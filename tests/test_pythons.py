"""The package builds and greens on the oldest and newest CPython this machine has (3.9+).

Interpreters: $GREENHOOK_TEST_PYTHONS (colon-separated paths), else the oldest and newest
pyenv-installed 3.9+ versions other than the one running the tests.  Each gets a fresh venv
with greenhook built from this checkout and runs a short scenario on the built-in hub:
concurrency, a cancelled call delivering its exception, and a kill.
"""

import glob
import os
import re
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCENARIO = r"""
import json, sys, time, greenhook
from greenhook import hub, samples
from greenhook.samples.server import DelayServer
greenhook.use("builtin")
mod = samples.load("now")
greenhook.patch_library(samples.library_path("now"))
out = {"version": list(sys.version_info[:2])}
with DelayServer() as srv:
    t0 = time.monotonic()
    gs = [hub.spawn(mod.request, "send_recv", srv.tcp_port, 200, b"p%d" % i) for i in range(20)]
    hub.joinall(gs)
    out["wall"] = time.monotonic() - t0
    out["ok"] = [g.value for g in gs] == [b"p%d" % i for i in range(20)]
    def victim():
        try:
            with hub.Timeout(0.2):
                mod.request("send_recv", srv.tcp_port, 3000, b"x")
        except hub.Timeout as exc:
            return type(exc.__context__).__name__
    t0 = time.monotonic()
    g = hub.spawn(victim); g.join()
    out["cancel"] = [g.value, time.monotonic() - t0]
print(json.dumps(out))
"""


def _interpreters():
    env = os.environ.get("GREENHOOK_TEST_PYTHONS")
    if env:
        return [p for p in env.split(":") if p]
    found = {}
    for exe in glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")):
        m = re.search(r"/3\.(\d+)\.(\d+)/", exe)
        if m and int(m.group(1)) >= 9:
            found[(3, int(m.group(1)))] = exe
    found.pop(sys.version_info[:2], None)
    keys = sorted(found)
    return [found[k] for k in {keys[0], keys[-1]}] if keys else []


@pytest.mark.parametrize("python", _interpreters() or [sys.executable])
def test_builds_and_greens(python, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=120)
    py = str(env_dir / "bin" / "python")
    res = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", ROOT],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    res = subprocess.run([py, "-c", SCENARIO], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    out = json.loads(res.stdout.splitlines()[-1])
    assert out["ok"], out
    assert out["wall"] < 1.0, out          # 20 x 0.2 s overlapped, not 4 s
    name, took = out["cancel"]
    assert name == "TimeoutError", out     # the C error (ETIMEDOUT) kept as __context__
    assert 0.15 < took < 1.0, out
