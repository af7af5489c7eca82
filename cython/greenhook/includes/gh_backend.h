/* The C face of a hub backend.
 *
 * A backend class may offer, besides its Python methods, a class attribute ``c_api``: a
 * PyCapsule named GH_BACKEND_CAPSULE holding a gh_backend_api_t.  The hooks then call these
 * functions directly (with the GIL held, from the greenlet that wants to wait) instead of the
 * Python methods ``can_switch`` and ``wait_fd``/``wait_fd_gen``: no bound methods, no boxed
 * arguments, no Python frames.  The functions must mean exactly what the Python methods mean
 * (backends/base.py); a subclass that overrides one of those methods in Python is called
 * through Python again (the hooks check which class defines what).
 *
 * Call order: the hooks call wait_fd only right after a can_switch that returned 1, in the
 * same thread, with no Python run in between (a backend may hand what can_switch found to
 * that wait_fd, as the gevent backend does; one that is called otherwise must look again).
 *
 * Like the rest of the hooks' side, this knows nothing of any particular hub.
 */
#ifndef GH_BACKEND_H
#define GH_BACKEND_H

#include <Python.h>

#define GH_BACKEND_CAPSULE "greenhook.backend_c_api"
#define GH_BACKEND_ABI 1

typedef int (*gh_can_switch_fn)(PyObject *backend);
typedef int (*gh_wait_fd_fn)(PyObject *backend, int fd, int events, double timeout,
                             unsigned int gen);

typedef struct {
    /* GH_BACKEND_ABI of the header the backend was built with. */
    unsigned int abi;
    /* 1: the current greenlet may park (a hub exists in this OS thread and this is not it);
     * 0: it may not; -1 with a Python exception set. */
    gh_can_switch_fn can_switch;
    /* Park until ``fd`` may be ready for the poll(2) ``events`` (1) or ``timeout`` seconds
     * pass (0); ``timeout`` < 0: no deadline.  ``gen`` as for wait_fd_gen (0: unknown, the
     * backend must not reuse a watcher).  -1 with a Python exception set: BackendError when
     * the wait could not be set up, anything else was thrown into the parked greenlet (after
     * every watcher and timer of this wait is gone). */
    gh_wait_fd_fn wait_fd;
} gh_backend_api_t;

#endif
