"""Backend on greenhook's own hub (``greenhook.hub``): greenlet + epoll, nothing else."""

from time import monotonic

from greenhook import _hubcore
from greenhook import hub as _hub

from .base import Backend, Heartbeat, os_thread_ident


class BuiltinBackend(Backend):
    name = "builtin"

    #: The C face the hooks call instead of ``can_switch``/``wait_fd``/``wait_fd_gen``
    #: (``includes/gh_backend.h``): the same wait, without a Python call.
    c_api = _hubcore.C_API

    def can_switch(self):
        hub = _hub.get_hub_if_exists()
        return hub is not None and hub.can_switch()

    def wait_fd(self, fd, events, timeout):
        return _hub.get_hub().wait_fd(fd, events, timeout)

    def wait_fd_gen(self, fd, events, timeout, gen):
        return _hub.get_hub().wait_fd_gen(fd, events, timeout, gen)

    def wait_fds(self, fds, timeout):
        return _hub.get_hub().wait_fds(fds, timeout)

    def sleep(self, seconds):
        hub = _hub.get_hub()
        if seconds is None:
            hub.wait_fds([], None)
        else:
            hub.sleep(seconds)

    def heartbeat(self, interval):
        return _BuiltinHeartbeat(_hub.get_hub(), interval)


class _BuiltinHeartbeat(Heartbeat):
    """A repeating unref'd timer on the built-in hub (``hub.timer(..., ref=False,
    repeat=interval)``): it beats while the loop runs, never keeps it alive, and fires first
    thing when a stopped loop starts again.  ``looping`` and ``busy()`` are read from the hub
    itself (``hub.exited``, ``hub.has_work()``), which knows them exactly."""

    def __init__(self, hub, interval):
        self._hub = hub
        Heartbeat.__init__(self, interval)
        self._timer = hub.timer(interval, self._beat, ref=False, repeat=interval)

    @property
    def looping(self):
        return not self._hub.exited

    @looping.setter
    def looping(self, value):
        pass        # Heartbeat.__init__ sets it; the hub's own flag is the truth

    def _beat(self):
        if self.cancelled:
            self._timer.cancel()        # cancelled from another thread
        else:
            self.last = monotonic()

    def busy(self):
        return self._hub.has_work()

    def cancel(self):
        self.cancelled = True
        # The timer heap belongs to the hub's thread; from elsewhere the next beat ends it.
        if os_thread_ident() == self.thread_ident:
            self._timer.cancel()


BACKEND = BuiltinBackend()
