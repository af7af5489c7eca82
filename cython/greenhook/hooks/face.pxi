# Included by _hooks.pyx: the Python face.

# === Python face ============================================================================

# The green function behind each hooked libc name.  Which names are hooked, and under which
# canonical name they count, is declared once in greenhook._symbols.HOOKED; a test checks that
# this map and that table agree.
cdef dict _HOOK_FUNCS = {
    "connect": <uintptr_t>gh_connect,
    "accept": <uintptr_t>gh_accept,
    "accept4": <uintptr_t>gh_accept4,
    "read": <uintptr_t>gh_read,
    "write": <uintptr_t>gh_write,
    "readv": <uintptr_t>gh_readv,
    "writev": <uintptr_t>gh_writev,
    "recv": <uintptr_t>gh_recv,
    "send": <uintptr_t>gh_send,
    "recvfrom": <uintptr_t>gh_recvfrom,
    "sendto": <uintptr_t>gh_sendto,
    "recvmsg": <uintptr_t>gh_recvmsg,
    "sendmsg": <uintptr_t>gh_sendmsg,
    "poll": <uintptr_t>gh_poll,
    "ppoll": <uintptr_t>gh_ppoll,
    "select": <uintptr_t>gh_select,
    "pselect": <uintptr_t>gh_pselect,
    "sleep": <uintptr_t>gh_sleep,
    "usleep": <uintptr_t>gh_usleep,
    "nanosleep": <uintptr_t>gh_nanosleep,
    "clock_nanosleep": <uintptr_t>gh_clock_nanosleep,
    # _FORTIFY_SOURCE twins: their own entry points (a size check first)
    "__read_chk": <uintptr_t>gh___read_chk,
    "__recv_chk": <uintptr_t>gh___recv_chk,
    "__recvfrom_chk": <uintptr_t>gh___recvfrom_chk,
    "__poll_chk": <uintptr_t>gh___poll_chk,
    "__ppoll_chk": <uintptr_t>gh___ppoll_chk,
    # name resolution: the lookup runs on the resolver pool (resolve.pxi)
    "getaddrinfo": <uintptr_t>gh_getaddrinfo,
    "getnameinfo": <uintptr_t>gh_getnameinfo,
    "gethostbyname": <uintptr_t>gh_gethostbyname,
    "gethostbyname_r": <uintptr_t>gh_gethostbyname_r,
    "gethostbyname2": <uintptr_t>gh_gethostbyname2,
    "gethostbyname2_r": <uintptr_t>gh_gethostbyname2_r,
    "gethostbyaddr": <uintptr_t>gh_gethostbyaddr,
    "gethostbyaddr_r": <uintptr_t>gh_gethostbyaddr_r,
    "res_query": <uintptr_t>gh_res_query,
    "res_search": <uintptr_t>gh_res_search,
    # the loader (auto mode: patch what C code loads)
    "dlopen": <uintptr_t>gh_dlopen,
    "dlmopen": <uintptr_t>gh_dlmopen,
}


def hook_functions():
    """{name: address} of every green entry point (plain names and _FORTIFY_SOURCE twins)."""
    return dict(_HOOK_FUNCS)


def hook_table():
    """{libc symbol: address of its green replacement} for every symbol in
    ``_symbols.HOOKED`` that this libc provides (aliases share their canonical hook; the per-fd
    state rows map to ``state_hook_table()``'s entry points)."""
    table = state_hook_table()
    for name, canonical, _ in HOOKED:
        if name in table or dlsym(RTLD_DEFAULT, name.encode()) == NULL:
            continue
        table[name] = _HOOK_FUNCS[name if name in _HOOK_FUNCS else canonical]
    return table


def set_shutdown_on_cancel(bint enabled):
    """Whether a cancelled wait shuts its connected stream socket down; returns the old value."""
    global _shutdown_on_cancel
    old = _shutdown_on_cancel
    _shutdown_on_cancel = enabled
    return old


def set_backend_resolver(resolver):
    """``resolver()`` returns the backend for threads bound without an explicit one (or None)."""
    global _backend_resolver
    _backend_resolver = resolver


def bind_thread(backend=None):
    """Let hooked calls made in this OS thread wait on ``backend`` (None: ask the resolver).

    Returns the thread's state object.  Threads never bound pass every call straight through.
    """
    cdef gh_thread_t *t = gh_self()
    cdef _ThreadState st
    if t != NULL:
        st = <_ThreadState>t.state
    else:
        st = _ThreadState()
        _all_states.append(st)
        _tls.keeper = _Keeper(st)   # retires the state when this thread ends
        gh_set_self(&st.c)
    st.backend = backend
    return st


def unbind_thread():
    """Make hooked calls in this OS thread pass straight through again."""
    gh_set_self(NULL)


def thread_state():
    """This OS thread's state object, or None if it is not bound."""
    cdef gh_thread_t *t = gh_self()
    return None if t == NULL else <_ThreadState>t.state


def forget_other_threads():
    """After fork, in the child: only the forking OS thread exists.  Retire the states of the
    others (their counters stay in ``stats()``); returns how many were dropped."""
    cdef _ThreadState st
    me = PyThread_get_thread_ident()
    gone = [s for s in _all_states if (<_ThreadState>s).thread_ident != me]
    for s in gone:
        st = <_ThreadState>s
        for p in st.pending:
            # Frames of a thread that no longer exists: never touch them again.
            (<_Pending>p).frame = None
        st._retire()
    return len(gone)


def thread_states():
    """The states of live bound threads (for the blocking detector and stats)."""
    return list(_all_states)


def stats():
    """{symbol: {calls, passthrough, fast, green, waits, timeouts, cancelled, blocked, yields}},
    summed over every thread (those that have ended too); symbols never called are left out.
    ``waits`` and ``yields`` (fairness, fair.pxi) count events within calls, not outcomes."""
    cdef _ThreadState st
    cdef gh_counter_t total[GH_NSYM]
    cdef int i
    _zero(total)
    _add(total, _retired)
    for s in _all_states:
        st = <_ThreadState>s
        _add(total, st.c.counters)
    out = {}
    for i in range(GH_NSYM):
        row = {"calls": 0, "passthrough": total[i].passthrough + gh_unbound(i),
               "fast": total[i].fast, "green": total[i].green, "waits": total[i].waits,
               "timeouts": total[i].timeouts, "cancelled": total[i].cancelled,
               "blocked": total[i].blocked, "yields": total[i].yields}
        row["calls"] = (row["passthrough"] + row["fast"] + row["green"] + row["timeouts"]
                        + row["cancelled"] + row["blocked"])
        if row["calls"]:
            out[SYMBOL_NAMES[i]] = row
    return out


def reset_stats():
    cdef _ThreadState st
    gh_reset_unbound()
    _zero(_retired)
    for s in _all_states:
        st = <_ThreadState>s
        _zero(st.c.counters)
