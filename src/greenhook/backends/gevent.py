"""Backend on gevent's hub: io and timer watchers on gevent's loop."""

import os
from time import monotonic

from gevent._hub_local import get_hub_if_exists
from gevent.hub import Waiter, get_hub, reinit
from greenlet import getcurrent

from greenhook.exceptions import BackendError
from greenhook.hub import _seconds

from .base import POLLPRI, READ_EVENTS, WRITE_EVENTS, Backend, Heartbeat, os_thread_ident

try:
    # The compiled single-fd wait and C face (imports gevent: imported only from here).
    import greenhook._geventwait as _geventwait
except ImportError:     # a platform without the compiled core: the Python methods alone
    _geventwait = None

_READ, _WRITE = 1, 2  # libev/libuv watcher masks
_IN_EVENTS = READ_EVENTS & ~POLLPRI


def _mask(events):
    mask = (_READ if events & READ_EVENTS else 0) | (_WRITE if events & WRITE_EVENTS else 0)
    # Only POLLERR/POLLHUP asked: the loop reports those as readable.
    return mask or _READ


#: The longest timer given to gevent's loop, in seconds (~31 years).  libuv counts in
#: integer milliseconds and raises OverflowError on inf or 1e300 (libev takes any double);
#: a longer wait is made of several timers, so inf and huge values just wait.
MAX_TIMER = 1e9

#: How often a wait that asks for POLLPRI (urgent data, select's exceptfds) wakes to let the
#: hook probe: gevent's loops cannot watch for it (see README, intentional differences).
PRI_PROBE = 0.02


def _check(seconds):
    """``seconds`` as a float >= 0 (inf: forever); NaN or a non-number raises
    InvalidArgument, as on the built-in hub (a NaN timer stalls every other timer on libev).
    The hooks pass None for "no deadline" and never NaN: this is a backstop."""
    seconds = _seconds(seconds, "timeout")
    return seconds if seconds > 0.0 else 0.0


class GeventBackend(Backend):
    name = "gevent"

    #: The C face the hooks call instead of ``can_switch``/``wait_fd``/``wait_fd_gen`` for a
    #: single-fd wait (``includes/gh_backend.h``): the same wait, without a Python call.
    c_api = None if _geventwait is None else _geventwait.C_API

    def can_switch(self):
        hub = get_hub_if_exists()
        return hub is not None and getcurrent() is not hub

    def wait_fd(self, fd, events, timeout):
        return self.wait_fds(((fd, events),), timeout)

    def wait_fds(self, fds, timeout):
        if any(events & POLLPRI and not events & _IN_EVENTS for _, events in fds):
            # libev and libuv never ask epoll for EPOLLPRI: urgent data alone would not wake
            # a wait for POLLPRI only (select's exceptfds).  Wake every PRI_PROBE seconds
            # instead; the hook probes with poll(2) and waits again.  A wait that also asks
            # for POLLIN (libcurl asks both) is not polled: the urgent byte comes with data.
            if timeout is None or _check(timeout) > PRI_PROBE:
                self._wait_fds(fds, PRI_PROBE)
                return True
        if timeout is None:
            return self._wait_fds(fds, None)
        timeout = _check(timeout)
        if timeout <= MAX_TIMER:
            return self._wait_fds(fds, timeout)
        deadline = monotonic() + timeout        # inf stays inf
        while True:
            left = deadline - monotonic()
            if left <= MAX_TIMER:
                return self._wait_fds(fds, max(left, 0.0))
            if self._wait_fds(fds, MAX_TIMER):
                return True

    def wait_fd_gen(self, fd, events, timeout, gen):
        """``wait_fd`` with the fd's generation in greenhook's per-fd table (the hooks have
        just checked that the fd names the same open file as at the previous wait with this
        ``gen``).  On libev one io watcher per (fd, mask) is kept across waits, started and
        stopped like gevent's own sockets do: while the fd stays the same file, neither gevent
        (no fcntl check of a new watcher) nor libev (no epoll_ctl: the mask did not change
        between two loop iterations) makes a syscall.  A new ``gen`` (the fd was closed or its
        number reused) replaces the watcher: a new one makes libev register the fd again.

        The wait itself is compiled (``greenhook._geventwait``, also this backend's C face
        ``c_api``, which the hooks call instead of this method)."""
        if _geventwait is None:
            return self.wait_fd(fd, events, timeout)
        return _geventwait.wait_fd_gen(self, fd, events, timeout, gen)

    def _wait_fds(self, fds, timeout):
        hub = get_hub_if_exists()
        loop = hub.loop
        waiter = Waiter(hub)
        watchers = []
        try:
            try:
                for fd, events in fds:
                    io = loop.io(fd, _mask(events))
                    watchers.append(io)
                    io.start(waiter.switch, True)
                if timeout is not None:
                    timer = loop.timer(timeout)
                    watchers.append(timer)
                    timer.start(waiter.switch, False)
            except Exception as exc:
                # Not parked yet: a failure of the loop, not something thrown in.
                raise BackendError("gevent's loop could not watch %r: %s" % (list(fds), exc)) from exc
            return waiter.get()     # parked: what is raised here was thrown in
        finally:
            for w in watchers:
                w.close()

    def sleep(self, seconds):
        if seconds is None:
            return self._sleep(None)
        seconds = _check(seconds)
        deadline = monotonic() + seconds
        while seconds > MAX_TIMER:
            self._sleep(MAX_TIMER)
            seconds = deadline - monotonic()
        self._sleep(max(seconds, 0.0))

    def _sleep(self, seconds):
        hub = get_hub_if_exists()
        waiter = Waiter(hub)
        timer = None
        try:
            if seconds is not None:
                timer = hub.loop.timer(seconds)
                timer.start(waiter.switch, None)
            waiter.get()
        finally:
            if timer is not None:
                timer.close()

    def heartbeat(self, interval):
        return _GeventHeartbeat(get_hub().loop, interval)


class _GeventHeartbeat(Heartbeat):
    """A repeating timer with ``ref=False``: it never keeps gevent's loop alive."""

    def __init__(self, loop, interval):
        Heartbeat.__init__(self, interval)
        self._loop = loop
        self._timer = loop.timer(interval, interval, ref=False)
        self._timer.start(self._tick)

    def _tick(self):
        self.last = monotonic()
        if self.cancelled:
            self._timer.close()

    def busy(self):
        loop = self._loop
        # libev's activecnt counts ref'd active watchers: ours is unref'd, so it is left out.
        active = getattr(loop, "activecnt", None)
        if active is None:
            return True     # a loop that cannot tell: assume someone is waiting
        callbacks = getattr(loop, "_callbacks", None)
        return active > 0 or bool(callbacks is not None and len(callbacks))

    def cancel(self):
        self.cancelled = True
        # Watchers belong to the loop's thread; from elsewhere the next tick closes it.
        if os_thread_ident() == self.thread_ident:
            self._timer.close()


def _after_fork_in_child():
    # gevent re-initialises its loop only in gevent.fork() (or a monkey-patched os.fork);
    # after a plain os.fork() -- multiprocessing's fork start method -- libev would keep
    # sharing the parent's epoll set.  gevent.hub.reinit() is idempotent: gevent.fork() calling
    # it again after this is fine.
    hub = get_hub_if_exists()
    if hub is not None:
        reinit(hub)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


BACKEND = GeventBackend()
