# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Green replacements for blocking libc calls, with the exact libc signatures.

Every hook has one shape:

1. pass straight through when this OS thread has no backend bound, or the caller asked for
   behaviour the kernel answers without waiting (non-blocking flags or fd, the error queue,
   out-of-band data, zero timeouts);
2. try the operation without blocking (``MSG_DONTWAIT``, a zero-timeout probe) — success returns
   at once, with no GIL, no Python and no extra syscall;
3. on "would block", park the greenlet through ``gh_wait`` (the one function that takes the GIL
   and talks to a backend to wait), then retry with the remaining time.

In a bound thread, socket calls and poll/ppoll (non-blocking ones too) and select/pselect that
may wait first count towards fairness (``fair.pxi``): an increment and a compare; when N went by
without the hub running, the call yields to the hub once before its work.

This module knows libc semantics only: it asks the backend bound to the OS thread to wait and
never names a hub.  Cancellation (a kill or timeout thrown into the parked greenlet) makes the
hook return -1/``ETIMEDOUT``; the exception itself is re-raised in the Python frame that called
into C by a one-shot trace function (see ``_ThreadState``).

The code is split by concept into ``hooks/*.pxi`` (included here, so that everything inlines):

* ``real.pxi``       the real libc functions, from ``dlsym``;
* ``cancel.pxi``     per-thread state, cancellation delivery, error reporting;
* ``wait.pxi``       ``gh_wait`` (the one waiting function, which runs Python) and the park/retry
                     helpers;
* ``fair.pxi``       fairness: when a thread's hooked calls have not parked for N calls, the next
                     one lets the hub run once first (``backend.sleep(0)``: the other place that
                     runs Python);
* ``sockets.pxi``    the receive and send families, connect, accept;
* ``readiness.pxi``  poll, ppoll, select, pselect;
* ``sleep.pxi``      sleep, usleep, nanosleep, clock_nanosleep;
* ``resolve.pxi``    name lookups on the native resolver pool (``includes/gh_dns.h``);
* ``loader.pxi``     dlopen, dlmopen: auto mode patches what C code loads;
* ``entry.pxi``      the ``gh_<libc name>`` entry points with the exact libc signatures;
* ``face.pxi``       the Python face: hook table, thread binding, counters.
"""

cimport cython
from cpython.ref cimport PyObject, Py_XINCREF, Py_XDECREF
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.pycapsule cimport PyCapsule_IsValid, PyCapsule_GetPointer

from libc_io cimport *
from gh_backend cimport *

import sys
import threading
from greenlet import getcurrent

from greenhook._symbols import HOOKED, CANONICAL
from greenhook.exceptions import BackendError

cdef extern from "frameobject.h":
    ctypedef struct PyFrameObject:
        pass

cdef extern from "gh_thread.h" nogil:
    enum:
        GH_SYM_CONNECT, GH_SYM_ACCEPT, GH_SYM_ACCEPT4, GH_SYM_READ, GH_SYM_WRITE, GH_SYM_READV
        GH_SYM_WRITEV, GH_SYM_RECV, GH_SYM_SEND, GH_SYM_RECVFROM, GH_SYM_SENDTO, GH_SYM_RECVMSG
        GH_SYM_SENDMSG, GH_SYM_POLL, GH_SYM_PPOLL, GH_SYM_SELECT, GH_SYM_PSELECT, GH_SYM_SLEEP
        GH_SYM_USLEEP, GH_SYM_NANOSLEEP, GH_SYM_CLOCK_NANOSLEEP, GH_NSYM
        GH_SYM_DLOPEN, GH_SYM_DLMOPEN   # the loader hooks (hooks/loader.pxi)
    const char *const gh_sym_names[]
    ctypedef struct gh_counter_t:
        uint64_t passthrough, fast, green, timeouts, cancelled, blocked, waits, yields
    ctypedef struct gh_thread_t:
        PyObject *state
        int in_flight
        int64_t since_ns
        gh_counter_t counters[GH_NSYM]
        uint32_t fair_calls
        uint32_t fair_limit
        uint64_t fair_seen
    gh_thread_t *gh_self()
    void gh_set_self(gh_thread_t *t)
    void gh_count_unbound(int sym)
    uint64_t gh_unbound(int sym)
    void gh_reset_unbound()
    int64_t gh_now_ns()
    int gh_get_errno()
    void gh_set_errno(int e)

cdef extern from "Python.h":
    ctypedef int (*Py_tracefunc)(PyObject *, PyFrameObject *, int, PyObject *)
    Py_tracefunc gh_get_tracefunc()
    PyObject *gh_get_traceobj()
    void PyEval_SetTrace(Py_tracefunc func, PyObject *obj)
    PyFrameObject *PyEval_GetFrame()
    PyFrameObject *PyFrame_GetBack(PyFrameObject *frame)
    void PyErr_SetObject(PyObject *type, PyObject *value)
    void PyErr_Fetch(PyObject **ptype, PyObject **pvalue, PyObject **ptb)
    void PyErr_Restore(PyObject *ptype, PyObject *pvalue, PyObject *ptb)
    void PyErr_WriteUnraisable(object where)
    enum:
        PyTrace_CALL, PyTrace_EXCEPTION, PyTrace_LINE, PyTrace_RETURN, PyTrace_OPCODE

#: canonical hooks in counter order (the C enum is generated from the same table)
SYMBOL_NAMES = tuple(gh_sym_names[i].decode() for i in range(GH_NSYM))
assert SYMBOL_NAMES == CANONICAL, "gh_symbols.h is stale: rebuild greenhook"

# Results of gh_wait and of the park/retry helpers.
cdef enum:
    GH_READY = 0        # an fd may be ready: probe again
    GH_TIMEDOUT = 1     # the deadline passed
    GH_CANCELLED = 2    # an exception was thrown into the greenlet; it is delivered later
    GH_BLOCK = 3        # this greenlet cannot switch: block the OS thread with the real call
    GH_NONBLOCKING = 4  # the fd is O_NONBLOCK: the caller wants EAGAIN back
    GH_CANCELLED_NOW = 5  # (internal) this wait itself was cancelled, not a later one
    GH_KERNEL = 6       # the real blocking call answered "would block" (its own timeout)

# How a call finished, for the counters.
cdef enum:
    GH_HOW_FAST = 0
    GH_HOW_GREEN = 1
    GH_HOW_BLOCKED = 2

cdef enum:
    GH_UNSET = -2       # deadline not computed yet (-1 means no deadline)

# Seconds past which a timeout is "forever": beyond it now + timeout overflows int64 ns, and
# the kernel itself treats such timeouts as infinite.
cdef int64_t GH_FOREVER_SEC = 1 << 32

# Linux's MAX_RW_COUNT (INT_MAX rounded down to a page): read/write of more is answered by
# the kernel's own checks first.
cdef size_t GH_MAX_RW = 0x7ffff000

# errno a cancelled call returns.  Not EINTR: libpq and others retry EINTR forever.
CANCEL_ERRNO = ETIMEDOUT

include "hooks/real.pxi"
include "hooks/cancel.pxi"
include "hooks/wait.pxi"
include "hooks/fair.pxi"
include "hooks/sockets.pxi"
include "hooks/readiness.pxi"
include "hooks/sleep.pxi"
include "hooks/resolve.pxi"
include "hooks/loader.pxi"
include "hooks/entry.pxi"
include "hooks/face.pxi"
