# Included by wait.pxi: per-fd state (a table indexed by fd, as libco keeps one) and the hooks
# that keep it up to date in patched libraries: socket, fcntl/fcntl64 (F_SETFL, F_DUPFD*),
# ioctl(FIONBIO), setsockopt(SO_RCVTIMEO/SO_SNDTIMEO), dup/dup2/dup3, close (and accept,
# in entry.pxi).
#
# What a wait needs to know about its fd -- O_NONBLOCK (then the caller wants EAGAIN back) and
# SO_RCVTIMEO/SO_SNDTIMEO (its deadline) -- used to cost an fcntl(F_GETFL) and a getsockopt per
# wait.  The table caches both, and the identity of the open file they were read from
# (st_dev, st_ino), so that an fd closed and its number reused by code greenhook does not see
# (an unpatched library, Python's os.close/socket.close) can never be waited on with another
# file's state: the cache is a hint, checked by one fstat per wait (the slow path only: the
# fast path, an operation that succeeds at once, never looks at the table).  On a mismatch the
# kernel is asked again and the entry refilled with a new generation, which also tells the
# backends that a watcher kept for the fd number (backends/*.py, wait_fd_gen) is stale.
#
# O_NONBLOCK belongs to the open file description (shared by dups) and the timeouts to the
# socket: any change greenhook sees through a patched library bumps one global epoch, which
# invalidates every entry at once (such changes are rare: libmariadb toggles O_NONBLOCK around
# connect only).  A change made on the *same* open file by code greenhook does not see is not
# noticed until the fd is closed or reopened (README, "Known limits").
#
# The table is lock-free: chunks of 1024 entries installed with a compare-and-swap, each entry
# guarded by a sequence number (odd while written; a reader that sees it change treats the
# entry as a miss, a writer that finds it odd leaves the cache alone).  fds >= 2^20 are never
# cached (every wait asks the kernel, as before).

from libc.stdint cimport uint32_t

cdef extern from * nogil:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #include <errno.h>
    #include <fcntl.h>
    #include <sys/stat.h>
    #include <sys/socket.h>
    #include <sys/ioctl.h>
    #include <sys/time.h>
    #include <sys/uio.h>
    #include <unistd.h>

    #define GH_FD_CHUNK_BITS 10
    #define GH_FD_CHUNK (1 << GH_FD_CHUNK_BITS)
    #define GH_FD_CHUNKS 1024

    typedef struct {
        uint32_t seq;           /* odd while being written */
        uint32_t epoch;         /* gh_fd_epoch when filled; 0: nothing cached */
        uint32_t gen;           /* bumped whenever the entry may name another file */
        int32_t nonblock;       /* O_NONBLOCK was set */
        uint32_t kind;          /* hint for read/write: 0 unknown, 1 socket, 2 anything else */
        uint64_t dev, ino;      /* identity of the open file the state was read from */
        int64_t rcvtimeo_ns, sndtimeo_ns;   /* 0: none */
    } gh_fdinfo_t;

    static gh_fdinfo_t *gh_fd_chunks[GH_FD_CHUNKS];
    static uint32_t gh_fd_epoch = 1;
    static uint64_t gh_fd_hits, gh_fd_misses;   /* racy counters, for tests and the bench */

    static gh_fdinfo_t *gh_fd_slot(int fd, int create) {
        gh_fdinfo_t **pc, *c, *n;
        if (fd < 0 || fd >= GH_FD_CHUNK * GH_FD_CHUNKS)
            return NULL;
        pc = &gh_fd_chunks[fd >> GH_FD_CHUNK_BITS];
        c = __atomic_load_n(pc, __ATOMIC_ACQUIRE);
        if (c == NULL) {
            if (!create)
                return NULL;
            n = (gh_fdinfo_t *)calloc(GH_FD_CHUNK, sizeof(gh_fdinfo_t));
            if (n == NULL)
                return NULL;
            if (__atomic_compare_exchange_n(pc, &c, n, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                c = n;
            else
                free(n);    /* another thread installed one: c is it */
        }
        return &c[fd & (GH_FD_CHUNK - 1)];
    }

    static int gh_fd_write_begin(gh_fdinfo_t *e) {
        uint32_t s = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
        if (s & 1)
            return 0;
        if (!__atomic_compare_exchange_n(&e->seq, &s, s + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
        return 1;
    }

    static void gh_fd_write_end(gh_fdinfo_t *e) {
        __atomic_fetch_add(&e->seq, 1, __ATOMIC_RELEASE);
    }

    /* fd names (or may name) another file from now on: forget what was cached. */
    static void gh_fd_forget(int fd) {
        gh_fdinfo_t *e = gh_fd_slot(fd, 0);
        if (e == NULL)
            return;
        while (!gh_fd_write_begin(e))
            ;   /* a writer holds it for a few instructions */
        e->epoch = 0;
        e->gen++;
        __atomic_store_n(&e->kind, 0, __ATOMIC_RELAXED);
        gh_fd_write_end(e);
    }

    /* Some fd's O_NONBLOCK or timeouts changed (through a patched library): every entry. */
    static void gh_fd_changed(void) {
        uint32_t next = __atomic_add_fetch(&gh_fd_epoch, 1, __ATOMIC_ACQ_REL);
        if (next == 0)
            __atomic_store_n(&gh_fd_epoch, 1, __ATOMIC_RELEASE);   /* 0 means "unfilled" */
    }

    static int64_t gh_timeo_ns(int fd, int opt) {
        struct timeval tv;
        socklen_t tl = sizeof(tv);
        if (getsockopt(fd, SOL_SOCKET, opt, &tv, &tl) == 0 && (tv.tv_sec || tv.tv_usec))
            return (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
        return 0;
    }

    /* What a wait on fd needs: O_NONBLOCK, the timeout for `opt` (SO_RCVTIMEO/SO_SNDTIMEO,
       ns, 0: none) and the entry's generation (0: not cached; a watcher must not be kept).
       One fstat when the cache answers; fcntl + two getsockopt more when it does not. */
    static void gh_fd_wait_state(int fd, int opt, int *nonblock, int64_t *timeo_ns, uint32_t *gen) {
        struct stat st;
        gh_fdinfo_t *e = gh_fd_slot(fd, 1);
        uint32_t s1, epoch, g = 0;
        int fl, have_st;
        int64_t rcv, snd;
        have_st = e != NULL && fstat(fd, &st) == 0;
        epoch = __atomic_load_n(&gh_fd_epoch, __ATOMIC_ACQUIRE);
        if (have_st) {
            s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
            if (!(s1 & 1) && e->epoch == epoch && e->ino == (uint64_t)st.st_ino
                    && e->dev == (uint64_t)st.st_dev) {
                int nb = e->nonblock;
                int64_t t = opt == SO_SNDTIMEO ? e->sndtimeo_ns : e->rcvtimeo_ns;
                g = e->gen;
                __atomic_thread_fence(__ATOMIC_ACQUIRE);
                if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) == s1) {
                    *nonblock = nb;
                    *timeo_ns = t;
                    *gen = g;
                    gh_fd_hits++;
                    return;
                }
            }
        }
        gh_fd_misses++;
        fl = fcntl(fd, F_GETFL);
        rcv = gh_timeo_ns(fd, SO_RCVTIMEO);
        snd = gh_timeo_ns(fd, SO_SNDTIMEO);
        *nonblock = fl >= 0 && (fl & O_NONBLOCK);
        *timeo_ns = opt == SO_SNDTIMEO ? snd : rcv;
        *gen = 0;
        if (!have_st || fl < 0 || !gh_fd_write_begin(e))
            return;
        if (e->epoch == 0 || e->ino != (uint64_t)st.st_ino || e->dev != (uint64_t)st.st_dev) {
            e->gen++;
            __atomic_store_n(&e->kind, S_ISSOCK(st.st_mode) ? 1 : 2, __ATOMIC_RELAXED);
        }
        if (e->gen == 0)
            e->gen = 1;
        e->dev = (uint64_t)st.st_dev;
        e->ino = (uint64_t)st.st_ino;
        e->nonblock = *nonblock;
        e->rcvtimeo_ns = rcv;
        e->sndtimeo_ns = snd;
        e->epoch = epoch;
        *gen = e->gen;
        gh_fd_write_end(e);
    }

    /* The generation of fd's entry if it still names the file it was filled for (one fstat),
       else 0.  For waits that need no flags (poll): a kept watcher is still valid. */
    static uint32_t gh_fd_identity(int fd) {
        int nb;
        int64_t t;
        uint32_t g;
        gh_fd_wait_state(fd, SO_RCVTIMEO, &nb, &t, &g);
        return g;
    }

    /* Whether read/write on fd count as socket calls (stats) -- a hint, learnt with one
       fstat the first time a number is used and forgotten by the close/dup hooks and when a
       wait finds another file there.  It never decides whether a call may wait. */
    static int gh_fd_socket_hint(int fd) {
        struct stat st;
        uint32_t k = 0;
        gh_fdinfo_t *e = gh_fd_slot(fd, 1);
        if (e != NULL) {
            k = __atomic_load_n(&e->kind, __ATOMIC_RELAXED);
            if (k)
                return k == 1;
        }
        if (fstat(fd, &st) != 0)
            return 0;
        k = S_ISSOCK(st.st_mode) ? 1 : 2;
        if (e != NULL)
            __atomic_store_n(&e->kind, k, __ATOMIC_RELAXED);
        return k == 1;
    }

    #ifndef RWF_NOWAIT
    #define RWF_NOWAIT 0x00000008
    #endif
    /* read/write that never wait, on any kind of fd: a socket reads as recv(MSG_DONTWAIT), a
       pipe or FIFO says EAGAIN when empty/full; EOPNOTSUPP where the file does not support
       it (ttys, old kernels), EINVAL/ENOSYS where the kernel does not know the flag. */
    static ssize_t gh_read_nowait(int fd, void *buf, size_t n) {
        struct iovec v;
        v.iov_base = buf;
        v.iov_len = n;
        return preadv2(fd, &v, 1, -1, RWF_NOWAIT);
    }

    static ssize_t gh_write_nowait(int fd, const void *buf, size_t n) {
        struct iovec v;
        v.iov_base = (void *)buf;
        v.iov_len = n;
        return pwritev2(fd, &v, 1, -1, RWF_NOWAIT);
    }

    static int gh_nowait_unsupported(int e) {
        return e == EAGAIN || e == EWOULDBLOCK || e == EOPNOTSUPP || e == EINVAL || e == ENOSYS
            || e == ESPIPE;
    }

    #ifndef SO_RCVTIMEO_NEW
    #define SO_RCVTIMEO_NEW 66
    #endif
    #ifndef SO_SNDTIMEO_NEW
    #define SO_SNDTIMEO_NEW 67
    #endif
    #ifndef SO_RCVTIMEO_OLD
    #define SO_RCVTIMEO_OLD SO_RCVTIMEO
    #endif
    #ifndef SO_SNDTIMEO_OLD
    #define SO_SNDTIMEO_OLD SO_SNDTIMEO
    #endif
    static int gh_is_timeo_opt(int level, int opt) {
        return level == SOL_SOCKET && (opt == SO_RCVTIMEO_OLD || opt == SO_SNDTIMEO_OLD
                                       || opt == SO_RCVTIMEO_NEW || opt == SO_SNDTIMEO_NEW);
    }
    #ifndef F_DUPFD_CLOEXEC
    #define F_DUPFD_CLOEXEC 1030
    #endif
    """
    void gh_fd_forget(int fd)
    void gh_fd_changed()
    void gh_fd_wait_state(int fd, int opt, int *nonblock, int64_t *timeo_ns, uint32_t *gen)
    uint32_t gh_fd_identity(int fd)
    int gh_is_timeo_opt(int level, int opt)
    int gh_fd_socket_hint(int fd)
    ssize_t gh_read_nowait(int fd, void *buf, size_t n)
    ssize_t gh_write_nowait(int fd, const void *buf, size_t n)
    int gh_nowait_unsupported(int e)
    uint64_t gh_fd_hits, gh_fd_misses
    enum:
        F_DUPFD, F_DUPFD_CLOEXEC, FIONBIO

# --- the real functions -----------------------------------------------------------------------

ctypedef int (*socket_t)(int, int, int) noexcept nogil
ctypedef int (*fcntl_t)(int, int, long) noexcept nogil
ctypedef int (*ioctl_t)(int, unsigned long, void *) noexcept nogil
ctypedef int (*setsockopt_t)(int, int, int, const void *, socklen_t) noexcept nogil
ctypedef int (*dup_t)(int) noexcept nogil
ctypedef int (*dup2_t)(int, int) noexcept nogil
ctypedef int (*dup3_t)(int, int, int) noexcept nogil
ctypedef int (*close_t)(int) noexcept nogil

cdef socket_t real_socket = <socket_t>dlsym(RTLD_DEFAULT, "socket")
cdef fcntl_t real_fcntl = <fcntl_t>dlsym(RTLD_DEFAULT, "fcntl")
cdef fcntl_t real_fcntl64 = <fcntl_t>dlsym(RTLD_DEFAULT, "fcntl64")
if real_fcntl64 == NULL:
    real_fcntl64 = real_fcntl
cdef ioctl_t real_ioctl = <ioctl_t>dlsym(RTLD_DEFAULT, "ioctl")
cdef setsockopt_t real_setsockopt = <setsockopt_t>dlsym(RTLD_DEFAULT, "setsockopt")
cdef dup_t real_dup = <dup_t>dlsym(RTLD_DEFAULT, "dup")
cdef dup2_t real_dup2 = <dup2_t>dlsym(RTLD_DEFAULT, "dup2")
cdef dup3_t real_dup3 = <dup3_t>dlsym(RTLD_DEFAULT, "dup3")
cdef close_t real_close = <close_t>dlsym(RTLD_DEFAULT, "close")


# --- the hooks: they never wait; they call the real function and note what changed -----------
#
# fcntl and ioctl are variadic in libc.  Their hooks take the one optional argument as a word:
# on the x86-64 and AArch64 Linux ABIs a variadic caller passes it in the same register a
# fixed-argument callee reads, and every fcntl/ioctl request takes at most one argument (an int
# or a pointer), which is passed on unchanged.

cdef int gh_socket(int domain, int kind, int protocol) noexcept nogil:
    cdef int r = real_socket(domain, kind, protocol)
    if r >= 0:
        gh_fd_forget(r)
    return r


cdef inline int _fcntl_after(int r, int fd, int cmd) noexcept nogil:
    if r >= 0:
        if cmd == F_SETFL:
            gh_fd_changed()
        elif cmd == F_DUPFD or cmd == F_DUPFD_CLOEXEC:
            gh_fd_forget(r)
    return r


cdef int gh_fcntl(int fd, int cmd, long arg) noexcept nogil:
    return _fcntl_after(real_fcntl(fd, cmd, arg), fd, cmd)


cdef int gh_fcntl64(int fd, int cmd, long arg) noexcept nogil:
    return _fcntl_after(real_fcntl64(fd, cmd, arg), fd, cmd)


cdef int gh_ioctl(int fd, unsigned long request, void *arg) noexcept nogil:
    cdef int r = real_ioctl(fd, request, arg)
    if r >= 0 and request == FIONBIO:
        gh_fd_changed()
    return r


cdef int gh_setsockopt(int fd, int level, int opt, const void *val, socklen_t vlen) noexcept nogil:
    cdef int r = real_setsockopt(fd, level, opt, val, vlen)
    if r == 0 and gh_is_timeo_opt(level, opt):
        gh_fd_changed()
    return r


cdef int gh_dup(int fd) noexcept nogil:
    cdef int r = real_dup(fd)
    if r >= 0:
        gh_fd_forget(r)
    return r


cdef int gh_dup2(int fd, int fd2) noexcept nogil:
    cdef int r = real_dup2(fd, fd2)
    if r >= 0:
        gh_fd_forget(r)
    return r


cdef int gh_dup3(int fd, int fd2, int flags) noexcept nogil:
    cdef int r = real_dup3(fd, fd2, flags)
    if r >= 0:
        gh_fd_forget(r)
    return r


cdef int gh_close(int fd) noexcept nogil:
    cdef int r = real_close(fd)
    # Forgotten whatever close returned: on Linux the number is released even on EINTR/EIO.
    # (gh_fd_forget leaves errno alone.)
    gh_fd_forget(fd)
    return r


# The entry points, by libc name (_symbols.FDSTATE_HOOKED; a test checks they agree).
cdef dict _STATE_FUNCS = {
    "socket": <uintptr_t>gh_socket,
    "fcntl": <uintptr_t>gh_fcntl,
    "fcntl64": <uintptr_t>gh_fcntl64,
    "ioctl": <uintptr_t>gh_ioctl,
    "setsockopt": <uintptr_t>gh_setsockopt,
    "dup": <uintptr_t>gh_dup,
    "dup2": <uintptr_t>gh_dup2,
    "dup3": <uintptr_t>gh_dup3,
    "close": <uintptr_t>gh_close,
}


def state_functions():
    """{name: address} of the per-fd state entry points."""
    return dict(_STATE_FUNCS)


def state_hook_table():
    """{libc symbol: entry point} for every row of ``_symbols.FDSTATE_HOOKED`` this libc
    provides (aliases share their entry point)."""
    from greenhook._symbols import FDSTATE_HOOKED
    table = {}
    for name, entry, _ in FDSTATE_HOOKED:
        if dlsym(RTLD_DEFAULT, name.encode()) != NULL:
            table[name] = _STATE_FUNCS[entry]
    return table


# --- for tests and the bench ------------------------------------------------------------------

def fd_cache_stats():
    """{"hits": n, "misses": n}: waits whose fd state came from the per-fd table (one fstat)
    or from the kernel (fcntl + getsockopt).  Racy counters, for tests and the bench."""
    return {"hits": gh_fd_hits, "misses": gh_fd_misses}
