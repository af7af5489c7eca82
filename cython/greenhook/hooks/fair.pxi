# Included by _hooks.pyx (after wait.pxi): fairness between the greenlets of one OS thread.
#
# A hook returns at once when its fd is ready, without going through the hub.  A greenlet whose
# fd is always ready (a server that answers before the client polls, a socket with room to
# send) can then run call after call and starve every other greenlet of the thread: psycopg2
# with 50 clients saw one connection run 200 queries in a row while the others' answers sat
# unread (p99 3x psycogreen's, which parks on every poll).
#
# Policy (README, Semantics 11).  Every hooked socket call, accept and poll/ppoll of a bound
# thread (non-blocking ones too: libmariadb reads and writes with MSG_DONTWAIT, so its fast
# queries make no other call), and every select/pselect that may wait, increments a
# per-OS-thread count in its entry point (entry.pxi): an increment and a compare, no GIL.
# When the count reaches the thread's interval (N = ``configure(fair_yield=N)`` to start
# with), the call checks whether any hooked call of the thread parked or yielded since the
# previous check; if none did, it lets the hub run once (``backend.sleep(0)``: ready
# greenlets and due timers run) and then does its work.
#
# Interval: a yield during which no other hooked call of the thread parked or yielded found
# nobody to let run, so the interval doubles, up to 4096 calls (or N if larger): a greenlet
# alone in its thread pays one yield per 4096 calls.  Any sign of others (a park or a yield)
# brings it back to N.  Greenlets that never make hooked calls (pure Python) are not seen:
# they get the hub at least every 4096 fast calls of the greedy one (a few ms).
#
# Never where the greenlet cannot switch (no hub, the hub greenlet itself: the interval grows
# as above), nor in unbound threads (no count at all).  A kill or timeout thrown in during the
# yield ends the call as one thrown into a wait does: -1/ETIMEDOUT, ``cancelled`` counted, the
# call's one socket killed (``configure(shutdown_cancelled_sockets=...)``), nothing read or
# written.

#: the default N: measured with bench/drivers.py (bench/README.md, "Fairness")
FAIR_YIELD_DEFAULT = 4

#: the longest interval, in calls: how far it grows when yields find nobody else to run
#: (unless N is larger), and how often a thread with the policy off checks whether it was
#: turned on
cdef enum:
    GH_FAIR_MAX_INTERVAL = 4096

cdef uint32_t _fair_every = FAIR_YIELD_DEFAULT   # N; 0 = off


cdef inline bint _fair_cancelled(gh_thread_t *t, int sym, int fd) noexcept nogil:
    """Count one call; at the end of the thread's interval, maybe yield (``_fair_check``).
    True: an exception was thrown in during the yield -- ``fd`` (the call's socket, or -1) was
    killed as a cancelled wait's is, errno is ETIMEDOUT: the call returns -1, having done
    nothing."""
    t.fair_calls += 1
    if t.fair_calls < t.fair_limit:
        return False
    if not _fair_check(t, sym):
        return False
    _fair_kill(fd)
    return True


cdef inline bint _fair_cancelled_poll(gh_thread_t *t, int sym, pollfd *fds, nfds_t nfds) noexcept nogil:
    """``_fair_cancelled`` for poll/ppoll: a cancelled wait on one fd kills it."""
    t.fair_calls += 1
    if t.fair_calls < t.fair_limit:
        return False
    if not _fair_check(t, sym):
        return False
    # The array is the caller's, not yet checked by the kernel: a probe says if it is readable.
    _fair_kill(fds[0].fd if nfds == 1 and real_poll(fds, 1, 0) >= 0 else -1)
    return True


cdef inline bint _fair_cancelled_select(gh_thread_t *t, int sym, int nfds, fd_set *rd,
                                        fd_set *wr, fd_set *ex, timeval *tv) noexcept nogil:
    """``_fair_cancelled`` for select/pselect: a cancelled wait on one fd kills it, and
    select's ``tv`` (NULL for pselect) gets the time not slept, as after a cancelled wait."""
    cdef int64_t start, slept
    t.fair_calls += 1
    if t.fair_calls < t.fair_limit:
        return False
    start = gh_now_ns()
    if not _fair_check(t, sym):
        return False
    _fair_kill(_single_fd(nfds, rd, wr, ex))
    if tv != NULL:
        slept = gh_now_ns() - start
        tv.tv_sec -= slept // 1000000000
        tv.tv_usec -= (slept % 1000000000) // 1000
        if tv.tv_usec < 0:
            tv.tv_usec += 1000000
            tv.tv_sec -= 1
        if tv.tv_sec < 0:
            tv.tv_sec = 0
            tv.tv_usec = 0
    return True


cdef void _fair_kill(int fd) noexcept nogil:
    if _shutdown_on_cancel and fd >= 0:
        _kill_connection(fd)
    gh_set_errno(ETIMEDOUT)


cdef int _single_fd(int nfds, fd_set *rd, fd_set *wr, fd_set *ex) noexcept nogil:
    """The one fd in the sets, or -1 (none, or several)."""
    cdef int i, found = -1
    for i in range(nfds):
        if (rd != NULL and FD_ISSET(i, rd)) or (wr != NULL and FD_ISSET(i, wr)) \
                or (ex != NULL and FD_ISSET(i, ex)):
            if found >= 0:
                return -1
            found = i
    return found


cdef uint64_t _fair_activity(gh_thread_t *t) noexcept nogil:
    """How many times hooked calls of this OS thread parked or yielded (the sums of its
    ``waits`` and ``yields``): it moves only when the hub ran."""
    cdef uint64_t n = 0
    cdef int i
    for i in range(GH_NSYM):
        n += t.counters[i].waits + t.counters[i].yields
    return n


cdef bint _fair_check(gh_thread_t *t, int sym) noexcept nogil:
    """The thread's count reached its interval: yield if the hub has not run since the last
    check, and pick the next interval.  True: the yield was cancelled (counted; the caller
    kills its fd and returns -1/ETIMEDOUT).  errno is kept otherwise: the call has not begun."""
    cdef uint64_t seen = _fair_activity(t), after, cap, doubled
    cdef uint32_t every = _fair_every
    cdef int rc, e = gh_get_errno()
    cdef PyObject *et
    cdef PyObject *ev
    cdef PyObject *etb
    t.fair_calls = 0
    if every == 0 or seen != t.fair_seen or t.fair_limit == 0:
        # Off, or the hub ran since the last check, or this thread's first call: no yield.
        t.fair_seen = seen
        t.fair_limit = every if every else GH_FAIR_MAX_INTERVAL
        return False
    with gil:
        # As in gh_wait_gen: the C caller may have a Python exception set (psycopg2 does).
        PyErr_Fetch(&et, &ev, &etb)
        rc = _fair_yield_with_gil(t, sym)
        PyErr_Restore(et, ev, etb)
    gh_set_errno(e)
    after = _fair_activity(t)
    if after - seen > 1:
        t.fair_limit = every    # others parked or yielded while this greenlet yielded
    else:
        # Nobody else ran (or no yield was possible here: no hub, the hub greenlet): back off.
        cap = every if every > GH_FAIR_MAX_INTERVAL else GH_FAIR_MAX_INTERVAL
        doubled = <uint64_t>t.fair_limit * 2
        t.fair_limit = <uint32_t>(doubled if doubled < cap else cap)
    t.fair_seen = after
    t.fair_calls = 0            # the others' calls meanwhile were theirs
    if rc != GH_CANCELLED_NOW:
        return False
    t.counters[sym].cancelled += 1
    return True


cdef int _fair_yield_with_gil(gh_thread_t *t, int sym) noexcept:
    """Let the hub run once (``backend.sleep(0)``) if this greenlet can switch: GH_READY
    (yielded), GH_BLOCK (it cannot: no yield), or GH_CANCELLED_NOW (an exception was thrown
    in; it is delivered to the calling Python frame like a cancelled wait's)."""
    cdef _ThreadState st = <_ThreadState>t.state
    if st.pending and st._cancelled_here():
        return GH_BLOCK     # unwinding after a cancellation: the call's own wait fails at once
    try:
        backend = _pinned_backend(st)
        if backend is None or not backend.can_switch():
            return GH_BLOCK
    except BaseException:
        # No yield, and nothing to report: the call goes on exactly as without the policy
        # (a wait's own choice of hub reports such a failure).  Expected at interpreter exit:
        # greenlet refuses getcurrent() in a thread being finalized, while drivers still send
        # their goodbyes (gunicorn's worker exit, tests/deploy).
        return GH_BLOCK
    t.counters[sym].yields += 1
    # The greenlets that run meanwhile count from here: this yield is not "the hub ran" for
    # them (or each would make 2N calls per turn).
    t.fair_seen += 1
    try:
        backend.sleep(0)
    except BackendError as exc:
        _report(exc, "greenhook: the %s backend could not yield in %s (the call goes on)"
                % (backend.name, SYMBOL_NAMES[sym]))
        return GH_BLOCK
    except BaseException as exc:
        # Thrown into the yielding greenlet: a kill or a timeout, as into a wait.
        st._cancel(exc)
        return GH_CANCELLED_NOW
    return GH_READY


def set_fair_yield(unsigned int every):
    """Yield to the hub when ``every`` hooked calls of a thread went by without the hub
    running (0: never); returns the old value.  Process-wide; each thread takes it up at its
    next check (within its current interval: at most 4096 calls, or the old value if larger)."""
    global _fair_every
    old = _fair_every
    _fair_every = every
    return old
