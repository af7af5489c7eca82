"""Public wiring between the hooks and the hub backends: which backend a thread waits on."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from greenhook import _core, _watch, backends
from greenhook.backends.base import Backend
from greenhook.exceptions import InvalidArgument


def use(name: Union[str, Backend]) -> Backend:
    """Choose the hub backend (``"builtin"``, ``"gevent"`` or a Backend instance) for hooked
    calls made in this OS thread, and make it the default for threads bound later.

    Returns the backend.  Raises BackendError for an unknown name or a missing package.
    """
    backend = backends.get_backend(name)
    if isinstance(name, str):
        _core.set_default_backend(name)
    _core.bind_current_thread(backend)
    _watch.from_env(backend)  # GREENHOOK_WATCH=<seconds> starts the blocking detector
    return backend


def enable_thread(backend: Union[str, Backend, None] = None) -> None:
    """Let hooked calls in the calling OS thread wait greenly (e.g. a thread running its own
    hub).  ``backend``: a name or instance; None follows the default."""
    _core.bind_current_thread(backend)


def disable_thread() -> None:
    """Hooked calls in the calling OS thread pass straight through to libc again."""
    _core.hooks().unbind_thread()


def current_backend() -> Optional[Backend]:
    """The backend hooked calls in this thread would wait on now, or None if unbound."""
    st = _core.hooks().thread_state()
    if st is None:
        return None
    return st.backend if st.backend is not None else _core.resolve_backend()


def configure(shutdown_cancelled_sockets: Optional[bool] = None,
              resolver_threads: Optional[int] = None,
              fair_yield: Optional[int] = None) -> Dict[str, Any]:
    """Set process-wide options; returns the previous values of those given.

    ``shutdown_cancelled_sockets`` (default True): when a kill or timeout cancels a call parked
    on a connected stream socket, shut that socket down, so that the driver sees a dead
    connection rather than reading the server's late answer as the answer to its next request.
    Turn it off only for libraries that resynchronise their protocol themselves.

    ``resolver_threads`` (default 64): at most this many OS threads of the resolver pool run
    greened name lookups (``getaddrinfo`` & co.) at once; more lookups queue.  Workers start
    on demand and exit after 10 s idle; lowering the bound retires surplus idle workers.

    ``fair_yield`` (default 4; 0 turns it off): fairness between the greenlets of a thread
    (README, Semantics 11).  Hooked calls return at once when their fd is ready, so a greenlet
    whose fd is always ready could run call after call while the others starve.  Every
    ``fair_yield``-th hooked call of a thread checks whether one parked or yielded since the
    previous check; if not, that call first lets the hub run once (like ``sleep(0)``), then
    goes on.  Yields that find nobody else waiting space out (up to every 4096 calls).  A kill
    or timeout thrown in during a yield ends the call as one thrown into a wait does.
    """
    if fair_yield is not None and (isinstance(fair_yield, bool) or not isinstance(fair_yield, int)
                                   or not 0 <= fair_yield <= 1 << 30):
        # Checked before anything is set: a refused call changes nothing.
        raise InvalidArgument(
            "configure(fair_yield=...) takes an int from 0 (off) to 2**30, got %r"
            % (fair_yield,))
    hooks = _core.hooks()
    previous: Dict[str, Any] = {}
    if shutdown_cancelled_sockets is not None:
        if not isinstance(shutdown_cancelled_sockets, bool):
            raise InvalidArgument(
                "configure(shutdown_cancelled_sockets=...) takes True or False, got %r"
                % (shutdown_cancelled_sockets,))
        previous["shutdown_cancelled_sockets"] = hooks.set_shutdown_on_cancel(
            shutdown_cancelled_sockets)
    if resolver_threads is not None:
        if isinstance(resolver_threads, bool) or not isinstance(resolver_threads, int) \
                or not 1 <= resolver_threads <= 4096:
            raise InvalidArgument(
                "configure(resolver_threads=...) takes an int from 1 to 4096, got %r"
                % (resolver_threads,))
        previous["resolver_threads"] = hooks.set_resolver_threads(resolver_threads)
    if fair_yield is not None:
        previous["fair_yield"] = hooks.set_fair_yield(fair_yield)
    return previous


def stats() -> Dict[str, Dict[str, int]]:
    """{symbol: {"calls", "passthrough", "fast", "green", "waits", "timeouts", "cancelled",
    "blocked", "yields"}} summed over all threads; symbols never called are left out.  "calls"
    is the sum of the outcomes; "waits" (parks) and "yields" (fairness) happen within calls."""
    return _core.hooks().stats()


def reset_stats() -> None:
    _core.hooks().reset_stats()
