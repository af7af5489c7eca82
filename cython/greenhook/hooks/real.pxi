# Included by _hooks.pyx: the real libc functions.

# --- the real functions, from dlsym (never from a saved GOT slot: under lazy binding that is
#     the resolver stub) ---------------------------------------------------------------------

ctypedef int (*connect_t)(int, const sockaddr *, socklen_t) noexcept nogil
ctypedef int (*accept_t)(int, sockaddr *, socklen_t *) noexcept nogil
ctypedef int (*accept4_t)(int, sockaddr *, socklen_t *, int) noexcept nogil
ctypedef ssize_t (*read_t)(int, void *, size_t) noexcept nogil
ctypedef ssize_t (*write_t)(int, const void *, size_t) noexcept nogil
ctypedef ssize_t (*readv_t)(int, const iovec *, int) noexcept nogil
ctypedef ssize_t (*recv_t)(int, void *, size_t, int) noexcept nogil
ctypedef ssize_t (*send_t)(int, const void *, size_t, int) noexcept nogil
ctypedef ssize_t (*recvfrom_t)(int, void *, size_t, int, sockaddr *, socklen_t *) noexcept nogil
ctypedef ssize_t (*sendto_t)(int, const void *, size_t, int, const sockaddr *, socklen_t) noexcept nogil
ctypedef ssize_t (*recvmsg_t)(int, msghdr *, int) noexcept nogil
ctypedef ssize_t (*sendmsg_t)(int, const msghdr *, int) noexcept nogil
ctypedef int (*poll_t)(pollfd *, nfds_t, int) noexcept nogil
ctypedef int (*ppoll_t)(pollfd *, nfds_t, const timespec *, const sigset_t *) noexcept nogil
ctypedef int (*select_t)(int, fd_set *, fd_set *, fd_set *, timeval *) noexcept nogil
ctypedef int (*pselect_t)(int, fd_set *, fd_set *, fd_set *, const timespec *, const sigset_t *) noexcept nogil
ctypedef unsigned int (*sleep_t)(unsigned int) noexcept nogil
ctypedef int (*usleep_t)(useconds_t) noexcept nogil
ctypedef int (*nanosleep_t)(const timespec *, timespec *) noexcept nogil
ctypedef int (*clock_nanosleep_t)(clockid_t, int, const timespec *, timespec *) noexcept nogil
ctypedef ssize_t (*read_chk_t)(int, void *, size_t, size_t) noexcept nogil
ctypedef ssize_t (*recv_chk_t)(int, void *, size_t, size_t, int) noexcept nogil
ctypedef ssize_t (*recvfrom_chk_t)(int, void *, size_t, size_t, int, sockaddr *, socklen_t *) noexcept nogil
ctypedef int (*poll_chk_t)(pollfd *, nfds_t, int, size_t) noexcept nogil
ctypedef int (*ppoll_chk_t)(pollfd *, nfds_t, const timespec *, const sigset_t *, size_t) noexcept nogil

cdef connect_t real_connect = <connect_t>dlsym(RTLD_DEFAULT, "connect")
cdef accept_t real_accept = <accept_t>dlsym(RTLD_DEFAULT, "accept")
cdef accept4_t real_accept4 = <accept4_t>dlsym(RTLD_DEFAULT, "accept4")
cdef read_t real_read = <read_t>dlsym(RTLD_DEFAULT, "read")
cdef write_t real_write = <write_t>dlsym(RTLD_DEFAULT, "write")
cdef readv_t real_readv = <readv_t>dlsym(RTLD_DEFAULT, "readv")
cdef readv_t real_writev = <readv_t>dlsym(RTLD_DEFAULT, "writev")
cdef recv_t real_recv = <recv_t>dlsym(RTLD_DEFAULT, "recv")
cdef send_t real_send = <send_t>dlsym(RTLD_DEFAULT, "send")
cdef recvfrom_t real_recvfrom = <recvfrom_t>dlsym(RTLD_DEFAULT, "recvfrom")
cdef sendto_t real_sendto = <sendto_t>dlsym(RTLD_DEFAULT, "sendto")
cdef recvmsg_t real_recvmsg = <recvmsg_t>dlsym(RTLD_DEFAULT, "recvmsg")
cdef sendmsg_t real_sendmsg = <sendmsg_t>dlsym(RTLD_DEFAULT, "sendmsg")
cdef poll_t real_poll = <poll_t>dlsym(RTLD_DEFAULT, "poll")
cdef ppoll_t real_ppoll = <ppoll_t>dlsym(RTLD_DEFAULT, "ppoll")
cdef select_t real_select = <select_t>dlsym(RTLD_DEFAULT, "select")
cdef pselect_t real_pselect = <pselect_t>dlsym(RTLD_DEFAULT, "pselect")
cdef sleep_t real_sleep = <sleep_t>dlsym(RTLD_DEFAULT, "sleep")
cdef usleep_t real_usleep = <usleep_t>dlsym(RTLD_DEFAULT, "usleep")
cdef nanosleep_t real_nanosleep = <nanosleep_t>dlsym(RTLD_DEFAULT, "nanosleep")
cdef clock_nanosleep_t real_clock_nanosleep = <clock_nanosleep_t>dlsym(RTLD_DEFAULT, "clock_nanosleep")
cdef read_chk_t real_read_chk = <read_chk_t>dlsym(RTLD_DEFAULT, "__read_chk")
cdef recv_chk_t real_recv_chk = <recv_chk_t>dlsym(RTLD_DEFAULT, "__recv_chk")
cdef recvfrom_chk_t real_recvfrom_chk = <recvfrom_chk_t>dlsym(RTLD_DEFAULT, "__recvfrom_chk")
cdef poll_chk_t real_poll_chk = <poll_chk_t>dlsym(RTLD_DEFAULT, "__poll_chk")
cdef ppoll_chk_t real_ppoll_chk = <ppoll_chk_t>dlsym(RTLD_DEFAULT, "__ppoll_chk")
