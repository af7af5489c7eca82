# Included by _hooks.pyx: green sleeps (entry points in entry.pxi).

# --- sleeps ---------------------------------------------------------------------------------

cdef int _sleep_until(gh_thread_t *t, int sym, int64_t deadline) noexcept nogil:
    """Green sleep until ``deadline``: GH_TIMEDOUT when done, GH_CANCELLED or GH_BLOCK."""
    cdef int rc, e0 = gh_get_errno()
    while True:
        rc = gh_wait(t, NULL, 0, deadline, sym)
        if rc != GH_TIMEDOUT:
            return rc
        if deadline >= 0 and gh_now_ns() >= deadline:
            gh_set_errno(e0)    # a completed sleep leaves errno alone
            return GH_TIMEDOUT


cdef inline void _fill_rem(timespec *rem, int64_t deadline) noexcept nogil:
    cdef int64_t left
    if rem == NULL:
        return
    left = deadline - gh_now_ns()
    if left < 0:
        left = 0
    rem.tv_sec = left // 1000000000
    rem.tv_nsec = left % 1000000000
