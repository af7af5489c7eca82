"""Fixtures of the deployment tests: the servers of ``scripts/services.py`` (the same
``services``/``mysql_server`` fixtures as tests/drivers, which this directory reuses) and the
Redis broker."""
import importlib.util
import os
import sys

import pytest

_DRIVERS_CONFTEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "drivers", "conftest.py")


def _drivers_support():
    mod = sys.modules.get("greenhook_drivers_support")
    if mod is None:
        spec = importlib.util.spec_from_file_location("greenhook_drivers_support",
                                                      _DRIVERS_CONFTEST)
        mod = sys.modules["greenhook_drivers_support"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod


_support = _drivers_support()
services = _support.services
mysql_server = _support.mysql_server
require_module = _support.require_module


@pytest.fixture(scope="session")
def redis_server(services):
    return _support._service(services, "redis")
