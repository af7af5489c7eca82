"""pytest plugin for ``scripts/aarch64.sh pytest``: the tests' scenario subprocesses (every
test that patches runs one, with ``sys.executable``) run on the aarch64 interpreter under
qemu (``$GREENHOOK_AARCH64_PYTHON``), while pytest itself stays on the host.  The session
stops at once if that interpreter is not an aarch64 one."""
import os
import subprocess
import sys

import pytest


def pytest_configure(config):
    py = os.environ["GREENHOOK_AARCH64_PYTHON"]
    out = subprocess.run([py, "-c", "import platform, greenhook._hooks; print(platform.machine())"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0 or out.stdout.strip() != "aarch64":
        pytest.exit("%s is not an aarch64 python with greenhook: %r %s"
                    % (py, out.stdout, out.stderr[-2000:]), returncode=4)
    sys.executable = py


def pytest_report_header(config):
    return "aarch64: scenarios run on %s" % sys.executable
