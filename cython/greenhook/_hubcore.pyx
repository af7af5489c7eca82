# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The built-in hub's wait path and loop, in C: fd registry, epoll loop, timer heap, ready queue.

``greenhook.hub`` is the Python face (``Hub`` is a subclass of :class:`HubCore`; greenlets,
timeouts, ``run``/``destroy``, error reporting stay there).  What runs on every wait and
every loop iteration is here:

* ``wait_fd``/``wait_fd_gen``/``wait_fds``/``sleep`` and the park/unpark tail;
* the fd registry (``_fds``: fd -> :class:`FdReg`, a union mask and its waiters) and the
  registrations kept idle between two waits on the same file (``_idle``), with ``epoll_ctl``
  called directly;
* the loop: the callbacks queued before the iteration, ``epoll_wait`` (GIL released) into a
  C array, dispatch, due timers.  EINTR runs Python's signal handlers and polls again with
  the time left; a KeyboardInterrupt raised by a handler propagates as before;
* the timer heaps (``_timers``/``_unref_timers``: ``(deadline, seq, timer)`` entries kept in
  heap order with the C ``heapq`` functions);
* the C face of the built-in backend (``C_API``, ``includes/gh_backend.h``): the hooks call
  :func:`_api_wait_fd` without a Python call or a boxed argument.

Semantics are those documented in ``greenhook.hub``; the tests of that module are the tests
of this one.  This module imports nothing of greenhook but the exceptions (``hub.py`` imports
it, never the other way); ``hub.py`` registers the ``Hub`` class (:func:`_set_hub_class`) so
that :func:`get_hub` can make one.
"""

from cpython.pycapsule cimport PyCapsule_New
from cpython.exc cimport PyErr_CheckSignals
from cpython.dict cimport PyDict_GetItem
from cpython.pystate cimport PyThreadState_GetDict
from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t, int64_t, uint64_t
from libc.errno cimport errno, EINTR, EPERM, EBADF, EEXIST, ENOENT
from libc.math cimport ceil

from gh_backend cimport *

import heapq
import itertools
import select
import threading
from collections import deque

from greenlet import GreenletExit, getcurrent, greenlet as _greenlet

from greenhook.exceptions import BackendError, InvalidArgument

cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        int fd
        unsigned long long u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    enum:
        EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL

cdef extern from "time.h" nogil:
    ctypedef int clockid_t
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *ts)
    enum:
        CLOCK_MONOTONIC

# poll(2) and epoll share bit values on Linux, so a poll mask goes straight to epoll once the
# bits epoll does not know (POLLNVAL) or would treat as flags are dropped.
cdef int _EPOLL_MASK = (
    select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
    | select.EPOLLRDNORM | select.EPOLLRDBAND | select.EPOLLWRNORM | select.EPOLLWRBAND
    | getattr(select, "EPOLLMSG", 0x400) | getattr(select, "EPOLLRDHUP", 0x2000)
)
# epoll always reports these, whatever was asked; they wake every waiter of the fd.
cdef int _ALWAYS = select.EPOLLERR | select.EPOLLHUP

# epoll_wait takes an int of milliseconds; longer sleeps just take more than one poll.
cdef double _MAX_POLL = 86400.0
# Cancelled timers stay in the heap until popped; compact it once they are the majority.
cdef Py_ssize_t _COMPACT_MIN = 256
# Events taken per epoll_wait (what select.epoll.poll takes by default).
cdef enum:
    _MAXEVENTS = 1023

cdef double _INF = float("inf")
cdef tuple _WOKEN = (True,)     # what a greenlet woken by its fd gets back from its park

_heappush = heapq.heappush
_heappop = heapq.heappop
_heapify = heapq.heapify


cdef inline double _now() noexcept nogil:
    """time.monotonic(): CLOCK_MONOTONIC in seconds."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def monotonic():
    return _now()


# -- exceptions and argument checks ---------------------------------------------------------


class BlockingSwitchOutError(AssertionError):
    """A blocking call was made from the hub greenlet (a loop callback), which cannot park."""


BlockingSwitchOutError.__module__ = "greenhook.hub"


def _cannot_block():
    return BlockingSwitchOutError(
        "Impossible to call blocking function in the event loop callback")


cpdef double _seconds(object value, str what) except? -1.0:
    """``value`` (a number of seconds) as a float, for a deadline ``monotonic() + value``.

    Anything ``float()`` takes but a string: int, bool, Decimal, Fraction, numpy scalars.
    A number too large for a float is +/-inf (gevent raises OverflowError there, yet takes
    1e300: both mean "never").  NaN and non-numbers raise :class:`InvalidArgument`: a NaN
    deadline compares false with everything and would break the timer heap's order."""
    cdef double seconds
    if type(value) is float:
        seconds = value
        if seconds == seconds:
            return seconds
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


def _compact(list heap):
    """Drop the cancelled entries of a timer heap, in place: the loop holds a reference."""
    heap[:] = [entry for entry in heap if (<Timer>entry[2]).callback is not None]
    _heapify(heap)


# -- the objects of the registry -----------------------------------------------------------


cdef class Waiter:
    """One park's ticket: the greenlet to resume and, for an fd wait, its epoll mask.

    ``glet`` is cleared by the first wake and by the parked code's ``finally``; a wake that
    finds it cleared does nothing.  Wakes happen only in the hub greenlet.
    """

    cdef public object glet
    cdef public int events

    def __init__(self, glet, int events=0):
        self.glet = glet
        self.events = events

    def wake(self, value=True):
        glet = self.glet
        if glet is not None:
            self.glet = None
            glet.switch(value)


cdef inline Waiter _new_waiter(object glet, int events):
    cdef Waiter w = Waiter.__new__(Waiter)
    w.glet = glet
    w.events = events
    return w


cdef class FdReg:
    """Everyone waiting on one fd; ``mask`` is the union registered with epoll.  ``gen``: the
    fd's generation in the hooks' per-fd table when the registration may outlive its last
    waiter (:meth:`HubCore.wait_fd_gen`), else 0."""

    cdef public int mask
    cdef public list waiters
    cdef public unsigned int gen
    # The id in the epoll data of this registration (with the fd): an event of a registration
    # the kernel still holds for a file the number no longer names carries an older id.
    cdef public uint32_t rid

    def __init__(self, int mask, waiter, unsigned int gen=0):
        self.mask = mask
        self.waiters = [waiter]
        self.gen = gen
        self.rid = 0


cdef class Timer:
    """A timer in the hub's heap.  Cancelling only marks it (a heap cannot delete from the
    middle cheaply); the loop skips marked entries and compacts when they pile up."""

    cdef public object hub
    cdef public object callback
    cdef public object args

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
            (<HubCore>self.hub)._count_cancelled(True)


# -- the hub ----------------------------------------------------------------------------------


cdef class HubCore:
    """The event loop's state and hot paths; ``greenhook.hub.Hub`` is the class to use."""

    cdef public object greenlet
    cdef public object thread_ident
    cdef object _epoll_obj              # a select.epoll (``_epoll``): its fd is used directly
    cdef int _epfd                      # its fd, -1 once closed by destroy()
    cdef public dict _fds               # fd -> FdReg
    # fd -> FdReg still registered with epoll after its last waiter left (wait_fd_gen): the
    # next wait on the same file reuses it; one that fires with nobody waiting is removed
    # then (unsolicited data, EOF, a writable socket).  At most one entry per fd number.
    cdef public dict _idle
    cdef public list _timers            # heap of (deadline, seq, Timer)
    cdef public Py_ssize_t _ncancelled  # cancelled Timers still in that heap
    cdef public list _unref_timers      # heap of (deadline, seq, Timer) made with ref=False
    cdef public Py_ssize_t _nucancelled
    cdef public object _seq
    cdef public object _ready           # deque of (callback, args) for the next iteration
    cdef public list _run_waiters       # Waiters of greenlets blocked in run()
    # Bumped on every registry change; tells a stale epoll registration from a race.
    cdef public unsigned long _mods
    #: True from the moment the loop runs out of work until something switches to it again.
    cdef public bint exited
    cdef object _switch                 # self.greenlet.switch
    cdef uint32_t _rid                  # the last registration id given out
    cdef epoll_event _events[_MAXEVENTS]

    def __init__(self, run):
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        self.thread_ident = threading.get_ident()
        # The loop's parent is the thread's main greenlet: LoopExit and system errors go there.
        self.greenlet = _greenlet(run, parent=root)
        self._switch = self.greenlet.switch
        self._epoll = select.epoll()
        self._fds = {}
        self._idle = {}
        self._timers = []
        self._ncancelled = 0
        self._unref_timers = []
        self._nucancelled = 0
        self._seq = itertools.count()
        self._ready = deque()
        self._run_waiters = []
        self._mods = 0
        self.exited = False

    @property
    def _epoll(self):
        return self._epoll_obj

    @_epoll.setter
    def _epoll(self, ep):
        self._epoll_obj = ep
        self._epfd = ep.fileno()

    def _close_epoll(self):
        """Close the epoll set for good (``Hub.destroy``)."""
        self._epfd = -1
        self._epoll_obj.close()

    # -- the part the backends call: keep it lean --------------------------------------

    def can_switch(self):
        """False in the hub greenlet (the loop and its callbacks), which must never park."""
        return getcurrent() is not self.greenlet

    def wait_fd(self, int fd, int events, timeout=None):
        """Park until ``fd`` may be ready for the poll ``events`` (True) or ``timeout``
        seconds pass (False).  ``None`` waits forever; ``<= 0`` returns False at once.

        An fd epoll refuses as always ready (regular file: EPERM) or invalid (EBADF, where
        poll(2) would say POLLNVAL) returns True at once; a negative fd is ignored, as by
        poll(2).  Wakes may be spurious: the caller re-checks.  ``inf`` waits forever; NaN or
        a non-number raises :class:`InvalidArgument`."""
        cdef double secs = -1.0
        if timeout is not None:
            secs = _seconds(timeout, "timeout")
            if secs <= 0:
                return False
        return self._wait_fd(fd, events, secs, 0) == 1

    def wait_fd_gen(self, int fd, int events, timeout, unsigned int gen):
        """:meth:`wait_fd` for the hooks, with the fd's generation in their per-fd table
        (nonzero: they have just checked that the fd names the same open file as at the
        previous wait with this ``gen``).  The epoll registration then outlives the wait: the
        next wait on the same file (a request/response loop, a driver's next query) costs no
        epoll_ctl at all.  An idle registration that fires with nobody waiting is removed
        then (EPOLL_CTL_DEL; the next wait adds it again), so it never spins the loop.  One
        left from another generation, or with another mask, is re-armed with EPOLL_CTL_MOD
        (ENOENT: the kernel dropped it with the old file, so it is added again)."""
        cdef double secs = -1.0
        if timeout is not None:
            secs = _seconds(timeout, "timeout")
            if secs <= 0:
                return False
        return self._wait_fd(fd, events, secs, gen) == 1

    cdef int _wait_fd(self, int fd, int events, double timeout, unsigned int gen) except -1:
        """wait_fd (gen 0) or wait_fd_gen; ``timeout`` > 0, or < 0 for none.  1: ready."""
        cdef Waiter w
        cdef FdReg reg
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        if fd < 0:
            # poll(2) ignores negative fds: this is a plain sleep.
            self._park(_new_waiter(glet, 0), None if timeout < 0 else timeout)
            return 0
        w = _new_waiter(glet, (events & _EPOLL_MASK) | _ALWAYS)
        if gen == 0:
            if not self._watch(fd, w):
                return 1
        else:
            reg = self._idle.pop(fd, None)
            if reg is not None and fd not in self._fds:
                if reg.gen != gen or reg.mask != w.events:
                    if reg.gen != gen:
                        reg.rid = self._new_rid()   # another file: its events are told apart
                    try:
                        if not self._ctl(fd, w.events, False, reg.rid):
                            return 1
                    except (OSError, ValueError) as exc:
                        raise BackendError("the built-in hub could not watch fd %d: %s"
                                           % (fd, exc)) from exc
                    reg.mask = w.events
                reg.waiters.append(w)       # left empty by the last waiter
                reg.gen = gen
                self._fds[fd] = reg
                self._mods += 1
            else:
                if not self._watch(fd, w):
                    return 1
                (<FdReg>self._fds[fd]).gen = gen
        return 1 if self._park_on(fd, w, timeout) else 0

    cdef object _park_on(self, int fd, Waiter w, double timeout):
        """Switch to the loop with ``w`` watching ``fd`` (and a timer for ``timeout`` >= 0)."""
        cdef Timer timer = None
        try:
            if timeout >= 0:
                timer = self._new_timer(timeout, w.wake, (False,))
            return self._switch()
        finally:
            # Runs on wake and on a thrown kill/Timeout alike: nothing may outlive the wait.
            w.glet = None
            if timer is not None:
                timer.cancel()
            self._remove_waiter(fd, w)

    def wait_fds(self, fds, timeout=None):
        """Like :meth:`wait_fd` for a list of ``(fd, poll_events)``; True when any may be ready."""
        cdef double secs = -1.0
        cdef Timer timer = None
        cdef Waiter w
        if len(fds) == 1:
            fd, events = fds[0]
            return self.wait_fd(fd, events, timeout)
        if timeout is not None:
            secs = _seconds(timeout, "timeout")
            if secs <= 0:
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
            return self._wait_nothing(glet, None if secs < 0 else secs)
        added = []
        try:
            for fd, events in masks.items():
                w = _new_waiter(glet, (events & _EPOLL_MASK) | _ALWAYS)
                if not self._watch(fd, w):
                    return True
                added.append((fd, w))
            if secs >= 0:
                timer = self._new_timer(secs, w.wake, (False,))
            return self._switch()
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
        cdef double secs = _seconds(seconds, "sleep() seconds")
        cdef Timer timer = None
        cdef Waiter w
        glet = getcurrent()
        if glet is self.greenlet:
            raise _cannot_block()
        w = _new_waiter(glet, 0)
        if secs <= 0:
            self._ready.append((w.wake, (None,)))
        else:
            timer = self._new_timer(secs, w.wake, (None,))
        try:
            self._switch()
        finally:
            w.glet = None
            if timer is not None:
                timer.cancel()

    def _wait_nothing(self, glet, timeout):
        # A wait on no fd at all: sleep, or park with no way back but an exception
        # (LoopExit if nothing else is alive).
        self._park(_new_waiter(glet, 0), timeout)
        return False

    def _park(self, Waiter w, timeout=None):
        """Switch to the loop until ``w`` is woken or ``timeout`` passes; the caller has
        already made ``w`` reachable by whoever should wake it, and checked ``timeout``
        with :func:`_timeout`."""
        cdef Timer timer = None
        if w.glet is self.greenlet:
            raise _cannot_block()
        if timeout is not None:
            timer = self._new_timer(max(timeout, 0), w.wake, (False,))
        try:
            return self._switch()
        finally:
            w.glet = None
            if timer is not None:
                timer.cancel()

    # -- fd registry ---------------------------------------------------------------------

    cdef inline uint32_t _new_rid(self):
        self._rid += 1
        if self._rid == 0:
            self._rid = 1
        return self._rid

    cdef int _ctl(self, int fd, int mask, bint add, uint32_t rid) except -1:
        """EPOLL_CTL_ADD/MOD; 0 when the fd counts as always ready for poll(2): EPERM (a
        regular file or directory) or EBADF (poll says POLLNVAL at once).  Other failures
        raise OSError (ValueError: the hub's epoll set is closed)."""
        cdef epoll_event ev
        cdef int epfd = self._epfd
        cdef int e
        if epfd < 0:
            raise ValueError("I/O operation on closed epoll object")
        ev.events = <uint32_t>mask
        ev.data.u64 = (<uint64_t>rid << 32) | <uint32_t>fd
        if epoll_ctl(epfd, EPOLL_CTL_ADD if add else EPOLL_CTL_MOD, fd, &ev) == 0:
            return 1
        e = errno
        if e == EPERM or e == EBADF:
            return 0
        if e == EEXIST:
            # A registration survived an earlier DEL that failed on a closed fd, and the
            # number now names the same file again.
            if epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0:
                return 1
            e = errno
        elif e == ENOENT:
            # The fd was closed while we waited on it (the kernel dropped it) and the number
            # reused: this is a new file.
            return self._ctl(fd, mask, True, rid)
        raise OSError(e, "epoll_ctl: " + __import__("os").strerror(e))

    cdef int _watch(self, int fd, Waiter w) except -1:
        """``_add_waiter``, with epoll's own failures (not the caller's fd being always ready)
        raised as BackendError: the wait was never set up, nothing was thrown in."""
        try:
            return self._add_waiter(fd, w)
        except (OSError, ValueError) as exc:
            raise BackendError("the built-in hub could not watch fd %d: %s" % (fd, exc)) from exc

    cdef int _add_waiter(self, int fd, Waiter w) except -1:
        cdef FdReg reg = self._fds.get(fd)
        cdef int mask
        cdef uint32_t rid
        if reg is None:
            # A registration kept idle (wait_fd_gen) is in the kernel still, unless its file
            # was closed: MOD, which adds on ENOENT.  A new id either way: the number may
            # name another file now.
            rid = self._new_rid()
            if not self._ctl(fd, w.events, self._idle.pop(fd, None) is None, rid):
                return 0
            reg = FdReg.__new__(FdReg)
            reg.mask = w.events
            reg.waiters = [w]
            reg.gen = 0
            reg.rid = rid
            self._fds[fd] = reg
        else:
            mask = reg.mask | w.events
            if mask != reg.mask:
                if not self._ctl(fd, mask, False, reg.rid):
                    return 0
                reg.mask = mask
            reg.waiters.append(w)
        self._mods += 1
        return 1

    cdef inline int _epfd_or_minus1(self):
        return self._epfd      # -1: the hub was destroyed

    cdef void _remove_waiter(self, int fd, Waiter w):
        cdef FdReg reg = self._fds.get(fd)
        cdef int mask, epfd
        cdef Waiter other
        cdef epoll_event ev
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
                # Kept until the loop's next poll (wait_fd_gen): a close and reuse of the
                # number before the next wait shows as a new generation there.
                self._idle[fd] = reg
                return
        epfd = self._epfd_or_minus1()
        if not waiters:
            # Never leave a registration behind: the caller may close the fd right after and
            # the number come back as another file.  Failing: already closed (the kernel
            # dropped it).
            if epfd >= 0:
                epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL)
            return
        # Narrow the mask too: a leftover POLLOUT on a writable socket would spin the loop.
        mask = 0
        for other in waiters:
            mask |= other.events
        if mask != reg.mask:
            reg.mask = mask
            if epfd >= 0:
                ev.events = <uint32_t>mask
                ev.data.u64 = (<uint64_t>reg.rid << 32) | <uint32_t>fd
                epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev)

    def _rebuild_epoll(self):
        """Start a fresh epoll set from the registry.

        Needed after fork (the child shares the parent's epoll set) and when epoll reports an
        fd we have no waiter for: a registration we can no longer DEL because its fd number
        was closed while a dup kept the file open.  Waiters whose fd no longer registers are
        woken (spuriously: they re-check)."""
        cdef FdReg reg
        cdef Waiter w
        old = self._epoll
        self._idle.clear()
        self._epoll = select.epoll()
        try:
            old.close()
        except OSError:
            pass
        for fd, reg in list(self._fds.items()):
            if not self._ctl(fd, reg.mask, True, reg.rid):
                del self._fds[fd]
                for w in reg.waiters:
                    self._ready.append((w.wake, (True,)))
        self._mods += 1

    # -- timers and callbacks --------------------------------------------------------------

    cdef Timer _new_timer(self, double seconds, callback, tuple args):
        cdef Timer t = Timer.__new__(Timer)
        t.hub = self
        t.callback = callback
        t.args = args
        _heappush(self._timers, (_now() + seconds, next(self._seq), t))
        return t

    def _add_timer(self, double seconds, callback, *args):
        """timer() for the waits: a plain ref'd one-shot timer, without the cost of timer()'s
        keyword-only options.  ``seconds`` has been through _seconds() (never NaN)."""
        return self._new_timer(seconds, callback, args)

    def _timer_cancelled(self):
        self._count_cancelled(True)

    def _unref_timer_cancelled(self):
        self._count_cancelled(False)

    cdef void _count_cancelled(self, bint ref):
        # Cancelled timers stay in their heap until popped; compact when they are the majority.
        cdef list heap = self._timers if ref else self._unref_timers
        cdef Py_ssize_t n = (self._ncancelled if ref else self._nucancelled) + 1
        if n > _COMPACT_MIN and n * 2 > len(heap):
            _compact(heap)
            n = 0
        if ref:
            self._ncancelled = n
        else:
            self._nucancelled = n

    def run_callback(self, callback, *args):
        """Call ``callback(*args)`` in the hub greenlet on the next loop iteration."""
        self._ready.append((callback, args))

    # -- the loop --------------------------------------------------------------------------

    def _loop(self):
        """Iterate until nothing is left; returns then."""
        cdef double timeout
        cdef Py_ssize_t i, n
        cdef int nev
        ready = self._ready
        cdef list timers = self._timers
        cdef list unref = self._unref_timers
        cdef dict fds = self._fds
        if unref:
            # Unref'd timers that came due while the loop was stopped.
            self._run_due(False)
        while True:
            # Only the callbacks queued before this iteration: the ones they queue wait for
            # the next one, after a poll, so sleep(0) is fair and I/O is never starved.
            n = len(ready)
            for i in range(n):
                callback, args = ready.popleft()
                self._call(callback, callback, args)

            if ready:
                timeout = 0
            else:
                while timers and (<Timer>timers[0][2]).callback is None:
                    _heappop(timers)
                    self._ncancelled -= 1
                if timers:
                    timeout = min(max(<double>timers[0][0] - _now(), 0), _MAX_POLL)
                elif fds:
                    timeout = -1
                else:
                    return
                # Unref'd timers shorten the poll but never keep the loop going.
                if unref:
                    timeout = self._unref_timeout(timeout)

            nev = self._poll(timeout)
            if nev:
                self._dispatch(nev)
            if timers:
                self._run_due(True)
            if unref:
                self._run_due(False)

    cdef int _poll(self, double timeout) except -1:
        """epoll_wait (GIL released) into ``_events``; ``timeout`` seconds, -1: forever.
        EINTR runs the signal handlers (their exception propagates, as from
        select.epoll.poll) and polls again with the time left.  A closed epoll set (a library
        closing "all" fds) is rebuilt once; a second failure raises."""
        cdef int ms, nev, epfd, e
        cdef double deadline = -1.0
        cdef bint rebuilt = False
        if timeout >= 0:
            deadline = _now() + timeout
        while True:
            if timeout < 0:
                ms = -1
            else:
                # Rounded up, as Python's epoll.poll: never wake before the timer is due.
                ms = <int>ceil(timeout * 1000.0)
            epfd = self._epfd
            with nogil:
                nev = epoll_wait(epfd, self._events, _MAXEVENTS, ms)
                e = errno
            if nev >= 0:
                return nev
            if e == EINTR:
                PyErr_CheckSignals()
                if deadline >= 0:
                    timeout = deadline - _now()
                    if timeout < 0:
                        timeout = 0
                continue
            if rebuilt:
                raise OSError(e, "epoll_wait: " + __import__("os").strerror(e))
            self._rebuild_epoll()
            rebuilt = True

    cdef int _call(self, object context, object callback, tuple args) except -1:
        """``callback(*args)`` in the loop: what escapes it goes to ``handle_error(context,
        ...)`` (GreenletExit, which kills the loop, excepted).  For the ready queue, the
        timers, and the switch into a woken greenlet (where only a raw greenlet whose parent
        is the hub can end with an exception)."""
        try:
            callback(*args)
        except GreenletExit:
            raise
        except BaseException as exc:
            self.handle_error(context, type(exc), exc, exc.__traceback__)
        return 0

    cdef int _dispatch(self, int nev) except -1:
        cdef dict fds = self._fds
        cdef unsigned long mods = self._mods
        cdef FdReg reg
        cdef Waiter w
        cdef int i, fd
        cdef uint32_t ev, rid
        cdef uint64_t data
        cdef bint woke
        cdef list waiters
        for i in range(nev):
            data = self._events[i].data.u64
            fd = <int><uint32_t>(data & 0xffffffffu)
            rid = <uint32_t>(data >> 32)
            ev = self._events[i].events
            woke = False
            reg = fds.get(fd)
            if reg is not None:
                if reg.rid != rid:
                    # Another registration of this number: one the kernel keeps for a file
                    # the number no longer names (closed while a dup keeps it open), or an
                    # event of this batch from before a re-registration.  Never a wake.
                    reg = None
            elif self._idle:
                reg = self._idle.get(fd)
                if reg is not None:
                    if reg.rid == rid:
                        # A kept registration fired with nobody waiting (unsolicited data,
                        # EOF, a writable socket): remove it now; the next wait adds it again.
                        del self._idle[fd]
                        if epoll_ctl(self._epfd_or_minus1(), EPOLL_CTL_DEL, fd, NULL) == 0:
                            continue
                    reg = None
            if reg is not None:
                waiters = reg.waiters
                if len(waiters) == 1:
                    w = waiters[0]
                    if ev & w.events and w.glet is not None:
                        glet = w.glet
                        w.glet = None
                        woke = True
                        self._call(glet, glet.switch, _WOKEN)
                else:
                    # A copy: a woken greenlet runs right away and may come back to this fd.
                    for w in list(waiters):
                        if ev & w.events and w.glet is not None:
                            glet = w.glet
                            w.glet = None
                            woke = True
                            self._call(glet, glet.switch, _WOKEN)
            if not woke and self._mods == mods:
                # Nobody wanted it and no registration changed since the poll, so this is
                # no race: epoll holds a registration we cannot see or DEL any more.
                self._rebuild_epoll()
                return 0    # the rest of this batch came from the old set; poll again
        return 0

    cdef int _run_due(self, bint ref) except -1:
        """Run the due timers of the ref'd or unref'd heap.  One "now" for the pass: timers
        added by the greenlets woken here wait for the next pass, so a greenlet re-arming a
        short timer cannot starve the loop."""
        cdef list heap = self._timers if ref else self._unref_timers
        cdef double now = _now()
        cdef Timer t
        while heap and <double>heap[0][0] <= now:
            t = _heappop(heap)[2]
            callback = t.callback
            if callback is None:
                if ref:
                    self._ncancelled -= 1
                else:
                    self._nucancelled -= 1
                continue
            args = t.args
            t.callback = t.args = None
            self._call(t, callback, args)
        return 0

    cdef double _unref_timeout(self, double timeout) except? -2.0:
        """The poll timeout shortened to the nearest unref'd timer (``timeout`` -1: none)."""
        cdef list unref = self._unref_timers
        cdef double due
        while unref and (<Timer>unref[0][2]).callback is None:
            _heappop(unref)
            self._nucancelled -= 1
        if unref:
            due = min(max(<double>unref[0][0] - _now(), 0), _MAX_POLL)
            if timeout < 0 or due < timeout:
                return due
        return timeout


# -- the thread's hub -----------------------------------------------------------------------

# The hub lives in the thread state's dict (PyThreadState_GetDict) under this key: one dict
# lookup per wait, where a threading.local costs a module-state lookup and two.  Cleared with
# the thread state when the thread ends, as a threading.local would be.
cdef object _KEY = "greenhook.hub"
cdef object _hub_class = None


cdef inline dict _tdict():
    cdef PyObject *d = PyThreadState_GetDict()
    if d == NULL:
        raise RuntimeError("greenhook: no Python thread state")
    return <dict>d


def _set_hub_class(cls):
    """``greenhook.hub`` names the class :func:`get_hub` makes (it subclasses HubCore)."""
    global _hub_class
    if not issubclass(cls, HubCore):
        raise TypeError("%r is not a HubCore subclass" % (cls,))
    _hub_class = cls


cpdef object get_hub():
    """This thread's hub, made on first use."""
    cdef dict d = _tdict()
    cdef PyObject *hub = PyDict_GetItem(d, _KEY)
    if hub != NULL:
        return <object>hub
    new = _hub_class()
    d[_KEY] = new
    return new


cpdef object get_hub_if_exists():
    """This thread's hub, or None; never makes one."""
    cdef PyObject *hub = PyDict_GetItem(_tdict(), _KEY)
    return None if hub == NULL else <object>hub


def _forget_hub(hub):
    """Forget ``hub`` as this thread's hub (``Hub.destroy``); the next get_hub makes one."""
    cdef dict d = _tdict()
    if PyDict_GetItem(d, _KEY) == <PyObject *>hub:
        del d[_KEY]


# -- the built-in backend's C face (includes/gh_backend.h) --------------------------------


cdef int _api_can_switch(object backend) except -1:
    cdef PyObject *hub = PyDict_GetItem(_tdict(), _KEY)
    return hub != NULL and getcurrent() is not (<HubCore>hub).greenlet


cdef int _api_wait_fd(object backend, int fd, int events, double timeout,
                      unsigned int gen) except -1:
    cdef HubCore hub = get_hub()
    if timeout == 0:
        return 0
    return hub._wait_fd(fd, events, timeout, gen)


cdef gh_backend_api_t _API
_API.abi = GH_BACKEND_ABI
_API.can_switch = _api_can_switch
_API.wait_fd = _api_wait_fd

#: The built-in backend's C face: ``BuiltinBackend.c_api``.
C_API = PyCapsule_New(<void *>&_API, GH_BACKEND_CAPSULE, NULL)
