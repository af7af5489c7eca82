"""The catalogue of blocking-relevant libc symbols: which greenhook greens, which it does not yet.

Pure data, shared by the patcher wiring (``_patch``) and the auditor.  The hooks themselves
live in ``greenhook._hooks``; ``GREENED`` must name exactly the symbols that module exports.
"""

# Symbol -> what it is, for every import greenhook replaces.  Aliases that glibc exports
# (``__poll``, ``__connect``...) and the _FORTIFY_SOURCE twins are greened like the plain name.
GREENED = {
    "connect": "socket connect",
    "__connect": "socket connect (glibc alias)",
    "accept": "socket accept",
    "accept4": "socket accept",
    "read": "read (sockets only; other fds pass through)",
    "__read": "read (glibc alias)",
    "__read_chk": "read (_FORTIFY_SOURCE)",
    "write": "write (sockets only; other fds pass through)",
    "__write": "write (glibc alias)",
    "readv": "readv (sockets only)",
    "writev": "writev (sockets only)",
    "recv": "socket receive",
    "__recv_chk": "socket receive (_FORTIFY_SOURCE)",
    "send": "socket send",
    "__send": "socket send (glibc alias)",
    "recvfrom": "socket receive",
    "__recvfrom_chk": "socket receive (_FORTIFY_SOURCE)",
    "sendto": "socket send",
    "recvmsg": "socket receive",
    "sendmsg": "socket send",
    "poll": "readiness wait",
    "__poll": "readiness wait (glibc alias)",
    "__poll_chk": "readiness wait (_FORTIFY_SOURCE)",
    "ppoll": "readiness wait",
    "__ppoll_chk": "readiness wait (_FORTIFY_SOURCE)",
    "select": "readiness wait",
    "__select": "readiness wait (glibc alias)",
    "pselect": "readiness wait",
    "sleep": "sleep",
    "usleep": "sleep",
    "nanosleep": "sleep",
    "__nanosleep": "sleep (glibc alias)",
    "clock_nanosleep": "sleep (relative; TIMER_ABSTIME passes through)",
}

# Blocking-relevant imports greenhook does not green yet, with the reason shown to users.
NOT_GREENED_YET = {
    "getaddrinfo": "DNS resolution (cooperative DNS is planned)",
    "gethostbyname": "DNS resolution (cooperative DNS is planned)",
    "gethostbyname_r": "DNS resolution (cooperative DNS is planned)",
    "gethostbyname2_r": "DNS resolution (cooperative DNS is planned)",
    "getnameinfo": "reverse DNS (cooperative DNS is planned)",
    "gethostbyaddr_r": "reverse DNS (cooperative DNS is planned)",
    "res_query": "DNS resolution (cooperative DNS is planned)",
    "res_nquery": "DNS resolution (cooperative DNS is planned)",
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
    "socket": "socket creation",
    "syscall": "raw syscalls cannot be hooked",
    "pthread_mutex_lock": "OS-thread lock: blocks the hub only if another OS thread holds it",
    "pthread_cond_wait": "OS-thread condition wait (not I/O; not greened)",
    "pthread_cond_timedwait": "OS-thread condition wait (not I/O; not greened)",
    "sem_wait": "OS-thread semaphore (not I/O; not greened)",
    "waitpid": "child process wait (not I/O; not greened)",
    "flock": "file lock (not I/O; not greened)",
}
