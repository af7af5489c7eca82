/* C loops for the benchmarks, built as a shared library (libghbench.so) by bench/_common.py
 * with the system cc and loaded with ctypes; never committed as a binary.
 *
 * ghb_pingpong_floor  the floor under a wait/wake round trip: the two ends of a socketpair
 *                     ping-pong one byte in ONE thread, driven by one epoll set registered
 *                     once (level-triggered): per round trip 2 send + 2 epoll_wait + 2 recv,
 *                     nothing else.  What a C event loop with no greenlets pays.
 * ghb_poll_loop       poll(fd, POLLOUT, timeout_ms) on an always-writable fd, n times: with
 *                     timeout 0 unpatched it is what greenhook's poll fast path does inside
 *                     (the like-for-like reference for a hooked poll that never waits).
 *
 * Both return the number of iterations done, or -errno.
 *
 * For scenario 3 (bench/scaling.py), against the delay server (bench/delayserver.c):
 *
 * ghb_request         one request on an open connection, as a blocking C driver does it:
 *                     send() the request, recv() until the reply is complete (calls through
 *                     the PLT, so greenhook or greenify can green them).  0 or an errno.
 * ghb_burst_floor     the floor under N concurrent requests on N open connections: ONE thread,
 *                     one epoll set (registered before the clock starts), send all N requests
 *                     (MSG_DONTWAIT), then epoll_wait + recv until every reply is in.  No
 *                     Python, no greenlets: what this machine, kernel and server allow.
 *                     Writes [last request sent, last reply in] (ns after the start) to
 *                     times_ns; returns 0 or an errno (EPROTO: a wrong reply).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

long ghb_pingpong_floor(int fd_a, int fd_b, long n)
{
    struct epoll_event ev, evs[2];
    unsigned char c = 'p';
    long done = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC), i, k;

    if (ep < 0)
        return -errno;
    ev.events = EPOLLIN;
    ev.data.fd = fd_a;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd_a, &ev) < 0)
        goto fail;
    ev.data.fd = fd_b;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd_b, &ev) < 0)
        goto fail;
    if (n > 0 && send(fd_a, &c, 1, MSG_NOSIGNAL) != 1)
        goto fail;
    while (done < n) {
        k = epoll_wait(ep, evs, 2, -1);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        for (i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (recv(fd, &c, 1, 0) != 1)
                goto fail;
            if (fd == fd_b) {                   /* pong: answer */
                if (send(fd_b, &c, 1, MSG_NOSIGNAL) != 1)
                    goto fail;
            } else if (++done < n) {            /* ping: one round trip done, next one */
                if (send(fd_a, &c, 1, MSG_NOSIGNAL) != 1)
                    goto fail;
            }
        }
    }
    close(ep);
    return done;
fail:
    k = errno ? errno : EIO;
    close(ep);
    return -k;
}

long ghb_poll_loop(int fd, long n, int timeout_ms)
{
    struct pollfd p;
    long i;
    for (i = 0; i < n; i++) {
        p.fd = fd;
        p.events = POLLOUT;
        p.revents = 0;
        if (poll(&p, 1, timeout_ms) != 1)
            return errno ? -errno : -EIO;
    }
    return i;
}

int ghb_request(int fd, const unsigned char *req, size_t reqlen, unsigned char *out, size_t outlen)
{
    size_t off = 0;
    ssize_t r;
    while (off < reqlen) {
        r = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        off += (size_t)r;
    }
    off = 0;
    while (off < outlen) {
        r = recv(fd, out + off, outlen - off, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (r == 0)
            return ECONNRESET;
        off += (size_t)r;
    }
    return 0;
}

static int64_t ghb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int ghb_burst_floor(const int *fds, int n, const unsigned char *reqs, size_t reqlen,
                    const unsigned char *replies, size_t replylen, int64_t *times_ns)
{
    struct epoll_event ev, evs[256];
    size_t *got = calloc((size_t)n, sizeof *got);
    unsigned char *in = malloc((size_t)n * replylen);
    int ep = epoll_create1(EPOLL_CLOEXEC), i, k, left = n, rc = 0;
    int64_t t0;

    if (ep < 0 || !got || !in) {
        rc = ep < 0 ? errno : ENOMEM;
        goto out;
    }
    for (i = 0; i < n; i++) {
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
            rc = errno;
            goto out;
        }
    }
    t0 = ghb_now_ns();
    for (i = 0; i < n; i++) {
        /* A 112-byte request into an empty socket buffer: all of it or an error. */
        if (send(fds[i], reqs + (size_t)i * reqlen, reqlen, MSG_NOSIGNAL | MSG_DONTWAIT)
                != (ssize_t)reqlen) {
            rc = errno ? errno : EIO;
            goto out;
        }
    }
    times_ns[0] = ghb_now_ns() - t0;
    while (left > 0) {
        k = epoll_wait(ep, evs, 256, 10000);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            rc = k == 0 ? ETIMEDOUT : errno;
            goto out;
        }
        for (int j = 0; j < k; j++) {
            uint32_t c = evs[j].data.u32;
            ssize_t r;
            if (got[c] == replylen)
                continue;
            r = recv(fds[c], in + (size_t)c * replylen + got[c], replylen - got[c],
                             MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                rc = r == 0 ? ECONNRESET : errno;
                goto out;
            }
            got[c] += (size_t)r;
            if (got[c] == replylen)
                left--;
        }
    }
    times_ns[1] = ghb_now_ns() - t0;
    if (memcmp(in, replies, (size_t)n * replylen) != 0)
        rc = EPROTO;
out:
    if (ep >= 0)
        close(ep);
    free(got);
    free(in);
    return rc;
}
