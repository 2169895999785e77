/* The shared metrics region (see cg_metrics.h): mapping, label tables, and
 * the update functions workers and the dirty arbiter call. Updates are
 * relaxed atomic adds on the writer's own slot; the master reads them with
 * relaxed loads when it renders /metrics (a scrape may see a request counted
 * and its histogram observation not yet: Prometheus tolerates that skew). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cg_log.h"
#include "cg_metrics.h"

struct cg_metrics_region *cg_metrics;
struct cg_metrics_slot *cg_metrics_mine;
int cg_metrics_my_index = -1;

#define RELAXED memory_order_relaxed

static const char *const methods[CG_METRICS_NMETHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
};

/* Exact codes that get their own label; anything else is "other". */
static const int statuses[CG_METRICS_NSTATUS - 1] = {
    100, 101, 103, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308,
    400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 422, 425, 426, 429, 431, 500, 501, 502, 503, 504, 505,
};
static const char *const status_names[CG_METRICS_NSTATUS] = {
    "100", "101", "103", "200", "201", "202", "204", "206", "301", "302", "303", "304", "307",
    "308", "400", "401", "403", "404", "405", "406", "408", "409", "410", "411", "412", "413",
    "414", "415", "416", "417", "422", "425", "426", "429", "431", "500", "501", "502", "503",
    "504", "505", "other",
};

const uint64_t cg_metrics_bucket_us[CG_METRICS_NBUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 30000000,
};
const char *const cg_metrics_bucket_le[CG_METRICS_NBUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1", "2.5", "5", "10", "30",
};

int cg_metrics_open(bool on, struct cg_err *err)
{
    if (!on || cg_metrics != NULL) {
        return 0;
    }
    void *p = mmap(NULL, sizeof(struct cg_metrics_region), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        cg_err_set(err, "metrics_bind: cannot map %zu bytes of shared memory for the metrics: %s",
                   sizeof(struct cg_metrics_region), strerror(errno));
        return -1;
    }
    cg_metrics = p;
    return 0;
}

void cg_metrics_close(void)
{
    if (cg_metrics != NULL) {
        munmap(cg_metrics, sizeof(struct cg_metrics_region));
        cg_metrics = NULL;
    }
    cg_metrics_mine = NULL;
}

void cg_metrics_attach(int index)
{
    if (cg_metrics != NULL && index >= 0 && index < CG_METRICS_SLOTS) {
        cg_metrics_mine = &cg_metrics->slots[index];
        cg_metrics_my_index = index;
    }
}

void cg_metrics_worker_booted(void)
{
    if (cg_metrics_mine != NULL) {
        atomic_store(&cg_metrics_mine->booted, 1);
    }
}

int cg_metrics_method_index(const char *m, size_t len)
{
    for (int i = 0; i < CG_METRICS_NMETHODS - 1; i++) {
        if (strlen(methods[i]) == len && memcmp(methods[i], m, len) == 0) {
            return i;
        }
    }
    return CG_METRICS_NMETHODS - 1;
}

const char *cg_metrics_method_name(int idx)
{
    return methods[idx];
}

int cg_metrics_status_index(int status)
{
    int lo = 0, hi = CG_METRICS_NSTATUS - 2;
    while (lo <= hi) { /* the table is sorted */
        int mid = (lo + hi) / 2;
        if (statuses[mid] == status) {
            return mid;
        }
        if (statuses[mid] < status) {
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return CG_METRICS_NSTATUS - 1;
}

const char *cg_metrics_status_name(int idx)
{
    return status_names[idx];
}

void cg_metrics_hist_observe(struct cg_metrics_hist *h, uint64_t us)
{
    int b = 0;
    while (b < CG_METRICS_NBUCKETS && us > cg_metrics_bucket_us[b]) {
        b++;
    }
    atomic_fetch_add_explicit(&h->bucket[b], 1, RELAXED);
    atomic_fetch_add_explicit(&h->sum_us, us, RELAXED);
    atomic_fetch_add_explicit(&h->count, 1, RELAXED);
}

int cg_metrics_parse_request_start(const char *v, size_t len, uint64_t *epoch_us)
{
    size_t i = 0;
    uint64_t ip = 0, frac = 0, scale = 1;
    int ndig = 0;

    while (i < len && (v[i] == ' ' || v[i] == '\t')) {
        i++;
    }
    if (i + 2 <= len && v[i] == 't' && v[i + 1] == '=') {
        i += 2;
    }
    for (; i < len && v[i] >= '0' && v[i] <= '9' && ndig < 19; i++, ndig++) {
        ip = ip * 10 + (uint64_t)(v[i] - '0');
    }
    if (ndig == 0) {
        return -1;
    }
    if (i < len && v[i] == '.') {
        for (i++; i < len && v[i] >= '0' && v[i] <= '9'; i++) {
            if (scale < 1000000) {
                frac = frac * 10 + (uint64_t)(v[i] - '0');
                scale *= 10;
            }
        }
    }
    if (i < len && v[i] != ' ' && v[i] != '\t' && v[i] != ',') {
        return -1;
    }
    /* The unit is told by magnitude, as New Relic's agents do: a time after
     * 2001 is > 1e9 s, > 1e12 ms and > 1e15 µs. */
    if (ip >= 1000000000000000ull) {
        *epoch_us = ip;
    } else if (ip >= 1000000000000ull) {
        *epoch_us = ip * 1000u + frac * 1000u / scale;
    } else if (ip >= 1000000000ull) {
        *epoch_us = ip * 1000000u + frac * 1000000u / scale;
    } else {
        return -1;
    }
    return 0;
}

static void observe_queue(const struct cg_http_request *req)
{
    static const char name[] = "X-REQUEST-START";
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        uint64_t t;
        if (h->name.len != sizeof(name) - 1 || memcmp(h->name.ptr, name, sizeof(name) - 1) != 0) {
            continue;
        }
        if (cg_metrics_parse_request_start(h->value.ptr, h->value.len, &t) == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts); /* vDSO: no syscall */
            uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
            /* A proxy clock ahead of ours reads as no queueing, not as a
             * huge unsigned wait. */
            cg_metrics_hist_observe(&cg_metrics_mine->http.queue, now > t ? now - t : 0);
        }
        return;
    }
}

void cg_metrics_request_start_slow(const struct cg_http_request *req)
{
    atomic_fetch_add_explicit(&cg_metrics_mine->http.started, 1, RELAXED);
    if (req != NULL) {
        observe_queue(req);
    }
}

void cg_metrics_request_done_slow(int method, int status, uint64_t dur_us)
{
    struct cg_metrics_http *s = &cg_metrics_mine->http;
    if (method < 0 || method >= CG_METRICS_NMETHODS) {
        method = CG_METRICS_NMETHODS - 1;
    }
    atomic_fetch_add_explicit(&s->requests[method][cg_metrics_status_index(status)], 1, RELAXED);
    cg_metrics_hist_observe(&s->duration, dur_us);
}

static void fold_hist(struct cg_metrics_hist *to, struct cg_metrics_hist *from)
{
    for (int b = 0; b <= CG_METRICS_NBUCKETS; b++) {
        atomic_fetch_add_explicit(&to->bucket[b], atomic_exchange(&from->bucket[b], 0), RELAXED);
    }
    atomic_fetch_add_explicit(&to->sum_us, atomic_exchange(&from->sum_us, 0), RELAXED);
    atomic_fetch_add_explicit(&to->count, atomic_exchange(&from->count, 0), RELAXED);
}

void cg_metrics_retire_slot(int index, int cause)
{
    if (cg_metrics == NULL || index < 0 || index >= CG_METRICS_SLOTS) {
        return;
    }
    struct cg_metrics_slot *s = &cg_metrics->slots[index];
    struct cg_metrics_http *r = &cg_metrics->retired;
    for (int m = 0; m < CG_METRICS_NMETHODS; m++) {
        for (int k = 0; k < CG_METRICS_NSTATUS; k++) {
            uint64_t v = atomic_exchange(&s->http.requests[m][k], 0);
            if (v != 0) {
                atomic_fetch_add_explicit(&r->requests[m][k], v, RELAXED);
            }
        }
    }
    fold_hist(&r->duration, &s->http.duration);
    fold_hist(&r->queue, &s->http.queue);
    /* A dead worker's requests are no longer in flight: they retire as
     * started == finished. */
    atomic_store(&s->http.started, 0);
    atomic_store(&s->http.finished, 0);
    atomic_store(&s->booted, 0);
    /* User series: counters and histograms fold into the retired row;
     * gauges of a dead worker are dropped. */
    uint32_t used = atomic_load(&cg_metrics->user_next);
    for (int u = 0; u < CG_METRICS_USER_SERIES; u++) {
        int64_t v = atomic_exchange(&cg_metrics->user_val[index][u], 0);
        if (v != 0 && (uint32_t)u < used && cg_metrics->user[u].kind != 'g') {
            atomic_fetch_add_explicit(&cg_metrics->user_val[CG_METRICS_SLOTS][u], v, RELAXED);
        }
    }
    if (cause >= 0 && cause < CG_METRICS_NRESTART) {
        atomic_fetch_add_explicit(&cg_metrics->restarts[cause], 1, RELAXED);
    }
}

void cg_metrics_set_draining(void)
{
    if (cg_metrics != NULL) {
        atomic_store(&cg_metrics->draining, 1);
    }
}

void cg_metrics_dirty_arbiter_gone(void)
{
    if (cg_metrics != NULL) {
        atomic_store(&cg_metrics->dirty.apps_ready, 0);
        atomic_store(&cg_metrics->dirty.queue_depth, 0);
        atomic_store(&cg_metrics->dirty.busy_workers, 0);
        for (size_t i = 0; i < CG_METRICS_DIRTY_DEVICES; i++) {
            atomic_store(&cg_metrics->dirty.devices[i].workers, 0);
        }
    }
}

void cg_metrics_dirty_assume_ready(void)
{
    if (cg_metrics != NULL) {
        atomic_store(&cg_metrics->dirty.apps_ready, 1);
    }
}

static struct cg_metrics_dirty_series *dirty_series(const char *app, const char *action)
{
    struct cg_metrics_dirty *d = &cg_metrics->dirty;
    uint32_t n = atomic_load_explicit(&d->nseries, RELAXED);
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(d->series[i].app, app) == 0 && strcmp(d->series[i].action, action) == 0) {
            return &d->series[i];
        }
    }
    if (n < CG_METRICS_DIRTY_ACTIONS - 1 && strlen(app) < sizeof(d->series[0].app) &&
        strlen(action) < sizeof(d->series[0].action)) {
        struct cg_metrics_dirty_series *s = &d->series[n];
        memcpy(s->app, app, strlen(app) + 1);
        memcpy(s->action, action, strlen(action) + 1);
        atomic_store(&s->used, 1);
        atomic_store(&d->nseries, n + 1); /* published after the names */
        return s;
    }
    /* The last row is the overflow series. */
    struct cg_metrics_dirty_series *o = &d->series[CG_METRICS_DIRTY_ACTIONS - 1];
    if (atomic_load(&o->used) == 0) {
        memcpy(o->app, "other", 6);
        memcpy(o->action, "other", 6);
        atomic_store(&o->used, 1);
    }
    return o;
}

void cg_metrics_dirty_devices(const char *const *ids, const int *workers, size_t n)
{
    if (cg_metrics == NULL) {
        return;
    }
    struct cg_metrics_dirty *d = &cg_metrics->dirty;
    if (n > CG_METRICS_DIRTY_DEVICES) {
        n = CG_METRICS_DIRTY_DEVICES;
    }
    for (size_t i = 0; i < n; i++) {
        if (i >= atomic_load_explicit(&d->ndevices, memory_order_acquire) ||
            strcmp(d->devices[i].id, ids[i]) != 0) {
            /* a new id: hide the row while it is written */
            atomic_store_explicit(&d->ndevices, (uint32_t)i, memory_order_release);
            snprintf(d->devices[i].id, sizeof(d->devices[i].id), "%s", ids[i]);
        }
        atomic_store_explicit(&d->devices[i].workers, workers[i], RELAXED);
    }
    atomic_store_explicit(&d->ndevices, (uint32_t)n, memory_order_release);
}

void cg_metrics_dirty_call(const char *app, const char *action, enum cg_metrics_dirty_outcome o,
                           uint64_t dur_us)
{
    if (cg_metrics == NULL) {
        return;
    }
    struct cg_metrics_dirty_series *s = dirty_series(app ? app : "", action ? action : "");
    atomic_fetch_add_explicit(&s->calls[o], 1, RELAXED);
    cg_metrics_hist_observe(&cg_metrics->dirty.duration, dur_us);
}

/* The row a process writes user values into: its worker slot, or the
 * shared last row (master hooks, dirty workers), where adds still sum. */
static _Atomic int64_t *user_row(void)
{
    int row = cg_metrics_mine != NULL ? cg_metrics_my_index : CG_METRICS_SLOTS;
    return cg_metrics->user_val[row];
}

int cg_metrics_user_register(char kind, const char *name, const char *labels, const char *help)
{
    static bool warned; /* per process: "logs once" */
    struct cg_metrics_region *r = cg_metrics;
    uint32_t cells = kind == 'h' ? CG_METRICS_USER_HCELLS : 1;

    if (r == NULL) {
        return -1;
    }
    uint32_t n = atomic_load(&r->user_next);
    for (uint32_t i = 0; i < n && i < CG_METRICS_USER_SERIES; i++) {
        struct cg_metrics_user_series *s = &r->user[i];
        if (atomic_load(&s->state) == 2 && s->kind == kind && strcmp(s->name, name) == 0 &&
            strcmp(s->labels, labels) == 0) {
            return (int)i;
        }
    }
    if (strlen(name) >= sizeof(r->user[0].name) || strlen(labels) >= sizeof(r->user[0].labels)) {
        if (!warned) {
            warned = true;
            cg_log(CG_LOG_WARNING, "cgunicorn.metrics: %s{%s}: name or labels too long "
                   "(%zu/%zu bytes at most); the series is dropped", name, labels,
                   sizeof(r->user[0].name) - 1, sizeof(r->user[0].labels) - 1);
        }
        return -1;
    }
    /* Two workers registering the same series at once may both claim
     * cells; the endpoint merges series with the same name and labels. */
    uint32_t idx = atomic_fetch_add(&r->user_next, cells);
    if (idx + cells > CG_METRICS_USER_SERIES) {
        atomic_store(&r->user_dropped, 1);
        if (!warned) {
            warned = true;
            cg_log(CG_LOG_WARNING, "cgunicorn.metrics: %s{%s}: the table of %d user series "
                   "cells is full; this and further new series are dropped", name, labels,
                   CG_METRICS_USER_SERIES);
        }
        return -1;
    }
    struct cg_metrics_user_series *s = &r->user[idx];
    s->kind = (uint8_t)kind;
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->labels, sizeof(s->labels), "%s", labels);
    snprintf(s->help, sizeof(s->help), "%s", help ? help : "");
    for (uint32_t c = 1; c < cells; c++) {
        r->user[idx + c].kind = 0; /* a histogram's other cells */
    }
    atomic_store(&s->state, 2); /* published after the text */
    return (int)idx;
}

void cg_metrics_user_add(int idx, int64_t v)
{
    if (cg_metrics != NULL && idx >= 0 && idx < CG_METRICS_USER_SERIES) {
        atomic_fetch_add_explicit(&user_row()[idx], v, RELAXED);
    }
}

void cg_metrics_user_set(int idx, int64_t v)
{
    if (cg_metrics != NULL && idx >= 0 && idx < CG_METRICS_USER_SERIES) {
        atomic_store_explicit(&user_row()[idx], v, RELAXED);
    }
}

void cg_metrics_user_observe(int idx, int64_t v)
{
    if (cg_metrics == NULL || idx < 0 || idx + CG_METRICS_USER_HCELLS > CG_METRICS_USER_SERIES) {
        return;
    }
    _Atomic int64_t *row = user_row();
    uint64_t us = v > 0 ? (uint64_t)v : 0; /* fixed point 1e-6 s == µs */
    int b = 0;
    while (b < CG_METRICS_NBUCKETS && us > cg_metrics_bucket_us[b]) {
        b++;
    }
    atomic_fetch_add_explicit(&row[idx + b], 1, RELAXED);
    atomic_fetch_add_explicit(&row[idx + CG_METRICS_NBUCKETS + 1], v, RELAXED);
    atomic_fetch_add_explicit(&row[idx + CG_METRICS_NBUCKETS + 2], 1, RELAXED);
}
