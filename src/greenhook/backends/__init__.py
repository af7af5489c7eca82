"""Hub backends, chosen by short name; the module behind a name is imported only when used."""

import importlib
import sys

from greenhook.exceptions import BackendError

from .base import Backend, Heartbeat

__all__ = ["Backend", "Heartbeat", "get_backend", "default_backend_name", "NAMES"]

#: short name -> module defining ``BACKEND``
NAMES = {
    "builtin": "greenhook.backends.builtin",
    "gevent": "greenhook.backends.gevent",
}

_instances = {}


def get_backend(name):
    """The backend instance for ``name`` (``"builtin"``, ``"gevent"``) or a Backend instance."""
    if isinstance(name, Backend):
        return name
    backend = _instances.get(name)
    if backend is not None:
        return backend
    modname = NAMES.get(name)
    if modname is None:
        raise BackendError(
            f"unknown hub backend {name!r}; known backends: {', '.join(sorted(NAMES))}")
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        raise BackendError(
            f"hub backend {name!r} needs a package that is not installed ({exc}); "
            f"install it, e.g. pip install 'greenhook[{name}]'") from exc
    backend = _instances[name] = module.BACKEND
    return backend


def default_backend_name():
    """gevent when gevent has been imported, else the built-in hub."""
    return "gevent" if "gevent" in sys.modules else "builtin"
