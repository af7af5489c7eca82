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

The registry, the wait paths, the loop and the timer heaps are compiled
(``greenhook._hubcore``, Cython): a wait and a wake cost no Python frame of their own, and the
hooks reach the wait path through the backend's C face without a Python call.

Times (:func:`sleep`, :class:`Timeout`, :meth:`Hub.timer`, every ``timeout=``) follow gevent:
``inf`` and numbers too large for a float wait forever (killable), a negative time is 0, and
a non-number or NaN raises :class:`~greenhook.InvalidArgument` at the call (gevent lets NaN into
its timer heap, where it stalls every other timer; Python's own ``time.sleep`` refuses it).
"""
import heapq
import os
import sys
import threading
import traceback

from greenlet import GreenletExit, getcurrent, greenlet

from greenhook.exceptions import InvalidArgument

try:
    from greenhook import _hubcore
except ImportError as _exc:     # pragma: no cover - non-Linux: the compiled core is not built
    raise ImportError("greenhook's built-in hub needs the compiled core (Linux, epoll): %s"
                      % (_exc,)) from _exc
from greenhook._hubcore import (  # noqa: F401 (re-exported)
    BlockingSwitchOutError,
    HubCore,
    Timer as _Timer,
    Waiter as _Waiter,
    _cannot_block,
    _seconds,
    _timeout,
    get_hub,
    get_hub_if_exists,
    monotonic,
)

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

_heappush = heapq.heappush



class LoopExit(Exception):
    """Thrown into the main greenlet when it waits and the loop has nothing left that could
    ever wake it: no callbacks, no timers, no fd waiters.  Without it the program would hang."""


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


class Hub(HubCore):
    """The event loop of one OS thread.  Use :func:`get_hub`, do not instantiate directly.

    The fd registry, the wait paths, the timer heaps and the loop itself are the compiled
    :class:`greenhook._hubcore.HubCore`; this class adds what is not on the hot path."""

    #: Errors that are not printed when they end a greenlet.
    NOT_ERROR = (GreenletExit, SystemExit)
    #: Errors that, escaping a greenlet or a callback, are re-raised in the main greenlet.
    SYSTEM_ERROR = (KeyboardInterrupt, SystemExit, SystemError)

    def __init__(self):
        HubCore.__init__(self, self._run_forever)

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
            return self._add_timer(seconds, callback, *args)
        if repeat is not None:
            repeat = _seconds(repeat, "timer() repeat")
            if not repeat > 0:
                raise InvalidArgument(
                    "timer() repeat must be a positive number of seconds, got %r" % (repeat,))
        t = _TimerEx(self, monotonic() + seconds, callback, args, bool(ref), repeat)
        t._push()
        return t

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
        _hubcore._forget_hub(self)
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
        self._close_epoll()


def _after_fork_in_child():
    # The child shares the parent's epoll set: registering or removing anything in it would
    # change what the parent sees.  Give the surviving thread's hub its own.
    hub = get_hub_if_exists()
    if hub is not None:
        hub._rebuild_epoll()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_hubcore._set_hub_class(Hub)


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
