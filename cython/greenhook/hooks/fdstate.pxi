# Included by wait.pxi: per-fd state (a table indexed by fd, as libco keeps one) and the hooks
# that keep it up to date in patched libraries: socket, dup/dup2/dup3, close (and accept, in
# entry.pxi).
#
# The table holds no flag a wait acts on: O_NONBLOCK (then the caller wants EAGAIN back) is
# read with fcntl(F_GETFL) and SO_RCVTIMEO/SO_SNDTIMEO (its deadline) with getsockopt on every
# wait, because code greenhook does not see (an unpatched library, Python's
# socket.setblocking/settimeout, ctypes) can change both on the same open socket at any time,
# and no hook could ever notice that.  (A wait on an O_NONBLOCK fd stops after the fcntl.)
# What the table keeps is the identity (st_dev, st_ino) of the socket a hub watcher was kept
# for and a generation: one fstat per wait tells whether the number still names that socket
# -- an fd closed and its number reused behind greenhook's back gets a new generation, which
# tells the backends that the watcher kept for the number (backends/*.py, wait_fd_gen) is
# stale.  Only sockets keep a watcher: a socket's inode is its own, while the two ends of a
# pipe, or a FIFO opened twice, share one.  The close/dup/socket/accept hooks forget an entry
# early (a cheap invalidation); correctness rests on the fstat.
#
# The table is lock-free: chunks of 1024 entries installed with a compare-and-swap, each entry
# guarded by a sequence number (odd while written; a reader that sees it change treats the
# entry as a miss, a writer that finds it odd leaves the cache alone).  fds >= 2^20 are never
# cached (no watcher is kept for them).

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
        uint32_t filled;        /* 1: dev/ino name the file the entry was filled for */
        uint32_t gen;           /* bumped whenever the entry may name another file */
        uint32_t kind;          /* hint for read/write: 0 unknown, 1 socket, 2 anything else */
        uint64_t dev, ino;      /* identity of the socket a watcher was kept for */
    } gh_fdinfo_t;

    static gh_fdinfo_t *gh_fd_chunks[GH_FD_CHUNKS];
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
        e->filled = 0;
        e->gen++;
        __atomic_store_n(&e->kind, 0, __ATOMIC_RELAXED);
        gh_fd_write_end(e);
    }

    static int64_t gh_timeo_ns(int fd, int opt) {
        struct timeval tv;
        socklen_t tl = sizeof(tv);
        if (getsockopt(fd, SOL_SOCKET, opt, &tv, &tl) == 0 && (tv.tv_sec || tv.tv_usec))
            return (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
        return 0;
    }

    /* The generation of fd's entry, given a fresh fstat of fd: the same as last time while
       the fd names the same socket, a new one when it names another file; 0 for anything
       that is not a socket (and fds the table does not cover): no watcher is kept for it.
       A socket's inode is its own (no other open file shares it), so (st_dev, st_ino) names
       exactly one socket; two files of a pipe or a FIFO opened twice share an inode, which is
       why only sockets keep a watcher. */
    static uint32_t gh_fd_gen_of(int fd, const struct stat *st) {
        gh_fdinfo_t *e;
        uint32_t s1, g;
        if (!S_ISSOCK(st->st_mode)) {
            if ((e = gh_fd_slot(fd, 0)) != NULL)
                __atomic_store_n(&e->kind, 2, __ATOMIC_RELAXED);
            return 0;
        }
        e = gh_fd_slot(fd, 1);
        if (e == NULL)
            return 0;
        s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
        if (!(s1 & 1) && e->filled && e->ino == (uint64_t)st->st_ino
                && e->dev == (uint64_t)st->st_dev) {
            g = e->gen;
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) == s1) {
                gh_fd_hits++;
                return g;
            }
        }
        gh_fd_misses++;
        if (!gh_fd_write_begin(e))
            return 0;
        e->gen++;
        if (e->gen == 0)
            e->gen = 1;
        e->dev = (uint64_t)st->st_dev;
        e->ino = (uint64_t)st->st_ino;
        e->filled = 1;
        __atomic_store_n(&e->kind, 1, __ATOMIC_RELAXED);
        g = e->gen;
        gh_fd_write_end(e);
        return g;
    }

    /* What a wait on fd needs, always read from the kernel: O_NONBLOCK (fcntl F_GETFL; the
       caller wants EAGAIN back, nothing else is asked) and, for a socket, the timeout for
       `opt` (SO_RCVTIMEO/SO_SNDTIMEO, ns, 0: none), plus the generation for a kept watcher
       (gh_fd_gen_of: one fstat).  Nothing here is cached, so a change made to the same open
       file by code greenhook does not see is seen by the next wait. */
    static void gh_fd_wait_state(int fd, int opt, int *nonblock, int64_t *timeo_ns, uint32_t *gen) {
        struct stat st;
        int fl = fcntl(fd, F_GETFL);
        *nonblock = fl >= 0 && (fl & O_NONBLOCK);
        *timeo_ns = 0;
        *gen = 0;
        if (fl < 0 || *nonblock || fstat(fd, &st) != 0)
            return;     /* EBADF: the wait (or the retry) reports it */
        if (S_ISSOCK(st.st_mode))
            *timeo_ns = gh_timeo_ns(fd, opt);
        *gen = gh_fd_gen_of(fd, &st);
    }

    /* The generation for a wait that needs no flags (poll, a call's later waits): one fstat. */
    static uint32_t gh_fd_identity(int fd) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return 0;
        return gh_fd_gen_of(fd, &st);
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

    """
    void gh_fd_forget(int fd)
    void gh_fd_wait_state(int fd, int opt, int *nonblock, int64_t *timeo_ns, uint32_t *gen)
    uint32_t gh_fd_identity(int fd)
    int gh_fd_socket_hint(int fd)
    ssize_t gh_read_nowait(int fd, void *buf, size_t n)
    ssize_t gh_write_nowait(int fd, const void *buf, size_t n)
    int gh_nowait_unsupported(int e)
    uint64_t gh_fd_hits, gh_fd_misses

# --- the real functions -----------------------------------------------------------------------

ctypedef int (*socket_t)(int, int, int) noexcept nogil
ctypedef int (*dup_t)(int) noexcept nogil
ctypedef int (*dup2_t)(int, int) noexcept nogil
ctypedef int (*dup3_t)(int, int, int) noexcept nogil
ctypedef int (*close_t)(int) noexcept nogil

cdef socket_t real_socket = <socket_t>dlsym(RTLD_DEFAULT, "socket")
cdef dup_t real_dup = <dup_t>dlsym(RTLD_DEFAULT, "dup")
cdef dup2_t real_dup2 = <dup2_t>dlsym(RTLD_DEFAULT, "dup2")
cdef dup3_t real_dup3 = <dup3_t>dlsym(RTLD_DEFAULT, "dup3")
cdef close_t real_close = <close_t>dlsym(RTLD_DEFAULT, "close")


# --- the hooks: they never wait; they call the real function and note what changed -----------

cdef int gh_socket(int domain, int kind, int protocol) noexcept nogil:
    cdef int r = real_socket(domain, kind, protocol)
    if r >= 0:
        gh_fd_forget(r)
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


# The entry points, by canonical name (the rows of _symbols.HOOKED whose canonical name is in
# _symbols.STATE; a test checks they agree).
cdef dict _STATE_FUNCS = {
    "socket": <uintptr_t>gh_socket,
    "dup": <uintptr_t>gh_dup,
    "dup2": <uintptr_t>gh_dup2,
    "dup3": <uintptr_t>gh_dup3,
    "close": <uintptr_t>gh_close,
}


def state_functions():
    """{name: address} of the per-fd state entry points."""
    return dict(_STATE_FUNCS)


def state_hook_table():
    """{libc symbol: entry point} for every per-fd state row of ``_symbols.HOOKED``
    (``_symbols.STATE``) this libc provides (aliases share their entry point)."""
    from greenhook._symbols import HOOKED, STATE
    table = {}
    for name, entry, _ in HOOKED:
        if entry in STATE and dlsym(RTLD_DEFAULT, name.encode()) != NULL:
            table[name] = _STATE_FUNCS[entry]
    return table


# --- for tests and the bench ------------------------------------------------------------------

def fd_cache_stats():
    """{"hits": n, "misses": n}: waits on a socket whose entry still named it (a kept watcher
    may be reused) or did not (a new generation).  Racy counters, for tests and the bench."""
    return {"hits": gh_fd_hits, "misses": gh_fd_misses}
