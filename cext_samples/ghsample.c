/*
 * ghsample: sample C client library for greenhook's tests (see ghsample.h, README.md).
 *
 * One source, several link-flag variants (build_samples.py).  Compile-time switches:
 *   GHS_VARIANT="name"    the variant name reported by ghs_variant()
 *   GHS_ADDRESS_TAKEN     ghs_request() reaches the blocking libc calls only through a
 *                         table of function pointers initialised in data (R_X86_64_64
 *                         relocations), while the thin wrappers still call through the PLT
 *   _FORTIFY_SOURCE=2     (with -O2) the request code receives into fixed-size local
 *                         buffers with lengths the compiler cannot bound, so glibc's
 *                         checking twins (__recv_chk, __read_chk, __recvfrom_chk,
 *                         __poll_chk, __ppoll_chk, __fdelt_chk) are really imported
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ghsample.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#ifndef GHS_VARIANT
#define GHS_VARIANT "unknown"
#endif

#define GHS_HIDDEN __attribute__((visibility("hidden")))

/* Receive chunk on the stack.  Kept small on purpose: greenlets copy the used part of the
 * C stack when they switch, and real drivers receive into heap buffers. */
#define GHS_CHUNK 4096
#define GHS_UDP_MAX_PAYLOAD (65507 - GHS_REQUEST_HEADER_SIZE)

/* ------------------------------------------------------------------------------------
 * How ghs_request reaches libc.
 * ---------------------------------------------------------------------------------- */
#ifdef GHS_ADDRESS_TAKEN
/* Function pointers initialised in data: the static linker emits R_X86_64_64 relocations
 * against the libc symbols in .data.  The table is a non-static (hidden) global so that
 * the compiler cannot prove it constant and fold the calls back into direct PLT calls. */
struct ghs_libc_table {
    __typeof__(connect) *p_connect;
    __typeof__(accept) *p_accept;
    __typeof__(accept4) *p_accept4;
    __typeof__(read) *p_read;
    __typeof__(write) *p_write;
    __typeof__(readv) *p_readv;
    __typeof__(writev) *p_writev;
    __typeof__(recv) *p_recv;
    __typeof__(send) *p_send;
    __typeof__(recvfrom) *p_recvfrom;
    __typeof__(sendto) *p_sendto;
    __typeof__(recvmsg) *p_recvmsg;
    __typeof__(sendmsg) *p_sendmsg;
    __typeof__(poll) *p_poll;
    __typeof__(ppoll) *p_ppoll;
    __typeof__(select) *p_select;
    __typeof__(pselect) *p_pselect;
    __typeof__(usleep) *p_usleep;
    __typeof__(nanosleep) *p_nanosleep;
    __typeof__(clock_nanosleep) *p_clock_nanosleep;
};

GHS_HIDDEN struct ghs_libc_table ghs_libc = {
    .p_connect = connect,
    .p_accept = accept,
    .p_accept4 = accept4,
    .p_read = read,
    .p_write = write,
    .p_readv = readv,
    .p_writev = writev,
    .p_recv = recv,
    .p_send = send,
    .p_recvfrom = recvfrom,
    .p_sendto = sendto,
    .p_recvmsg = recvmsg,
    .p_sendmsg = sendmsg,
    .p_poll = poll,
    .p_ppoll = ppoll,
    .p_select = select,
    .p_pselect = pselect,
    .p_usleep = usleep,
    .p_nanosleep = nanosleep,
    .p_clock_nanosleep = clock_nanosleep,
};
#define LC(name) (ghs_libc.p_##name)
#else
#define LC(name) name
#endif

/* Hide a value from the optimiser.  Under _FORTIFY_SOURCE a length the compiler can prove
 * to fit the buffer makes glibc call the plain function instead of the __*_chk twin. */
static inline size_t ghs_opaque(size_t v)
{
    __asm__("" : "+r"(v));
    return v;
}

/* ------------------------------------------------------------------------------------
 * Thin wrappers.
 * ---------------------------------------------------------------------------------- */
int ghs_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    return connect(fd, addr, addrlen);
}

int ghs_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    return accept(fd, addr, addrlen);
}

int ghs_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    return accept4(fd, addr, addrlen, flags);
}

ssize_t ghs_read(int fd, void *buf, size_t count)
{
    return read(fd, buf, count);
}

ssize_t ghs_write(int fd, const void *buf, size_t count)
{
    return write(fd, buf, count);
}

ssize_t ghs_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return readv(fd, iov, iovcnt);
}

ssize_t ghs_writev(int fd, const struct iovec *iov, int iovcnt)
{
    return writev(fd, iov, iovcnt);
}

ssize_t ghs_recv(int fd, void *buf, size_t len, int flags)
{
    return recv(fd, buf, len, flags);
}

ssize_t ghs_send(int fd, const void *buf, size_t len, int flags)
{
    return send(fd, buf, len, flags);
}

ssize_t ghs_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src_addr,
                     socklen_t *addrlen)
{
    return recvfrom(fd, buf, len, flags, src_addr, addrlen);
}

ssize_t ghs_sendto(int fd, const void *buf, size_t len, int flags,
                   const struct sockaddr *dest_addr, socklen_t addrlen)
{
    return sendto(fd, buf, len, flags, dest_addr, addrlen);
}

ssize_t ghs_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return recvmsg(fd, msg, flags);
}

ssize_t ghs_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return sendmsg(fd, msg, flags);
}

int ghs_poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    return poll(fds, nfds, timeout);
}

int ghs_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo_p,
              const sigset_t *sigmask)
{
    return ppoll(fds, nfds, tmo_p, sigmask);
}

int ghs_select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
               struct timeval *timeout)
{
    return select(nfds, readfds, writefds, exceptfds, timeout);
}

int ghs_pselect(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
                const struct timespec *timeout, const sigset_t *sigmask)
{
    return pselect(nfds, readfds, writefds, exceptfds, timeout, sigmask);
}

unsigned int ghs_sleep(unsigned int seconds)
{
    return sleep(seconds);
}

int ghs_usleep(useconds_t usec)
{
    return usleep(usec);
}

int ghs_nanosleep(const struct timespec *req, struct timespec *rem)
{
    return nanosleep(req, rem);
}

int ghs_clock_nanosleep(clockid_t clockid, int flags, const struct timespec *request,
                        struct timespec *remain)
{
    return clock_nanosleep(clockid, flags, request, remain);
}

/* ------------------------------------------------------------------------------------
 * Request styles.
 * ---------------------------------------------------------------------------------- */
enum { K_STREAM, K_UDP, K_SLEEP };
enum { IO_SEND, IO_RW, IO_VEC, IO_MSG };
enum { W_NONE, W_POLL, W_PPOLL, W_SELECT, W_PSELECT };
enum {
    F_UNIX = 1,
    F_NONBLOCK = 2,
    F_RCVTIMEO = 4,
    F_ACCEPT = 8,
    F_ACCEPT4 = 16,
    F_USLEEP = 32,
    F_NANOSLEEP = 64,
    F_CLOCK_NANOSLEEP = 128,
};

struct ghs_style {
    const char *name;
    int kind;
    int io;
    int wait;
    int flags;
};

static const struct ghs_style ghs_styles[] = {
    {"send_recv", K_STREAM, IO_SEND, W_NONE, 0},
    {"read_write", K_STREAM, IO_RW, W_NONE, 0},
    {"readv_writev", K_STREAM, IO_VEC, W_NONE, 0},
    {"sendmsg_recvmsg", K_STREAM, IO_MSG, W_NONE, 0},
    {"unix", K_STREAM, IO_SEND, W_NONE, F_UNIX},
    {"udp", K_UDP, IO_SEND, W_NONE, 0},
    {"poll_nonblock", K_STREAM, IO_SEND, W_POLL, F_NONBLOCK},
    {"ppoll", K_STREAM, IO_SEND, W_PPOLL, F_NONBLOCK},
    {"select", K_STREAM, IO_SEND, W_SELECT, 0},
    {"pselect", K_STREAM, IO_SEND, W_PSELECT, 0},
    {"rcvtimeo", K_STREAM, IO_SEND, W_NONE, F_RCVTIMEO},
    {"accept", K_STREAM, IO_SEND, W_NONE, F_ACCEPT},
    {"accept4", K_STREAM, IO_SEND, W_NONE, F_ACCEPT4},
    {"usleep", K_SLEEP, IO_SEND, W_NONE, F_USLEEP},
    {"nanosleep", K_SLEEP, IO_SEND, W_NONE, F_NANOSLEEP},
    {"clock_nanosleep", K_SLEEP, IO_SEND, W_NONE, F_CLOCK_NANOSLEEP},
};

#define GHS_NSTYLES ((int)(sizeof ghs_styles / sizeof ghs_styles[0]))

const char *ghs_style_name(int i)
{
    if (i < 0 || i >= GHS_NSTYLES)
        return NULL;
    return ghs_styles[i].name;
}

const char *ghs_variant(void)
{
    return GHS_VARIANT;
}

union ghs_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_un un;
};

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_request_header(unsigned char *h, int op, uint16_t port, int delay_ms,
                               size_t len)
{
    put_u16(h, (uint16_t)op);
    put_u16(h + 2, port);
    put_u32(h + 4, (uint32_t)delay_ms);
    put_u32(h + 8, (uint32_t)len);
}

static void close_keep_errno(int fd)
{
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
}

static int make_inet_addr(const char *host, int port, union ghs_addr *a, socklen_t *alen)
{
    memset(a, 0, sizeof *a);
    if (port <= 0 || port > 65535)
        return EINVAL;
    a->in.sin_family = AF_INET;
    a->in.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host ? host : "127.0.0.1", &a->in.sin_addr) != 1)
        return EINVAL;
    *alen = sizeof a->in;
    return 0;
}

static int make_unix_addr(const char *path, union ghs_addr *a, socklen_t *alen)
{
    size_t n;
    memset(a, 0, sizeof *a);
    if (!path || !*path)
        return EINVAL;
    n = strlen(path);
    if (n >= sizeof a->un.sun_path)
        return ENAMETOOLONG;
    a->un.sun_family = AF_UNIX;
    memcpy(a->un.sun_path, path, n + 1);
    *alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/* Wait until fd may be ready for `events` (POLLIN or POLLOUT).  0 or an errno value. */
static int wait_fd(int how, int fd, short events)
{
    if (how == W_POLL || how == W_PPOLL) {
        struct pollfd pfd[1];
        for (;;) {
            int r;
            pfd[0].fd = fd;
            pfd[0].events = (short)(events | POLLERR);
            pfd[0].revents = 0;
            if (how == W_POLL)
                r = LC(poll)(pfd, (nfds_t)ghs_opaque(1), -1);
            else
                r = LC(ppoll)(pfd, (nfds_t)ghs_opaque(1), NULL, NULL);
            if (r < 0)
                return errno;
            if (r == 0)
                continue; /* no timeout was given: treat as spurious */
            if (pfd[0].revents & POLLNVAL)
                return EBADF;
            return 0; /* ready, or error/hang-up: the next I/O call reports it */
        }
    } else if (how == W_SELECT || how == W_PSELECT) {
        fd_set set;
        fd_set *rd = NULL, *wr = NULL;
        int r;
        if (fd < 0)
            return EBADF;
        if (fd >= FD_SETSIZE)
            return EMFILE;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        if (events & POLLOUT)
            wr = &set;
        else
            rd = &set;
        if (how == W_SELECT)
            r = LC(select)(fd + 1, rd, wr, NULL, NULL);
        else
            r = LC(pselect)(fd + 1, rd, wr, NULL, NULL, NULL);
        if (r < 0)
            return errno;
        return 0;
    }
    return 0;
}

static int waits_on_eagain(const struct ghs_style *st)
{
    return st->wait == W_POLL || st->wait == W_PPOLL;
}

/* Send every byte of iov[0..cnt) (the iovecs are consumed). */
static int send_all(const struct ghs_style *st, int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n;
        if (iov->iov_len == 0) {
            iov++;
            cnt--;
            continue;
        }
        switch (st->io) {
        case IO_RW:
            n = LC(write)(fd, iov->iov_base, iov->iov_len);
            break;
        case IO_VEC:
            n = LC(writev)(fd, iov, cnt);
            break;
        case IO_MSG: {
            struct msghdr m;
            memset(&m, 0, sizeof m);
            m.msg_iov = iov;
            m.msg_iovlen = (size_t)cnt;
            n = LC(sendmsg)(fd, &m, MSG_NOSIGNAL);
            break;
        }
        default:
            n = LC(send)(fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL);
            break;
        }
        if (n < 0) {
            int e = errno;
            if ((e == EAGAIN || e == EWOULDBLOCK) && waits_on_eagain(st)) {
                int r = wait_fd(st->wait, fd, POLLOUT);
                if (r)
                    return r;
                continue;
            }
            return e;
        }
        while (n > 0 && cnt > 0) {
            if ((size_t)n >= iov->iov_len) {
                n -= (ssize_t)iov->iov_len;
                iov->iov_len = 0;
                iov++;
                cnt--;
            } else {
                iov->iov_base = (char *)iov->iov_base + n;
                iov->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    return 0;
}

/* Receive exactly n bytes into dst, looping on partial reads. */
static int recv_exact(const struct ghs_style *st, int fd, unsigned char *dst, size_t n)
{
    unsigned char chunk[GHS_CHUNK];
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        ssize_t k;
        if (st->wait == W_SELECT || st->wait == W_PSELECT) {
            int r = wait_fd(st->wait, fd, POLLIN);
            if (r)
                return r;
        }
        switch (st->io) {
        case IO_RW:
            if (want > sizeof chunk)
                want = sizeof chunk;
            k = LC(read)(fd, chunk, ghs_opaque(want));
            if (k > 0)
                memcpy(dst + got, chunk, (size_t)k);
            break;
        case IO_VEC:
        case IO_MSG: {
            /* scatter into two iovecs (the halves of what is missing) */
            struct iovec v[2];
            size_t half = want / 2;
            struct iovec *vp = v;
            int vc = 2;
            v[0].iov_base = dst + got;
            v[0].iov_len = half;
            v[1].iov_base = dst + got + half;
            v[1].iov_len = want - half;
            if (half == 0) {
                vp = v + 1;
                vc = 1;
            }
            if (st->io == IO_VEC) {
                k = LC(readv)(fd, vp, vc);
            } else {
                struct msghdr m;
                memset(&m, 0, sizeof m);
                m.msg_iov = vp;
                m.msg_iovlen = (size_t)vc;
                k = LC(recvmsg)(fd, &m, 0);
            }
            break;
        }
        default:
            if (want > sizeof chunk)
                want = sizeof chunk;
            k = LC(recv)(fd, chunk, ghs_opaque(want), 0);
            if (k > 0)
                memcpy(dst + got, chunk, (size_t)k);
            break;
        }
        if (k < 0) {
            int e = errno;
            if ((e == EAGAIN || e == EWOULDBLOCK) && waits_on_eagain(st)) {
                int r = wait_fd(st->wait, fd, POLLIN);
                if (r)
                    return r;
                continue;
            }
            return e;
        }
        if (k == 0)
            return ECONNRESET; /* peer closed before the full reply */
        got += (size_t)k;
    }
    return 0;
}

static int do_connect(const struct ghs_style *st, int fd, const union ghs_addr *a,
                      socklen_t alen)
{
    int e, err = 0;
    socklen_t l = sizeof err;
    if (LC(connect)(fd, &a->sa, alen) == 0)
        return 0;
    e = errno;
    if (e != EINPROGRESS || !(st->flags & F_NONBLOCK))
        return e;
    e = wait_fd(st->wait, fd, POLLOUT);
    if (e)
        return e;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        return errno;
    return err;
}

/* Listening socket on 127.0.0.1:0 for the connect-back styles. */
static int open_listener(int *lfd_out, uint16_t *port_out)
{
    union ghs_addr a;
    socklen_t alen = sizeof a.in;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return errno;
    memset(&a, 0, sizeof a);
    a.in.sin_family = AF_INET;
    a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, &a.sa, sizeof a.in) < 0 || listen(lfd, 4) < 0 ||
        getsockname(lfd, &a.sa, &alen) < 0) {
        int e = errno;
        close(lfd);
        return e;
    }
    *lfd_out = lfd;
    *port_out = ntohs(a.in.sin_port);
    return 0;
}

static int stream_request(const struct ghs_style *st, const char *target, int port,
                          int delay_ms, const unsigned char *payload, size_t len,
                          unsigned char *out)
{
    union ghs_addr addr;
    socklen_t alen = 0;
    int fd = -1, lfd = -1, afd = -1, rfd, rc;
    int accepting = st->flags & (F_ACCEPT | F_ACCEPT4);
    int use_unix = (st->flags & F_UNIX) || (target && strchr(target, '/'));
    uint16_t back_port = 0;
    unsigned char hdr[GHS_REQUEST_HEADER_SIZE];
    unsigned char rhdr[GHS_REPLY_HEADER_SIZE];
    struct iovec iov[2];

    rc = use_unix ? make_unix_addr(target, &addr, &alen)
                  : make_inet_addr(target, port, &addr, &alen);
    if (rc)
        return rc;
    if (accepting) {
        rc = open_listener(&lfd, &back_port);
        if (rc)
            return rc;
    }
    fd = socket(use_unix ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = errno;
        goto done;
    }
    if (!use_unix) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (st->flags & F_RCVTIMEO) {
        struct timeval tv = {5, 0};
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
            rc = errno;
            goto done;
        }
    }
    if (st->flags & F_NONBLOCK) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            rc = errno;
            goto done;
        }
    }
    rc = do_connect(st, fd, &addr, alen);
    if (rc)
        goto done;

    put_request_header(hdr, accepting ? GHS_OP_CONNECT_BACK : GHS_OP_ECHO, back_port,
                       delay_ms, len);
    iov[0].iov_base = hdr;
    iov[0].iov_len = sizeof hdr;
    iov[1].iov_base = (void *)payload;
    iov[1].iov_len = len;
    rc = send_all(st, fd, iov, 2);
    if (rc)
        goto done;

    rfd = fd;
    if (accepting) {
        if (st->flags & F_ACCEPT4)
            afd = LC(accept4)(lfd, NULL, NULL, SOCK_CLOEXEC);
        else
            afd = LC(accept)(lfd, NULL, NULL);
        if (afd < 0) {
            rc = errno;
            goto done;
        }
        rfd = afd;
    }
    rc = recv_exact(st, rfd, rhdr, sizeof rhdr);
    if (rc)
        goto done;
    if (get_u32(rhdr) != (uint32_t)len) {
        rc = EPROTO;
        goto done;
    }
    rc = recv_exact(st, rfd, out, len);

done:
    close_keep_errno(afd);
    close_keep_errno(fd);
    close_keep_errno(lfd);
    return rc;
}

static int udp_request(const char *target, int port, int delay_ms,
                       const unsigned char *payload, size_t len, unsigned char *out)
{
    union ghs_addr addr;
    socklen_t alen = 0;
    unsigned char chunk[GHS_CHUNK];
    unsigned char *dgram = NULL, *big = NULL;
    const unsigned char *reply;
    ssize_t k;
    int fd, rc;

    if (len > GHS_UDP_MAX_PAYLOAD)
        return EMSGSIZE;
    rc = make_inet_addr(target, port, &addr, &alen);
    if (rc)
        return rc;
    dgram = malloc(GHS_REQUEST_HEADER_SIZE + len);
    if (!dgram)
        return ENOMEM;
    put_request_header(dgram, GHS_OP_ECHO, 0, delay_ms, len);
    if (len)
        memcpy(dgram + GHS_REQUEST_HEADER_SIZE, payload, len);

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = errno;
        goto done;
    }
    k = LC(sendto)(fd, dgram, GHS_REQUEST_HEADER_SIZE + len, 0, &addr.sa, alen);
    if (k < 0) {
        rc = errno;
        goto done;
    }
    /* one datagram back: 4-byte length + payload; one byte of slack detects longer ones */
    if (GHS_REPLY_HEADER_SIZE + len < sizeof chunk) {
        k = LC(recvfrom)(fd, chunk, ghs_opaque(sizeof chunk), 0, NULL, NULL);
        reply = chunk;
    } else {
        size_t cap = GHS_REPLY_HEADER_SIZE + len + 1;
        big = malloc(cap);
        if (!big) {
            rc = ENOMEM;
            goto done;
        }
        k = LC(recvfrom)(fd, big, cap, 0, NULL, NULL);
        reply = big;
    }
    if (k < 0) {
        rc = errno;
        goto done;
    }
    if ((size_t)k != GHS_REPLY_HEADER_SIZE + len || get_u32(reply) != (uint32_t)len) {
        rc = EPROTO;
        goto done;
    }
    if (len)
        memcpy(out, reply + GHS_REPLY_HEADER_SIZE, len);

done:
    close_keep_errno(fd);
    free(big);
    free(dgram);
    return rc;
}

static int sleep_request(const struct ghs_style *st, int delay_ms,
                         const unsigned char *payload, size_t len, unsigned char *out)
{
    struct timespec ts;
    ts.tv_sec = delay_ms / 1000;
    ts.tv_nsec = (long)(delay_ms % 1000) * 1000000L;
    if (st->flags & F_USLEEP) {
        if ((unsigned long)delay_ms > 0xffffffffUL / 1000UL)
            return EINVAL;
        if (LC(usleep)((useconds_t)delay_ms * 1000U) < 0)
            return errno;
    } else if (st->flags & F_NANOSLEEP) {
        if (LC(nanosleep)(&ts, NULL) < 0)
            return errno;
    } else {
        int r = LC(clock_nanosleep)(CLOCK_MONOTONIC, 0, &ts, NULL);
        if (r)
            return r;
    }
    if (len)
        memcpy(out, payload, len);
    return 0;
}

int ghs_request(const char *style, const char *host_or_unix_path, int port, int delay_ms,
                const unsigned char *payload, size_t len, unsigned char *out, size_t outcap,
                size_t *outlen)
{
    const struct ghs_style *st = NULL;
    int i, rc;

    if (outlen)
        *outlen = 0;
    if (!style || delay_ms < 0 || (len && (!payload || !out)))
        return EINVAL;
    for (i = 0; i < GHS_NSTYLES; i++) {
        if (strcmp(style, ghs_styles[i].name) == 0) {
            st = &ghs_styles[i];
            break;
        }
    }
    if (!st)
        return EINVAL;
    if (len > outcap || len > 0xffffffffUL)
        return EMSGSIZE;

    switch (st->kind) {
    case K_UDP:
        rc = udp_request(host_or_unix_path, port, delay_ms, payload, len, out);
        break;
    case K_SLEEP:
        rc = sleep_request(st, delay_ms, payload, len, out);
        break;
    default:
        rc = stream_request(st, host_or_unix_path, port, delay_ms, payload, len, out);
        break;
    }
    if (rc == 0 && outlen)
        *outlen = len;
    return rc;
}


/* ------------------------------------------------------------------------------------
 * Benchmark loops (bench/).  Plain calls through the PLT in every variant.
 * ---------------------------------------------------------------------------------- */
static long bench_fail(ssize_t r)
{
    return r < 0 ? -(long)errno : -(long)EIO;
}

long ghs_bench_recv_send(int fd_a, int fd_b, long iterations)
{
    unsigned char c = 'x';
    ssize_t r;
    long i;
    for (i = 0; i < iterations; i++) {
        if ((r = send(fd_a, &c, 1, MSG_NOSIGNAL)) != 1)
            return bench_fail(r);
        if ((r = recv(fd_b, &c, 1, 0)) != 1)
            return bench_fail(r);
    }
    return i;
}

long ghs_bench_poll_ready(int fd, long iterations)
{
    struct pollfd p;
    int r;
    long i;
    for (i = 0; i < iterations; i++) {
        p.fd = fd;
        p.events = POLLOUT;
        p.revents = 0;
        if ((r = poll(&p, 1, 1000)) != 1)
            return bench_fail(r);
    }
    return i;
}

long ghs_bench_read_pipe(int rfd, int wfd, long iterations)
{
    unsigned char c = 'x';
    ssize_t r;
    long i;
    for (i = 0; i < iterations; i++) {
        if ((r = write(wfd, &c, 1)) != 1)
            return bench_fail(r);
        if ((r = read(rfd, &c, 1)) != 1)
            return bench_fail(r);
    }
    return i;
}

long ghs_bench_pingpong(int fd, long iterations, int initiator)
{
    unsigned char c = 'p';
    ssize_t r;
    long i;
    for (i = 0; i < iterations; i++) {
        if (initiator && (r = send(fd, &c, 1, MSG_NOSIGNAL)) != 1)
            return bench_fail(r);
        if ((r = recv(fd, &c, 1, 0)) != 1)
            return bench_fail(r);
        if (!initiator && (r = send(fd, &c, 1, MSG_NOSIGNAL)) != 1)
            return bench_fail(r);
    }
    return i;
}
