/* The dirty arbiter's routing table, as plain data with no I/O: the apps
 * (from dirty_apps, with per-app worker limits), the worker records, the
 * calls in flight on each worker, and the per-app queues of calls waiting
 * for a free slot. The arbiter's I/O code (cg_dirty_relay.c) and process
 * code (cg_dirty_arbiter.c) drive it; tests/unit/dirty/test_cg_dirty_pool.c
 * tests it without processes.
 *
 * Rules (gunicorn's, plus the slot accounting cgunicorn adds):
 *  - An app spec is "module:Class" (every worker loads it) or
 *    "module:Class:N" (only N workers load it). Without N, a DirtyApp class
 *    attribute `workers = N` sets the limit (probed in a child process, so
 *    the arbiter never imports application code).
 *  - A new worker loads every app that has no limit, and each limited app
 *    that has fewer than its limit of workers. A replacement for a dead
 *    worker loads exactly the apps the dead one had.
 *  - A worker is given calls only once it has booted (its apps' init()
 *    returned) and while it is not recycling; one still booting counts for
 *    its apps, so their calls wait in the queue instead of failing.
 *  - A recycling worker (over dirty_max_requests or its memory bound) is
 *    picked only when no other worker with the app has a free slot.
 *  - A call goes to the least busy live worker that has its app and a free
 *    slot (each worker runs up to dirty_threads calls at once); ties go to
 *    the worker that was given a call longest ago, so sequential calls
 *    spread over the workers. With no free slot the call waits in its
 *    app's queue; a slot that frees takes the oldest waiting call among the
 *    apps that worker has.
 *
 * Single-threaded (the arbiter's loop). */
#ifndef CG_DIRTY_POOL_H
#define CG_DIRTY_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_err.h"

#define CG_DIRTY_MAX_APPS 64

struct cg_dirty_call;
struct cg_dirty_wk;
struct cg_dirty_arb; /* the arbiter (opaque here) */
struct event;
struct evbuffer;

/* An intrusive doubly linked list of calls (queue or in-flight set). */
struct cg_dirty_calls {
    struct cg_dirty_call *head, *tail;
    size_t n;
};

enum cg_dirty_call_state {
    CG_DIRTY_CALL_QUEUED,   /* waiting in its app's queue */
    CG_DIRTY_CALL_RUNNING,  /* sent to a worker */
    CG_DIRTY_CALL_ORPHANED, /* sent, but the caller is gone (timeout, cancel, closed) */
};

/* The deadline a call's timer was last armed for. Recorded when it is armed:
 * libevent measures timers from its cached loop time, so a timer can fire a
 * little before the same deadline computed afresh with cg_dirty_now(). */
enum {
    CG_DIRTY_DEADLINE_IDLE = 0, /* dirty_timeout: no frame from the worker */
    CG_DIRTY_DEADLINE_TOTAL,    /* the caller's timeout for the whole call */
    CG_DIRTY_DEADLINE_QUEUE,    /* dirty_queue_timeout: no worker took it */
};

struct cg_dirty_call {
    uint64_t aid;               /* arbiter-wide id, used on the worker link */
    uint64_t cid;               /* the client's id for this call */
    uint64_t seq;               /* arrival order (queues are FIFO across apps) */
    int app;                    /* index into pool->apps */
    enum cg_dirty_call_state state;
    struct cg_dirty_wk *worker; /* set while RUNNING/ORPHANED */
    struct cg_dirty_call *prev, *next; /* in app queue or worker in-flight list */

    /* Owned by the I/O layer (the pool never touches them): */
    struct cg_dirty_arb *arb;
    void *client;               /* the caller's connection, NULL when orphaned */
    struct cg_dirty_call *cprev, *cnext; /* in the client's list of calls */
    void *req;                  /* the held request frame body */
    int *fds;                   /* the memfds that came with it (malloc'd), nfds of them */
    size_t nfds;
    void *timer;                /* deadline / kill-grace timer */
    double started;             /* monotonic seconds when it arrived */
    double dispatched;          /* ... when a worker took it (0: still queued) */
    double queue_sec;           /* dirty_queue_timeout: the longest wait in the
                                   queue before DirtyBusyError (0: none) */
    double total_sec;           /* the caller's timeout for the whole call (0: none) */
    double idle_sec;            /* dirty_timeout: the longest wait for the worker's
                                   next frame, restarted by each chunk (0: none) */
    bool timed_out;             /* a deadline passed (kill-grace armed) */
    unsigned char armed_for;    /* which deadline the timer is set for:
                                   CG_DIRTY_DEADLINE_* (cg_dirty_relay_rearm) */
    char action[96];            /* for log and error messages */
};

struct cg_dirty_wk {
    pid_t pid;
    int age;                    /* 1, 2, ... in spawn order */
    uint64_t apps;              /* bit i: loads pool->apps[i] */
    int busy;                   /* calls in flight (RUNNING + ORPHANED) */
    uint64_t last_given;        /* pool clock when it last got a call */
    bool booted;                /* said it loaded its apps: only then is it given calls */
    bool recycling;             /* over dirty_max_requests / memory: still serves until
                                 * its replacement has booted, then it is retired */
    pid_t replaces;             /* the recycling worker this one replaces, or 0 */
    int slot;                   /* 0, 1, ...: its place in the pool (device assignment);
                                 * a replacement takes its predecessor's */
    unsigned long served;       /* calls finished */
    unsigned long max_served;   /* dirty_max_requests + jitter; 0: no limit */
    bool retiring;              /* HUP/TTOU/stop: gets no new calls */
    bool link_dead;             /* its socket closed: gets no new calls */
    struct cg_dirty_calls inflight;
    struct cg_dirty_wk *prev, *next; /* in pool->workers */

    /* Owned by the I/O layer: */
    struct cg_dirty_arb *arb;
    int fd;                     /* the arbiter's end of the socketpair */
    void *link;                 /* struct bufferevent * (writes; owns the fd) */
    struct event *rev;          /* its read event */
    struct evbuffer *in;        /* read, not yet handled */
    void *fdio;                 /* struct cg_dirty_relay_fdio * (owned): memfds of its frames */
    void *paused_by;            /* the client whose full buffer paused reading */
};

struct cg_dirty_app {
    char *path;                 /* "module:Class", owned */
    int limit;                  /* N workers, or 0 for every worker */
    bool limit_from_spec;       /* N came from "module:Class:N" */
    struct cg_dirty_calls queue;
    double service_avg;         /* recent seconds a call keeps a worker (EWMA) */
    bool service_seen;          /* service_avg holds at least one call */
};

struct cg_dirty_pool {
    struct cg_dirty_app apps[CG_DIRTY_MAX_APPS];
    size_t napps;
    struct cg_dirty_wk *workers, *workers_tail;
    size_t nworkers;
    int capacity;               /* calls per worker (dirty_threads, >= 1) */
    uint64_t next_aid, next_seq, clock;
    uint64_t respawn[CG_DIRTY_MAX_APPS * 4]; /* app sets of dead workers, FIFO */
    size_t nrespawn;
};

/* Initialises an empty pool whose workers take `capacity` calls each. */
void cg_dirty_pool_init(struct cg_dirty_pool *p, int capacity);

/* Frees the app paths. Workers and calls belong to the caller (free them first). */
void cg_dirty_pool_deinit(struct cg_dirty_pool *p);

/* Adds a dirty_apps entry ("module:Class" or "module:Class:N"). Returns the
 * app's index, or -1 with err naming the spec and the expected form
 * (duplicates, bad N, too many apps are errors). */
int cg_dirty_pool_add_app(struct cg_dirty_pool *p, const char *spec, struct cg_err *err);

/* Index of the app "module:Class" (len bytes), or -1. */
int cg_dirty_pool_app_find(const struct cg_dirty_pool *p, const char *path, size_t len);

/* The largest per-app limit (at least 1): fewer workers than this would
 * leave an app below its count (TTOU stops there, as gunicorn). */
int cg_dirty_pool_min_workers(const struct cg_dirty_pool *p);

/* Live (non-retiring) workers that load app `app`. */
int cg_dirty_pool_app_workers(const struct cg_dirty_pool *p, int app);

/* The app set a new worker should load: a pending replacement set first
 * (removed from the respawn list), else every unlimited app plus each
 * limited app below its limit. 0 means no app needs another worker. */
uint64_t cg_dirty_pool_apps_for_new(struct cg_dirty_pool *p);

/* Remembers a dead worker's app set for its replacement. */
void cg_dirty_pool_respawn_push(struct cg_dirty_pool *p, uint64_t apps);

/* True when a pending replacement will load app `app`. */
bool cg_dirty_pool_respawn_has(const struct cg_dirty_pool *p, int app);

/* Links / unlinks a worker record (caller allocates and frees it). */
void cg_dirty_pool_worker_add(struct cg_dirty_pool *p, struct cg_dirty_wk *w);
void cg_dirty_pool_worker_remove(struct cg_dirty_pool *p, struct cg_dirty_wk *w);
struct cg_dirty_wk *cg_dirty_pool_worker_by_pid(const struct cg_dirty_pool *p, pid_t pid);

/* The lowest slot (0, 1, ...) no live, non-recycling worker holds: a new
 * worker's place (its device, cg_dirty_gpus.h). A replacement so takes
 * the slot of the worker it replaces (dead, retiring or recycling). */
int cg_dirty_pool_free_slot(const struct cg_dirty_pool *p);

/* The worker for a new call to `app` (see the rules above), or NULL when
 * every worker that has it is busy, retiring or gone. */
struct cg_dirty_wk *cg_dirty_pool_pick(struct cg_dirty_pool *p, int app);

/* Gives `c` a fresh aid and seq (call once when it arrives). */
void cg_dirty_pool_call_init(struct cg_dirty_pool *p, struct cg_dirty_call *c, int app);

/* Puts `c` on `w` (state RUNNING, counts a slot). */
void cg_dirty_pool_assign(struct cg_dirty_pool *p, struct cg_dirty_call *c,
                          struct cg_dirty_wk *w);

/* Appends `c` to its app's queue (state QUEUED). */
void cg_dirty_pool_enqueue(struct cg_dirty_pool *p, struct cg_dirty_call *c);

/* Removes a QUEUED call from its queue. */
void cg_dirty_pool_dequeue(struct cg_dirty_pool *p, struct cg_dirty_call *c);

/* The oldest queued call `w` could take now (it has the app and a free
 * slot, and is live), still queued; NULL if none. */
struct cg_dirty_call *cg_dirty_pool_next_for(struct cg_dirty_pool *p, struct cg_dirty_wk *w);

/* Takes a RUNNING/ORPHANED call off its worker (frees the slot). */
void cg_dirty_pool_finish(struct cg_dirty_pool *p, struct cg_dirty_call *c);

/* The call with arbiter id `aid` in flight on `w`, or NULL (a late reply). */
struct cg_dirty_call *cg_dirty_pool_find(const struct cg_dirty_wk *w, uint64_t aid);

/* Back-pressure (dirty_queue_limit): records that a call of `app` kept its
 * worker `seconds`, and estimates in how many seconds a caller refused now
 * could be served: the calls queued ahead of it, spread over the app's
 * worker slots, times the recent service time (1 s before any call ended). */
void cg_dirty_pool_note_service(struct cg_dirty_pool *p, int app, double seconds);
double cg_dirty_pool_retry_after(const struct cg_dirty_pool *p, int app);

/* The least retry_after the estimate gives, in seconds. */
#define CG_DIRTY_RETRY_AFTER_MIN 0.1

/* List helpers for the I/O layer's own lists of calls. */
void cg_dirty_calls_append(struct cg_dirty_calls *l, struct cg_dirty_call *c);
void cg_dirty_calls_remove(struct cg_dirty_calls *l, struct cg_dirty_call *c);

#endif
