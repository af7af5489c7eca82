/* The resolver pool: name lookups run the real libc function on a worker OS thread while the
 * calling greenlet parks on an eventfd.  Pure C, no Python: workers never take the GIL.
 *
 * A job owns copies of everything the lookup reads and writes (name strings, the sockaddr,
 * the caller's output buffers), so that a caller that gives up (cancellation) can return at
 * once: the worker finishes into the job's own memory and frees it, results included.
 *
 * Job life: QUEUED -> RUNNING -> DONE (eventfd written) -> taken by the caller, or
 * ABANDONED by a cancelled caller at any point (the worker frees it when it gets to it).
 * Every live job is on one list so that a forked child can re-run or re-signal the jobs its
 * parked greenlets wait for (the workers did not survive the fork; the eventfds are shared
 * with the parent and are replaced, under the same fd numbers, by fresh ones).
 */
#ifndef GREENHOOK_DNS_H
#define GREENHOOK_DNS_H
#include <pthread.h>
#include <signal.h>
#include <netdb.h>
#include <resolv.h>
#include <arpa/inet.h>
#include <sys/eventfd.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    GH_DNS_GETADDRINFO, GH_DNS_GETNAMEINFO, GH_DNS_GETHOSTBYNAME_R, GH_DNS_GETHOSTBYNAME2_R,
    GH_DNS_GETHOSTBYADDR_R, GH_DNS_RES_QUERY, GH_DNS_RES_SEARCH
};
enum { GH_JOB_QUEUED, GH_JOB_RUNNING, GH_JOB_DONE, GH_JOB_ABANDONED };

/* Buffer for the non-reentrant gethostbyname* (grown on ERANGE, like glibc's own). */
#define GH_DNS_HOSTENT_BUF 1024
#define GH_DNS_HOSTENT_MAX (1 << 24)

typedef struct gh_dns_job {
    struct gh_dns_job *prev, *next;     /* the live list */
    struct gh_dns_job *qnext;           /* the queue */
    int kind, state, efd;
    int grow;                           /* buffer grows on ERANGE (non-reentrant callers) */
    /* inputs */
    char *name;                         /* node / name / dname */
    char *service;
    struct addrinfo hints;
    int has_hints;
    struct sockaddr_storage sa;
    socklen_t salen;
    int flags, af, cls, type;
    char addr[16];
    socklen_t addrlen;
    /* outputs */
    int rc, err, herr, therr;           /* result, errno, *h_errnop, h_errno */
    struct addrinfo *res;
    struct hostent he, *result;
    char *buf, *buf2;                   /* job-owned copies of the caller's output buffers */
    size_t buflen, buf2len;
} gh_dns_job;

typedef int (*gh_getaddrinfo_t)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
typedef void (*gh_freeaddrinfo_t)(struct addrinfo *);
typedef int (*gh_getnameinfo_t)(const struct sockaddr *, socklen_t, char *, socklen_t, char *, socklen_t, int);
typedef int (*gh_ghbn_r_t)(const char *, struct hostent *, char *, size_t, struct hostent **, int *);
typedef int (*gh_ghbn2_r_t)(const char *, int, struct hostent *, char *, size_t, struct hostent **, int *);
typedef int (*gh_ghba_r_t)(const void *, socklen_t, int, struct hostent *, char *, size_t, struct hostent **, int *);
typedef int (*gh_res_query_t)(const char *, int, int, unsigned char *, int);
typedef struct hostent *(*gh_ghbn_t)(const char *);
typedef struct hostent *(*gh_ghbn2_t)(const char *, int);
typedef struct hostent *(*gh_ghba_t)(const void *, socklen_t, int);

/* The real functions, from dlsym (never a saved GOT slot). */
static gh_getaddrinfo_t gh_real_getaddrinfo;
static gh_freeaddrinfo_t gh_real_freeaddrinfo;
static gh_getnameinfo_t gh_real_getnameinfo;
static gh_ghbn_r_t gh_real_gethostbyname_r;
static gh_ghbn2_r_t gh_real_gethostbyname2_r;
static gh_ghba_r_t gh_real_gethostbyaddr_r;
static gh_res_query_t gh_real_res_query, gh_real_res_search;
static gh_ghbn_t gh_real_gethostbyname;
static gh_ghbn2_t gh_real_gethostbyname2;
static gh_ghba_t gh_real_gethostbyaddr;

/* --- the pool --------------------------------------------------------------------------- */

static pthread_mutex_t gh_dns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gh_dns_cv = PTHREAD_COND_INITIALIZER;
static gh_dns_job *gh_dns_live;                 /* every job not yet freed or taken */
static gh_dns_job *gh_dns_qhead, *gh_dns_qtail;
static int gh_dns_threads, gh_dns_idle, gh_dns_queued, gh_dns_nlive;
static int gh_dns_max = 64;                     /* greenhook.configure(resolver_threads=...) */
static int gh_dns_idle_sec = 10;                /* an idle worker exits after this */
#define GH_DNS_STACK (512 * 1024)

static void gh_dns_link(gh_dns_job *j) {
    j->prev = NULL;
    j->next = gh_dns_live;
    if (gh_dns_live) gh_dns_live->prev = j;
    gh_dns_live = j;
    gh_dns_nlive++;
}

static void gh_dns_unlink(gh_dns_job *j) {
    if (j->prev) j->prev->next = j->next; else gh_dns_live = j->next;
    if (j->next) j->next->prev = j->prev;
    j->prev = j->next = NULL;
    gh_dns_nlive--;
}

static void gh_dns_enqueue(gh_dns_job *j) {
    j->qnext = NULL;
    if (gh_dns_qtail) gh_dns_qtail->qnext = j; else gh_dns_qhead = j;
    gh_dns_qtail = j;
    gh_dns_queued++;
}

/* Free a job and whatever result it still holds (with the libc that made it). */
static void gh_dns_free(gh_dns_job *j) {
    if (j == NULL) return;
    if (j->res) gh_real_freeaddrinfo(j->res);
    if (j->efd >= 0) close(j->efd);
    free(j->name);
    free(j->service);
    free(j->buf);
    free(j->buf2);
    free(j);
}

/* A new job with its eventfd; NULL when out of memory. */
static gh_dns_job *gh_dns_new(int kind) {
    gh_dns_job *j = (gh_dns_job *)calloc(1, sizeof(gh_dns_job));
    if (j == NULL) return NULL;
    j->kind = kind;
    j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);   /* -1 (out of fds): run in the caller */
    return j;
}

static void gh_dns_run(gh_dns_job *j) {
    int herr = j->herr;
    size_t n;
    char *nb;
    errno = j->err;                 /* the caller's errno and h_errno, as the call would see them */
    h_errno = j->therr;
    switch (j->kind) {
    case GH_DNS_GETADDRINFO:
        j->rc = gh_real_getaddrinfo(j->name, j->service, j->has_hints ? &j->hints : NULL, &j->res);
        break;
    case GH_DNS_GETNAMEINFO:
        j->rc = gh_real_getnameinfo((struct sockaddr *)&j->sa, j->salen, j->buf, (socklen_t)j->buflen,
                                    j->buf2, (socklen_t)j->buf2len, j->flags);
        break;
    case GH_DNS_GETHOSTBYNAME_R:
    case GH_DNS_GETHOSTBYNAME2_R:
    case GH_DNS_GETHOSTBYADDR_R:
        for (;;) {
            herr = j->herr;
            if (j->kind == GH_DNS_GETHOSTBYNAME_R)
                j->rc = gh_real_gethostbyname_r(j->name, &j->he, j->buf, j->buflen, &j->result, &herr);
            else if (j->kind == GH_DNS_GETHOSTBYNAME2_R)
                j->rc = gh_real_gethostbyname2_r(j->name, j->af, &j->he, j->buf, j->buflen, &j->result, &herr);
            else
                j->rc = gh_real_gethostbyaddr_r(j->addr, j->addrlen, j->af, &j->he, j->buf, j->buflen,
                                                &j->result, &herr);
            if (!j->grow || j->rc != ERANGE || j->buflen >= GH_DNS_HOSTENT_MAX) break;
            n = j->buflen * 2;
            nb = (char *)realloc(j->buf, n);
            if (nb == NULL) break;
            j->buf = nb;
            j->buflen = n;
        }
        j->herr = herr;             /* the *h_errnop answer */
        j->err = errno;
        j->therr = h_errno;
        return;
    case GH_DNS_RES_QUERY:
        j->rc = gh_real_res_query(j->name, j->cls, j->type, (unsigned char *)j->buf, (int)j->buflen);
        break;
    case GH_DNS_RES_SEARCH:
        j->rc = gh_real_res_search(j->name, j->cls, j->type, (unsigned char *)j->buf, (int)j->buflen);
        break;
    }
    j->err = errno;
    j->therr = h_errno;
}

/* Every live worker's resolver state (its thread's ``_res``).  In a forked child, glibc hands
 * new threads the cached stacks of the parent's threads with their static TLS as it was
 * (seen on glibc 2.36): a worker started in the child would find a parent worker's resolver
 * state with its open UDP sockets -- the very sockets the parent's worker reads, so the child
 * would take the parent's answers and both would time out.  The child closes its copies of
 * those sockets at fork time, when the fd numbers are certainly still theirs. */
typedef struct gh_dns_worker_s { struct gh_dns_worker_s *next; res_state st; } gh_dns_worker_t;
static gh_dns_worker_t *gh_dns_workers;
typedef void (*gh_res_nclose_t)(res_state);
static gh_res_nclose_t gh_real_res_nclose;

static void *gh_dns_worker(void *arg) {
    gh_dns_job *j;
    struct timespec until;
    uint64_t one = 1;
    int rc;
    gh_dns_worker_t self;
    (void)arg;
    self.st = __res_state();
    pthread_mutex_lock(&gh_dns_mu);
    self.next = gh_dns_workers;
    gh_dns_workers = &self;
    for (;;) {
        rc = 0;
        while (gh_dns_qhead == NULL && gh_dns_threads <= gh_dns_max && rc != ETIMEDOUT) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += gh_dns_idle_sec;
            gh_dns_idle++;
            rc = pthread_cond_timedwait(&gh_dns_cv, &gh_dns_mu, &until);
            gh_dns_idle--;
        }
        if (gh_dns_qhead == NULL || gh_dns_threads > gh_dns_max) break;   /* idle, or shrunk */
        j = gh_dns_qhead;
        gh_dns_qhead = j->qnext;
        if (gh_dns_qhead == NULL) gh_dns_qtail = NULL;
        gh_dns_queued--;
        if (j->state != GH_JOB_ABANDONED) {
            j->state = GH_JOB_RUNNING;
            pthread_mutex_unlock(&gh_dns_mu);
            gh_dns_run(j);
            pthread_mutex_lock(&gh_dns_mu);
        }
        if (j->state == GH_JOB_ABANDONED) {
            /* its caller gave up: the late result is freed here */
            gh_dns_unlink(j);
            pthread_mutex_unlock(&gh_dns_mu);
            gh_dns_free(j);
            pthread_mutex_lock(&gh_dns_mu);
            continue;
        }
        j->state = GH_JOB_DONE;
        if (write(j->efd, &one, sizeof one) < 0) { /* a non-blocking eventfd cannot be full here */ }
    }
    gh_dns_threads--;
    {
        gh_dns_worker_t **p = &gh_dns_workers;
        while (*p != &self) p = &(*p)->next;
        *p = self.next;
    }
    pthread_mutex_unlock(&gh_dns_mu);
    return NULL;
}

/* Start a worker (lock held).  Workers block every signal: signals go to the caller's threads. */
static int gh_dns_spawn(void) {
    pthread_t th;
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, GH_DNS_STACK);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&th, &attr, gh_dns_worker, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc == 0) gh_dns_threads++;
    return rc;
}

/* Queue a job; 0, or -1 when no worker exists and none can be started (the job is not queued). */
static int gh_dns_submit(gh_dns_job *j) {
    pthread_mutex_lock(&gh_dns_mu);
    if (gh_dns_idle <= gh_dns_queued && gh_dns_threads < gh_dns_max) {
        if (gh_dns_spawn() != 0 && gh_dns_threads == 0) {
            pthread_mutex_unlock(&gh_dns_mu);
            return -1;
        }
    }
    j->state = GH_JOB_QUEUED;
    gh_dns_link(j);
    gh_dns_enqueue(j);
    pthread_cond_signal(&gh_dns_cv);
    pthread_mutex_unlock(&gh_dns_mu);
    return 0;
}

/* 1 when the job is done: it is the caller's again (off the live list); 0 while it runs. */
static int gh_dns_take(gh_dns_job *j) {
    int done;
    pthread_mutex_lock(&gh_dns_mu);
    done = j->state == GH_JOB_DONE;
    if (done) gh_dns_unlink(j);
    pthread_mutex_unlock(&gh_dns_mu);
    return done;
}

/* The caller gives up.  Returns 1 when the pool now owns the job (a worker frees it), 0 when
 * it was already done (the caller frees it with gh_dns_free). */
static int gh_dns_abandon(gh_dns_job *j) {
    int owned;
    pthread_mutex_lock(&gh_dns_mu);
    owned = j->state != GH_JOB_DONE;
    if (owned) j->state = GH_JOB_ABANDONED;
    else gh_dns_unlink(j);
    pthread_mutex_unlock(&gh_dns_mu);
    return owned;
}

static int gh_dns_set_max(int n) {
    int old;
    pthread_mutex_lock(&gh_dns_mu);
    old = gh_dns_max;
    gh_dns_max = n;
    pthread_cond_broadcast(&gh_dns_cv);          /* surplus idle workers exit */
    pthread_mutex_unlock(&gh_dns_mu);
    return old;
}

static void gh_dns_counts(int *threads, int *idle, int *queued, int *live, int *max) {
    pthread_mutex_lock(&gh_dns_mu);
    *threads = gh_dns_threads;
    *idle = gh_dns_idle;
    *queued = gh_dns_queued;
    *live = gh_dns_nlive;
    *max = gh_dns_max;
    pthread_mutex_unlock(&gh_dns_mu);
}

/* --- fork: the child has no workers; its greenlets may still wait on jobs ------------------ */

/* Point the job's fd number at a fresh eventfd (the old one is shared with the parent). */
static void gh_dns_fresh_efd(gh_dns_job *j, int signalled) {
    uint64_t one = 1;
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd >= 0) {
        dup3(fd, j->efd, O_CLOEXEC);
        close(fd);
    }
    if (signalled && write(j->efd, &one, sizeof one) < 0) { }
}

static void gh_dns_prefork(void) { pthread_mutex_lock(&gh_dns_mu); }
static void gh_dns_parent(void) { pthread_mutex_unlock(&gh_dns_mu); }

static void gh_dns_child(void) {
    gh_dns_job *j, *next;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int n;
    memcpy(&gh_dns_mu, &mu, sizeof mu);
    memcpy(&gh_dns_cv, &cv, sizeof cv);
    gh_dns_worker_t *w;
    for (w = gh_dns_workers; w != NULL; w = w->next) {
        if (w->st->options & RES_INIT) {
            if (gh_real_res_nclose) gh_real_res_nclose(w->st);   /* this process's copies */
            w->st->options &= ~RES_INIT;
        }
    }
    gh_dns_workers = NULL;      /* those threads (and their stack frames) are not in the child */
    gh_dns_threads = gh_dns_idle = gh_dns_queued = 0;
    gh_dns_qhead = gh_dns_qtail = NULL;
    for (j = gh_dns_live; j != NULL; j = next) {
        next = j->next;
        if (j->state == GH_JOB_ABANDONED) {
            gh_dns_unlink(j);
            gh_dns_free(j);
        } else if (j->state == GH_JOB_DONE) {
            gh_dns_fresh_efd(j, 1);
        } else {
            /* queued, or half-run by a worker that does not exist here: run it again */
            if (j->kind == GH_DNS_GETADDRINFO && j->res) { gh_real_freeaddrinfo(j->res); }
            j->res = NULL;
            j->state = GH_JOB_QUEUED;
            gh_dns_fresh_efd(j, 0);
            gh_dns_enqueue(j);
        }
    }
    for (n = 0; n < gh_dns_queued && gh_dns_threads < gh_dns_max; n++)
        if (gh_dns_spawn() != 0) break;
}

static int gh_dns_init(void) {
    gh_real_res_nclose = (gh_res_nclose_t)dlsym(RTLD_DEFAULT, "__res_nclose");
    gh_real_getaddrinfo = (gh_getaddrinfo_t)dlsym(RTLD_DEFAULT, "getaddrinfo");
    gh_real_freeaddrinfo = (gh_freeaddrinfo_t)dlsym(RTLD_DEFAULT, "freeaddrinfo");
    gh_real_getnameinfo = (gh_getnameinfo_t)dlsym(RTLD_DEFAULT, "getnameinfo");
    gh_real_gethostbyname_r = (gh_ghbn_r_t)dlsym(RTLD_DEFAULT, "gethostbyname_r");
    gh_real_gethostbyname2_r = (gh_ghbn2_r_t)dlsym(RTLD_DEFAULT, "gethostbyname2_r");
    gh_real_gethostbyaddr_r = (gh_ghba_r_t)dlsym(RTLD_DEFAULT, "gethostbyaddr_r");
    gh_real_res_query = (gh_res_query_t)dlsym(RTLD_DEFAULT, "res_query");
    gh_real_res_search = (gh_res_query_t)dlsym(RTLD_DEFAULT, "res_search");
    gh_real_gethostbyname = (gh_ghbn_t)dlsym(RTLD_DEFAULT, "gethostbyname");
    gh_real_gethostbyname2 = (gh_ghbn2_t)dlsym(RTLD_DEFAULT, "gethostbyname2");
    gh_real_gethostbyaddr = (gh_ghba_t)dlsym(RTLD_DEFAULT, "gethostbyaddr");
    return pthread_atfork(gh_dns_prefork, gh_dns_parent, gh_dns_child);
}

/* --- copying results back to the caller --------------------------------------------------- */

static inline char *gh_dns_rebase_ptr(char *p, const char *from, size_t len, char *to) {
    if (p >= from && p < from + len) return to + (p - from);
    return p;
}

/* Copy the hostent ``src`` (its strings and arrays in ``from``, ``len`` bytes) into ``dst``
 * with its storage in ``to`` (at least ``len`` bytes). */
static void gh_dns_copy_hostent(struct hostent *dst, const struct hostent *src, const char *from,
                                size_t len, char *to) {
    char **p;
    memcpy(to, from, len);
    *dst = *src;
    dst->h_name = gh_dns_rebase_ptr(src->h_name, from, len, to);
    dst->h_aliases = (char **)gh_dns_rebase_ptr((char *)src->h_aliases, from, len, to);
    dst->h_addr_list = (char **)gh_dns_rebase_ptr((char *)src->h_addr_list, from, len, to);
    if (dst->h_aliases != src->h_aliases)
        for (p = dst->h_aliases; *p != NULL; p++) *p = gh_dns_rebase_ptr(*p, from, len, to);
    if (dst->h_addr_list != src->h_addr_list)
        for (p = dst->h_addr_list; *p != NULL; p++) *p = gh_dns_rebase_ptr(*p, from, len, to);
}

/* Per-OS-thread storage for the non-reentrant calls' answers (freed when the thread ends). */
typedef struct { struct hostent he; char *buf; size_t len; } gh_dns_static_t;
static pthread_key_t gh_dns_key;
static void gh_dns_static_free(void *p) {
    gh_dns_static_t *s = (gh_dns_static_t *)p;
    if (s) { free(s->buf); free(s); }
}
static int gh_dns_key_init(void) { return pthread_key_create(&gh_dns_key, gh_dns_static_free); }

/* This thread's copy of a non-reentrant answer, or NULL (ENOMEM). */
static struct hostent *gh_dns_to_static(const struct hostent *src, const char *from, size_t len) {
    gh_dns_static_t *s = (gh_dns_static_t *)pthread_getspecific(gh_dns_key);
    char *nb;
    if (s == NULL) {
        s = (gh_dns_static_t *)calloc(1, sizeof *s);
        if (s == NULL) return NULL;
        pthread_setspecific(gh_dns_key, s);
    }
    if (s->len < len) {
        nb = (char *)realloc(s->buf, len);
        if (nb == NULL) return NULL;
        s->buf = nb;
        s->len = len;
    }
    gh_dns_copy_hostent(&s->he, src, from, len, s->buf);
    return &s->he;
}

static inline int gh_get_h_errno(void) { return h_errno; }
static inline void gh_set_h_errno(int e) { h_errno = e; }

/* A literal IPv4 or IPv6 address (optionally with a %scope): glibc answers it without DNS. */
static int gh_dns_numeric(const char *name) {
    unsigned char a[16];
    char tmp[INET6_ADDRSTRLEN + 1];
    const char *pct;
    size_t n;
    if (name == NULL) return 1;
    if (inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1) return 1;
    pct = strchr(name, '%');
    if (pct == NULL) return 0;
    n = (size_t)(pct - name);
    if (n >= sizeof tmp) return 0;
    memcpy(tmp, name, n);
    tmp[n] = 0;
    return inet_pton(AF_INET6, tmp, a) == 1 && strchr(pct + 1, '.') == NULL;
}

#endif
