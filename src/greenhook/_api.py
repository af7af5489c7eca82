"""Public wiring between the hooks and the hub backends: which backend a thread waits on."""

import threading

from greenhook import backends

_lock = threading.Lock()
_default_name = None  # set by use(); None: gevent if imported, else builtin


def _resolve():
    """Backend for threads bound without an explicit choice (called by the hooks, GIL held)."""
    return backends.get_backend(_default_name or backends.default_backend_name())


def _hooks():
    from greenhook._patch import _native
    return _native()[1]


def use(name):
    """Choose the hub backend (``"builtin"``, ``"gevent"`` or a Backend instance) for hooked
    calls made in this OS thread, and make it the default for threads bound later.

    Returns the backend.  Raises BackendError for an unknown name or a missing package.
    """
    global _default_name
    backend = backends.get_backend(name)
    hooks = _hooks()
    with _lock:
        if isinstance(name, str):
            _default_name = name
        hooks.set_backend_resolver(_resolve)
        hooks.bind_thread(backend)
    from greenhook import _watch
    _watch.from_env(backend)  # GREENHOOK_WATCH=<seconds> starts the blocking detector
    return backend


def enable_thread(backend=None):
    """Let hooked calls in the calling OS thread wait greenly (e.g. a thread running its own
    hub).  ``backend``: a name or instance; None follows the default."""
    hooks = _hooks()
    hooks.set_backend_resolver(_resolve)
    hooks.bind_thread(None if backend is None else backends.get_backend(backend))


def disable_thread():
    """Hooked calls in the calling OS thread pass straight through to libc again."""
    _hooks().unbind_thread()


def current_backend():
    """The backend hooked calls in this thread would wait on now, or None if unbound."""
    st = _hooks().thread_state()
    if st is None:
        return None
    return st.backend if st.backend is not None else _resolve()


def _bind_current_thread_if_unbound():
    hooks = _hooks()
    hooks.set_backend_resolver(_resolve)
    if hooks.thread_state() is None:
        hooks.bind_thread(None)


def configure(shutdown_cancelled_sockets=None):
    """Set process-wide options; returns the previous values of those given.

    ``shutdown_cancelled_sockets`` (default True): when a kill or timeout cancels a call parked
    on a connected stream socket, shut that socket down, so that the driver sees a dead
    connection rather than reading the server's late answer as the answer to its next request.
    Turn it off only for libraries that resynchronise their protocol themselves.
    """
    hooks = _hooks()
    previous = {}
    if shutdown_cancelled_sockets is not None:
        previous["shutdown_cancelled_sockets"] = hooks.set_shutdown_on_cancel(
            bool(shutdown_cancelled_sockets))
    return previous


def stats():
    """{symbol: {"calls", "passthrough", "fast", "green", "waits", "timeouts", "cancelled",
    "blocked"}} summed over all threads; symbols never called are left out."""
    return _hooks().stats()


def reset_stats():
    _hooks().reset_stats()
