/* The master's metrics listener (metrics_bind): /metrics in the Prometheus
 * text exposition format 0.0.4, /healthz and /readyz, rendered in C from
 * the shared region (cg_metrics.h) and the master's view of its workers,
 * without Python and without asking any worker.
 *
 * Its fds join the master's poll set (and the supervisor's waits, so it
 * keeps answering while a shutdown or a HUP drains): the listener and at
 * most MAX_CLIENTS connections, all non-blocking, each with a bounded
 * request buffer and a deadline, one request per connection (the response
 * says Connection: close). A slow or stuck client costs one slot until its
 * deadline, never a wait of the loop. These sockets are not the app's
 * clients, so they do not go through the transport. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_metrics.h"
#include "cg_metrics_http.h"

#define MAX_CLIENTS 16
#define REQ_MAX 4096
#define CLIENT_MS 5000u
#define OUT_MAX (8u << 20)

struct client {
    int fd;
    size_t inlen;
    char in[REQ_MAX];
    char *out; /* owned; the whole response */
    size_t outlen, outoff;
    uint64_t deadline;
};

static struct cg_listener *lsn; /* owned, one entry; NULL when off */
static size_t nlsn;
static struct client clients[MAX_CLIENTS];
static int nclients;
static cg_metrics_state_fn state_fn;
static void *state_arg;
static struct cg_metrics_state st; /* large; filled per request */
/* Handed off to a USR2 partner (cg_metrics_http_hand_off): no listener, and
 * the clients still connected get the verdicts of that moment. */
static bool frozen;
static const char *frozen_ready, *frozen_health;

/* Makes `l` (an owned one-entry array) the listener. */
static void install(struct cg_listener *l, cg_metrics_state_fn fn, void *arg)
{
    int fl = fcntl(l[0].fd, F_GETFL);
    fcntl(l[0].fd, F_SETFL, fl | O_NONBLOCK);
    fl = fcntl(l[0].fd, F_GETFD);
    fcntl(l[0].fd, F_SETFD, fl | FD_CLOEXEC);
    lsn = l;
    nlsn = 1;
    state_fn = fn;
    state_arg = arg;
    cg_log(CG_LOG_INFO, "Serving metrics at: %s", l[0].name);
}

int cg_metrics_http_open(const char *addr, int umask_value, cg_metrics_state_fn fn, void *arg,
                         struct cg_err *err)
{
    const char *specs[1] = { addr };
    struct cg_err e = { { 0 } };
    struct cg_listener *l = NULL;
    size_t n = 0;

    if (addr == NULL || *addr == '\0') {
        return 0;
    }
    if (cg_listen_open_all(specs, 1, 64, false, umask_value, &l, &n, &e) < 0) {
        cg_err_set(err, "metrics_bind '%s': %s; use HOST:PORT or unix:PATH", addr, e.msg);
        return -1;
    }
    install(l, fn, arg);
    return 0;
}

int cg_metrics_http_adopt(int fd, cg_metrics_state_fn fn, void *arg, struct cg_err *err)
{
    struct cg_listener *l = calloc(1, sizeof(*l));

    if (l == NULL || cg_listen_adopt_fd(fd, l, err) < 0) {
        if (l == NULL) {
            cg_err_set(err, "out of memory");
        }
        free(l);
        close(fd);
        return -1;
    }
    /* adopt_fd leaves a unix path to its creator; this one is ours once
     * the old master has gone (cg_metrics_http_close's unlink_unix). */
    if (l->family == AF_UNIX && strncmp(l->name, "unix:", 5) == 0) {
        snprintf(l->unix_path, sizeof(l->unix_path), "%s", l->name + 5);
    }
    install(l, fn, arg);
    return 0;
}

int cg_metrics_http_fd(void)
{
    return lsn != NULL ? lsn[0].fd : -1;
}

int cg_metrics_http_move(const char *addr, int umask_value, cg_metrics_state_fn fn, void *arg,
                         struct cg_err *err)
{
    struct cg_err e = { { 0 } };
    struct cg_listener *l = NULL;

    if (addr != NULL && *addr != '\0') {
        l = calloc(1, sizeof(*l));
        if (l == NULL) {
            cg_err_set(err, "metrics_bind '%s': out of memory", addr);
            return -1;
        }
        /* One attempt: the master's loop must not sleep on a busy port. */
        if (cg_listen_open_one(addr, 64, false, umask_value, l, &e) < 0) {
            cg_err_set(err, "metrics_bind '%s': %s", addr, e.msg);
            free(l);
            return -1;
        }
    }
    if (lsn != NULL) {
        if (l != NULL && strcmp(l->unix_path, lsn[0].unix_path) == 0) {
            lsn[0].unix_path[0] = '\0'; /* the same file, bound again: not to unlink */
        }
        cg_log(CG_LOG_INFO, "Stopped serving metrics at: %s", lsn[0].name);
        cg_listen_close_all(lsn, nlsn, true); /* the clients already accepted stay */
        lsn = NULL;
        nlsn = 0;
    }
    if (l != NULL) {
        install(l, fn, arg);
    }
    return 0;
}

static void client_close(int i)
{
    close(clients[i].fd);
    free(clients[i].out);
    clients[i] = clients[--nclients];
    clients[nclients].out = NULL;
}

void cg_metrics_http_close(bool unlink_unix)
{
    while (nclients > 0) {
        client_close(nclients - 1);
    }
    if (lsn != NULL) {
        cg_listen_close_all(lsn, nlsn, unlink_unix);
        lsn = NULL;
        nlsn = 0;
    }
}

void cg_metrics_http_atfork_child(void)
{
    for (int i = 0; i < nclients; i++) {
        close(clients[i].fd);
        free(clients[i].out);
        clients[i].out = NULL;
    }
    nclients = 0;
    if (lsn != NULL) {
        close(lsn[0].fd);
        free(lsn);
        lsn = NULL;
        nlsn = 0;
    }
}

int cg_metrics_http_pollfds(struct pollfd *p, int max)
{
    int n = 0;
    if (max <= 0) {
        return 0;
    }
    if (lsn != NULL) { /* the clients of a closed listener are still served */
        p[n++] = (struct pollfd){ .fd = lsn[0].fd, .events = POLLIN };
    }
    for (int i = 0; i < nclients && n < max; i++) {
        p[n++] = (struct pollfd){ .fd = clients[i].fd,
                                  .events = clients[i].out ? POLLOUT : POLLIN };
    }
    return n;
}

/* ---- a growable output buffer, capped at OUT_MAX ---- */

struct out {
    char *p;
    size_t len, cap;
    bool full;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (o->full) {
            return;
        }
        size_t room = o->cap - o->len;
        va_start(ap, fmt);
        int k = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? room : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            return;
        }
        if (o->p != NULL && (size_t)k < room) {
            o->len += (size_t)k;
            return;
        }
        size_t cap = o->cap ? o->cap * 2 : 16384;
        while (cap < o->len + (size_t)k + 1) {
            cap *= 2;
        }
        char *np = cap <= OUT_MAX ? realloc(o->p, cap) : NULL;
        if (np == NULL) {
            o->full = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

/* A label value with \, " and newline escaped, as the format wants. */
static const char *esc(const char *s, char *buf, size_t size)
{
    size_t j = 0;
    for (; *s != '\0' && j + 3 < size; s++) {
        if (*s == '\\' || *s == '"') {
            buf[j++] = '\\';
            buf[j++] = *s;
        } else if (*s == '\n') {
            buf[j++] = '\\';
            buf[j++] = 'n';
        } else {
            buf[j++] = *s;
        }
    }
    buf[j] = '\0';
    return buf;
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Seconds from µs, printed exactly (no float rounding). */
static void put_seconds(struct out *o, uint64_t us)
{
    outf(o, "%llu.%06llu", (unsigned long long)(us / 1000000u),
         (unsigned long long)(us % 1000000u));
}

/* A histogram summed over slots (plain integers: the master's alone). */
struct hsum {
    uint64_t bucket[CG_METRICS_NBUCKETS + 1];
    uint64_t sum_us;
    uint64_t count;
};

static void hist_sum(struct hsum *to, const struct cg_metrics_hist *h)
{
    for (int b = 0; b <= CG_METRICS_NBUCKETS; b++) {
        to->bucket[b] += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    }
    to->sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    to->count += atomic_load_explicit(&h->count, memory_order_relaxed);
}

/* Writes a histogram. `count` is taken as the sum of the buckets, so that a
 * scrape racing an update is still consistent (+Inf == _count). */
static void put_hist(struct out *o, const char *name, const char *help,
                     const struct hsum *h)
{
    uint64_t cum = 0;
    head(o, name, "histogram", help);
    for (int b = 0; b < CG_METRICS_NBUCKETS; b++) {
        cum += h->bucket[b];
        outf(o, "%s_bucket{le=\"%s\"} %llu\n", name, cg_metrics_bucket_le[b],
             (unsigned long long)cum);
    }
    cum += h->bucket[CG_METRICS_NBUCKETS];
    outf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum ", name, (unsigned long long)cum, name);
    put_seconds(o, h->sum_us);
    outf(o, "\n%s_count %llu\n", name, (unsigned long long)cum);
}

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static void render_requests(struct out *o)
{
    struct cg_metrics_region *r = cg_metrics;
    static uint64_t tot[CG_METRICS_NMETHODS][CG_METRICS_NSTATUS];
    struct hsum dur = { { 0 }, 0, 0 }, queue = { { 0 }, 0, 0 };
    uint64_t inflight = 0;

    memset(tot, 0, sizeof(tot));
    for (int k = -1; k < st.nkids; k++) {
        const struct cg_metrics_http *h = k < 0 ? &r->retired : &r->slots[st.kids[k].slot].http;
        for (int m = 0; m < CG_METRICS_NMETHODS; m++) {
            for (int s = 0; s < CG_METRICS_NSTATUS; s++) {
                tot[m][s] += ld(&h->requests[m][s]);
            }
        }
        hist_sum(&dur, &h->duration);
        hist_sum(&queue, &h->queue);
        if (k >= 0) {
            uint64_t a = ld(&h->started), b = ld(&h->finished);
            inflight += a > b ? a - b : 0;
        }
    }
    head(o, "cgunicorn_requests_total", "counter",
         "HTTP requests answered, by method and status code.");
    for (int m = 0; m < CG_METRICS_NMETHODS; m++) {
        for (int s = 0; s < CG_METRICS_NSTATUS; s++) {
            if (tot[m][s] != 0) {
                outf(o, "cgunicorn_requests_total{method=\"%s\",status=\"%s\"} %llu\n",
                     cg_metrics_method_name(m), cg_metrics_status_name(s),
                     (unsigned long long)tot[m][s]);
            }
        }
    }
    put_hist(o, "cgunicorn_request_duration_seconds",
             "Time from the request head parsed to the response finished.", &dur);
    put_hist(o, "cgunicorn_request_queue_seconds",
             "Time from the front proxy's X-Request-Start to a worker taking the request.",
             &queue);
    head(o, "cgunicorn_requests_in_flight", "gauge", "Requests being served now.");
    outf(o, "cgunicorn_requests_in_flight %llu\n", (unsigned long long)inflight);
}

static void render_workers(struct out *o)
{
    struct cg_metrics_region *r = cg_metrics;
    static const char *const causes[CG_METRICS_NRESTART] = {
        "max_requests", "timeout", "crash", "reload", "memory",
    };
    int live = 0;

    for (int k = 0; k < st.nkids; k++) {
        live += !st.kids[k].stopping;
    }
    head(o, "cgunicorn_workers", "gauge", "HTTP workers running (not stopping).");
    outf(o, "cgunicorn_workers %d\n", live);
    head(o, "cgunicorn_worker_busy", "gauge", "1 while the worker serves a request, else 0.");
    for (int k = 0; k < st.nkids; k++) {
        const struct cg_metrics_http *h = &r->slots[st.kids[k].slot].http;
        outf(o, "cgunicorn_worker_busy{worker=\"%d\",pid=\"%d\"} %d\n", st.kids[k].slot,
             st.kids[k].pid, ld(&h->started) > ld(&h->finished));
    }
    head(o, "cgunicorn_worker_requests_served_total", "counter",
         "Requests this worker process has answered.");
    for (int k = 0; k < st.nkids; k++) {
        const struct cg_metrics_http *h = &r->slots[st.kids[k].slot].http;
        outf(o, "cgunicorn_worker_requests_served_total{worker=\"%d\",pid=\"%d\"} %llu\n",
             st.kids[k].slot, st.kids[k].pid, (unsigned long long)ld(&h->finished));
    }
    head(o, "cgunicorn_worker_restarts_total", "counter", "HTTP workers replaced, by cause.");
    for (int c = 0; c < CG_METRICS_NRESTART; c++) {
        outf(o, "cgunicorn_worker_restarts_total{cause=\"%s\"} %llu\n", causes[c],
             (unsigned long long)ld(&r->restarts[c]));
    }
    bool any = false;
    for (size_t i = 0; i < st.nls; i++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        char b[700];
        if (st.ls[i].family == AF_UNIX ||
            getsockopt(st.ls[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
            continue;
        }
        if (!any) {
            head(o, "cgunicorn_listen_backlog", "gauge",
                 "Connections waiting in a TCP listener's accept queue.");
            any = true;
        }
        /* For a listening socket Linux reports the accept queue length in
         * tcpi_unacked. */
        outf(o, "cgunicorn_listen_backlog{listener=\"%s\"} %u\n",
             esc(st.ls[i].name, b, sizeof(b)), ti.tcpi_unacked);
    }
}

static void render_dirty(struct out *o)
{
    struct cg_metrics_dirty *d = &cg_metrics->dirty;
    static const char *const outcomes[CG_METRICS_NDIRTY_OUTCOME] = {
        "ok", "app_error", "timeout", "worker_died", "error",
    };
    struct hsum dur = { { 0 }, 0, 0 };
    char a[200], b[140];

    if (!st.dirty_on) {
        return;
    }
    head(o, "cgunicorn_dirty_calls_total", "counter",
         "Dirty calls finished, by app, action and outcome.");
    uint32_t n = atomic_load(&d->nseries);
    for (uint32_t i = 0; i < CG_METRICS_DIRTY_ACTIONS; i++) {
        const struct cg_metrics_dirty_series *s = &d->series[i];
        if ((i >= n && i != CG_METRICS_DIRTY_ACTIONS - 1) || atomic_load(&s->used) == 0) {
            continue;
        }
        for (int k = 0; k < CG_METRICS_NDIRTY_OUTCOME; k++) {
            uint64_t v = ld(&s->calls[k]);
            if (v != 0) {
                outf(o, "cgunicorn_dirty_calls_total{app=\"%s\",action=\"%s\",outcome=\"%s\"} "
                        "%llu\n", esc(s->app, a, sizeof(a)), esc(s->action, b, sizeof(b)),
                     outcomes[k], (unsigned long long)v);
            }
        }
    }
    hist_sum(&dur, &d->duration);
    put_hist(o, "cgunicorn_dirty_call_duration_seconds",
             "Time from the arbiter receiving a dirty call to its last reply.", &dur);
    head(o, "cgunicorn_dirty_queue_depth", "gauge", "Dirty calls waiting for a free worker.");
    outf(o, "cgunicorn_dirty_queue_depth %lld\n", (long long)atomic_load(&d->queue_depth));
    head(o, "cgunicorn_dirty_busy_workers", "gauge", "Dirty workers running a call.");
    outf(o, "cgunicorn_dirty_busy_workers %lld\n", (long long)atomic_load(&d->busy_workers));
    uint32_t ndev = atomic_load_explicit(&d->ndevices, memory_order_acquire);
    if (ndev > 0) {
        head(o, "cgunicorn_dirty_device_workers", "gauge",
             "Live dirty workers given each dirty_gpus device (CUDA_VISIBLE_DEVICES).");
        for (uint32_t i = 0; i < ndev && i < CG_METRICS_DIRTY_DEVICES; i++) {
            char id[2 * sizeof(d->devices[i].id)];
            outf(o, "cgunicorn_dirty_device_workers{device=\"%s\"} %d\n",
                 esc(d->devices[i].id, id, sizeof(id)),
                 (int)atomic_load_explicit(&d->devices[i].workers, memory_order_relaxed));
        }
    }
    head(o, "cgunicorn_dirty_stream_chunks_total", "counter",
         "Stream chunks relayed from dirty workers to callers.");
    outf(o, "cgunicorn_dirty_stream_chunks_total %llu\n",
         (unsigned long long)ld(&d->stream_chunks));
}

/* Sum of a user cell over the live workers and the shared row. */
static int64_t user_sum(int cell)
{
    int64_t v = atomic_load_explicit(&cg_metrics->user_val[CG_METRICS_SLOTS][cell],
                                     memory_order_relaxed);
    for (int k = 0; k < st.nkids; k++) {
        v += atomic_load_explicit(&cg_metrics->user_val[st.kids[k].slot][cell],
                                  memory_order_relaxed);
    }
    return v;
}

/* A fixed-point user value (1e-6 units) as a decimal. */
static void put_fixed(struct out *o, int64_t v)
{
    uint64_t a = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    outf(o, "%s%llu", v < 0 ? "-" : "", (unsigned long long)(a / CG_METRICS_USER_SCALE));
    if (a % CG_METRICS_USER_SCALE != 0) {
        char frac[16];
        snprintf(frac, sizeof(frac), "%06llu", (unsigned long long)(a % CG_METRICS_USER_SCALE));
        for (int i = 5; i > 0 && frac[i] == '0'; i--) {
            frac[i] = '\0';
        }
        outf(o, ".%s", frac);
    }
}

static int cmp_user(const void *a, const void *b)
{
    const struct cg_metrics_user_series *x = &cg_metrics->user[*(const int *)a];
    const struct cg_metrics_user_series *y = &cg_metrics->user[*(const int *)b];
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->labels, y->labels);
}

/* The user series of `cgunicorn.metrics`, summed over workers, one family
 * per name (series registered twice by racing workers merged). */
static void render_user(struct out *o)
{
    static int order[CG_METRICS_USER_SERIES];
    int n = 0;
    uint32_t used = atomic_load(&cg_metrics->user_next);

    for (uint32_t i = 0; i < used && i < CG_METRICS_USER_SERIES; i++) {
        if (atomic_load(&cg_metrics->user[i].state) == 2) {
            order[n++] = (int)i;
        }
    }
    qsort(order, (size_t)n, sizeof(order[0]), cmp_user);
    for (int i = 0; i < n;) {
        const struct cg_metrics_user_series *s = &cg_metrics->user[order[i]];
        const char *type = s->kind == 'c' ? "counter" : s->kind == 'g' ? "gauge" : "histogram";
        size_t nl = strlen(s->name);
        bool total = s->kind == 'c' && nl > 6 && strcmp(s->name + nl - 6, "_total") == 0;
        outf(o, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)(total ? nl - 6 : nl), s->name,
             s->help[0] ? s->help : "cgunicorn.metrics series", (int)(total ? nl - 6 : nl),
             s->name, type);
        int j = i;
        while (j < n && strcmp(cg_metrics->user[order[j]].name, s->name) == 0) {
            const struct cg_metrics_user_series *t = &cg_metrics->user[order[j]];
            int64_t cells[CG_METRICS_USER_HCELLS] = { 0 };
            int ncell = t->kind == 'h' ? CG_METRICS_USER_HCELLS : 1;
            int k = j;
            for (; k < n && cmp_user(&order[j], &order[k]) == 0; k++) {
                for (int c = 0; c < ncell; c++) {
                    cells[c] += user_sum(order[k] + c);
                }
            }
            const char *sep = t->labels[0] ? "," : "";
            if (t->kind != 'h') {
                outf(o, "%s%s%s%s%s ", t->name, t->kind == 'c' && !total ? "_total" : "",
                     t->labels[0] ? "{" : "", t->labels, t->labels[0] ? "}" : "");
                put_fixed(o, cells[0]);
                outf(o, "\n");
            } else {
                int64_t cum = 0;
                for (int b = 0; b <= CG_METRICS_NBUCKETS; b++) {
                    cum += cells[b];
                    outf(o, "%s_bucket{%s%sle=\"%s\"} %lld\n", t->name, t->labels, sep,
                         b < CG_METRICS_NBUCKETS ? cg_metrics_bucket_le[b] : "+Inf",
                         (long long)cum);
                }
                outf(o, "%s_sum%s%s%s ", t->name, t->labels[0] ? "{" : "", t->labels,
                     t->labels[0] ? "}" : "");
                put_fixed(o, cells[CG_METRICS_NBUCKETS + 1]);
                outf(o, "\n%s_count%s%s%s %lld\n", t->name, t->labels[0] ? "{" : "", t->labels,
                     t->labels[0] ? "}" : "", (long long)cum);
            }
            j = k;
        }
        i = j;
    }
}

static void render_metrics(struct out *o)
{
    render_requests(o);
    render_workers(o);
    render_dirty(o);
    render_user(o);
}

/* Why the server is not ready, or NULL when it is. */
static const char *not_ready(void)
{
    int live = 0, booted = 0;
    if (atomic_load(&cg_metrics->draining)) {
        return "shutting down";
    }
    /* A worker a HUP is replacing still serves until it exits: booted
     * workers count whether stopping or not, so a reload does not flap. */
    for (int k = 0; k < st.nkids; k++) {
        live += !st.kids[k].stopping;
        booted += atomic_load(&cg_metrics->slots[st.kids[k].slot].booted) != 0;
    }
    if (live == 0) {
        return "no worker is alive";
    }
    if (booted < st.wanted) {
        return "workers are booting";
    }
    if (st.dirty_on && !atomic_load(&cg_metrics->dirty.apps_ready)) {
        return "dirty apps are initializing";
    }
    return NULL;
}

static const char *not_healthy(void)
{
    uint64_t now = cg_monotonic_ms();
    int live = 0;
    for (int k = 0; k < st.nkids; k++) {
        if (st.kids[k].stopping) {
            continue;
        }
        live++;
        if (st.timeout_s > 0 && now > st.kids[k].beat_ms &&
            now - st.kids[k].beat_ms > (uint64_t)st.timeout_s * 1000u) {
            return "a worker has not reported in within timeout";
        }
    }
    return live == 0 ? "no worker is alive" : NULL;
}

static void respond(struct client *c, int code, const char *ctype, const char *body, size_t len)
{
    struct out o = { 0 };
    const char *reason = code == 200 ? "OK" : code == 404 ? "Not Found"
                       : code == 405 ? "Method Not Allowed" : code == 400 ? "Bad Request"
                       : "Service Unavailable";
    outf(&o, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
             "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
         code, reason, ctype, len);
    if (!o.full && o.p != NULL && o.len + len < OUT_MAX) {
        char *np = realloc(o.p, o.len + len + 1);
        if (np != NULL) {
            o.p = np;
            memcpy(o.p + o.len, body, len);
            o.len += len;
            o.p[o.len] = '\0'; /* answer() looks for the end of the head */
        } else {
            o.full = true;
        }
    }
    if (o.full || o.p == NULL) {
        free(o.p);
        c->deadline = 0; /* closes it on this pass */
        return;
    }
    c->out = o.p;
    c->outlen = o.len;
    c->outoff = 0;
}

static void answer(struct client *c)
{
    char method[16], path[256];
    const char *why;

    if (sscanf(c->in, "%15s %255s", method, path) != 2) {
        respond(c, 400, "text/plain", "bad request\n", 12);
        return;
    }
    bool head_only = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !head_only) {
        respond(c, 405, "text/plain", "GET only\n", 9);
        return;
    }
    char *q = strchr(path, '?');
    if (q != NULL) {
        *q = '\0';
    }
    if (!frozen) {
        memset(&st, 0, sizeof(st));
        state_fn(&st, state_arg);
    }
    if (strcmp(path, "/metrics") == 0) {
        struct out o = { 0 };
        render_metrics(&o);
        respond(c, o.full ? 503 : 200, "text/plain; version=0.0.4; charset=utf-8",
                o.full ? "" : (o.p ? o.p : ""), o.full ? 0 : o.len);
        free(o.p);
    } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        char body[128];
        if (frozen) {
            why = path[1] == 'h' ? frozen_health : frozen_ready;
        } else {
            why = path[1] == 'h' ? not_healthy() : not_ready();
        }
        int k = snprintf(body, sizeof(body), "%s\n", why ? why : "ok");
        respond(c, why ? 503 : 200, "text/plain", body, (size_t)k);
    } else {
        respond(c, 404, "text/plain", "try /metrics, /healthz or /readyz\n", 35);
    }
    if (head_only && c->out != NULL) {
        char *end = strstr(c->out, "\r\n\r\n");
        c->outlen = end ? (size_t)(end + 4 - c->out) : c->outlen;
    }
}

/* With every slot taken, the oldest client still sending its request
 * makes room: idle connections cannot lock scrapers and probes out. */
static bool make_room(void)
{
    int victim = -1;
    for (int k = 0; k < nclients; k++) {
        if (clients[k].out == NULL &&
            (victim < 0 || clients[k].deadline < clients[victim].deadline)) {
            victim = k;
        }
    }
    if (victim < 0) {
        return false;
    }
    client_close(victim);
    return true;
}

static void on_accept(void)
{
    for (int i = 0; i < MAX_CLIENTS; i++) { /* bounded work per wake */
        int fd = accept4(lsn[0].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return; /* EAGAIN, or a transient error: the next wake retries */
        }
        if (nclients == MAX_CLIENTS && !make_room()) {
            close(fd); /* every slot is writing a response */
            continue;
        }
        struct client *c = &clients[nclients++];
        c->fd = fd;
        c->inlen = 0;
        c->out = NULL;
        c->outlen = c->outoff = 0;
        c->deadline = cg_monotonic_ms() + CLIENT_MS;
    }
}

/* Returns false when the client is done (close it). */
static bool on_client(struct client *c, short revents)
{
    if (c->out == NULL && (revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t k = recv(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
            return false;
        }
        if (k > 0) {
            c->inlen += (size_t)k;
            c->in[c->inlen] = '\0';
            if (strstr(c->in, "\r\n\r\n") != NULL || strstr(c->in, "\n\n") != NULL) {
                answer(c);
                if (c->out == NULL) {
                    return false;
                }
            } else if (c->inlen >= sizeof(c->in) - 1) {
                return false; /* a head this long is not a scraper's */
            }
        }
    }
    if (c->out != NULL) {
        ssize_t k = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        }
        if (k > 0) {
            c->outoff += (size_t)k;
        }
        if (c->outoff >= c->outlen) {
            return false;
        }
    }
    return true;
}

void cg_metrics_http_service(const struct pollfd *p, int n)
{
    uint64_t now = cg_monotonic_ms();

    for (int i = 0; i < n; i++) {
        if (p[i].revents == 0) {
            continue;
        }
        if (lsn != NULL && p[i].fd == lsn[0].fd) {
            on_accept();
            continue;
        }
        for (int k = 0; k < nclients; k++) {
            if (clients[k].fd == p[i].fd) {
                if (!on_client(&clients[k], p[i].revents)) {
                    client_close(k);
                }
                break;
            }
        }
    }
    for (int k = nclients - 1; k >= 0; k--) {
        if (now >= clients[k].deadline) {
            client_close(k);
        }
    }
}

bool cg_metrics_http_on(void)
{
    return lsn != NULL || nclients > 0;
}

void cg_metrics_http_hand_off(void)
{
    if (lsn == NULL) {
        return;
    }
    memset(&st, 0, sizeof(st));
    state_fn(&st, state_arg);
    frozen_ready = not_ready();
    frozen_health = not_healthy();
    frozen = true;
    st.ls = NULL; /* the master closes its HTTP listeners next: no backlog from here on */
    st.nls = 0;
    cg_listen_close_all(lsn, nlsn, false); /* the partner serves it, and its file */
    lsn = NULL;
    nlsn = 0;
}
