/* Server metrics in shared memory, for the Prometheus endpoint
 * (server/cg_metrics_http.c) the master serves on `metrics_bind`.
 *
 * The master maps one region (MAP_SHARED|MAP_ANONYMOUS) before it forks
 * anything; every child inherits it. It holds one slot per worker slot
 * (the index of the worker's struct cg_worker_slot), written only by the
 * worker in that slot with relaxed atomic adds (no locks, no syscalls), a
 * block for the dirty arbiter, and the master's own counters (restarts by
 * cause, and the totals of slots whose worker died, folded in by the master
 * before the slot is reused, so every counter stays monotonic).
 *
 * Labels are bounded: methods are a fixed list plus "other", statuses an
 * exact code from a fixed table or "other".
 *
 * Context: cg_metrics_open() in the master before forking; cg_metrics_attach()
 * in a worker after fork; the request functions from any worker thread (the
 * GIL is not needed). When metrics_bind is unset nothing is mapped and every
 * update is one predictable branch. */
#ifndef CG_METRICS_H
#define CG_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cg_err.h"
#include "cg_http_request.h"

#define CG_METRICS_SLOTS 1024 /* == CG_MASTER_MAX_SLOTS */

enum { CG_METRICS_NMETHODS = 10 }; /* GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE other */
enum { CG_METRICS_NSTATUS = 42 };  /* the table in cg_metrics.c, the last entry "other" */
enum { CG_METRICS_NBUCKETS = 14 }; /* finite upper bounds; +Inf is one more */

/* Why a worker was replaced. */
enum cg_metrics_restart {
    CG_METRICS_RESTART_MAX_REQUESTS,
    CG_METRICS_RESTART_TIMEOUT,
    CG_METRICS_RESTART_CRASH,
    CG_METRICS_RESTART_RELOAD,
    CG_METRICS_RESTART_MEMORY,
    CG_METRICS_NRESTART
};

/* Dirty call outcomes. */
enum cg_metrics_dirty_outcome {
    CG_METRICS_DIRTY_OK,
    CG_METRICS_DIRTY_APP_ERROR,
    CG_METRICS_DIRTY_TIMEOUT,
    CG_METRICS_DIRTY_WORKER_DIED,
    CG_METRICS_DIRTY_OTHER_ERROR,
    CG_METRICS_NDIRTY_OUTCOME
};

/* A histogram: per-bucket (not cumulative) counts; cumulated when rendered. */
struct cg_metrics_hist {
    _Atomic uint64_t bucket[CG_METRICS_NBUCKETS + 1];
    _Atomic uint64_t sum_us;
    _Atomic uint64_t count;
};

/* The counters of one worker slot (or the retired totals). */
struct cg_metrics_http {
    _Atomic uint64_t requests[CG_METRICS_NMETHODS][CG_METRICS_NSTATUS];
    struct cg_metrics_hist duration;
    struct cg_metrics_hist queue;
    _Atomic uint64_t started;  /* in flight = started - finished (live slots only) */
    _Atomic uint64_t finished;
};

struct cg_metrics_slot {
    struct cg_metrics_http http;
    _Atomic uint32_t booted;   /* the worker's app is loaded (readiness) */
};

#define CG_METRICS_DIRTY_APPS 32
#define CG_METRICS_DIRTY_ACTIONS 128

/* The dirty arbiter's counters (it is the only writer). Series are named
 * by app path and action in fixed-size tables; a call whose pair does not
 * fit is counted under app "other", action "other". */
struct cg_metrics_dirty_series {
    char app[96];
    char action[64];
    _Atomic uint32_t used;
    _Atomic uint64_t calls[CG_METRICS_NDIRTY_OUTCOME];
};

/* dirty_gpus: how many live dirty workers each device has. */
#define CG_METRICS_DIRTY_DEVICES 64

struct cg_metrics_dirty_device {
    char id[32];
    _Atomic int32_t workers;
};

struct cg_metrics_dirty {
    _Atomic uint32_t apps_ready;     /* every dirty app's init() returned (arbiter view) */
    _Atomic uint32_t apps_wanted;    /* 1 when dirty apps are configured */
    _Atomic int64_t queue_depth;
    _Atomic int64_t busy_workers;
    _Atomic uint64_t stream_chunks;
    struct cg_metrics_hist duration;
    _Atomic uint32_t nseries;
    struct cg_metrics_dirty_series series[CG_METRICS_DIRTY_ACTIONS];
    _Atomic uint32_t ndevices;       /* entries of `devices` published (ids written first) */
    struct cg_metrics_dirty_device devices[CG_METRICS_DIRTY_DEVICES];
};

/* User metrics of `from cgunicorn import metrics`: the master sums every
 * worker's values. A series is registered by the first worker that names it
 * (a spin-free claim with compare-and-swap on `state`); values live per
 * worker slot. */
#define CG_METRICS_USER_SERIES 256
#define CG_METRICS_USER_KEY 240

struct cg_metrics_user_series {
    _Atomic uint32_t state;          /* 0 free, 2 ready (claimed by user_next first) */
    uint8_t kind;                    /* 'c' counter, 'g' gauge, 'h' histogram (first cell) */
    char name[80];
    char labels[CG_METRICS_USER_KEY - 80]; /* 'k="v",...' already escaped, or "" */
    char help[128];
};
/* A histogram takes this many consecutive cells: buckets, +Inf, sum, count. */
#define CG_METRICS_USER_HCELLS (CG_METRICS_NBUCKETS + 3)
/* User values are fixed-point: units of 1e-6. */
#define CG_METRICS_USER_SCALE 1000000

struct cg_metrics_region {
    struct cg_metrics_slot slots[CG_METRICS_SLOTS];
    struct cg_metrics_http retired;
    _Atomic uint64_t restarts[CG_METRICS_NRESTART];
    _Atomic uint32_t draining;      /* a graceful shutdown began */
    _Atomic uint32_t user_next;     /* user series cells claimed */
    _Atomic uint32_t user_dropped;  /* a registration did not fit (logged once) */
    struct cg_metrics_dirty dirty;
    struct cg_metrics_user_series user[CG_METRICS_USER_SERIES];
    /* user values: per slot, per series; histograms use NBUCKETS+3 cells
     * (buckets, +Inf, sum in µs, count) starting at their series index */
    _Atomic int64_t user_val[CG_METRICS_SLOTS + 1][CG_METRICS_USER_SERIES];
};

/* The region, or NULL when metrics are off. Process-wide, set before fork. */
extern struct cg_metrics_region *cg_metrics;
/* This worker's slot, or NULL (not a worker, or metrics off). */
extern struct cg_metrics_slot *cg_metrics_mine;
extern int cg_metrics_my_index;

/* Maps the region when `on`. Master, before forking. Returns 0, or -1 with err. */
int cg_metrics_open(bool on, struct cg_err *err);
void cg_metrics_close(void);

/* In a freshly forked worker: its slot is `index`. */
void cg_metrics_attach(int index);

/* The worker booted (readiness). */
void cg_metrics_worker_booted(void);

/* Method label index of a request method (exact, case-sensitive). */
int cg_metrics_method_index(const char *m, size_t len);
const char *cg_metrics_method_name(int idx);
/* Status label index of a status code, and its label text. */
int cg_metrics_status_index(int status);
const char *cg_metrics_status_name(int idx);
/* Bucket upper bounds in µs (NBUCKETS entries) and their label text. */
extern const uint64_t cg_metrics_bucket_us[CG_METRICS_NBUCKETS];
extern const char *const cg_metrics_bucket_le[CG_METRICS_NBUCKETS];

void cg_metrics_hist_observe(struct cg_metrics_hist *h, uint64_t us);

/* A request began: in flight + 1, and its queue time observed when it has
 * X-Request-Start (`req` may be NULL). Pair with one cg_metrics_request_end(). */
void cg_metrics_request_start_slow(const struct cg_http_request *req);
static inline void cg_metrics_request_start(const struct cg_http_request *req)
{
    if (cg_metrics_mine != NULL) {
        cg_metrics_request_start_slow(req);
    }
}

/* The request a start counted is over (in flight - 1, served + 1). */
static inline void cg_metrics_request_end(void)
{
    if (cg_metrics_mine != NULL) {
        atomic_fetch_add_explicit(&cg_metrics_mine->http.finished, 1, memory_order_relaxed);
    }
}

/* A response was answered with `status` after `dur_us` (where the access
 * log and StatsD count it); `method` is a cg_metrics_method_index(). */
void cg_metrics_request_done_slow(int method, int status, uint64_t dur_us);
static inline void cg_metrics_request_done(int method, int status, uint64_t dur_us)
{
    if (cg_metrics_mine != NULL) {
        cg_metrics_request_done_slow(method, status, dur_us);
    }
}
static inline int cg_metrics_req_method(const struct cg_http_request *req)
{
    return req == NULL ? CG_METRICS_NMETHODS - 1
                       : cg_metrics_method_index(req->method.ptr, req->method.len);
}

/* Parses an X-Request-Start value ("t=1700000000.123", "t=1700000000123",
 * "t=1700000000123456", also without "t=") into µs since the epoch.
 * Returns 0, or -1 when it is not such a value. */
int cg_metrics_parse_request_start(const char *v, size_t len, uint64_t *epoch_us);

/* Master: folds slot `index` into the retired totals and clears it, before
 * it is reused; counts a restart of `cause` when cause >= 0. */
void cg_metrics_retire_slot(int index, int cause);

/* Master: graceful shutdown began (readyz says 503 from now on). */
void cg_metrics_set_draining(void);

/* User metrics (the `cgunicorn.metrics` Python API; any process). Registers
 * a series of `kind` ('c', 'g', 'h') named `name` with `labels` (the
 * rendered 'k="v",...' text) and returns its cell index, or -1 when metrics
 * are off or the table is full (logged once per process). Names and labels
 * too long for the table are refused the same way. */
int cg_metrics_user_register(char kind, const char *name, const char *labels, const char *help);
/* Adds `v` (fixed-point, CG_METRICS_USER_SCALE) to this process's cell. */
void cg_metrics_user_add(int idx, int64_t v);
/* Sets this process's cell (gauges). */
void cg_metrics_user_set(int idx, int64_t v);
/* Observes `v` seconds... in fixed point, into a histogram registered at `idx`. */
void cg_metrics_user_observe(int idx, int64_t v);

/* Master: the dirty arbiter exited; until its successor's workers have
 * loaded their apps, /readyz waits again, and its gauges read 0. */
void cg_metrics_dirty_arbiter_gone(void);

/* Master: the region was mapped (metrics_bind set by a HUP) after the
 * running dirty arbiter was forked, so that arbiter never reports; /readyz
 * stops waiting for it. Its successor reports as usual. */
void cg_metrics_dirty_assume_ready(void);

/* Dirty arbiter: the dirty_gpus devices (ids[0..n)) and the live workers
 * each has now (workers[i]); called whenever a worker starts or exits.
 * Devices past CG_METRICS_DIRTY_DEVICES are not shown. */
void cg_metrics_dirty_devices(const char *const *ids, const int *workers, size_t n);

/* Dirty arbiter: one finished call of `app`/`action`. */
void cg_metrics_dirty_call(const char *app, const char *action, enum cg_metrics_dirty_outcome o,
                           uint64_t dur_us);

#endif
