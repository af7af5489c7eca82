/* Per-OS-thread state the hooks read without the GIL, and the per-symbol counters. */
#ifndef GREENHOOK_THREAD_H
#define GREENHOOK_THREAD_H
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>
#include <time.h>
#include <errno.h>

/* Canonical hooked symbols (GH_SYM_*, GH_NSYM, gh_sym_names): generated from _symbols.HOOKED;
   aliases and _FORTIFY_SOURCE twins count under these. */
#include "gh_symbols.h"

/* Outcomes of one call; each call counts as exactly one of them. */
typedef struct {
    uint64_t passthrough; /* answered by the real call as-is: non-blocking fd/flags, non-socket, zero timeout */
    uint64_t fast;        /* done by the first non-blocking try: no wait, no GIL */
    uint64_t green;       /* finished after parking the greenlet on the hub */
    uint64_t timeouts;    /* SO_RCVTIMEO/SO_SNDTIMEO or poll/select timeout expired while parked */
    uint64_t cancelled;   /* the parked greenlet was killed or a timeout was thrown into it */
    uint64_t blocked;     /* had to block the OS thread: the current greenlet cannot switch */
    uint64_t waits;       /* times the greenlet was parked (a call may park several times) */
    uint64_t yields;      /* times a call let the hub run first, for fairness (hooks/fair.pxi);
                             not an outcome: the call then went on as usual */
} gh_counter_t;

typedef struct gh_thread_s {
    PyObject *state;              /* the _ThreadState object; kept alive by the registry */
    volatile int in_flight;       /* symbol blocking this OS thread for real, or -1 */
    volatile int64_t since_ns;    /* when it started */
    gh_counter_t counters[GH_NSYM];
    uint32_t fair_calls;          /* hooked calls since the last fairness check (hooks/fair.pxi) */
    uint32_t fair_limit;          /* calls between checks (0: check at the next call) */
    uint64_t fair_seen;           /* the thread's waits + yields at the last check */
} gh_thread_t;

/* NULL in every OS thread that has no backend bound: hooks then pass straight through. */
static __thread gh_thread_t *gh_current __attribute__((tls_model("initial-exec")));

/* Calls made in unbound threads (relaxed atomics: any thread may count). */
static uint64_t gh_unbound_calls[GH_NSYM];

static inline gh_thread_t *gh_self(void) { return gh_current; }
static inline void gh_set_self(gh_thread_t *t) { gh_current = t; }
static inline void gh_count_unbound(int sym) {
    __atomic_fetch_add(&gh_unbound_calls[sym], 1, __ATOMIC_RELAXED);
}
static inline uint64_t gh_unbound(int sym) {
    return __atomic_load_n(&gh_unbound_calls[sym], __ATOMIC_RELAXED);
}
static inline void gh_reset_unbound(void) {
    int i;
    for (i = 0; i < GH_NSYM; i++) __atomic_store_n(&gh_unbound_calls[i], 0, __ATOMIC_RELAXED);
}

static inline int gh_get_errno(void) { return errno; }
static inline void gh_set_errno(int e) { errno = e; }

static inline int64_t gh_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The thread's current C-level trace function, to chain to and restore. */
static inline Py_tracefunc gh_get_tracefunc(void) { return PyThreadState_Get()->c_tracefunc; }
static inline PyObject *gh_get_traceobj(void) { return PyThreadState_Get()->c_traceobj; }

#endif
