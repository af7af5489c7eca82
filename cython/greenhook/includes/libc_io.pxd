# C declarations used by the hooks: sockets, poll/select, time, dlsym.  Declarations only.

from libc.stdint cimport int64_t, uint64_t, uintptr_t, uint32_t

cdef extern from "sys/types.h" nogil:
    ctypedef long ssize_t
    ctypedef unsigned int useconds_t
    ctypedef int clockid_t

cdef extern from "errno.h" nogil:
    enum:
        EAGAIN, EWOULDBLOCK, EINTR, ETIMEDOUT, ENOTSOCK, EINPROGRESS, EINVAL, EBADF, ENOMEM

cdef extern from "fcntl.h" nogil:
    int fcntl(int fd, int cmd, ...)
    enum:
        F_GETFL, F_SETFL, F_GETFD, FD_CLOEXEC, O_NONBLOCK, O_CLOEXEC

cdef extern from "unistd.h" nogil:
    int close(int fd)
    int dup3(int oldfd, int newfd, int flags)

cdef extern from "sys/ioctl.h" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "limits.h" nogil:
    enum:
        IOV_MAX

cdef extern from "sys/uio.h" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct sockaddr_storage:
        unsigned short ss_family
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int getpeername(int fd, sockaddr *addr, socklen_t *alen)
    int shutdown(int fd, int how)
    int socketpair(int domain, int type, int protocol, int sv[2])
    enum:
        SOL_SOCKET, SO_RCVTIMEO, SO_SNDTIMEO, SO_ERROR, SO_TYPE, SOCK_STREAM, SOCK_CLOEXEC
        SHUT_RDWR, AF_UNIX, AF_INET, AF_INET6, SO_DOMAIN, SIOCATMARK
        MSG_DONTWAIT, MSG_WAITALL, MSG_PEEK, MSG_ERRQUEUE, MSG_OOB

cdef extern from "poll.h" nogil:
    ctypedef unsigned long nfds_t
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLRDHUP

cdef extern from "time.h" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *ts)
    enum:
        CLOCK_MONOTONIC, CLOCK_REALTIME, TIMER_ABSTIME

cdef extern from "sys/time.h" nogil:
    struct timeval:
        time_t tv_sec
        long tv_usec

cdef extern from "signal.h" nogil:
    ctypedef struct sigset_t:
        pass

cdef extern from "sys/select.h" nogil:
    ctypedef struct fd_set:
        pass
    int FD_ISSET(int fd, fd_set *s)
    void FD_SET(int fd, fd_set *s)
    void FD_ZERO(fd_set *s)
    enum:
        FD_SETSIZE

cdef extern from "dlfcn.h" nogil:
    void *dlsym(void *handle, const char *name)
    void *RTLD_DEFAULT
