# Included by _hooks.pyx: per-thread state, cancellation delivery, error reporting.

cdef object _backend_resolver = None   # set by greenhook._core: the backend for unpinned threads


cdef extern from "pythread.h":
    # The OS thread's identifier, as threading.get_ident() gives it unpatched: gevent's
    # monkey-patching makes threading.get_ident() per greenlet (and, at interpreter exit,
    # a function whose module globals are gone).
    unsigned long PyThread_get_thread_ident() nogil


cdef void _report(object exc, object where) noexcept:
    """Report ``exc`` through ``sys.unraisablehook`` ("Exception ignored in: <where>") and carry
    on: an error inside a hook can never propagate to the C caller.  GIL held; the caller's
    own pending exception, if any, was saved before and is restored after."""
    try:
        exc_type = type(exc)
        PyErr_SetObject(<PyObject *>exc_type, <PyObject *>exc)
        PyErr_WriteUnraisable(where)
    except BaseException:
        pass    # the hook itself failed: nothing is left to report with


cdef class _Pending:
    cdef object greenlet
    cdef object exc
    cdef object frame     # the Python frame that called into C (identity is what matters), or None
    cdef bint had_local_trace


def _local_trace(frame, event, arg):
    # A frame-local trace function is what makes the interpreter report opcode events for the
    # frame; the events themselves are handled by the C-level tracer.
    return _local_trace


cdef class _ThreadState:
    """What greenhook keeps for one OS thread: its backend, counters, undelivered exceptions."""

    cdef gh_thread_t c
    cdef public object backend      # a Backend; None until the first wait pins one
    cdef readonly object thread_ident
    cdef list pending               # _Pending exceptions waiting for their frame
    cdef Py_tracefunc prev_func       # the tracer found when arming, chained to and
    cdef PyObject *prev_obj           # restored afterwards
    cdef bint armed

    def __cinit__(self):
        self.c.state = <PyObject *>self
        self.c.in_flight = -1
        self.c.since_ns = 0
        _zero(self.c.counters)
        self.pending = []
        self.armed = False
        self.prev_func = NULL
        self.prev_obj = NULL
        self.thread_ident = PyThread_get_thread_ident()

    @property
    def in_flight(self):
        """(symbol, seconds) of a hooked call blocking this OS thread for real, or None."""
        cdef int sym = self.c.in_flight
        if sym < 0:
            return None
        return SYMBOL_NAMES[sym], (gh_now_ns() - self.c.since_ns) / 1e9

    cdef bint _cancelled_here(self):
        """A cancellation of the current greenlet is still undelivered (so its C call must
        unwind without parking again).  Forgets those of greenlets that have died."""
        cdef _Pending p
        cur = getcurrent()
        found = False
        for p in list(self.pending):
            if p.greenlet is cur:
                found = True
            elif p.greenlet.dead:
                self._forget(p)
        return found

    cdef void _forget(self, _Pending p):
        self.pending.remove(p)
        if p.frame is not None:
            self._unwatch_opcodes(p)
        if self.armed and not any((<_Pending>q).frame is not None for q in self.pending):
            self._disarm()

    cdef void _cancel(self, exc):
        """Remember ``exc`` for the calling Python frame and arm the one-shot tracer.

        With no Python frame between the greenlet and the C function (``spawn(c_function)``)
        there is no place to re-raise: the cancellation stays pending (every further wait of
        that greenlet fails at once) until the greenlet ends."""
        cdef PyFrameObject *frame = PyEval_GetFrame()
        cdef _Pending p = _Pending()
        p.greenlet = getcurrent()
        p.exc = exc
        p.frame = None if frame == NULL else <object><PyObject *>frame
        self.pending.append(p)
        if p.frame is None:
            return
        self._watch_opcodes(p)
        if not self.armed or gh_get_tracefunc() != <Py_tracefunc>_trace \
                or gh_get_traceobj() != <PyObject *>self:
            # Not armed, or someone installed a tracer over ours since: chain to what is there now.
            Py_XDECREF(self.prev_obj)
            self.prev_func = gh_get_tracefunc()
            self.prev_obj = gh_get_traceobj()
            Py_XINCREF(self.prev_obj)
            self.armed = True
            PyEval_SetTrace(<Py_tracefunc>_trace, <PyObject *>self)

    cdef void _watch_opcodes(self, _Pending p):
        """Ask for an event at the frame's next opcode, i.e. right after the C call returns, so
        that a call that returns normally (rather than raising) is interrupted before the rest
        of its line runs.  Where an interpreter ignored it, the next line event would do."""
        frame = p.frame
        try:
            p.had_local_trace = frame.f_trace is not None
            if not p.had_local_trace:
                frame.f_trace = _local_trace
            frame.f_trace_opcodes = True
        except BaseException as exc:
            _report(exc, "greenhook: arming opcode events for a cancelled call")

    cdef void _unwatch_opcodes(self, _Pending p):
        frame = p.frame
        try:
            frame.f_trace_opcodes = False
            if not p.had_local_trace and frame.f_trace is _local_trace:
                frame.f_trace = None
        except BaseException as exc:
            _report(exc, "greenhook: disarming opcode events of a cancelled call")

    cdef void _disarm(self):
        """Put the tracer found when arming back -- unless someone replaced ours since: then
        theirs stays (restoring ours' predecessor over it would resurrect a stale tracer)."""
        cdef PyObject *obj = self.prev_obj
        self.armed = False
        self.prev_obj = NULL
        if gh_get_tracefunc() == <Py_tracefunc>_trace and gh_get_traceobj() == <PyObject *>self:
            PyEval_SetTrace(self.prev_func, obj)
        Py_XDECREF(obj)
        self.prev_func = NULL

    cdef object _on_trace(self, PyFrameObject *frame, int what, PyObject *arg):
        """The exception to raise in ``frame`` now, or None."""
        cdef _Pending p
        cdef PyFrameObject *back
        cdef Py_ssize_t i
        for i in range(len(self.pending)):
            p = <_Pending>self.pending[i]
            if p.frame is None or <PyObject *>p.frame != <PyObject *>frame:
                continue
            if what == PyTrace_EXCEPTION or what == PyTrace_LINE or what == PyTrace_OPCODE:
                self._forget(p)
                if what == PyTrace_EXCEPTION and arg != NULL:
                    try:
                        p.exc.__context__ = (<object>arg)[1]  # the driver's own error
                    except BaseException as exc:
                        _report(exc, "greenhook: chaining the driver's error to a cancellation")
                return p.exc
            if what == PyTrace_RETURN:
                # The C call returned normally and so did its frame: deliver in the caller.
                self._unwatch_opcodes(p)
                back = PyFrame_GetBack(frame)
                if back == NULL:
                    # No Python caller left: nowhere to raise (the greenlet ends normally).
                    p.frame = None
                    self._forget(p)
                else:
                    p.frame = <object><PyObject *>back
                    Py_XDECREF(<PyObject *>back)
                    self._watch_opcodes(p)
            return None
        return None

    cdef void _retire(self):
        """The OS thread is ending: keep its counters, forget the rest (called in that thread)."""
        cdef int i
        if gh_self() == &self.c:
            gh_set_self(NULL)
        _add(_retired, self.c.counters)
        while self.pending:
            self._forget(<_Pending>self.pending[0])
        try:
            _all_states.remove(self)
        except ValueError:
            pass


cdef int _trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) noexcept:
    cdef _ThreadState st = <_ThreadState>obj
    cdef int r
    if st.prev_func != NULL:
        r = st.prev_func(st.prev_obj, frame, what, arg)
        if r != 0:
            return r
    try:
        exc = st._on_trace(frame, what, arg)
    except BaseException as err:
        _report(err, "greenhook: delivering a cancellation")
        return 0
    if exc is None:
        return 0
    exc_type = type(exc)
    PyErr_SetObject(<PyObject *>exc_type, <PyObject *>exc)
    return -1


# --- the registry of thread states ------------------------------------------------------------

cdef list _all_states = []          # states of live bound threads (the detector reads them)
cdef gh_counter_t _retired[GH_NSYM]  # counters of threads that have ended


cdef void _zero(gh_counter_t *c) noexcept:
    cdef int i
    for i in range(GH_NSYM):
        c[i].passthrough = 0
        c[i].fast = 0
        c[i].green = 0
        c[i].timeouts = 0
        c[i].cancelled = 0
        c[i].blocked = 0
        c[i].waits = 0
        c[i].yields = 0


cdef void _add(gh_counter_t *into, gh_counter_t *c) noexcept:
    cdef int i
    for i in range(GH_NSYM):
        into[i].passthrough += c[i].passthrough
        into[i].fast += c[i].fast
        into[i].green += c[i].green
        into[i].timeouts += c[i].timeouts
        into[i].cancelled += c[i].cancelled
        into[i].blocked += c[i].blocked
        into[i].waits += c[i].waits
        into[i].yields += c[i].yields


_zero(_retired)


class _Keeper:
    """Lives in a ``threading.local`` slot: dropped when its OS thread's Python state is
    cleared (thread exit), it retires the thread's state -- in that same thread, so the
    thread's C-level pointer is cleared before anything could use it again."""

    __slots__ = ("state", "__weakref__")

    def __init__(self, state):
        self.state = state

    def __del__(self):
        st = self.state
        if st is not None and PyThread_get_thread_ident() == st.thread_ident:
            (<_ThreadState>st)._retire()


_tls = threading.local()
