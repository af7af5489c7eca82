# Cython declarations of gh_backend.h (the C face of a hub backend).

cdef extern from "gh_backend.h":
    const char *GH_BACKEND_CAPSULE
    enum:
        GH_BACKEND_ABI
    ctypedef int (*gh_can_switch_fn)(object backend) except -1
    ctypedef int (*gh_wait_fd_fn)(object backend, int fd, int events, double timeout,
                                  unsigned int gen) except -1
    ctypedef struct gh_backend_api_t:
        unsigned int abi
        gh_can_switch_fn can_switch
        gh_wait_fd_fn wait_fd
