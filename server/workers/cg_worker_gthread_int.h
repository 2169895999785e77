/* Declarations shared by the gthread worker's loop (cg_worker_gthread.c)
 * and its thread pool (cg_worker_gthread_pool.c). */
#ifndef CG_WORKER_GTHREAD_INT_H
#define CG_WORKER_GTHREAD_INT_H

#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cg_conn.h"
#include "cg_err.h"
#include "cg_h2.h"
#include "cg_py_wsgi_conn.h"
#include "cg_worker.h"

struct event;
struct event_base;
struct cg_wsgi;

enum cg_gthread_state {
    CG_GTHREAD_WAIT,    /* in the loop: waiting for (the rest of) a request head */
    CG_GTHREAD_RUN,     /* queued for, or owned by, a pool thread */
    CG_GTHREAD_CLOSING, /* write side shut; the loop discards what the peer still sends */
    CG_GTHREAD_CLOSED,  /* socket closed; waits in `closed` for its release */
    CG_GTHREAD_H2,      /* an HTTP/2 session (cg_h2.c) in the loop; its streams are pool jobs */
};

/* One client connection. The loop owns it in WAIT and CLOSING; in RUN it
 * belongs to the pool thread that took it, until it is handed back through
 * the done queue. Only the owner touches it. */
struct cg_gthread_conn {
    struct cg_wsgi_conn c; /* c.owner points back here */
    struct cg_gthread *gt;
    struct event *ev;      /* owned: readable/timeout event of c.fd */
    enum cg_gthread_state state;
    bool idle;             /* no byte of the next request has arrived yet */
    bool head_error;       /* job: log the refused request's access line, then close */
    bool reuse;            /* set by the pool: keep the connection for another request */
    bool probed;           /* set by the pool: it already read the socket (nothing complete) */
    bool h2_checked;       /* HTTP/2 on: whether this connection speaks it is known */
    struct cg_h2_conn *h2; /* owned: state H2's session */
    struct cg_h2_upgrade *h2up; /* owned: set by the pool, an h2c upgrade the loop starts */
    uint64_t deadline_ms;  /* WAIT/CLOSING: close at this monotonic time (0: never) */
    uint64_t t0_us;        /* when reading this request's head started */
    size_t drained;        /* CLOSING: bytes discarded so far */
    struct cg_gthread_conn *prev, *next; /* every open connection (loop thread only) */
    struct cg_gthread_conn *qnext;       /* job queue or done queue */
    struct cg_conn_release_node rel;     /* closed: queued for release (loop thread) */
};

struct cg_gthread_queue {
    struct cg_gthread_conn *head, *tail;
};

/* The worker's state. Loop-only fields are marked; the rest is shared. */
struct cg_gthread {
    struct cg_worker *w;
    const struct cg_conf *conf;
    struct cg_wsgi *wsgi; /* owned; read-only once the pool runs */

    /* loop thread only */
    struct event_base *base;
    struct event **listen_evs; /* one per listener; owned */
    struct event *sig_ev, *done_ev, *tick_ev;
    struct cg_gthread_conn *conns;
    size_t nconns;
    struct cg_conn_release closed; /* closed connections freed once their callback returned */
    struct event *release_ev;      /* made active when `closed` gets its first entry */
    size_t nrun;               /* connections in RUN */
    bool accepting;
    bool stopping;             /* graceful stop under way */
    bool queue_open;           /* TERM: the listen queues may still hold connections */
    bool cap_blocked;          /* at worker_connections with nothing idle to close */
    struct cg_cap_log cap_log;   /* idle connections closed at the cap */
    bool quick;                /* QUIT/INT: stop without waiting long */
    uint64_t stop_deadline_ms;
    int wake_r, wake_w;        /* owned: signal.set_wakeup_fd() pipe (Python-level handlers) */
    int old_wakeup;            /* the wakeup fd before ours */
    struct event *wake_ev;
    PyThreadState *main_ts;    /* the loop thread's Python state while it runs without the GIL */
    bool h2_on;                /* http_protocols has h2 */
    struct cg_h2_hub hub;      /* HTTP/2: settings, limits, the pool's wake-up of the loop */
    struct event *h2_ev;       /* hub.efd readable */
    bool h2_busy;              /* at exit: HTTP/2 streams still run on the pool */

    /* shared between the loop and the pool */
    _Atomic size_t nwait;      /* connections parked in the loop (keep-alive cap) */
    _Atomic bool draining;     /* stopping: every response closes its connection */
    _Atomic bool stop_asked;   /* max_requests reached in a pool thread */
    _Atomic uint64_t nr;       /* requests handled */

    /* the pool (cg_worker_gthread_pool.c) */
    pthread_t *threads;
    size_t nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cg_gthread_queue jobs; /* under mu */
    struct cg_gthread_queue done; /* under mu */
    struct cg_h2_job *h2_head, *h2_tail; /* HTTP/2 streams to run, under mu */
    bool pool_quit;               /* under mu */
    int done_fd;                  /* owned eventfd: the pool wakes the loop */
};

/* Starts conf->threads pool threads and the done eventfd. Called by the
 * main thread after it released the GIL; signals are blocked in the pool
 * threads (they go to the loop). Returns 0, or -1 with err. */
int cg_worker_gthread_pool_start(struct cg_gthread *gt, struct cg_err *err);

/* Queues a connection in state RUN for a pool thread (loop thread). */
void cg_worker_gthread_pool_submit(struct cg_gthread *gt, struct cg_gthread_conn *k);

/* Queues an HTTP/2 stream for a pool thread (loop thread; the hub's
 * submit). */
void cg_worker_gthread_pool_submit_h2(void *gt, struct cg_h2_job *job);

/* Takes every connection the pool handed back, as a qnext-linked list, and
 * clears the eventfd (loop thread). */
struct cg_gthread_conn *cg_worker_gthread_pool_take_done(struct cg_gthread *gt);

/* Asks the threads to exit once the job queue is empty. `join`: wait for
 * them (only when no request is in flight); otherwise they are left to die
 * with the process. Closes the eventfd. Called without the GIL. */
void cg_worker_gthread_pool_stop(struct cg_gthread *gt, bool join);

/* Reads what the socket has (never waits) and parses the head: READY, MORE
 * (nothing complete yet; k->idle is cleared once a byte of the request
 * arrived) or CLOSE. Any thread that owns k; no GIL needed. */
enum cg_wsgi_head cg_worker_gthread_read_head(struct cg_gthread_conn *k);

#endif
