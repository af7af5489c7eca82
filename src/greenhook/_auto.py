"""Auto mode: green every loaded native library, and everything loaded later, with one switch.

Three doors lead here: :func:`patch_all`; gevent's ``monkey.patch_all()`` with
``GREENHOOK_AUTO=1`` in the environment (gevent calls :func:`gevent_did_patch_all` through its
``gevent.plugins.monkey.did_patch_all`` entry point, so the application needs no greenhook
line); and a direct call from a framework's start-up code.

What is loaded later is caught three ways (docs: README "Auto mode"):

* extension modules imported later: ``ExtensionFileLoader.create_module`` is wrapped;
* ``ctypes.CDLL``/``LoadLibrary``: ``CDLL.__init__`` is wrapped (and ``_ctypes``'s own
  ``dlopen`` slot is hooked like any other patched object's);
* objects loaded by C code: the ``dlopen``/``dlmopen`` slots of patched objects are hooked
  (``_hooks``, ``hooks/loader.pxi``); what other code loads is noticed at the next wait of a
  hooked call (a cheap check of the loader's ``dlpi_adds`` counter).
"""

import importlib.machinery
import json
import os
import signal
import sys
import threading

from greenhook import _api, _core, _patch
from greenhook.exceptions import InvalidArgument

__all__ = ["patch_all", "gevent_did_patch_all", "auto_report"]

AUTO_ENV = "GREENHOOK_AUTO"
SKIP_ENV = "GREENHOOK_SKIP"
ALLOW_ENV = "GREENHOOK_ALLOW"
REPORT_SIGNAL_ENV = "GREENHOOK_REPORT_SIGNAL"

_lock = threading.Lock()
_wrapped = {}   # what was replaced -> the original


def patch_all(backend=None, skip=None, allow=None):
    """Green every loaded object that imports a hooked call (minus the system runtime:
    libc, the loader, libpython, the interpreter, greenlet, gevent, greenhook, libm, libstdc++
    ...), and every object loaded from now on: extension modules imported later,
    ``ctypes.CDLL``, and what patched C code ``dlopen``\\s.

    Binds the calling thread -- call it in the thread that runs the hub.  ``backend``: the
    hub backend for this thread (``"gevent"``, ``"builtin"``; None: chosen at the first wait,
    as for ``patch_module``).  ``skip``/``allow``: sonames, stems (``"libcrypto"``) or paths to
    leave alone / to patch exclusively; by default ``$GREENHOOK_SKIP`` / ``$GREENHOOK_ALLOW``
    (comma or space separated; no allow list when unset).

    Returns :func:`greenhook.patched_libraries` (``.refused`` says what was left alone, why).
    Calling it again re-reads the policy and patches what is new."""
    if skip is None:
        skip = _patch.parse_names(os.environ.get(SKIP_ENV))
    elif isinstance(skip, str):
        skip = _patch.parse_names(skip)
    if allow is None:
        allow = _patch.parse_names(os.environ.get(ALLOW_ENV)) or None
    elif isinstance(allow, str):
        allow = _patch.parse_names(allow)
    for what, names in (("skip", skip), ("allow", allow or ())):
        if not all(isinstance(n, str) and n for n in names):
            raise InvalidArgument(f"patch_all({what}=...) takes sonames or paths, got {names!r}")
    if backend is not None:
        _api.use(backend)
    else:
        _core.bind_current_thread_if_unbound()
    with _lock:
        _wrap_imports()
        _wrap_ctypes()
    _patch.start_auto(skip=skip, allow=allow)
    _install_report_signal()
    return _patch.patched_libraries()


# --- what is loaded later ------------------------------------------------------------------

def _after_load():
    if _patch.auto_enabled():
        _core.hooks().check_loads()


def _wrap_imports():
    loader = importlib.machinery.ExtensionFileLoader
    if "create_module" in _wrapped:
        return
    original = loader.create_module

    def create_module(self, spec):
        module = original(self, spec)
        _after_load()
        return module

    create_module.__wrapped__ = original
    _wrapped["create_module"] = original
    loader.create_module = create_module


def _wrap_ctypes():
    if "CDLL.__init__" in _wrapped:
        return
    import ctypes

    original = ctypes.CDLL.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _after_load()

    __init__.__wrapped__ = original
    _wrapped["CDLL.__init__"] = original
    ctypes.CDLL.__init__ = __init__


# --- gevent's plugin point ---------------------------------------------------------------------

def gevent_did_patch_all(event=None):
    """gevent's ``gevent.plugins.monkey.did_patch_all`` entry point: with ``GREENHOOK_AUTO=1``,
    ``monkey.patch_all()`` ends with ``patch_all(backend="gevent")`` in its thread."""
    if os.environ.get(AUTO_ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
        return
    patch_all(backend="gevent")


# --- the live view ----------------------------------------------------------------------------

def auto_report():
    """What auto mode patched and refused, as a JSON-ready dict (``patched_libraries()``)."""
    libs = _patch.patched_libraries()
    out = libs.as_dict()
    out["patched"] = [{"library": r.library, "soname": r.soname, "symbols": dict(r.symbols),
                       "not_greened": dict(r.not_greened)} for r in libs]
    return out


def _print_report(signum=None, frame=None):
    sys.stderr.write("greenhook auto mode: " + json.dumps(auto_report(), sort_keys=True) + "\n")
    sys.stderr.flush()


def _install_report_signal():
    """``GREENHOOK_REPORT_SIGNAL=USR1`` (or a number): that signal prints :func:`auto_report`
    as one JSON line on stderr (``kill -USR1 <pid>``).  Main thread only (Python's rule)."""
    name = os.environ.get(REPORT_SIGNAL_ENV, "").strip()
    if not name or threading.current_thread() is not threading.main_thread():
        return
    key = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    signum = int(name) if name.isdigit() else getattr(signal, key, None)
    if signum is None:
        raise InvalidArgument(f"{REPORT_SIGNAL_ENV}={name!r} names no signal (try USR1)")
    signal.signal(signum, _print_report)
