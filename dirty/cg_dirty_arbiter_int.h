/* Declarations shared by the dirty arbiter's files (cg_dirty_arbiter.c:
 * process life cycle, signals, worker processes; cg_dirty_relay*.c: the
 * connections and frame routing, in four files: cg_dirty_relay.c shared
 * helpers and dispatch, cg_dirty_relay_client.c client connections,
 * cg_dirty_relay_link.c worker links, cg_dirty_relay_deadline.c deadlines,
 * cg_dirty_relay_fds.c the memfds forwarded with frames).
 * Arbiter process only, single-threaded. */
#ifndef CG_DIRTY_ARBITER_INT_H
#define CG_DIRTY_ARBITER_INT_H

#include <Python.h>
#include <event2/event.h>
#include <stdbool.h>
#include <event2/bufferevent.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_conf.h"
#include "cg_dirty_fds.h"
#include "cg_dirty_gpus.h"
#include "cg_dirty_pool.h"
#include "cg_dirty_stash.h"
#include "cg_py_hook_table.h"
#include "cg_supervisor.h"

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

struct cg_dirty_fdmark;

/* The descriptors of one connection (cg_dirty_relay_fds.c): received and
 * not yet claimed by a whole frame, and those to send with bytes of the
 * output. */
struct cg_dirty_relay_fdio {
    struct cg_dirty_arb *arb;
    struct bufferevent *bev;         /* borrowed: the connection's */
    struct cg_dirty_fdq in;
    struct cg_dirty_fdmark *marks, *tail; /* owned, in output order */
    struct event *wev;               /* writes the output while marks are pending */
};

/* A connection from an HTTP worker's client (or a dirty worker's stash use). */
struct cg_dirty_client {
    struct cg_dirty_arb *arb;
    struct bufferevent *bev;         /* writes (and owns the fd) */
    struct event *rev;               /* reads: see cg_dirty_relay_fill() */
    struct evbuffer *in;             /* what was read, not yet handled */
    struct cg_dirty_relay_fdio fdio; /* memfds that came or go with its frames */
    struct cg_dirty_call *calls;     /* its calls (cprev/cnext) */
    uint64_t skip;                   /* bytes of a refused frame still to discard */
    bool paused_workers;             /* some worker link waits for our output to drain */
    size_t zc_inflight;              /* memfd bytes sent to it since it last had read
                                      * everything (back-pressure, cg_dirty_relay_fds.c) */
    struct event *zc_timer;          /* polls its reading while memfds hold workers */
    bool want_flush;                 /* in arb->flush: output added, not yet written */
    struct cg_dirty_client *flush_next;
    struct cg_dirty_client *prev, *next;
};

struct cg_dirty_arb {
    struct cg_conf *conf;            /* borrowed from the master */
    const struct cg_hook_table *hooks; /* the master's, inherited through fork */
    struct event_base *base;         /* built in this process after fork */
    struct cg_sup sup;               /* forks, signals and reaps the dirty workers */
    struct cg_dirty_pool pool;
    struct cg_dirty_stash stash;
    int listen_fd;
    struct event *ev_listen, *ev_sig, *ev_tick;
    struct cg_dirty_client *clients;
    struct cg_dirty_client *flush;   /* clients with replies to write (flush_next) */
    size_t max_message;
    unsigned long long fds_forwarded; /* memfds passed on (status: "memfds_forwarded") */
    double timeout;                  /* dirty_timeout in seconds; 0 = none */
    size_t queue_limit;              /* dirty_queue_limit: waiting calls per app; 0 = none */
    double queue_timeout;            /* dirty_queue_timeout in seconds; 0 = none */
    int num_workers;                 /* target count (TTIN/TTOU change it) */
    int worker_age;
    enum cg_dirty_arb_state state;
    uint64_t stop_deadline;          /* draining ends (cg_monotonic_ms) */
    int exit_status;
    bool boot_error_logged;          /* a worker's boot traceback was logged (start-up) */
    bool pool_booted;                /* some worker booted: boot failures back off from now
                                      * on instead of stopping the arbiter */
    unsigned boot_failures;          /* in a row since a worker last booted */
    uint64_t respawn_at;             /* no spawn before this (cg_monotonic_ms; back-off) */
    pid_t next_replaces;             /* the recycling worker the next spawn replaces */
    uint64_t next_mem_check;         /* dirty_max_worker_memory: next RSS look */
    struct cg_dirty_gpus gpus;       /* dirty_gpus devices (owned); empty: off */
    pid_t ppid;
    PyObject *pyarb;                 /* the hooks' `arbiter` object (owned) */
    char socket_path[108];
};

/* --- cg_dirty_arbiter.c (worker life cycle hooks for the relay) ---- */

/* `w` said it booted: it takes queued calls now; the back-off is reset; a
 * recycling worker it replaces is retired. */
void cg_dirty_arb_worker_booted(struct cg_dirty_arb *arb, struct cg_dirty_wk *w);

/* A call on `w` ended: counts it against dirty_max_requests. */
void cg_dirty_arb_call_served(struct cg_dirty_arb *arb, struct cg_dirty_wk *w);

/* cg_monotonic_ms() in seconds, the unit of the call deadlines. */
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

/* Counts a finished call in the shared metrics region (cg_metrics.h) with
 * its outcome and duration, and refreshes the queue and busy gauges. */
void cg_dirty_relay_count(struct cg_dirty_arb *arb, const struct cg_dirty_call *c, int outcome);

/* Refreshes the queue-depth and busy-workers gauges. */
void cg_dirty_relay_gauges(struct cg_dirty_arb *arb);

/* Gives `w` queued calls while it has free slots. */
void cg_dirty_relay_pump(struct cg_dirty_arb *arb, struct cg_dirty_wk *w);

/* Calls queued or running (the arbiter drains to 0 before stopping). */
size_t cg_dirty_relay_pending(const struct cg_dirty_arb *arb);

/* Fails every call still queued or running with `type`/`message`, and
 * closes every client connection (shutdown). */
void cg_dirty_relay_abort_all(struct cg_dirty_arb *arb, const char *type, const char *message);

/* --- inside the relay (cg_dirty_relay*.c) -------------------------- */

/* Reads what `fd` has into `in` (up to 4 MiB per call: libevent 2.1 reads
 * 4 KiB per event, so the arbiter reads its sockets itself), and the
 * descriptors that come with it into `fds`. Returns 0, or -1 at EOF
 * (errno 0) or on error (errno set; EPROTO: descriptors were lost). */
int cg_dirty_relay_fill(struct evbuffer *in, struct cg_dirty_fdq *fds, evutil_socket_t fd);

/* Socket buffers and bufferevent write sizes for large payloads. */
void cg_dirty_relay_tune(struct bufferevent *bev);

/* Writes what `bev`'s output holds now, with one writev; the write event is
 * enabled only for leftovers (a full socket). `io` (may be NULL): the
 * connection's descriptors; while some wait to be sent it writes instead. */
void cg_dirty_relay_flush_out(struct bufferevent *bev, struct cg_dirty_relay_fdio *io);

/* Write-callback part: disables the write event once the output is empty. */
void cg_dirty_relay_on_drained(struct bufferevent *bev);

/* Queues a built frame on the client's connection (cl NULL or closed:
 * dropped) and flushes it. */
void cg_dirty_relay_send_frame(struct cg_dirty_client *cl, const struct cg_dirty_frame *f);

/* Sends an ERROR frame {"error": {"type", "message", ...extra}} to a client
 * (cl NULL or closed: nothing is sent). Takes ownership of `extra` (may be
 * NULL). */
void cg_dirty_relay_send_error(struct cg_dirty_client *cl, uint64_t cid, const char *type,
                               json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Refuses a call of app `app` with DirtyBusyError (back-pressure): `why`
 * says which bound it hit; retry_after comes from the pool's estimate. */
void cg_dirty_relay_send_busy(struct cg_dirty_arb *arb, struct cg_dirty_client *cl, uint64_t cid,
                              int app, const char *action, const char *why);

/* Sends CANCEL for the call to its worker, if it has one with a link. */
void cg_dirty_relay_send_cancel(struct cg_dirty_call *c);

/* Outcome of looking at the front of an input buffer. */
enum cg_dirty_peek {
    CG_DIRTY_PEEK_NEED_MORE,
    CG_DIRTY_PEEK_READY,
    CG_DIRTY_PEEK_BAD,
    CG_DIRTY_PEEK_TOO_BIG,
};

/* Decodes the header at the front of `in` into `h`: READY when the whole
 * frame is there, TOO_BIG past `max` bytes, BAD (err set) for a bad header. */
enum cg_dirty_peek cg_dirty_relay_frame_peek(struct evbuffer *in, size_t max,
                                             struct cg_dirty_header *h, struct cg_err *err);

/* Forgets the call's caller: replies for it are discarded from now on. */
void cg_dirty_relay_call_detach(struct cg_dirty_call *c);

/* Detaches and frees a call (its timer and held request too). The pool
 * must no longer hold it. */
void cg_dirty_relay_call_free(struct cg_dirty_call *c);

/* Sends a call's held REQUEST to `w` (id rewritten to the arbiter-wide
 * one) and starts the wait for the worker's reply. */
void cg_dirty_relay_dispatch(struct cg_dirty_arb *arb, struct cg_dirty_call *c,
                             struct cg_dirty_wk *w);

/* (cg_dirty_relay_deadline.c) Arms the call's deadline: dirty_timeout from
 * now, capped by what is left of the caller's timeout for the whole call. */
void cg_dirty_relay_rearm(struct cg_dirty_call *c);

/* (cg_dirty_relay_deadline.c) The call's timer callback (arg: the call). */
void cg_dirty_relay_on_call_timer(evutil_socket_t fd, short what, void *arg);

/* (cg_dirty_relay_deadline.c) The caller gave up on a call: later frames
 * for it are dropped, and a worker paused for that caller is let go. */
void cg_dirty_relay_call_abandon(struct cg_dirty_call *c);

/* (cg_dirty_relay_link.c) The worker may read again; also handles what is
 * already buffered from it. */
void cg_dirty_relay_link_resume(struct cg_dirty_wk *w);

/* (cg_dirty_relay_fds.c) Sets up `io` for a connection's bufferevent.
 * 0, or -1 (out of memory). */
int cg_dirty_relay_fdio_init(struct cg_dirty_relay_fdio *io, struct cg_dirty_arb *arb,
                             struct bufferevent *bev);

/* (cg_dirty_relay_fds.c) Closes every descriptor `io` holds, frees its
 * event; `io` may be NULL. Call before the bufferevent is freed. */
void cg_dirty_relay_fdio_deinit(struct cg_dirty_relay_fdio *io);

/* (cg_dirty_relay_fds.c) Takes fds[0..nfds-1] to send with the next byte
 * added to the output: call just before the frame that carries them is
 * added. On failure they are closed (and logged). */
void cg_dirty_relay_fdio_mark(struct cg_dirty_relay_fdio *io, const int *fds, size_t nfds);

/* (cg_dirty_relay_fds.c) Writes while descriptors wait to be sent; false
 * when there are none (the caller writes as usual). */
bool cg_dirty_relay_fdio_flush(struct cg_dirty_relay_fdio *io);

/* (cg_dirty_relay_fds.c) Back-pressure for memfd payloads, which weigh
 * nothing in the output buffer: a reply frame's memfds (fds[0..n-1]) are
 * about to go to `cl`; counts their bytes in cl->zc_inflight, which drops
 * to 0 once the client has read everything sent to it. */
void cg_dirty_relay_zc_add(struct cg_dirty_client *cl, const int *fds, size_t n);

/* (cg_dirty_relay_fds.c) True while the memfd bytes `cl` has not read yet
 * should keep its workers paused (more than half CG_DIRTY_CLIENT_HIGH_WATER). */
bool cg_dirty_relay_zc_busy(struct cg_dirty_client *cl);

/* --- cg_dirty_arbiter.c --------------------------------------------- */

/* Sends `sig` to a worker (ESRCH is fine: it is being reaped). */
void cg_dirty_arb_kill(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, int sig);

/* Called when a call ended or a worker booted: lets a draining arbiter
 * move on when nothing is left. */
void cg_dirty_arb_maybe_stop(struct cg_dirty_arb *arb);

#endif
