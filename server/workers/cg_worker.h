/* What every HTTP worker shares, whatever its class: the liveness slot the
 * master watches, signal flags, the app import, and the worker entry point
 * that dispatches to the sync/gthread/asgi loop. */
#ifndef CG_WORKER_H
#define CG_WORKER_H

#include <Python.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_clock.h"
#include "cg_conf.h"
#include "cg_listen.h"
#include "cg_py_hooks.h"

/* gunicorn's exit codes the master acts on. */
#define CG_WORKER_BOOT_ERROR 3
#define CG_APP_LOAD_ERROR 4

/* One per worker, in memory shared with the master (MAP_SHARED). The worker
 * stores the monotonic time of its last sign of life; the master aborts it
 * after `timeout` seconds without one (gunicorn's worker tmp file). */
struct cg_worker_slot {
    _Atomic uint64_t beat_ms;
    _Atomic uint64_t requests;
    _Atomic int32_t pid;
};

/* The state one worker process runs with. */
struct cg_worker {
    const struct cg_conf *conf;
    struct cg_listener *listeners; /* inherited, not owned */
    size_t nlisteners;
    struct cg_worker_slot *slot;
    PyObject *app;      /* the WSGI/ASGI callable; owned */
    int age;            /* spawn sequence number, as gunicorn's worker.age */
    pid_t ppid;
    uint64_t max_requests; /* 0 = unlimited; jitter applied */
    uint64_t nr;           /* requests handled */
    volatile bool alive;   /* false once a graceful stop was asked */
    /* TERM (not max_requests, not a parent change): before exiting, the
     * worker serves the connections already queued on its listeners; the
     * master has stopped new ones from queueing (cg_listen_stop_queueing). */
    volatile bool terminating;
    bool booted;           /* the app is loaded and post_worker_init ran */
    /* The sync worker sets `busy` while it accepts and serves connections;
     * a QUIT/INT that arrives then lets the current request finish
     * (quit_after_request) instead of cutting it. */
    volatile bool busy;
    /* The event-loop classes (gthread) set `quit_defers` while their loop
     * runs: a QUIT/INT then stops the worker quickly but without losing
     * what it holds (cg_worker_check_signals returns true and the loop
     * winds down: requests in flight finish, kept-alive connections end
     * with a FIN) instead of exiting from the signal handler. */
    volatile bool quit_defers;
    volatile bool quit_after_request;
    struct cg_hooks *hooks; /* the master's, inherited through fork; not owned */
    PyObject *py_worker;    /* the hooks' `worker` object; owned */
};

/* worker_connections reached (gthread, asgi): the oldest idle connection
 * is closed to admit a new one, as nginx does with reusable connections;
 * this counts them and logs one WARNING a minute, not one per connection. */
struct cg_cap_log {
    uint64_t evicted;   /* closed since the last log line */
    uint64_t logged_ms; /* when that line was written (0: never) */
};
void cg_worker_cap_evicted(struct cg_cap_log *l, int worker_connections);

/* How the event-loop workers (gthread, asgi) stop. A stop keeps an idle
 * kept-alive connection open a moment longer, so that a request its client
 * is already sending is answered ("Connection: close") rather than met by a
 * close; then the connection ends with a FIN (a lingering close), never a
 * reset. TERM: idle connections get CG_STOP_IDLE_MS, requests in flight
 * graceful_timeout. QUIT/INT stop quickly: idle connections get
 * CG_QUIT_IDLE_MS, and the worker exits CG_QUIT_GRACE_MS after the signal,
 * delivering the requests in flight that finish by then and cutting the
 * rest (upstream exits 0.1 s after the signal, cutting them all). */
#define CG_STOP_IDLE_MS 2000u
#define CG_QUIT_IDLE_MS 500u
#define CG_QUIT_GRACE_MS 1000u

/* Records a sign of life for the master. */
static inline void cg_worker_notify(struct cg_worker *w)
{
    atomic_store_explicit(&w->slot->beat_ms, cg_monotonic_ms(), memory_order_relaxed);
}

/* Worker process body, called in the child right after fork. Imports the
 * app (unless preloaded: `app` non-NULL), runs the loop of conf->worker_class,
 * and exits the process with gunicorn's exit codes. Never returns. */
void cg_worker_main(struct cg_worker *w, PyObject *preloaded_app) __attribute__((noreturn));

/* Polls the signal pipe and acts on worker signals (TERM: graceful, so
 * alive = false; USR1: reopen logs; also checks that the master is still our
 * parent) and runs Python's pending signal handlers (QUIT/INT: worker_int
 * then exit; ABRT: the stuck traceback, worker_abort, exit: these run in
 * Python so they interrupt application code, as in gunicorn). Call it with
 * the GIL held. Returns true when the worker must stop now (a QUIT/INT
 * arrived during a request, which has finished). */
bool cg_worker_check_signals(struct cg_worker *w);

/* The sync worker loop (cg_worker_sync.c). Returns when the worker stops. */
void cg_worker_sync_run(struct cg_worker *w);

#endif
