/* The benchmarks' delay server in C: one thread, epoll, a binary heap of deadlines.
 *
 * Speaks the OP_ECHO part of greenhook/samples/server.py's protocol (integers big-endian):
 *
 *     request = op:u16  port:u16  delay_ms:u32  len:u32  (12 bytes) + len payload bytes
 *     reply   = len:u32 (4 bytes) + len payload bytes, sent delay_ms after the request
 *
 * plus OP_STATS (100, no payload, no delay): the reply's payload is the ASCII text
 * "<requests answered> <user CPU µs> <system CPU µs>" of this process (getrusage), so a client
 * can charge the server's own CPU time to the requests it made.  Any other op, or a payload
 * over MAX_PAYLOAD, closes the connection.
 *
 * Why: a Python server on a 2-core machine is the bottleneck of 1000 concurrent requests long
 * before any client is.  This one's own code is under 5% of its CPU time (perf: 95% kernel);
 * per request on an open connection it makes one recv and one send (plus a shared
 * epoll_wait), per connection one accept4 + epoll_ctl(ADD), a recv that sees EOF and a close
 * (TCP_NODELAY is set once on the listening socket: accepted sockets inherit it).  What it
 * costs is the kernel's loopback TCP, and on loopback the sender's syscall runs the
 * receiver's TCP input too: measured on the 2-core VM of 2026-12-01, ~12-17 µs per request
 * on an open connection (send 7-8 µs of it), ~10 µs per accept, ~14 µs per close (its close
 * runs the FIN/ACK exchange of both ends); with one connection per request that adds up to
 * the ~45 µs per request the scenario used to report.  Timers are a min-heap checked after
 * every epoll_wait, whose timeout is the next deadline rounded *up* to the millisecond: a
 * reply is never early and at most ~1 ms late (finer timeouts would wake the server, and
 * take a core from the client, once per reply instead of once per millisecond).
 *
 *     delayserver READY_FILE     listen on 127.0.0.1:0, write {"tcp": port, "pid": pid} to
 *                                READY_FILE (atomically, via READY_FILE.tmp), serve until
 *                                SIGTERM/SIGINT
 *
 * Built by bench/_common.py (build_tool) with the system cc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define OP_ECHO 1
#define OP_STATS 100
#define HDR 12
#define MAX_PAYLOAD (1 << 20)

struct conn {
    int fd;
    int pending;            /* a request is parsed and waits for its deadline */
    unsigned char *in;      /* header + payload of the request being read */
    size_t in_len, in_cap;
    unsigned char *out;     /* reply not yet fully written */
    size_t out_len, out_off;
};

struct timer {
    uint64_t when;          /* CLOCK_MONOTONIC ns */
    struct conn *c;
};

static struct timer *heap;
static size_t heap_len, heap_cap;
static int ep;
static volatile sig_atomic_t stop;
static unsigned long long answered;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void heap_push(uint64_t when, struct conn *c)
{
    size_t i;
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof *heap);
        if (!heap) { perror("realloc"); exit(1); }
    }
    i = heap_len++;
    while (i > 0 && heap[(i - 1) / 2].when > when) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i].when = when;
    heap[i].c = c;
}

static struct timer heap_pop(void)
{
    struct timer top = heap[0], last = heap[--heap_len];
    size_t i = 0, k;
    while ((k = 2 * i + 1) < heap_len) {
        if (k + 1 < heap_len && heap[k + 1].when < heap[k].when)
            k++;
        if (heap[k].when >= last.when)
            break;
        heap[i] = heap[k];
        i = k;
    }
    if (heap_len)
        heap[i] = last;
    return top;
}

static void conn_close(struct conn *c)
{
    /* A connection with a pending timer stays allocated until the timer fires (fd = -1). */
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (!c->pending) {
        free(c->in);
        free(c->out);
        free(c);
    }
}

static void want_out(struct conn *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what is left of c->out; 0 = all written, 1 = EAGAIN (EPOLLOUT armed), -1 = closed. */
static int flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                want_out(c, 1);
                return 1;
            }
            conn_close(c);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return 0;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Send the reply to the request in c->in now; consumes the request. */
static void answer(struct conn *c)
{
    uint32_t len = be32(c->in + 8);
    unsigned op = (unsigned)c->in[0] << 8 | c->in[1];
    char text[96];
    const unsigned char *payload = c->in + HDR;
    size_t rest;

    if (op == OP_STATS) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        len = (uint32_t)snprintf(text, sizeof text, "%llu %llu %llu", answered,
                                 (unsigned long long)ru.ru_utime.tv_sec * 1000000u + ru.ru_utime.tv_usec,
                                 (unsigned long long)ru.ru_stime.tv_sec * 1000000u + ru.ru_stime.tv_usec);
        payload = (const unsigned char *)text;
    } else {
        answered++;
    }
    c->out = malloc(4 + len);
    if (!c->out) { perror("malloc"); exit(1); }
    put_be32(c->out, len);
    memcpy(c->out + 4, payload, len);
    c->out_len = 4 + len;
    c->out_off = 0;
    /* Keep whatever pipelined bytes followed the request. */
    rest = c->in_len - (HDR + (op == OP_STATS ? be32(c->in + 8) : len));
    memmove(c->in, c->in + c->in_len - rest, rest);
    c->in_len = rest;
}

static int try_parse(struct conn *c);

static void on_timer(struct conn *c)
{
    c->pending = 0;
    if (c->fd < 0) {            /* the client went away meanwhile */
        conn_close(c);
        return;
    }
    answer(c);
    if (flush_out(c) == 0)
        try_parse(c);
}

/* A complete request in c->in: schedule it (or answer a stats request at once). */
static int try_parse(struct conn *c)
{
    unsigned op;
    uint32_t len, delay;
    if (c->pending || c->out || c->in_len < HDR)
        return 0;
    op = (unsigned)c->in[0] << 8 | c->in[1];
    delay = be32(c->in + 4);
    len = be32(c->in + 8);
    if ((op != OP_ECHO && op != OP_STATS) || len > MAX_PAYLOAD) {
        conn_close(c);
        return -1;
    }
    if (c->in_len < HDR + (size_t)len)
        return 0;
    if (op == OP_STATS || delay == 0) {
        answer(c);
        return flush_out(c) < 0 ? -1 : 0;
    }
    c->pending = 1;
    heap_push(now_ns() + (uint64_t)delay * 1000000u, c);
    return 0;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n;
        if (c->in_cap - c->in_len < 4096) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 8192;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in) { perror("realloc"); exit(1); }
        }
        n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            if ((size_t)n < c->in_cap - c->in_len + (size_t)n)
                break;          /* short read: nothing more queued right now */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        conn_close(c);          /* EOF or error */
        return;
    }
    try_parse(c);
}

static void on_accept(int lfd)
{
    for (;;) {
        /* No setsockopt(TCP_NODELAY) here: Linux copies it from the listening socket. */
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct conn *c;
        struct epoll_event ev;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;             /* EAGAIN, or EMFILE: try again on the next readiness */
        }
        c = calloc(1, sizeof *c);
        if (!c) { perror("calloc"); exit(1); }
        c->fd = fd;
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("epoll_ctl");
            close(fd);
            free(c);
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof sa;
    struct epoll_event ev, evs[512];
    struct rlimit rl;
    struct sigaction act = {.sa_handler = on_signal};
    static struct conn listener;    /* marks the listening socket in epoll data */
    char tmp[4096];
    FILE *f;
    int lfd, one = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s READY_FILE\n", argv[0]);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* 1000 connections' buffers come and go in bursts: keep the heap instead of growing and
     * trimming it with brk() a few hundred times per burst. */
    mallopt(M_TOP_PAD, 16 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* inherited by accept */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
        perror("listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.ptr = &listener;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    f = fopen(tmp, "w");
    if (!f) {
        perror(tmp);
        return 1;
    }
    fprintf(f, "{\"tcp\": %d, \"pid\": %d}\n", ntohs(sa.sin_port), (int)getpid());
    fclose(f);
    if (rename(tmp, argv[1]) < 0) {
        perror("rename");
        return 1;
    }

    while (!stop) {
        int timeout = -1, n, i;
        if (heap_len) {
            uint64_t t = now_ns();
            timeout = heap[0].when <= t ? 0 : (int)((heap[0].when - t + 999999u) / 1000000u);
        }
        n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == &listener) {
                on_accept(lfd);
                continue;
            }
            if (c->fd < 0)
                continue;
            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c) != 0)
                    continue;
                want_out(c, 0);
                if (try_parse(c) < 0)
                    continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
        if (heap_len) {
            uint64_t t = now_ns();
            while (heap_len && heap[0].when <= t)
                on_timer(heap_pop().c);
        }
    }
    return 0;
}
