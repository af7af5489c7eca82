# cython: language_level=3, boundscheck=False, wraparound=False
"""The gevent backend's C face (``includes/gh_backend.h``): ``can_switch`` and the single-fd
wait of :class:`greenhook.backends.gevent.GeventBackend`, which the hooks call without a
Python call.

Backend side, not hooks side: imported by ``greenhook.backends.gevent`` only (gevent is
optional; ``import greenhook`` never imports this module).  It calls gevent's own compiled
objects (``get_hub_if_exists``, the loop's ``io``/``timer`` watchers, ``hub.switch``) through
their Python methods; nothing of gevent is cimported, so it builds without gevent installed.

What a wait does (the same as the Python methods it stands in for):

* a hub exists in this thread (``can_switch`` said so), its state (:class:`_HubState`: the
  loop, whether it is libev, the kept watchers) hangs on the hub itself, so a destroyed and
  re-created hub, or another thread's hub, starts with none.  It is found without gevent's
  ``threading.local`` (:func:`_current`) and handed from ``can_switch`` to the ``wait_fd``
  the hooks call right after it (``_ticket``);
* ``gen != 0`` on libev: one io watcher kept per ``(fd, mask)`` (:class:`_Kept`), replaced
  when ``gen`` changes, started for the wait and stopped after it -- like gevent's sockets,
  which keep their ``_read_event``.  A kept watcher already parked on by another greenlet is
  left to it: this wait makes its own;
* otherwise (``gen == 0``, libuv, or a kept watcher in use) a new io watcher per wait,
  closed after it;
* POLLPRI without POLLIN, and timeouts over ``MAX_TIMER``: ``GeventBackend.wait_fd`` in
  Python (probe every ``PRI_PROBE`` s; several timers), which is rare;
* the park: the watchers' callback is the current greenlet's ``switch`` (io: ``True``,
  timer: ``False``; see :func:`_start`) and the greenlet switches to the hub (``hub.switch()``,
  gevent's ``switch_out`` protocol included), as ``gevent.hub.Waiter`` would, without the
  Waiter.  A Waiter guards against a switch that comes after the wait is over;
  here none can: every watcher of the wait is stopped in ``finally`` before the greenlet does
  anything else (a stop also drops an event libev has already queued), and the watchers are
  this wait's own.  Anything else switched in is what ``Waiter.get`` would return too;
* BackendError when the loop cannot make or start a watcher (nothing parked yet); what is
  raised while parked was thrown in, and propagates after every watcher is stopped or closed.
"""

from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport PyObject
from cpython.pystate cimport PyThreadState, PyThreadState_Get, PyThreadState_GetDict
from libc.stdint cimport uint64_t
from cpython.dict cimport PyDict_GetItemWithError

from gh_backend cimport *

from gevent._hub_local import get_hub_if_exists
from greenlet import getcurrent, greenlet

from greenhook.exceptions import BackendError

cdef object _get_hub_if_exists = get_hub_if_exists
cdef object _getcurrent = getcurrent

# poll(2) events (backends/base.py) and libev/libuv io masks
cdef enum:
    POLLIN = 0x001
    POLLPRI = 0x002
    POLLOUT = 0x004
    POLLRDNORM = 0x040
    POLLRDBAND = 0x080
    POLLWRNORM = 0x100
    POLLWRBAND = 0x200
    READ_EVENTS = POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND
    WRITE_EVENTS = POLLOUT | POLLWRNORM | POLLWRBAND
    IN_EVENTS = READ_EVENTS & ~POLLPRI
    EV_READ = 1
    EV_WRITE = 2

#: The longest timer given to gevent's loop (``backends.gevent.MAX_TIMER``).
MAX_TIMER = 1e9
cdef double _MAX_TIMER = MAX_TIMER


cdef inline int _mask(int events) noexcept:
    cdef int mask = ((EV_READ if events & READ_EVENTS else 0)
                     | (EV_WRITE if events & WRITE_EVENTS else 0))
    # Only POLLERR/POLLHUP asked: the loop reports those as readable.
    return mask if mask else EV_READ


cdef class _Kept:
    """The io watcher kept for one ``(fd, mask)`` while ``fd`` names the file of ``gen``."""
    cdef unsigned int gen
    cdef object io
    cdef object start, stop     # type(io).start/.stop, looked up once
    cdef bint busy      # a greenlet is parked on it


cdef extern from *:
    """
    /* descr.__get__(obj, type(obj)) without the attribute lookup around it */
    static PyObject *gw_descr_get(PyObject *descr, PyObject *obj) {
        return Py_TYPE(descr)->tp_descr_get(descr, obj, (PyObject *)Py_TYPE(obj));
    }
    """
    object gw_descr_get(object descr, object obj)


cdef class _HubState:
    """What the waits of one gevent hub keep: the hub, its loop and the kept watchers."""
    cdef object hub
    cdef object switch      # type(hub).switch: hub.switch() without the instance lookup
    cdef object loop
    cdef object loop_descr  # the C slot's descriptor of ``hub.loop`` (None: plain attribute)
    cdef bint keeps     # libev: watchers are kept (libuv multiplexes io watchers itself)
    cdef dict kept      # fd * 4 + mask -> _Kept

    def __cinit__(self, hub, loop):
        self.hub = hub
        self.switch = type(hub).switch
        self.loop = loop
        self.keeps = "libev" in type(loop).__module__
        self.kept = {}
        # gevent's compiled hub keeps ``loop`` in a C slot (a getset descriptor of
        # SwitchOutGreenletWithLoop, which no instance dict can shadow): read through it.
        self.loop_descr = None
        for k in type(hub).__mro__:
            d = k.__dict__.get("loop")
            if d is not None:
                if type(d).__name__ in ("getset_descriptor", "member_descriptor"):
                    self.loop_descr = d
                break

    cdef inline bint good(self) except -1:
        """The hub still has the loop this state was made for (destroy() sets it to None)."""
        if self.loop_descr is not None:
            return gw_descr_get(self.loop_descr, self.hub) is self.loop
        return self.hub.loop is self.loop


cdef extern from "Python.h":
    uint64_t PyThreadState_GetID(PyThreadState *tstate)

cdef str _TSKEY = "greenhook._geventwait.hub_state"

# The state _current() found last, and the unique id of the thread state it was found for
# (never reused, unlike thread idents or dict addresses).  Borrowed: the entry of that
# thread's dict owns it, and every change of that entry made by its own thread updates this.
cdef uint64_t _last_id = 0
cdef PyObject *_last_state = NULL


cdef _HubState _current() :
    """This thread's hub state, or None when this thread has no gevent hub.

    gevent's own ``get_hub_if_exists`` reads a ``threading.local``; this keeps the answer in
    the thread state's dict instead (it dies with the thread) and checks it is still good:
    ``hub.destroy()`` always sets ``hub.loop`` to None before it lets a new hub be made, and
    ``reinit`` after a fork keeps the hub and its loop.  The state itself hangs on the hub
    (``_greenhook_state``), so kept watchers live and die with their hub."""
    global _last_id, _last_state
    cdef uint64_t tid = PyThreadState_GetID(PyThreadState_Get())
    cdef PyObject *d
    cdef PyObject *p = NULL
    cdef _HubState st
    if tid == _last_id and _last_state != NULL:
        st = <_HubState>_last_state
        if st.good():
            return st
    d = PyThreadState_GetDict()     # borrowed; NULL: no thread state dict
    if d != NULL:
        p = PyDict_GetItemWithError(<object>d, _TSKEY)
        if p != NULL:
            st = <_HubState>p
            if st.good():
                _last_id, _last_state = tid, p
                return st
    hub = _get_hub_if_exists()
    if hub is None:
        if d != NULL and p != NULL:
            if _last_state == p:
                _last_state = NULL
            del (<dict>d)[_TSKEY]
        return None
    try:
        st = <_HubState?>hub._greenhook_state
    except AttributeError:
        st = _HubState(hub, hub.loop)
        hub._greenhook_state = st
    if d != NULL:
        if _last_state == p:
            _last_state = NULL
        (<dict>d)[_TSKEY] = st
        _last_id, _last_state = tid, <PyObject *>st
    return st


cdef object _greenlet_switch = greenlet.switch    # the method descriptor
cdef object _plain_type = None      # the last greenlet class seen not to override switch


cdef int _start(object watcher, object start, object glet, object value) except -1:
    """Start ``watcher`` with ``glet.switch(value)`` as its callback.  For a greenlet class
    that does not override ``switch`` (gevent's Greenlet, raw greenlets), the callback is the
    method descriptor and ``glet`` its first argument: no bound method made per wait.
    ``start``: ``type(watcher).start`` if the caller has it, else None."""
    global _plain_type
    t = type(glet)
    if t is not _plain_type:
        if getattr(t, "switch", None) is not _greenlet_switch:
            if start is None:
                watcher.start(glet.switch, value)
            else:
                start(watcher, glet.switch, value)
            return 0
        _plain_type = t
    if start is None:
        watcher.start(_greenlet_switch, glet, value)
    else:
        start(watcher, _greenlet_switch, glet, value)
    return 0


cdef int _park(_HubState st, object io, object glet, double timeout, _Kept kept) except -1:
    """``io`` is started; park until it or a ``timeout`` timer (< 0: none) switches back.
    Afterwards ``io`` is stopped (kept) or closed, and the timer closed."""
    timer = None
    try:
        if timeout >= 0:
            try:
                timer = st.loop.timer(timeout)
                _start(timer, None, glet, False)
            except Exception as exc:
                raise BackendError("gevent's loop could not time a wait: %s" % exc) from exc
        # Parked: what is raised here was thrown in.
        return 1 if st.switch(st.hub) else 0
    finally:
        if kept is not None:
            kept.stop(io)
            kept.busy = False
        else:
            io.close()
        if timer is not None:
            timer.close()


cdef int _wait_new(_HubState st, object glet, int fd, int mask, double timeout) except -1:
    """One wait on a watcher of its own, closed after it."""
    try:
        io = st.loop.io(fd, mask)
    except Exception as exc:
        raise BackendError("gevent's loop could not watch fd %d: %s" % (fd, exc)) from exc
    try:
        _start(io, None, glet, True)
    except Exception as exc:
        io.close()
        raise BackendError("gevent's loop could not watch fd %d: %s" % (fd, exc)) from exc
    return _park(st, io, glet, timeout, None)


cdef int _wait_fd(object backend, _HubState st, object glet, int fd, int events,
                  double timeout, unsigned int gen) except -1:
    """``GeventBackend.wait_fd_gen`` (``gen != 0``) or ``wait_fd`` (``gen == 0``) for a
    timeout in seconds (< 0: none, else not NaN); ``st`` and ``glet``: this thread's hub
    state and the current greenlet if the caller has them (else None)."""
    cdef _Kept kept
    cdef int mask, key
    if timeout > _MAX_TIMER or (events & POLLPRI and not events & IN_EVENTS):
        # Rare: several timers, or POLLPRI probing (backends/gevent.py).
        return 1 if backend.wait_fd(fd, events, None if timeout < 0 else timeout) else 0
    if st is None:
        st = _current()
    if st is None:
        raise BackendError("no gevent hub in this thread")
    if glet is None:
        glet = _getcurrent()
    mask = _mask(events)
    if gen == 0 or not st.keeps:
        return _wait_new(st, glet, fd, mask, timeout)
    key = fd * 4 + mask
    kept = st.kept.get(key)
    if kept is not None and kept.busy:
        # Another greenlet waits on this fd and mask: a watcher of its own.
        return _wait_new(st, glet, fd, mask, timeout)
    try:
        if kept is None or kept.gen != gen:
            # New, or the fd was closed or its number reused since: a new watcher makes
            # libev register the fd again.
            if kept is not None:
                del st.kept[key]
                kept.io.close()
            kept = _Kept()
            kept.io = io = st.loop.io(fd, mask)
            kept.start = type(io).start
            kept.stop = type(io).stop
            kept.gen = gen
            st.kept[key] = kept
        _start(kept.io, kept.start, glet, True)
    except Exception as exc:
        st.kept.pop(key, None)
        raise BackendError("gevent's loop could not watch fd %d: %s" % (fd, exc)) from exc
    kept.busy = True
    return _park(st, kept.io, glet, timeout, kept)


def wait_fd_gen(backend, int fd, int events, timeout, unsigned int gen):
    """``GeventBackend.wait_fd_gen``: the C face's wait, for a Python caller."""
    cdef double secs
    if timeout is None:
        secs = -1.0
    else:
        secs = timeout
        if not 0.0 <= secs <= _MAX_TIMER:
            # Negative, NaN or huge: wait_fd validates and splits.
            return backend.wait_fd(fd, events, timeout)
    return bool(_wait_fd(backend, None, None, fd, events, secs, gen))


def kept_watchers(hub):
    """``{(fd, mask): (gen, io watcher)}`` kept for ``hub`` (for tests and diagnostics)."""
    try:
        st = <_HubState?>hub._greenhook_state
    except AttributeError:
        return {}
    return {(key // 4, key % 4): ((<_Kept>k).gen, (<_Kept>k).io) for key, k in st.kept.items()}


# -- the C face ----------------------------------------------------------------------------


# The hooks call wait_fd right after can_switch said 1, in the same thread, with nothing in
# between that runs Python: can_switch hands the state it found to that wait_fd (which takes
# it back at once), and the current greenlet.  Any other caller of wait_fd finds no ticket,
# or one of another thread.
cdef _HubState _ticket = None
cdef object _ticket_glet = None
cdef PyObject *_ticket_thread = NULL    # the thread state dict it was found with


cdef int _api_can_switch(object backend) except -1:
    global _ticket, _ticket_glet, _ticket_thread
    st = _current()
    glet = _getcurrent() if st is not None else None
    if st is None or glet is st.hub:
        _ticket = _ticket_glet = None
        return 0
    _ticket = st
    _ticket_glet = glet
    _ticket_thread = PyThreadState_GetDict()
    return 1


cdef int _api_wait_fd(object backend, int fd, int events, double timeout,
                      unsigned int gen) except -1:
    global _ticket, _ticket_glet
    st, glet = _ticket, _ticket_glet
    _ticket = _ticket_glet = None
    if st is None or _ticket_thread != PyThreadState_GetDict():
        st = glet = None
    return _wait_fd(backend, st, glet, fd, events, timeout, gen)


cdef gh_backend_api_t _API
_API.abi = GH_BACKEND_ABI
_API.can_switch = _api_can_switch
_API.wait_fd = _api_wait_fd

#: The gevent backend's C face: ``GeventBackend.c_api``.
C_API = PyCapsule_New(<void *>&_API, GH_BACKEND_CAPSULE, NULL)
