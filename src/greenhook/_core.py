"""The leaf the other modules import downward: the compiled core, and which hub each OS thread
waits on.

Imports only ``exceptions`` and ``backends`` -- never ``_patch``, ``_api`` or ``_watch``, which
all import this module (as gevent's modules import ``_hub_local``).
"""

import os
import platform
import sys
import threading

from greenhook import backends
from greenhook.exceptions import GreenhookError, UnsupportedPlatform

__all__ = ["native", "hooks", "hooks_or_none", "set_default_backend", "resolve_backend",
           "bind_current_thread", "bind_current_thread_if_unbound", "after_fork_in_child"]

_lock = threading.Lock()
_loaded = None          # (_elf, _hooks) once imported
_default_name = None    # set by greenhook.use(); None: gevent if imported, else builtin


def native():
    """``(_elf, _hooks)``, the compiled core; UnsupportedPlatform where it cannot work."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatform(
            f"greenhook patches ELF shared libraries on Linux; this is {sys.platform}")
    try:
        from greenhook import _elf, _hooks
    except ImportError as exc:  # pragma: no cover - broken install
        raise UnsupportedPlatform(f"greenhook's compiled core is not available: {exc}") from exc
    if not _elf.SUPPORTED:
        raise UnsupportedPlatform(
            f"GOT patching supports x86_64 and aarch64; this machine is {platform.machine()}")
    _hooks.set_backend_resolver(resolve_backend)
    _loaded = (_elf, _hooks)
    return _loaded


def hooks():
    return native()[1]


def hooks_or_none():
    """The hooks module, or None where the compiled core cannot work (pure-Python tools)."""
    try:
        return native()[1]
    except GreenhookError:
        return None


def set_default_backend(name):
    """Make ``name`` the backend of threads bound without an explicit one."""
    global _default_name
    with _lock:
        _default_name = name


def resolve_backend():
    """The backend a thread bound without an explicit choice waits on: the first candidate
    (the ``use()`` default, else gevent if imported, then the built-in hub) whose hub exists
    in this OS thread and may switch now; None when none does.  Called by the hooks (GIL held)
    at a thread's first wait; the answer is then pinned to the thread, so importing gevent
    later never moves a thread that already waits on the built-in hub."""
    if _default_name is not None:
        names = (_default_name,)
    elif "gevent" in sys.modules:
        names = ("gevent", "builtin")
    else:
        names = ("builtin",)
    for name in names:
        backend = backends.get_backend(name)
        if backend.can_switch():
            return backend
    return None


def bind_current_thread(backend=None):
    """Hooked calls in this OS thread wait on ``backend`` (None: resolved at the first wait)."""
    return hooks().bind_thread(None if backend is None else backends.get_backend(backend))


def bind_current_thread_if_unbound():
    """The thread that patches waits greenly from then on."""
    h = hooks()
    if h.thread_state() is None:
        h.bind_thread(None)


def after_fork_in_child():
    """In a forked child only the thread that forked exists: drop the bindings (and pending
    cancellations) of every other OS thread; their counters stay in ``stats()``.  The GOT
    patches need nothing: they are memory, inherited as they are.  The forking thread keeps
    its binding, so the child waits greenly on its (re-initialised) hub at once."""
    global _lock
    _lock = threading.Lock()    # another thread may have held it at the fork
    if _loaded is not None:
        _loaded[1].forget_other_threads()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
