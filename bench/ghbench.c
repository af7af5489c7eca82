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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
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
