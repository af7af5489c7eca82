"""The catalogue of blocking-relevant libc symbols: which greenhook greens, which it does not yet.

Pure data, shared by the patcher wiring (``_patch``), the auditor and the build (setup.py
writes the hooks' C enum from :data:`HOOKED`).  The hooks themselves live in ``greenhook._hooks``.
"""

#: The one declaration of what greenhook hooks: ``(libc name, canonical hook, what it is)``.
#: Aliases glibc exports (``__poll``, ``__connect``...) and the _FORTIFY_SOURCE twins are greened
#: like their canonical name and counted under it.  Everything else derives from this table:
#: the C enum of canonical hooks (``gh_symbols.h``, written by setup.py at build time), the
#: rows of ``greenhook.stats()``, :data:`GREENED` and ``_hooks.hook_table()`` (tested to agree).
#: Two kinds of rows never wait: the loader (:data:`LOADER`) and the per-fd state hooks
#: (:data:`STATE`); only the calls that wait are greened, counted and reported.
HOOKED = (
    ("connect", "connect", "socket connect"),
    ("__connect", "connect", "socket connect (glibc alias)"),
    ("accept", "accept", "socket accept"),
    ("accept4", "accept4", "socket accept"),
    ("read", "read", "read (sockets only; other fds pass through)"),
    ("__read", "read", "read (glibc alias)"),
    ("__read_chk", "read", "read (_FORTIFY_SOURCE)"),
    ("write", "write", "write (sockets only; other fds pass through)"),
    ("__write", "write", "write (glibc alias)"),
    ("readv", "readv", "readv (sockets only)"),
    ("writev", "writev", "writev (sockets only)"),
    ("recv", "recv", "socket receive"),
    ("__recv_chk", "recv", "socket receive (_FORTIFY_SOURCE)"),
    ("send", "send", "socket send"),
    ("__send", "send", "socket send (glibc alias)"),
    ("recvfrom", "recvfrom", "socket receive"),
    ("__recvfrom_chk", "recvfrom", "socket receive (_FORTIFY_SOURCE)"),
    ("sendto", "sendto", "socket send"),
    ("recvmsg", "recvmsg", "socket receive"),
    ("sendmsg", "sendmsg", "socket send"),
    ("poll", "poll", "readiness wait"),
    ("__poll", "poll", "readiness wait (glibc alias)"),
    ("__poll_chk", "poll", "readiness wait (_FORTIFY_SOURCE)"),
    ("ppoll", "ppoll", "readiness wait"),
    ("__ppoll_chk", "ppoll", "readiness wait (_FORTIFY_SOURCE)"),
    ("select", "select", "readiness wait"),
    ("__select", "select", "readiness wait (glibc alias)"),
    ("pselect", "pselect", "readiness wait"),
    ("sleep", "sleep", "sleep"),
    ("usleep", "usleep", "sleep"),
    ("nanosleep", "nanosleep", "sleep"),
    ("__nanosleep", "nanosleep", "sleep (glibc alias)"),
    ("clock_nanosleep", "clock_nanosleep", "sleep (relative; TIMER_ABSTIME passes through)"),
    # name resolution: the real lookup runs on the resolver pool while the greenlet parks
    ("getaddrinfo", "getaddrinfo", "name lookup (on the resolver pool)"),
    ("getnameinfo", "getnameinfo", "reverse lookup (on the resolver pool)"),
    ("gethostbyname", "gethostbyname", "name lookup (on the resolver pool; per-thread answer)"),
    ("gethostbyname_r", "gethostbyname_r", "name lookup (on the resolver pool)"),
    ("gethostbyname2", "gethostbyname2", "name lookup (on the resolver pool; per-thread answer)"),
    ("gethostbyname2_r", "gethostbyname2_r", "name lookup (on the resolver pool)"),
    ("gethostbyaddr", "gethostbyaddr", "reverse lookup (on the resolver pool; per-thread answer)"),
    ("gethostbyaddr_r", "gethostbyaddr_r", "reverse lookup (on the resolver pool)"),
    ("res_query", "res_query", "DNS query (on the resolver pool, default resolver state)"),
    ("res_search", "res_search", "DNS query (on the resolver pool, default resolver state)"),
    # The loader: never waits.  Auto mode (greenhook.patch_all) patches what it loaded.
    ("dlopen", "dlopen", "library loading (auto mode patches what it loads)"),
    ("dlmopen", "dlmopen", "library loading (auto mode patches what it loads)"),
    # Per-fd state (STATE below): never wait, green nothing.
    ("socket", "socket", "socket creation"),
    ("__socket", "socket", "socket creation (glibc alias)"),
    ("dup", "dup", "fd duplication"),
    ("dup2", "dup2", "fd duplication"),
    ("__dup2", "dup2", "fd duplication (glibc alias)"),
    ("dup3", "dup3", "fd duplication"),
    ("close", "close", "fd close"),
    ("__close", "close", "fd close (glibc alias)"),
)

#: the loader rows of HOOKED: patched only in auto mode, and only in objects without
#: DT_RUNPATH/DT_RPATH (the loader searches the *caller's* run path; through a hook the caller
#: would be greenhook, so such objects are covered by the counter check instead)
LOADER = ("dlopen", "dlmopen")

#: the canonical names of the per-fd state rows of HOOKED: they never wait and green nothing;
#: they forget greenhook's per-fd entry (the identity of the socket a hub watcher was kept for)
#: when a number starts naming another file.  Patched in every object greenhook patches (never
#: a reason to patch one: auto mode ignores them), restored by unpatch; no C enum entry, no
#: row in stats(), not in GREENED nor in PatchReport.symbols; the audit shows them as context.
STATE = ("socket", "dup", "dup2", "dup3", "close")

#: the libc names of the per-fd state rows of HOOKED
FDSTATE = tuple(name for name, canonical, _ in HOOKED if canonical in STATE)

#: canonical hooks in C enum order (``GH_SYM_CONNECT`` = 0, ...): the rows of ``stats()``
CANONICAL = tuple(dict.fromkeys(canonical for _, canonical, _ in HOOKED if canonical not in STATE))

#: symbol -> what it is, for every import greenhook greens (the per-fd state rows excepted)
GREENED = {name: what for name, canonical, what in HOOKED if canonical not in STATE}


def symbols_header():
    """The C header ``gh_symbols.h``: the enum of canonical hooks and their names."""
    lines = ["/* Written by setup.py from greenhook/_symbols.py (HOOKED): do not edit. */",
             "#ifndef GREENHOOK_SYMBOLS_H", "#define GREENHOOK_SYMBOLS_H", "enum {"]
    lines += ["    GH_SYM_%s," % c.upper() for c in CANONICAL]
    lines += ["    GH_NSYM", "};", "static const char *const gh_sym_names[GH_NSYM] = {"]
    lines += ['    "%s",' % c for c in CANONICAL]
    lines += ["};", "#endif", ""]
    return "\n".join(lines)


# Blocking-relevant imports greenhook does not green yet, with the reason shown to users.
NOT_GREENED_YET = {
    "res_nquery": "DNS query on a caller-owned resolver state (not handed to another thread)",
    "res_nsearch": "DNS query on a caller-owned resolver state (not handed to another thread)",
    "recvmmsg": "batched receive (not hooked yet)",
    "sendmmsg": "batched send (not hooked yet)",
    "epoll_wait": "epoll (not hooked yet)",
    "epoll_pwait": "epoll (not hooked yet)",
    "pread": "file I/O (files never wait for readiness)",
    "pread64": "file I/O (files never wait for readiness)",
}

# Imports that matter to the audit because they change how the greened calls behave,
# without blocking themselves.
CONTEXT = {
    "fcntl": "may set O_NONBLOCK (then calls pass through and return EAGAIN)",
    "fcntl64": "may set O_NONBLOCK (then calls pass through and return EAGAIN)",
    "setsockopt": "may set SO_RCVTIMEO/SO_SNDTIMEO (honoured while waiting)",
    "__fdelt_chk": "FD_SET bounds check (_FORTIFY_SOURCE), not blocking",
    "socket": "socket creation (tracked)",
    "syscall": "raw syscalls cannot be hooked",
    "pthread_mutex_lock": "OS-thread lock: blocks the hub only if another OS thread holds it",
    "pthread_cond_wait": "OS-thread condition wait (not I/O; not greened)",
    "pthread_cond_timedwait": "OS-thread condition wait (not I/O; not greened)",
    "sem_wait": "OS-thread semaphore (not I/O; not greened)",
    "waitpid": "child process wait (not I/O; not greened)",
    "flock": "file lock (not I/O; not greened)",
}
