/* Declarations shared by the dirty arbiter's files (cg_dirty_arbiter.c:
 * process life cycle, signals, worker processes; cg_dirty_relay.c: the
 * connections and frame routing). Arbiter process only, single-threaded. */
#ifndef CG_DIRTY_ARBITER_INT_H
#define CG_DIRTY_ARBITER_INT_H

#include <Python.h>
#include <event2/event.h>
#include <stdbool.h>
#include <event2/bufferevent.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_conf.h"
#include "cg_dirty_pool.h"
#include "cg_dirty_stash.h"

/* A client's output above this pauses reading from the worker that streams
 * to it; it resumes when the output drains below half of it. */
#define CG_DIRTY_CLIENT_HIGH_WATER (4u * 1024u * 1024u)

/* After a call's deadline, the worker running it gets this long to finish
 * (it is sent CANCEL) before it is killed and replaced. */
#define CG_DIRTY_KILL_GRACE_SEC 2.0

enum cg_dirty_arb_state {
    CG_DIRTY_ARB_RUNNING,
    CG_DIRTY_ARB_DRAINING, /* TERM/INT: no new calls, in-flight ones finish */
    CG_DIRTY_ARB_STOPPING, /* workers told to exit; waiting to reap them */
};

/* A connection from an HTTP worker's client (or a dirty worker's stash use). */
struct cg_dirty_client {
    struct cg_dirty_arb *arb;
    struct bufferevent *bev;         /* writes (and owns the fd) */
    struct event *rev;               /* reads: see fill() in cg_dirty_relay.c */
    struct evbuffer *in;             /* what was read, not yet handled */
    struct cg_dirty_call *calls;     /* its calls (cprev/cnext) */
    uint64_t skip;                   /* bytes of a refused frame still to discard */
    bool paused_workers;             /* some worker link waits for our output to drain */
    bool want_flush;                 /* in arb->flush: output added, not yet written */
    struct cg_dirty_client *flush_next;
    struct cg_dirty_client *prev, *next;
};

struct cg_dirty_arb {
    struct cg_conf *conf;            /* borrowed from the master */
    struct event_base *base;         /* built in this process after fork */
    struct cg_dirty_pool pool;
    struct cg_dirty_stash stash;
    int listen_fd;
    struct event *ev_listen, *ev_sig, *ev_tick;
    struct cg_dirty_client *clients;
    struct cg_dirty_client *flush;   /* clients with replies to write (flush_next) */
    size_t max_message;
    double timeout;                  /* dirty_timeout in seconds; 0 = none */
    int num_workers;                 /* target count (TTIN/TTOU change it) */
    int worker_age;
    enum cg_dirty_arb_state state;
    double stop_deadline;            /* monotonic seconds */
    int exit_status;
    bool boot_error_logged;          /* a worker's boot traceback was logged */
    pid_t ppid;
    PyObject *pyarb;                 /* the hooks' `arbiter` object (owned) */
    char socket_path[108];
};

/* Monotonic clock in seconds. */
double cg_dirty_now(void);

/* --- cg_dirty_relay.c ------------------------------------------------ */

/* Enlarges a Unix socket's kernel buffers (large payloads move in fewer
 * wake-ups). Best effort. */
void cg_dirty_socket_tune(int fd);

/* Accept callback for the listening socket. */
void cg_dirty_relay_on_accept(evutil_socket_t fd, short what, void *arg);

/* Starts reading frames from a new worker's socketpair end (w->fd).
 * Returns 0 or -1 (logged). */
int cg_dirty_relay_link_open(struct cg_dirty_arb *arb, struct cg_dirty_wk *w);

/* The worker's link is gone (EOF, error, bad frame, or the process died):
 * every caller with a call on it gets a DirtyWorkerError now; the link is
 * closed. `why` ends the error message. Idempotent. */
void cg_dirty_relay_link_lost(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, const char *why);

/* Gives `w` queued calls while it has free slots. */
void cg_dirty_relay_pump(struct cg_dirty_arb *arb, struct cg_dirty_wk *w);

/* Calls queued or running (the arbiter drains to 0 before stopping). */
size_t cg_dirty_relay_pending(const struct cg_dirty_arb *arb);

/* Fails every call still queued or running with `type`/`message`, and
 * closes every client connection (shutdown). */
void cg_dirty_relay_abort_all(struct cg_dirty_arb *arb, const char *type, const char *message);

/* --- cg_dirty_arbiter.c --------------------------------------------- */

/* Sends `sig` to a worker (ESRCH is fine: it is being reaped). */
void cg_dirty_arb_kill(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, int sig);

/* Called when a call ended or a worker booted: lets a draining arbiter
 * move on when nothing is left. */
void cg_dirty_arb_maybe_stop(struct cg_dirty_arb *arb);

#endif
