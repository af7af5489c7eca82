"""Fixtures for the tests against real servers and real C-extension drivers.

The servers come from ``scripts/services.py start --dir D``; the test command points
``GREENHOOK_SERVICES`` at ``D/services.json``. The drivers come from
``scripts/install_drivers.sh VENV`` (run the tests with ``VENV/bin/python -m pytest``).
See docs/SERVICES.md.

Nothing may be skipped in CI: when ``CI`` is true, a missing services file, service,
driver or tool FAILS the test (with the reason); elsewhere it skips with the reason.
Use :func:`require_module` instead of ``pytest.importorskip``.

Session fixtures:
  services          the whole services.json (dict)
  mysql_server      services["services"]["mysql"]     (connect, connect_unix, port, ...)
  postgres_server   services["services"]["postgres"]  (dsn, dsn_ssl, ssl_cert, ...)
  memcached_server  services["services"]["memcached"] (servers, proxy_servers, proxy_delay)
  http_server       services["services"]["http"]      (base_url, delay_url)
  binary_venv_python  the python of the psycopg2-binary venv ($GREENHOOK_BINARY_VENV)

Helpers, importable from test modules as ``from greenhook_drivers_support import ...``
(this conftest registers itself under that name; ``conftest`` itself is ambiguous when
several test directories have one): ``IN_CI``, ``unavailable(reason)``,
``require_module(name)``.
"""
import importlib
import json
import os
import sys

import pytest

from greenhook_test_support import IN_CI, build_mismatch, skip_or_fail  # noqa: F401 - IN_CI re-exported

SERVICES_ENV = "GREENHOOK_SERVICES"
BINARY_VENV_ENV = "GREENHOOK_BINARY_VENV"


def unavailable(reason):
    """Fail under CI (nothing may be skipped there), skip elsewhere: ``skip_or_fail``."""
    skip_or_fail(reason)


def require_module(name):
    """Import ``name``; when it cannot be imported, fail under CI and skip elsewhere."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(
            "cannot import %s (%s): install the drivers with scripts/install_drivers.sh VENV "
            "and run the tests with VENV/bin/python" % (name, exc)
        )


def _pid_alive(pid):
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(")") + 2:].split()[0] not in ("Z", "X")


# Test modules import the helpers through this name (see the module docstring).
sys.modules.setdefault("greenhook_drivers_support", sys.modules[__name__])


@pytest.fixture(scope="session")
def services():
    path = os.environ.get(SERVICES_ENV)
    if not path:
        unavailable(
            "%s is not set: run `python scripts/services.py start --dir D` and set "
            "%s=D/services.json" % (SERVICES_ENV, SERVICES_ENV)
        )
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        unavailable("cannot read %s=%s: %s" % (SERVICES_ENV, path, exc))
    if data.get("state") != "running":
        unavailable("%s says the services are %r, not running" % (path, data.get("state")))
    return data


def _service(services, name):
    info = services.get("services", {}).get(name)
    if not info:
        unavailable(
            "service %r is not in %s (start it: scripts/services.py start --services ...%s...)"
            % (name, os.environ.get(SERVICES_ENV), name)
        )
    pids = [info.get("pid")] + ([info["proxy_pid"]] if "proxy_pid" in info else [])
    for pid in pids:
        if not _pid_alive(pid):
            unavailable("service %r (pid %s) recorded in services.json is not running" % (name, pid))
    return info


@pytest.fixture(scope="session")
def mysql_server(services):
    return _service(services, "mysql")


@pytest.fixture(scope="session")
def postgres_server(services):
    return _service(services, "postgres")


@pytest.fixture(scope="session")
def memcached_server(services):
    return _service(services, "memcached")


@pytest.fixture(scope="session")
def http_server(services):
    return _service(services, "http")


@pytest.fixture(scope="session")
def binary_venv_python():
    """The interpreter of the venv that holds psycopg2-binary (install_drivers.sh makes it
    as VENV-binary); ``GREENHOOK_BINARY_VENV`` names that venv."""
    venv = os.environ.get(BINARY_VENV_ENV)
    if not venv:
        unavailable("%s is not set (the psycopg2-binary venv, VENV-binary)" % BINARY_VENV_ENV)
    py = os.path.join(venv, "bin", "python")
    if not os.access(py, os.X_OK):
        unavailable("%s=%s has no bin/python" % (BINARY_VENV_ENV, venv))
    problem = build_mismatch(py)
    if problem:
        pytest.fail("build check: " + problem, pytrace=False)
    return py
