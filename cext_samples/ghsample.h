/*
 * ghsample: a small C client library that does blocking network I/O the way native
 * database/cache drivers do, built in several link-flag variants (see README.md).
 *
 * Two kinds of exports:
 *   - ghs_<libc name>: thin wrappers with the exact libc signature that just call libc.
 *     Tests call them through ctypes to exercise every semantic of the green hooks.
 *   - ghs_request(): one complete client round trip with the delay server
 *     (greenhook/samples/server.py) using one "call style".
 *
 * Wire protocol (all integers big-endian):
 *   request  = op:u16 port:u16 delay_ms:u32 len:u32 (12 bytes), then len payload bytes
 *   reply    = len:u32 (4 bytes), then len payload bytes
 *   op GHS_OP_ECHO:         after delay_ms the server sends the reply on the same connection
 *                           (UDP: one datagram in, one datagram out, to the sender)
 *   op GHS_OP_CONNECT_BACK: after delay_ms the server connects to 127.0.0.1:port, sends the
 *                           reply there and closes that connection; nothing on the request one
 *   op GHS_OP_HANGUP:       after delay_ms the server closes the connection without a reply
 * Requests on one connection are served one after the other, in order.
 */
#ifndef GHSAMPLE_H
#define GHSAMPLE_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GHS_API __attribute__((visibility("default")))

#define GHS_OP_ECHO 1
#define GHS_OP_CONNECT_BACK 2
#define GHS_OP_HANGUP 3
#define GHS_REQUEST_HEADER_SIZE 12
#define GHS_REPLY_HEADER_SIZE 4

/* --- thin wrappers: exact libc signatures, each just calls libc ------------------ */
GHS_API int ghs_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
GHS_API int ghs_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
GHS_API int ghs_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
GHS_API ssize_t ghs_read(int fd, void *buf, size_t count);
GHS_API ssize_t ghs_write(int fd, const void *buf, size_t count);
GHS_API ssize_t ghs_readv(int fd, const struct iovec *iov, int iovcnt);
GHS_API ssize_t ghs_writev(int fd, const struct iovec *iov, int iovcnt);
GHS_API ssize_t ghs_recv(int fd, void *buf, size_t len, int flags);
GHS_API ssize_t ghs_send(int fd, const void *buf, size_t len, int flags);
GHS_API ssize_t ghs_recvfrom(int fd, void *buf, size_t len, int flags,
                             struct sockaddr *src_addr, socklen_t *addrlen);
GHS_API ssize_t ghs_sendto(int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *dest_addr, socklen_t addrlen);
GHS_API ssize_t ghs_recvmsg(int fd, struct msghdr *msg, int flags);
GHS_API ssize_t ghs_sendmsg(int fd, const struct msghdr *msg, int flags);
GHS_API int ghs_poll(struct pollfd *fds, nfds_t nfds, int timeout);
GHS_API int ghs_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo_p,
                      const sigset_t *sigmask);
GHS_API int ghs_select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
                       struct timeval *timeout);
GHS_API int ghs_pselect(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
                        const struct timespec *timeout, const sigset_t *sigmask);
GHS_API unsigned int ghs_sleep(unsigned int seconds);
GHS_API int ghs_usleep(useconds_t usec);
GHS_API int ghs_nanosleep(const struct timespec *req, struct timespec *rem);
GHS_API int ghs_clock_nanosleep(clockid_t clockid, int flags, const struct timespec *request,
                                struct timespec *remain);

/* --- one client round trip ---------------------------------------------------------
 * style: one of the names returned by ghs_style_name() (see README.md).
 * host_or_unix_path: IPv4 literal for TCP/UDP styles; a unix socket path for "unix" (any
 *   stream style also accepts a path containing '/', then it talks AF_UNIX); ignored by
 *   the sleep styles (may be NULL).
 * Sends `len` payload bytes with an echo request (a connect-back request for the accept
 * styles) and receives exactly `len` bytes into out (outcap >= len), *outlen = bytes
 * stored.  Returns 0, or an errno value: the failing call's errno (EINTR is returned, not
 * retried), EINVAL for bad arguments or an unknown style, EMSGSIZE if outcap < len or the
 * payload does not fit the protocol / a datagram, ECONNRESET if the peer closed before
 * the full reply, EPROTO for a malformed reply, EMFILE from the select styles when the
 * socket's fd does not fit an fd_set (fd >= FD_SETSIZE).  Sockets are closed on every path.
 */
GHS_API int ghs_request(const char *style, const char *host_or_unix_path, int port,
                        int delay_ms, const unsigned char *payload, size_t len,
                        unsigned char *out, size_t outcap, size_t *outlen);

/* --- benchmark loops (bench/) ----------------------------------------------------------
 * Tight loops of libc calls made from inside this library, so that they go through its
 * GOT (patched or not) with no Python in between.  Each returns the number of iterations
 * done, or -errno of the first call that failed (a short transfer counts as -EIO).
 *   ghs_bench_recv_send:  send 1 byte on fd_a, recv it on fd_b (a connected pair, e.g. a
 *                         socketpair): data is always ready, so no call ever waits.
 *   ghs_bench_poll_ready: poll(fd, POLLOUT, 1000 ms) on an fd that is always writable.
 *   ghs_bench_read_pipe:  write 1 byte on wfd, read it on rfd (a pipe: not a socket).
 *   ghs_bench_pingpong:   one side of a ping-pong on a connected stream socket: the
 *                         initiator sends 1 byte then receives 1, the other side receives
 *                         then sends; every recv waits for the peer.
 */
GHS_API long ghs_bench_recv_send(int fd_a, int fd_b, long iterations);
GHS_API long ghs_bench_poll_ready(int fd, long iterations);
GHS_API long ghs_bench_read_pipe(int rfd, int wfd, long iterations);
GHS_API long ghs_bench_pingpong(int fd, long iterations, int initiator);

/* Name of the i-th request style, NULL past the end. */
GHS_API const char *ghs_style_name(int i);
/* The variant this library was built as ("lazy", "now", ...). */
GHS_API const char *ghs_variant(void);

#ifdef __cplusplus
}
#endif

#endif /* GHSAMPLE_H */
