/* The dirty arbiter's routing table: apps, worker slots, queues. Plain data,
 * no I/O; see cg_dirty_pool.h for the rules. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_pool.h"

void cg_dirty_pool_init(struct cg_dirty_pool *p, int capacity)
{
    memset(p, 0, sizeof(*p));
    p->capacity = capacity < 1 ? 1 : capacity;
    p->next_aid = 1;
}

void cg_dirty_pool_deinit(struct cg_dirty_pool *p)
{
    for (size_t i = 0; i < p->napps; i++) {
        free(p->apps[i].path);
        p->apps[i].path = NULL;
    }
    p->napps = 0;
}

/* Parses the N of "module:Class:N": a positive decimal integer. */
static int parse_count(const char *s, int *out)
{
    char *end = NULL;
    long v;

    if (*s == '\0' || *s == '+' || *s == '-' || *s == ' ') {
        return -1;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > INT_MAX) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cg_dirty_pool_add_app(struct cg_dirty_pool *p, const char *spec, struct cg_err *err)
{
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    size_t path_len;
    int limit = 0;

    if (c1 == NULL || c1 == spec || c1[1] == '\0' || c1[1] == ':' ||
        (c2 != NULL && strchr(c2 + 1, ':') != NULL)) {
        cg_err_set(err,
                   "dirty_apps entry '%s': expected 'module.path:ClassName' or "
                   "'module.path:ClassName:N', e.g. --dirty-app myapp.ml:MLApp:2",
                   spec);
        return -1;
    }
    if (c2 != NULL) {
        if (parse_count(c2 + 1, &limit) < 0) {
            cg_err_set(err,
                       "dirty_apps entry '%s': worker count '%s' is not a positive integer; "
                       "use 'module.path:ClassName:N' with N >= 1",
                       spec, c2 + 1);
            return -1;
        }
        path_len = (size_t)(c2 - spec);
    } else {
        path_len = strlen(spec);
    }
    if (cg_dirty_pool_app_find(p, spec, path_len) >= 0) {
        cg_err_set(err, "dirty_apps entry '%s': app '%.*s' is listed twice; list it once", spec,
                   (int)path_len, spec);
        return -1;
    }
    if (p->napps >= CG_DIRTY_MAX_APPS) {
        cg_err_set(err, "dirty_apps entry '%s': more than %d dirty apps are not supported", spec,
                   CG_DIRTY_MAX_APPS);
        return -1;
    }
    struct cg_dirty_app *a = &p->apps[p->napps];
    a->path = strndup(spec, path_len);
    if (a->path == NULL) {
        cg_err_set(err, "dirty_apps entry '%s': out of memory", spec);
        return -1;
    }
    a->limit = limit;
    a->limit_from_spec = limit > 0;
    a->queue = (struct cg_dirty_calls){ 0 };
    return (int)p->napps++;
}

int cg_dirty_pool_app_find(const struct cg_dirty_pool *p, const char *path, size_t len)
{
    for (size_t i = 0; i < p->napps; i++) {
        if (strlen(p->apps[i].path) == len && memcmp(p->apps[i].path, path, len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

int cg_dirty_pool_min_workers(const struct cg_dirty_pool *p)
{
    int min = 1;
    for (size_t i = 0; i < p->napps; i++) {
        if (p->apps[i].limit > min) {
            min = p->apps[i].limit;
        }
    }
    return min;
}

static bool is_live(const struct cg_dirty_wk *w)
{
    return !w->retiring && !w->link_dead;
}

/* Live, and its apps are initialised: only such a worker is given calls (a
 * booting one counts for its apps, so calls wait for it, but gets none). */
static bool takes_calls(const struct cg_dirty_wk *w)
{
    return is_live(w) && w->booted;
}

int cg_dirty_pool_app_workers(const struct cg_dirty_pool *p, int app)
{
    int n = 0;
    for (const struct cg_dirty_wk *w = p->workers; w != NULL; w = w->next) {
        if (is_live(w) && (w->apps & (UINT64_C(1) << app))) {
            n++;
        }
    }
    return n;
}

uint64_t cg_dirty_pool_apps_for_new(struct cg_dirty_pool *p)
{
    uint64_t set = 0;

    if (p->nrespawn > 0) {
        set = p->respawn[0];
        memmove(&p->respawn[0], &p->respawn[1], (p->nrespawn - 1) * sizeof(p->respawn[0]));
        p->nrespawn--;
        return set;
    }
    for (size_t i = 0; i < p->napps; i++) {
        int limit = p->apps[i].limit;
        if (limit == 0 || cg_dirty_pool_app_workers(p, (int)i) < limit) {
            set |= UINT64_C(1) << i;
        }
    }
    return set;
}

void cg_dirty_pool_respawn_push(struct cg_dirty_pool *p, uint64_t apps)
{
    if (apps == 0 || p->nrespawn >= sizeof(p->respawn) / sizeof(p->respawn[0])) {
        return;
    }
    p->respawn[p->nrespawn++] = apps;
}

bool cg_dirty_pool_respawn_has(const struct cg_dirty_pool *p, int app)
{
    for (size_t i = 0; i < p->nrespawn; i++) {
        if (p->respawn[i] & (UINT64_C(1) << app)) {
            return true;
        }
    }
    return false;
}

void cg_dirty_pool_worker_add(struct cg_dirty_pool *p, struct cg_dirty_wk *w)
{
    w->prev = p->workers_tail;
    w->next = NULL;
    if (p->workers_tail != NULL) {
        p->workers_tail->next = w;
    } else {
        p->workers = w;
    }
    p->workers_tail = w;
    p->nworkers++;
}

void cg_dirty_pool_worker_remove(struct cg_dirty_pool *p, struct cg_dirty_wk *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        p->workers = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    } else {
        p->workers_tail = w->prev;
    }
    w->prev = w->next = NULL;
    p->nworkers--;
}

struct cg_dirty_wk *cg_dirty_pool_worker_by_pid(const struct cg_dirty_pool *p, pid_t pid)
{
    for (struct cg_dirty_wk *w = p->workers; w != NULL; w = w->next) {
        if (w->pid == pid) {
            return w;
        }
    }
    return NULL;
}

int cg_dirty_pool_free_slot(const struct cg_dirty_pool *p)
{
    for (int slot = 0;; slot++) {
        bool used = false;
        for (const struct cg_dirty_wk *w = p->workers; w != NULL && !used; w = w->next) {
            used = is_live(w) && !w->recycling && w->slot == slot;
        }
        if (!used) {
            return slot;
        }
    }
}

struct cg_dirty_wk *cg_dirty_pool_pick(struct cg_dirty_pool *p, int app)
{
    struct cg_dirty_wk *best = NULL;
    uint64_t bit = UINT64_C(1) << app;

    for (struct cg_dirty_wk *w = p->workers; w != NULL; w = w->next) {
        if (!takes_calls(w) || !(w->apps & bit) || w->busy >= p->capacity) {
            continue;
        }
        /* a recycling worker only when no other has a free slot */
        if (best == NULL || (best->recycling && !w->recycling) ||
            (best->recycling == w->recycling &&
             (w->busy < best->busy ||
              (w->busy == best->busy && w->last_given < best->last_given)))) {
            best = w;
        }
    }
    return best;
}

void cg_dirty_calls_append(struct cg_dirty_calls *l, struct cg_dirty_call *c)
{
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail != NULL) {
        l->tail->next = c;
    } else {
        l->head = c;
    }
    l->tail = c;
    l->n++;
}

void cg_dirty_calls_remove(struct cg_dirty_calls *l, struct cg_dirty_call *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        l->head = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    } else {
        l->tail = c->prev;
    }
    c->prev = c->next = NULL;
    l->n--;
}

void cg_dirty_pool_call_init(struct cg_dirty_pool *p, struct cg_dirty_call *c, int app)
{
    c->aid = p->next_aid++;
    c->seq = p->next_seq++;
    c->app = app;
}

void cg_dirty_pool_assign(struct cg_dirty_pool *p, struct cg_dirty_call *c,
                          struct cg_dirty_wk *w)
{
    c->state = CG_DIRTY_CALL_RUNNING;
    c->worker = w;
    w->busy++;
    w->last_given = ++p->clock;
    cg_dirty_calls_append(&w->inflight, c);
}

void cg_dirty_pool_enqueue(struct cg_dirty_pool *p, struct cg_dirty_call *c)
{
    c->state = CG_DIRTY_CALL_QUEUED;
    c->worker = NULL;
    cg_dirty_calls_append(&p->apps[c->app].queue, c);
}

void cg_dirty_pool_dequeue(struct cg_dirty_pool *p, struct cg_dirty_call *c)
{
    cg_dirty_calls_remove(&p->apps[c->app].queue, c);
}

struct cg_dirty_call *cg_dirty_pool_next_for(struct cg_dirty_pool *p, struct cg_dirty_wk *w)
{
    struct cg_dirty_call *best = NULL;

    if (!takes_calls(w) || w->busy >= p->capacity) {
        return NULL;
    }
    for (size_t i = 0; i < p->napps; i++) {
        struct cg_dirty_call *head = p->apps[i].queue.head;
        if (head == NULL || !(w->apps & (UINT64_C(1) << i))) {
            continue;
        }
        if (best == NULL || head->seq < best->seq) {
            best = head;
        }
    }
    return best;
}

void cg_dirty_pool_finish(struct cg_dirty_pool *p, struct cg_dirty_call *c)
{
    (void)p;
    if (c->worker == NULL) {
        return;
    }
    cg_dirty_calls_remove(&c->worker->inflight, c);
    c->worker->busy--;
    c->worker = NULL;
}

/* Weight of the newest call in service_avg: recent enough to follow a
 * change of load, smooth enough that one odd call does not swing it. */
#define SERVICE_EWMA_WEIGHT 0.2

void cg_dirty_pool_note_service(struct cg_dirty_pool *p, int app, double seconds)
{
    struct cg_dirty_app *a = &p->apps[app];

    if (seconds < 0) {
        seconds = 0;
    }
    a->service_avg = a->service_seen ? a->service_avg + SERVICE_EWMA_WEIGHT * (seconds - a->service_avg)
                                     : seconds;
    a->service_seen = true;
}

double cg_dirty_pool_retry_after(const struct cg_dirty_pool *p, int app)
{
    const struct cg_dirty_app *a = &p->apps[app];
    double avg = a->service_seen ? a->service_avg : 1.0;
    size_t slots = (size_t)cg_dirty_pool_app_workers(p, app) * (size_t)p->capacity;

    if (slots == 0) {
        slots = 1; /* its workers are being replaced: count one */
    }
    /* Every slot is busy (or the caller would not be refused): the queue
     * drains in waves of `slots` calls, and the caller is one wave later. */
    double est = avg * (double)(a->queue.n / slots + 1);
    /* never "at once": fast calls would estimate ~0 and invite a retry storm */
    return est < CG_DIRTY_RETRY_AFTER_MIN ? CG_DIRTY_RETRY_AFTER_MIN : est;
}

struct cg_dirty_call *cg_dirty_pool_find(const struct cg_dirty_wk *w, uint64_t aid)
{
    for (struct cg_dirty_call *c = w->inflight.head; c != NULL; c = c->next) {
        if (c->aid == aid) {
            return c;
        }
    }
    return NULL;
}
