"""Backend on greenhook's own hub (``greenhook.hub``): greenlet + epoll, nothing else."""

import threading
from time import monotonic

from greenhook import hub as _hub

from .base import Backend, Heartbeat


class BuiltinBackend(Backend):
    name = "builtin"

    def can_switch(self):
        hub = _hub.get_hub_if_exists()
        return hub is not None and hub.can_switch()

    def wait_fd(self, fd, events, timeout):
        return _hub.get_hub().wait_fd(fd, events, timeout)

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
    """The built-in hub has no unref'd timers, so the beat re-arms itself only while the loop
    has other work (letting an idle loop exit), and is armed again whenever the loop starts:
    ``Hub._run_forever`` calls ``self._loop()`` on every (re)start, which this wraps."""

    def __init__(self, hub, interval):
        Heartbeat.__init__(self, interval)
        self._hub = hub
        self._timer = None
        self._inner_loop = hub._loop
        hub._loop = self._loop
        self._arm()

    def _loop(self):
        if not self.cancelled:
            self.last = monotonic()
            self.looping = True
            self._arm()
        return self._inner_loop()

    def _arm(self):
        if self._timer is None or not self._timer.pending:
            self._timer = self._hub.timer(self.interval, self._tick)

    def _tick(self):
        self.last = monotonic()
        self._timer = None
        if not self.cancelled and self._has_other_work():
            self._timer = self._hub.timer(self.interval, self._tick)
        else:
            self.looping = False     # the loop returns after this pass

    def _has_other_work(self):
        hub = self._hub
        live_timers = len(hub._timers) - hub._ncancelled
        timer = self._timer
        if timer is not None and timer.pending:
            live_timers -= 1
        return live_timers > 0 or bool(hub._fds) or bool(hub._ready)

    busy = _has_other_work

    def cancel(self):
        self.cancelled = True
        hub = self._hub
        if hub.__dict__.get("_loop") == self._loop:
            del hub._loop
        # The timer heap belongs to the hub's thread; from elsewhere the next tick ends it.
        if threading.get_ident() == self.thread_ident and self._timer is not None:
            self._timer.cancel()
            self._timer = None


BACKEND = BuiltinBackend()
