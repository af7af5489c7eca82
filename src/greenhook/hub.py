"""The built-in hub: one greenlet per OS thread running an epoll loop with a timer heap.

This is a small, gevent-shaped event loop written on ``greenlet`` alone, so greenhook works
without gevent installed.  The model is gevent's:

* Each OS thread gets at most one :class:`Hub`, made on first use by :func:`get_hub`.  The hub
  owns a greenlet (``hub.greenlet``) whose parent is the thread's main greenlet and which runs
  the loop.
* A greenlet that must wait *parks*: it records who may wake it (an fd registration, a timer,
  a link on another greenlet) and switches to the hub greenlet.  The loop switches back into
  it when one of those fires.  The main greenlet parks like any other greenlet.
* Every park goes through a one-shot :class:`_Waiter` ticket.  The parked code clears the
  ticket in a ``finally`` and every wake checks it, so an exception thrown into the greenlet
  (kill, :class:`Timeout`) cleans up its registration and timer, and a second, late wake
  (fd and timer firing in the same iteration) can never resume a greenlet that moved on.

Loop iteration: run the callbacks queued before this iteration; ``epoll_wait`` until the
nearest timer (0 if callbacks are queued); switch into the greenlets whose fds fired; run the
timers that are due.  When nothing is left -- no callbacks, no timers, no fd waiters -- the
loop wakes the greenlets blocked in :func:`run`, or, if there are none, throws
:class:`LoopExit` into the main greenlet, which is then waiting for something that can never
happen.

Unref'd timers (``hub.timer(..., ref=False)``, as gevent's) live in a heap of their own that
the loop consults only for the poll timeout and to fire them: they run while the loop runs for
other reasons and never count as something left, so the loop stops exactly as if they did not
exist.  Those that came due while it was stopped fire first thing when it starts again.

Times (:func:`sleep`, :class:`Timeout`, :meth:`Hub.timer`, every ``timeout=``) follow gevent:
``inf`` and numbers too large for a float wait forever (killable), a negative time is 0, and
a non-number or NaN raises :class:`~greenhook.InvalidArgument` at the call (gevent lets NaN into
its timer heap, where it stalls every other timer; Python's own ``time.sleep`` refuses it).
"""
import errno
import heapq
import itertools
import os
import select
import sys
import threading
import traceback
from collections import deque
from time import monotonic

from greenlet import GreenletExit, getcurrent, greenlet

from greenhook.exceptions import BackendError, InvalidArgument

__all__ = [
    "Hub",
    "Greenlet",
    "Timeout",
    "LoopExit",
    "BlockingSwitchOutError",
    "get_hub",
    "get_hub_if_exists",
    "spawn",
    "joinall",
    "sleep",
    "run",
]

# poll(2) and epoll share bit values on Linux, so a poll mask goes straight to epoll once the
# bits epoll does not know (POLLNVAL) or would treat as flags are dropped.
_EPOLL_MASK = (
    select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
    | select.EPOLLRDNORM | select.EPOLLRDBAND | select.EPOLLWRNORM | select.EPOLLWRBAND
    | getattr(select, "EPOLLMSG", 0x400) | getattr(select, "EPOLLRDHUP", 0x2000)
)
# epoll always reports these, whatever was asked; they wake every waiter of the fd.
_ALWAYS = select.EPOLLERR | select.EPOLLHUP

# epoll_wait takes an int of milliseconds; longer sleeps just take more than one poll.
_MAX_POLL = 86400.0
# Cancelled timers stay in the heap until popped; compact it once they are the majority.
_COMPACT_MIN = 256

_heappush = heapq.heappush
_heappop = heapq.heappop

_INF = float("inf")


def _seconds(value, what):
    """``value`` (a number of seconds) as a float, for a deadline ``monotonic() + value``.

    Anything ``float()`` takes but a string: int, bool, Decimal, Fraction, numpy scalars.
    A number too large for a float is +/-inf (gevent raises OverflowError there, yet takes
    1e300: both mean "never").  NaN and non-numbers raise :class:`InvalidArgument`: a NaN
    deadline compares false with everything and would break the timer heap's order."""
    if value.__class__ is float:
        if value == value:
            return value
    elif not isinstance(value, (str, bytes, bytearray)):
        try:
            seconds = float(value)
        except OverflowError:
            return _INF if value > 0 else -_INF
        except (TypeError, ValueError):
            pass
        else:
            if seconds == seconds:
                return seconds
    raise InvalidArgument(
        "%s must be a number of seconds (inf: forever, <= 0: now), got %r" % (what, value))


def _timeout(value):
    """A ``timeout=`` argument: None (no deadline) or :func:`_seconds`."""
    return None if value is None else _seconds(value, "timeout")


def _compact(heap):
    """Drop the cancelled entries of a timer heap, in place: the loop holds a reference."""
    heap[:] = [entry for entry in heap if entry[2].callback is not None]
    heapq.heapify(heap)


class LoopExit(Exception):
    """Thrown into the main greenlet when it waits and the loop has nothing left that could
    ever wake it: no callbacks, no timers, no fd waiters.  Without it the program would hang."""


class BlockingSwitchOutError(AssertionError):
    """A blocking call was made from the hub greenlet (a loop callback), which cannot park."""


def _cannot_block():
    return BlockingSwitchOutError(
        "Impossible to call blocking function in the event loop callback")


class _Waiter:
    """One park's ticket: the greenlet to resume and, for an fd wait, its epoll mask.

    ``glet`` is cleared by the first wake and by the parked code's ``finally``; a wake that
    finds it cleared does nothing.  Wakes happen only in the hub greenlet.
    """

    __slots__ = ("glet", "events")

    def __init__(self, glet, events=0):
        self.glet = glet
        self.events = events

    def wake(self, value=True):
        glet = self.glet
        if glet is not None:
            self.glet = None
            glet.switch(value)


class _FdReg:
    """Everyone waiting on one fd; ``mask`` is the union registered with epoll.  ``gen``: the
    fd's generation in the hooks' per-fd table when the registration may outlive its last
    waiter (:meth:`Hub.wait_fd_gen`), else 0."""

    __slots__ = ("mask", "waiters", "gen")

    def __init__(self, mask, waiter, gen=0):
        self.mask = mask
        self.waiters = [waiter]
        self.gen = gen


class _Timer:
    """A timer in the hub's heap.  Cancelling only marks it (a heap cannot delete from the
    middle cheaply); the loop skips marked entries and compacts when they pile up."""

    __slots__ = ("hub", "callback", "args")

    def __init__(self, hub, callback, args):
        self.hub = hub
        self.callback = callback
        self.args = args

    @property
    def pending(self):
        return self.callback is not None

    def cancel(self):
        if self.callback is not None:
            self.callback = self.args = None
            self.hub._timer_cancelled()


class _TimerEx(_Timer):
    """A timer made with ``ref=False`` (kept in the hub's heap of unref'd timers) and/or with
    ``repeat``.  A repeating one puts its own :meth:`_fire` in the heap: the loop clears
    ``callback`` before calling it, as for any timer, and ``_fire`` re-arms the timer for the
    next period before calling the user's function, which may then cancel it."""

    __slots__ = ("ref", "repeat", "deadline", "func", "func_args")

    def __init__(self, hub, deadline, callback, args, ref, repeat):
        self.ref = ref
        self.repeat = repeat
        self.deadline = deadline
        if repeat is None:
            _Timer.__init__(self, hub, callback, args)
        else:
            self.func = callback
            self.func_args = args
            _Timer.__init__(self, hub, self._fire, ())

    def _push(self):
        hub = self.hub
        _heappush(hub._timers if self.ref else hub._unref_timers,
                  (self.deadline, next(hub._seq), self))

    def _fire(self):
        now = monotonic()
        deadline = self.deadline + self.repeat
        if deadline <= now:
            # Fell behind (a loop that was stopped or busy): one call now, no burst of
            # catch-up calls, then every ``repeat`` from here.
            deadline = now + self.repeat
        self.deadline = deadline
        self.callback = self._fire
        self.args = ()
        self._push()
        self.func(*self.func_args)

    def cancel(self):
        if self.callback is not None:
            self.callback = self.args = None
            if self.repeat is not None:
                self.func = self.func_args = None
            if self.ref:
                self.hub._timer_cancelled()
            else:
                self.hub._unref_timer_cancelled()


class Hub:
    """The event loop of one OS thread.  Use :func:`get_hub`, do not instantiate directly."""

    #: Errors that are not printed when they end a greenlet.
    NOT_ERROR = (GreenletExit, SystemExit)
    #: Errors that, escaping a greenlet or a callback, are re-raised in the main greenlet.
    SYSTEM_ERROR = (KeyboardInterrupt, SystemExit, SystemError)

    def __init__(self):
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        self.thread_ident = threading.get_ident()
        # The loop's parent is the thread's main greenlet: LoopExit and system errors go there.
        self.greenlet = greenlet(self._run_forever, parent=root)
        self._epoll = select.epoll()
        self._fds = {}              # fd -> _FdReg
        # fd -> _FdReg still registered with epoll after its last waiter left (wait_fd_gen):
        # the next wait on the same file reuses it; the loop removes whatever is still
        # idle before it polls.
        self._idle = {}
        self._timers = []           # heap of (deadline, seq, _Timer)
        self._ncancelled = 0        # cancelled _Timers still in the heap
        self._unref_timers = []     # heap of (deadline, seq, _TimerEx) made with ref=False
        self._nucancelled = 0       # cancelled ones still in that heap
        self._seq = itertools.count()
        self._ready = deque()       # (callback, args) to run on the next iteration
        self._run_waiters = []      # _Waiters of greenlets blocked in run()
        # Bumped on every registry change; tells a stale epoll registration from a race.
        self._mods = 0
        #: True from the moment the loop runs out of work (:meth:`run` returns, or
        #: :class:`LoopExit` is raised) until something switches to the hub again.
        self.exited = False

    def __repr__(self):
        return "<%s at 0x%x fds=%d timers=%d unref_timers=%d callbacks=%d%s>" % (
            type(self).__name__, id(self), len(self._fds),
            len(self._timers) - self._ncancelled,
            len(self._unref_timers) - self._nucancelled, len(self._ready),
            " exited" if self.exited else "")

    def has_work(self):
        """True when the loop has something that keeps it running: queued callbacks, ref'd
        timers or fd waiters (unref'd timers do not count).  Safe to call from any thread as
        a racy snapshot."""
        return bool(self._ready) or bool(self._fds) or len(self._timers) > self._ncancelled

    # -- the part the backends call: keep it lean --------------------------------------

    def can_switch(self):
        """False in the hub greenlet (the loop and its callbacks), which must never park."""
        return getcurrent() is not self.greenlet

    def wait_fd(self, fd, events, timeout=None):
        """Park until ``fd`` may be ready for the poll ``events`` (True) or ``timeout``
        seconds pass (False).  ``None`` waits forever; ``<= 0`` returns False at once.

        An fd epoll refuses as always ready (regular file: EPERM) or invalid (EBADF, where
        poll(2) would say POLLNVAL) returns True at once; a negative fd is ignored, as by
        poll(2).  Wakes may be spurious: the caller re-checks.  ``inf`` waits forever; NaN or
        a non-number raises :class:`InvalidArgument`."""
        if timeout is not None:
            timeout = _seconds(timeout, "timeout")
            if timeout <= 0:
                return False
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        if fd < 0:
            # poll(2) ignores negative fds: this is a plain sleep.
            return self._wait_nothing(glet, timeout)
        w = _Waiter(glet, (events & _EPOLL_MASK) | _ALWAYS)
        if not self._watch(fd, w):
            return True
        return self._park_on(fd, w, timeout)

    def _park_on(self, fd, w, timeout):
        """Switch to the loop with ``w`` watching ``fd`` (and a timer for ``timeout``)."""
        timer = None
        try:
            if timeout is not None:
                timer = self._add_timer(timeout, w.wake, False)
            return self.greenlet.switch()
        finally:
            # Runs on wake and on a thrown kill/Timeout alike: nothing may outlive the wait.
            w.glet = None
            if timer is not None:
                timer.cancel()
            self._remove_waiter(fd, w)

    def wait_fd_gen(self, fd, events, timeout, gen):
        """:meth:`wait_fd` for the hooks, with the fd's generation in their per-fd table
        (nonzero: they have just checked that the fd names the same open file as at the
        previous wait with this ``gen``).  The epoll registration then outlives the wait until
        the loop's next poll: a greenlet that waits on the same fd again before that (a
        request/response loop) costs no epoll_ctl at all.  A registration left from another
        generation, or with another mask, is re-armed with EPOLL_CTL_MOD (ENOENT: the kernel
        dropped it with the old file, so it is added again)."""
        if timeout is not None:
            timeout = _seconds(timeout, "timeout")
            if timeout <= 0:
                return False
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        w = _Waiter(glet, (events & _EPOLL_MASK) | _ALWAYS)
        reg = self._idle.pop(fd, None)
        if reg is not None and fd not in self._fds:
            if reg.gen != gen or reg.mask != w.events:
                try:
                    if not self._ctl(fd, w.events, False):
                        return True
                except (OSError, ValueError) as exc:
                    raise BackendError("the built-in hub could not watch fd %d: %s"
                                       % (fd, exc)) from exc
                reg.mask = w.events
            reg.waiters = [w]
            self._fds[fd] = reg
            self._mods += 1
        elif not self._watch(fd, w):
            return True
        self._fds[fd].gen = gen
        return self._park_on(fd, w, timeout)

    def _reap_idle(self):
        """Remove the registrations no wait came back for (before the loop polls)."""
        idle = self._idle
        ep = self._epoll
        for fd in idle:
            try:
                ep.unregister(fd)
            except (OSError, ValueError):
                pass    # closed (the kernel dropped it) or the hub was destroyed
        idle.clear()

    def wait_fds(self, fds, timeout=None):
        """Like :meth:`wait_fd` for a list of ``(fd, poll_events)``; True when any may be ready."""
        if len(fds) == 1:
            fd, events = fds[0]
            return self.wait_fd(fd, events, timeout)
        if timeout is not None:
            timeout = _seconds(timeout, "timeout")
            if timeout <= 0:
                return False
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        # One registration per fd: a list may name the same fd twice (poll allows it).
        masks = {}
        for fd, events in fds:
            if fd >= 0:
                masks[fd] = masks.get(fd, 0) | events
        if not masks:
            return self._wait_nothing(glet, timeout)
        added = []
        timer = None
        try:
            for fd, events in masks.items():
                w = _Waiter(glet, (events & _EPOLL_MASK) | _ALWAYS)
                if not self._watch(fd, w):
                    return True
                added.append((fd, w))
            if timeout is not None:
                timer = self._add_timer(timeout, w.wake, False)
            return self.greenlet.switch()
        finally:
            for fd, w in added:
                w.glet = None
            if timer is not None:
                timer.cancel()
            for fd, w in added:
                self._remove_waiter(fd, w)

    def sleep(self, seconds=0):
        """Park for ``seconds``; ``0`` (or less) lets every other runnable greenlet run once
        first; ``inf`` parks until killed.  NaN, None or a non-number raises
        :class:`InvalidArgument` (gevent: TypeError for None)."""
        seconds = _seconds(seconds, "sleep() seconds")
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        w = _Waiter(glet)
        timer = None
        if seconds <= 0:
            self._ready.append((w.wake, (None,)))
        else:
            timer = self._add_timer(seconds, w.wake, None)
        try:
            self.greenlet.switch()
        finally:
            w.glet = None
            if timer is not None:
                timer.cancel()

    def _wait_nothing(self, glet, timeout):
        # A wait on no fd at all: sleep, or park with no way back but an exception
        # (LoopExit if nothing else is alive).
        w = _Waiter(glet)
        self._park(w, timeout)
        return False

    def _park(self, w, timeout=None):
        """Switch to the loop until ``w`` is woken or ``timeout`` passes; the caller has
        already made ``w`` reachable by whoever should wake it, and checked ``timeout``
        with :func:`_timeout`."""
        if w.glet is self.greenlet:
            raise _cannot_block()
        timer = None
        if timeout is not None:
            timer = self._add_timer(max(timeout, 0), w.wake, False)
        try:
            return self.greenlet.switch()
        finally:
            w.glet = None
            if timer is not None:
                timer.cancel()

    # -- fd registry ---------------------------------------------------------------------

    def _ctl(self, fd, mask, add):
        """EPOLL_CTL_ADD/MOD; False when the fd counts as always ready for poll(2):
        EPERM (a regular file or directory) or EBADF (poll says POLLNVAL at once)."""
        ep = self._epoll
        try:
            if add:
                ep.register(fd, mask)
            else:
                ep.modify(fd, mask)
        except OSError as ex:
            if ex.errno in (errno.EPERM, errno.EBADF):
                return False
            if ex.errno == errno.EEXIST:
                # A registration survived an earlier DEL that failed on a closed fd, and
                # the number now names the same file again.
                ep.modify(fd, mask)
            elif ex.errno == errno.ENOENT:
                # The fd was closed while we waited on it (the kernel dropped it) and the
                # number reused: this is a new file.
                return self._ctl(fd, mask, True)
            else:
                raise
        return True

    def _watch(self, fd, w):
        """``_add_waiter``, with epoll's own failures (not the caller's fd being always ready)
        raised as BackendError: the wait was never set up, nothing was thrown in."""
        try:
            return self._add_waiter(fd, w)
        except (OSError, ValueError) as exc:
            raise BackendError("the built-in hub could not watch fd %d: %s" % (fd, exc)) from exc

    def _add_waiter(self, fd, w):
        reg = self._fds.get(fd)
        if reg is None:
            # A registration kept idle (wait_fd_gen) is in the kernel still, unless its file
            # was closed: MOD, which adds on ENOENT.
            if not self._ctl(fd, w.events, self._idle.pop(fd, None) is None):
                return False
            self._fds[fd] = _FdReg(w.events, w)
        else:
            mask = reg.mask | w.events
            if mask != reg.mask:
                if not self._ctl(fd, mask, False):
                    return False
                reg.mask = mask
            reg.waiters.append(w)
        self._mods += 1
        return True

    def _remove_waiter(self, fd, w):
        reg = self._fds.get(fd)
        if reg is None:
            return
        waiters = reg.waiters
        try:
            waiters.remove(w)
        except ValueError:
            return
        self._mods += 1
        if not waiters:
            del self._fds[fd]
            if reg.gen:
                # Kept until the loop's next poll (wait_fd_gen): a close and reuse of the number
                # before the next wait shows as a new generation there.
                self._idle[fd] = reg
                return
            # Never leave a registration behind: the caller may close the fd right after and
            # the number come back as another file.
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass    # already closed (the kernel dropped it) or the hub was destroyed
            return
        # Narrow the mask too: a leftover POLLOUT on a writable socket would spin the loop.
        mask = 0
        for other in waiters:
            mask |= other.events
        if mask != reg.mask:
            reg.mask = mask
            try:
                self._epoll.modify(fd, mask)
            except (OSError, ValueError):
                pass

    def _rebuild_epoll(self):
        """Start a fresh epoll set from the registry.

        Needed after fork (the child shares the parent's epoll set) and when epoll reports an
        fd we have no waiter for: a registration we can no longer DEL because its fd number
        was closed while a dup kept the file open.  Waiters whose fd no longer registers are
        woken (spuriously: they re-check)."""
        old = self._epoll
        self._idle.clear()
        self._epoll = select.epoll()
        try:
            old.close()
        except OSError:
            pass
        for fd, reg in list(self._fds.items()):
            if not self._ctl(fd, reg.mask, True):
                del self._fds[fd]
                for w in reg.waiters:
                    self._ready.append((w.wake, (True,)))
        self._mods += 1

    # -- timers and callbacks --------------------------------------------------------------

    def timer(self, seconds, callback, *args, ref=True, repeat=None):
        """Call ``callback(*args)`` in the hub greenlet after ``seconds``; returns an object
        with ``cancel()`` and ``pending``.

        ``ref=False``: the timer fires while the loop runs for other reasons but does not keep
        it running: with nothing else left, :meth:`run` returns and a waiting main greenlet
        gets :class:`LoopExit` as if the timer did not exist.  One that comes due while the
        loop is stopped fires first thing when it starts again.

        ``repeat``: seconds (> 0); the timer fires again every ``repeat`` seconds after the
        first call until cancelled (``pending`` stays True).  A loop that falls behind gets
        one call, not a burst of catch-up calls.

        ``seconds`` <= 0 fires on the next iteration, ``inf`` never; NaN or a non-number
        raises :class:`InvalidArgument`, as does a ``repeat`` that is not > 0 (a zero period
        would spin the loop)."""
        seconds = _seconds(seconds, "timer() seconds")
        if ref and repeat is None:
            t = _Timer(self, callback, args)
            _heappush(self._timers, (monotonic() + seconds, next(self._seq), t))
            return t
        if repeat is not None:
            repeat = _seconds(repeat, "timer() repeat")
            if not repeat > 0:
                raise InvalidArgument(
                    "timer() repeat must be a positive number of seconds, got %r" % (repeat,))
        t = _TimerEx(self, monotonic() + seconds, callback, args, bool(ref), repeat)
        t._push()
        return t

    def _add_timer(self, seconds, callback, *args):
        # timer() for the waits in this module: a plain ref'd one-shot timer, without the
        # cost of timer()'s keyword-only options on the hot path.  ``seconds`` has been
        # through _seconds() (never NaN: it would break the heap's order).
        t = _Timer(self, callback, args)
        _heappush(self._timers, (monotonic() + seconds, next(self._seq), t))
        return t

    def _timer_cancelled(self):
        self._count_cancelled(self._timers, "_ncancelled")

    def _unref_timer_cancelled(self):
        self._count_cancelled(self._unref_timers, "_nucancelled")

    def _count_cancelled(self, heap, counter):
        # Cancelled timers stay in their heap until popped; compact when they are the majority.
        n = getattr(self, counter) + 1
        if n > _COMPACT_MIN and n * 2 > len(heap):
            _compact(heap)
            n = 0
        setattr(self, counter, n)

    def run_callback(self, callback, *args):
        """Call ``callback(*args)`` in the hub greenlet on the next loop iteration."""
        self._ready.append((callback, args))

    # -- the loop --------------------------------------------------------------------------

    def _run_forever(self):
        while True:
            self.exited = False
            try:
                self._loop()
            except GreenletExit:
                raise           # destroy() or garbage collection: let the greenlet die
            except BaseException:
                self.handle_error(self, *sys.exc_info())
                continue
            self.exited = True
            # Nothing left to do.  Those waiting for exactly that go first ...
            if self._run_waiters:
                self._run_waiters.pop(0).wake(None)
            else:
                # ... otherwise the main greenlet is parked on something that will never come.
                self.greenlet.parent.throw(
                    LoopExit("This operation would block forever", self))

    def _loop(self):
        """Iterate until nothing is left; returns then."""
        ready = self._ready
        timers = self._timers
        unref = self._unref_timers
        fds = self._fds
        if unref:
            # Unref'd timers that came due while the loop was stopped.
            self._run_due(self._unref_timers, "_nucancelled")
        while True:
            # Only the callbacks queued before this iteration: the ones they queue wait for
            # the next one, after a poll, so sleep(0) is fair and I/O is never starved.
            for _ in range(len(ready)):
                callback, args = ready.popleft()
                try:
                    callback(*args)
                except GreenletExit:
                    raise
                except BaseException:
                    self.handle_error(callback, *sys.exc_info())

            if self._idle:
                self._reap_idle()
            if ready:
                timeout = 0
            else:
                while timers and timers[0][2].callback is None:
                    _heappop(timers)
                    self._ncancelled -= 1
                if timers:
                    timeout = min(max(timers[0][0] - monotonic(), 0), _MAX_POLL)
                elif fds:
                    timeout = -1
                else:
                    return
                # Unref'd timers shorten the poll but never keep the loop going.
                if unref:
                    timeout = self._unref_timeout(timeout)

            # Python retries EINTR itself (PEP 475); a signal handler's exception propagates
            # to _run_forever, which forwards KeyboardInterrupt to the main greenlet.
            try:
                events = self._epoll.poll(timeout)
            except OSError:
                # Our epoll fd was closed under us (a library closing "all" fds): start over
                # once; a second failure is real and propagates.
                self._rebuild_epoll()
                events = self._epoll.poll(timeout)
            if events:
                self._dispatch(events)
            if timers:
                self._run_due(self._timers, "_ncancelled")
            if unref:
                self._run_due(self._unref_timers, "_nucancelled")

    def _dispatch(self, events):
        fds = self._fds
        mods = self._mods
        for fd, ev in events:
            woke = False
            reg = fds.get(fd)
            if reg is not None:
                # A copy: a woken greenlet runs right away and may come back to this fd.
                for w in reg.waiters[:]:
                    if ev & w.events:
                        glet = w.glet
                        if glet is not None:
                            w.glet = None
                            woke = True
                            try:
                                glet.switch(True)
                            except GreenletExit:
                                raise
                            except BaseException:
                                # Only a raw greenlet whose parent is the hub gets here.
                                self.handle_error(glet, *sys.exc_info())
            if not woke and self._mods == mods:
                # Nobody wanted it and no registration changed since the poll, so this is
                # no race: epoll holds a registration we cannot see or DEL any more.
                self._rebuild_epoll()
                return      # the rest of this batch came from the old set; poll again

    def _run_due(self, heap, counter):
        """Run the due timers of ``heap`` (ref'd or unref'd; ``counter`` names its count of
        cancelled timers).  One "now" for the pass: timers added by the greenlets woken here
        wait for the next pass, so a greenlet re-arming a short timer cannot starve the loop."""
        now = monotonic()
        while heap and heap[0][0] <= now:
            t = _heappop(heap)[2]
            callback = t.callback
            if callback is None:
                setattr(self, counter, getattr(self, counter) - 1)
                continue
            args = t.args
            t.callback = t.args = None
            try:
                callback(*args)
            except GreenletExit:
                raise
            except BaseException:
                self.handle_error(t, *sys.exc_info())

    def _unref_timeout(self, timeout):
        """The poll timeout shortened to the nearest unref'd timer (``timeout`` -1: none)."""
        unref = self._unref_timers
        while unref and unref[0][2].callback is None:
            _heappop(unref)
            self._nucancelled -= 1
        if unref:
            due = min(max(unref[0][0] - monotonic(), 0), _MAX_POLL)
            if timeout < 0 or due < timeout:
                return due
        return timeout

    # -- errors ----------------------------------------------------------------------------

    def handle_error(self, context, type, value, tb):
        """Report an exception that nobody else will see: print it (except GreenletExit and
        SystemExit) and re-raise KeyboardInterrupt/SystemExit/SystemError in the main greenlet."""
        if not issubclass(type, self.NOT_ERROR):
            self.print_exception(context, type, value, tb)
        if issubclass(type, self.SYSTEM_ERROR):
            self.handle_system_error(value)

    def print_exception(self, context, type, value, tb):
        """Print the traceback and ``<context> failed with <type>`` to stderr, as gevent's
        hub does.  A context whose repr raises is named by its type instead: the report of
        one error must not become a second one that stops the loop."""
        stderr = sys.stderr
        if stderr is None:
            return      # pythonw, or stderr closed on purpose: nowhere to report
        traceback.print_exception(type, value, tb, file=stderr)
        try:
            name = repr(context)
        except Exception as exc:
            name = "<%s object at 0x%x (repr failed: %s: %s)>" % (
                context.__class__.__name__, id(context), exc.__class__.__name__, exc)
        stderr.write("%s failed with %s\n\n" % (name, type.__name__))
        try:
            stderr.flush()
        except (OSError, ValueError):
            pass        # stderr is a closed pipe or file: there is nowhere left to report to

    def handle_system_error(self, value):
        main = self.greenlet.parent
        current = getcurrent()
        if current is main:
            raise value
        if current is self.greenlet:
            main.throw(value)
        else:
            # A dying greenlet must finish first; the loop delivers it.
            self.run_callback(main.throw, value)

    # -- whole-loop operations ---------------------------------------------------------------

    def run(self):
        """Park the current greenlet until the loop has nothing left to do."""
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        w = _Waiter(glet)
        self._run_waiters.append(w)
        try:
            while w.glet is not None:
                self.greenlet.switch()
        finally:
            w.glet = None
            try:
                self._run_waiters.remove(w)
            except ValueError:
                pass

    join = run

    def destroy(self):
        """Kill the loop, close the epoll set and forget this hub; the next :func:`get_hub`
        in this thread makes a new one.  Greenlets still parked here never resume.  Call it
        from the thread's main greenlet."""
        if getattr(_tls, "hub", None) is self:
            del _tls.hub
        glet = self.greenlet
        if glet and threading.get_ident() == self.thread_ident and getcurrent() is glet.parent:
            glet.throw(GreenletExit)
        self._fds.clear()
        self._timers.clear()
        self._ncancelled = 0
        self._unref_timers.clear()
        self._nucancelled = 0
        self._ready.clear()
        del self._run_waiters[:]
        self._epoll.close()


_tls = threading.local()


def get_hub():
    """This thread's hub, made on first use."""
    try:
        return _tls.hub
    except AttributeError:
        hub = _tls.hub = Hub()
        return hub


def get_hub_if_exists():
    """This thread's hub, or None; never makes one."""
    return getattr(_tls, "hub", None)


def _after_fork_in_child():
    # The child shares the parent's epoll set: registering or removing anything in it would
    # change what the parent sees.  Give the surviving thread's hub its own.
    hub = getattr(_tls, "hub", None)
    if hub is not None:
        hub._rebuild_epoll()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- greenlets -------------------------------------------------------------------------------


class _SpawnedLink:
    """A :meth:`Greenlet.link` callback: runs in a new greenlet so it may block."""

    __slots__ = ("callback",)

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, source):
        Greenlet.spawn(self.callback, source)

    def __eq__(self, other):
        return self.callback == getattr(other, "callback", other)

    def __hash__(self):
        return hash(self.callback)


class Greenlet(greenlet):
    """A greenlet run by the hub: started on the next loop iteration, its result or
    exception kept for :meth:`get`/:meth:`join`, an escaping exception printed once."""

    def __init__(self, run=None, *args, **kwargs):
        hub = get_hub()
        greenlet.__init__(self, parent=hub.greenlet)
        if run is not None:
            self._run = run
        self.args = args
        self.kwargs = kwargs
        self.value = None
        self.exception = None
        self._hub = hub
        self._links = []
        self._started = False
        self._start_pending = False
        self._done = False
        self._notify_pending = False

    @classmethod
    def spawn(cls, run, *args, **kwargs):
        g = cls(run, *args, **kwargs)
        g.start()
        return g

    def __repr__(self):
        func = getattr(self, "_run", None)
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or func
        return "<%s at 0x%x: %s>" % (type(self).__name__, id(self), name)

    def _run(self):
        """Override in a subclass, or pass ``run`` to the constructor."""
        return None

    # state

    @property
    def dead(self):
        # Also dead when killed before it ever ran (the raw greenlet then never starts).
        return self._done or greenlet.dead.__get__(self, greenlet)

    @property
    def started(self):
        return self._started or self._start_pending

    def ready(self):
        """True once finished, whether by returning, raising or being killed."""
        return self._done

    def successful(self):
        return self._done and self.exception is None

    # lifecycle

    def start(self):
        if not self._started and not self._start_pending and not self._done:
            self._start_pending = True
            self._hub._ready.append((self._start_now, ()))

    def _start_now(self):
        if self._start_pending:
            self._start_pending = False
            self._started = True
            self.switch()

    def run(self):
        self._started = True
        try:
            try:
                result = self._run(*self.args, **self.kwargs)
            except GreenletExit as ex:
                self._report_result(ex)     # a kill is a normal end, like gevent
            except BaseException as ex:
                self._report_error(ex)
            else:
                self._report_result(result)
        finally:
            # Break the cycles through the function and its arguments.
            self.__dict__.pop("_run", None)
            self.args = ()
            self.kwargs = {}

    def _report_result(self, result):
        self.value = result
        self._finish()

    def _report_error(self, exc):
        self.exception = exc
        self._finish()
        self._hub.handle_error(self, type(exc), exc, exc.__traceback__)

    def _finish(self):
        self._done = True
        if self._links:
            self._schedule_notify()

    def kill(self, exception=GreenletExit, block=True, timeout=None):
        """Throw ``exception`` into the greenlet (from the loop) and, if ``block``, wait up to
        ``timeout`` for it to end.  A greenlet that has not started yet never runs."""
        timeout = _timeout(timeout)
        if self._done:
            return
        if not self._started:
            self._start_pending = False
            exc = exception() if isinstance(exception, type) else exception
            self.__dict__.pop("_run", None)
            self.args = ()
            self.kwargs = {}
            if isinstance(exc, GreenletExit):
                self._report_result(exc)
            else:
                self._report_error(exc)
            return
        if getcurrent() is self:
            raise exception
        self._hub.run_callback(self._throw, exception)
        if block and self._hub.can_switch():
            self.join(timeout)

    def _throw(self, exception):
        if not self.dead:
            self.throw(exception)

    def join(self, timeout=None):
        """Wait until the greenlet ends or ``timeout`` passes; never raises its exception."""
        timeout = _timeout(timeout)
        if self._done:
            return
        w = _Waiter(getcurrent())
        self.rawlink(w.wake)
        try:
            self._hub._park(w, timeout)
        finally:
            self.unlink(w.wake)

    def get(self, timeout=None):
        """The greenlet's return value; raises its exception, or :class:`Timeout`."""
        timeout = _timeout(timeout)
        if not self._done:
            self.join(timeout)
            if not self._done:
                raise Timeout(timeout)
        if self.exception is not None:
            raise self.exception
        return self.value

    # links

    def rawlink(self, callback):
        """Call ``callback(self)`` in the hub greenlet once it ends (it must not block)."""
        self._links.append(callback)
        if self._done:
            self._schedule_notify()

    def link(self, callback):
        """Call ``callback(self)`` in a new greenlet once it ends."""
        self.rawlink(_SpawnedLink(callback))

    def unlink(self, callback):
        try:
            self._links.remove(callback)
        except ValueError:
            pass

    def _schedule_notify(self):
        if not self._notify_pending:
            self._notify_pending = True
            self._hub._ready.append((self._notify_links, ()))

    def _notify_links(self):
        self._notify_pending = False
        links = self._links
        while links:
            link = links.pop(0)
            try:
                link(self)
            except GreenletExit:
                raise
            except BaseException:
                self._hub.handle_error((link, self), *sys.exc_info())


# -- timeouts ----------------------------------------------------------------------------------


class Timeout(BaseException):
    """Raise in the greenlet that started it after ``seconds`` (``None``: never).

    ``exception`` as in gevent: ``None`` raises the Timeout itself, an exception class or
    instance raises that, ``False`` raises the Timeout and the ``with`` block swallows it.

        with Timeout(0.2):
            hub.wait_fd(fd, POLLIN)     # Timeout raised here after 0.2 s
    """

    def __init__(self, seconds=None, exception=None):
        BaseException.__init__(self)
        if seconds is not None:
            # Refused here, as gevent refuses a non-number: a NaN deadline would stall the
            # hub's other timers (gevent's too).  inf: never fires; <= 0: at the next turn.
            _seconds(seconds, "Timeout seconds")
        self.seconds = seconds
        self.exception = exception
        self.timer = None

    @classmethod
    def start_new(cls, seconds=None, exception=None):
        t = cls(seconds, exception)
        t.start()
        return t

    @property
    def pending(self):
        return self.timer is not None and self.timer.pending

    def start(self):
        if self.pending:
            raise AssertionError("%r is already started; cancel it first" % (self,))
        if self.seconds is not None:
            self.timer = get_hub()._add_timer(
                _seconds(self.seconds, "Timeout seconds"), self._expire, getcurrent())
        return self

    def _expire(self, glet):
        self.timer = None
        if glet.dead:
            return
        exc = self.exception
        if exc is None or exc is False:
            exc = self
        glet.throw(exc)

    def cancel(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    close = cancel

    def __enter__(self):
        if not self.pending:
            self.start()
        return self

    def __exit__(self, typ, value, tb):
        self.cancel()
        if value is self and self.exception is False:
            return True
        return None

    def __repr__(self):
        return "<%s at 0x%x seconds=%r exception=%r pending=%s>" % (
            type(self).__name__, id(self), self.seconds, self.exception, self.pending)

    def __str__(self):
        if self.seconds is None:
            return ""
        suffix = "" if self.seconds == 1 else "s"
        if self.exception is None or self.exception is False:
            return "%s second%s" % (self.seconds, suffix)
        return "%s second%s: %s" % (self.seconds, suffix, self.exception)


# -- module-level API --------------------------------------------------------------------------


def spawn(fn, *args, **kwargs):
    """Make a :class:`Greenlet` running ``fn(*args, **kwargs)``, started on the next iteration."""
    return Greenlet.spawn(fn, *args, **kwargs)


def sleep(seconds=0):
    """Park the current greenlet; ``sleep(0)`` lets every other runnable greenlet run once."""
    get_hub().sleep(seconds)


def run():
    """Run the loop until nothing is left: no runnable greenlets, timers or fd waiters."""
    get_hub().run()


def joinall(greenlets, timeout=None, raise_error=False):
    """Wait for all ``greenlets`` (or ``timeout``); returns those that finished, in the order
    they finished.  With ``raise_error``, the first failure ends the wait and is raised."""
    timeout = _timeout(timeout)
    greenlets = list(greenlets)
    done = [g for g in greenlets if g.ready()]
    pending = [g for g in greenlets if not g.ready()]
    failed = [g for g in done if g.exception is not None]
    if pending and not (raise_error and failed):
        w = _Waiter(getcurrent())
        left = len(pending)

        def on_done(g):
            nonlocal left
            done.append(g)
            left -= 1
            if not left or (raise_error and g.exception is not None):
                w.wake(None)

        for g in pending:
            g.rawlink(on_done)
        try:
            get_hub()._park(w, timeout)
        finally:
            for g in pending:
                g.unlink(on_done)
    if raise_error:
        for g in done:
            if g.exception is not None:
                raise g.exception
    return done
