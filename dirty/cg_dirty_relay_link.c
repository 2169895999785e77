/* The dirty arbiter's worker links: one socketpair per dirty worker.
 * Replies (RESPONSE/ERROR/CHUNK/END) are moved to the calling client with the
 * client's id put back, written once per read batch; a client reading too
 * slowly pauses the worker (back-pressure). Also the worker's boot report,
 * a lost link failing its calls, and shutdown's abort of every call.
 *
 * Arbiter process only, single-threaded (libevent callbacks). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_dirty_arbiter_int.h"
#include "cg_dirty_codec.h"
#include "cg_log.h"
#include "cg_metrics.h"

static void on_link_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    cg_dirty_relay_on_drained(bev);
}

/* Replies forwarded from a worker are written once per batch of frames
 * read from it (one writev per client), not once per frame. */
static void flush_later(struct cg_dirty_client *cl)
{
    if (!cl->want_flush) {
        cl->want_flush = true;
        cl->flush_next = cl->arb->flush;
        cl->arb->flush = cl;
    }
}

static void flush_pending(struct cg_dirty_arb *arb)
{
    while (arb->flush != NULL) {
        struct cg_dirty_client *cl = arb->flush;
        arb->flush = cl->flush_next;
        cl->want_flush = false;
        cl->flush_next = NULL;
        cg_dirty_relay_flush_out(cl->bev, &cl->fdio);
    }
}

static const char *app_path(const struct cg_dirty_arb *arb, const struct cg_dirty_call *c)
{
    return arb->pool.apps[c->app].path;
}

/* The worker may read again (its output for a paused client is wanted no
 * more, or the client drained). Also handles what is already buffered. */
void cg_dirty_relay_link_resume(struct cg_dirty_wk *w)
{
    w->paused_by = NULL;
    if (w->rev != NULL) {
        event_add(w->rev, NULL);
        event_active(w->rev, EV_READ, 0);
    }
}

/* Readiness (/readyz): once as many workers as the pool wants have loaded
 * their apps (each app's init() returned), the dirty pool is ready. */
static void note_ready(struct cg_dirty_arb *arb)
{
    int booted = 0;

    if (cg_metrics == NULL || atomic_load(&cg_metrics->dirty.apps_ready)) {
        return;
    }
    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        booted += w->booted;
    }
    if (booted >= arb->num_workers) {
        atomic_store(&cg_metrics->dirty.apps_ready, 1);
    }
}

/* A call ended (final frame, or its worker is gone): frees its slot and
 * lets the worker take the next queued call. */
static void call_complete(struct cg_dirty_arb *arb, struct cg_dirty_call *c)
{
    struct cg_dirty_wk *w = c->worker;

    if (c->dispatched > 0) {
        cg_dirty_pool_note_service(&arb->pool, c->app, cg_dirty_now() - c->dispatched);
    }
    cg_dirty_pool_finish(&arb->pool, c);
    cg_dirty_relay_call_free(c);
    if (w != NULL) {
        cg_dirty_arb_call_served(arb, w); /* dirty_max_requests */
        cg_dirty_relay_pump(arb, w);
    }
    cg_dirty_relay_gauges(arb);
    cg_dirty_arb_maybe_stop(arb);
}

/* ------------------------------------------------------------------ */
/* Worker links                                                        */

/* ERROR with id 0: the worker could not boot; its message carries the
 * traceback. At start-up (no worker of this arbiter has booted yet) only
 * the first is logged (every worker would fail the same way), and workers
 * still booting are stopped: the arbiter is going to stop once the failed
 * worker is reaped (cg_dirty_arbiter.c). After that, each one is logged:
 * replacements are respawned with a back-off, so there are few. */
static void boot_failure(struct cg_dirty_arb *arb, struct cg_dirty_wk *w,
                         const struct cg_dirty_header *h)
{
    struct evbuffer *in = w->in;
    size_t size = cg_dirty_frame_size(h);
    unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)size);
    struct cg_dirty_msg m = { 0 };
    struct cg_err err = { { 0 } };

    if (arb->pool_booted) {
        const char *text = NULL;
        if (p != NULL && cg_dirty_msg_parse(p, size, SIZE_MAX, &m, &err) == 0) {
            text = json_string_value(json_object_get(json_object_get(m.body, "error"),
                                                     "message"));
        }
        cg_log(CG_LOG_ERROR, "%s", text != NULL ? text : "Dirty worker failed to boot");
    } else if (!arb->boot_error_logged) {
        arb->boot_error_logged = true;
        const char *text = NULL;
        if (p != NULL && cg_dirty_msg_parse(p, size, SIZE_MAX, &m, &err) == 0) {
            text = json_string_value(json_object_get(json_object_get(m.body, "error"),
                                                     "message"));
        }
        cg_log(CG_LOG_ERROR, "%s", text != NULL ? text : "Dirty worker failed to boot");
        for (struct cg_dirty_wk *o = arb->pool.workers; o != NULL; o = o->next) {
            if (o != w && !o->booted) {
                cg_dirty_arb_kill(arb, o, SIGKILL);
            }
        }
    }
    cg_dirty_msg_deinit(&m);
    evbuffer_drain(in, size);
}

/* One frame from a worker, whole at the front of `in`. Returns -1 when the
 * link must be dropped (err set). */
static int on_worker_frame(struct cg_dirty_arb *arb, struct cg_dirty_wk *w,
                           const struct cg_dirty_header *h, struct cg_err *err)
{
    struct evbuffer *in = w->in;
    struct cg_dirty_relay_fdio *io = w->fdio;
    size_t size = cg_dirty_frame_size(h);
    struct cg_dirty_call *c;
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    int fds[CG_DIRTY_MAX_FDS];

    /* The frame's memfds came with its first byte: they are queued by now. */
    if (cg_dirty_fdq_take(&io->in, fds, h->nfds) < 0) {
        cg_err_set(err, "a %s frame announced %u descriptors that did not come with it",
                   cg_dirty_type_name(h->type), h->nfds);
        return -1;
    }
    switch (h->type) {
    case CG_DIRTY_RESPONSE:
    case CG_DIRTY_ERROR:
    case CG_DIRTY_CHUNK:
    case CG_DIRTY_END:
        break;
    case CG_DIRTY_STATUS: /* the worker booted: its apps are loaded */
        cg_dirty_fds_close(fds, h->nfds);
        evbuffer_drain(in, size);
        if (h->id == 0 && !w->booted) {
            w->booted = true;
            cg_sup_booted(&arb->sup, w->pid); /* its boot deadline, if any, is met */
            cg_dirty_arb_worker_booted(arb, w); /* calls may go to it from now on */
            note_ready(arb);
        }
        return 0;
    default:
        cg_dirty_fds_close(fds, h->nfds);
        cg_err_set(err, "unexpected %s message", cg_dirty_type_name(h->type));
        return -1;
    }
    if (h->id == 0 && h->type == CG_DIRTY_ERROR) {
        cg_dirty_fds_close(fds, h->nfds);
        boot_failure(arb, w, h);
        return 0;
    }
    c = cg_dirty_pool_find(w, h->id);
    if (c == NULL || c->client == NULL) {
        cg_dirty_fds_close(fds, h->nfds);
        evbuffer_drain(in, size); /* late reply for a call already answered */
    } else {
        struct cg_dirty_client *cl = c->client;
        struct evbuffer *out = bufferevent_get_output(cl->bev);
        cg_dirty_relay_zc_add(cl, fds, h->nfds);
        cg_dirty_relay_fdio_mark(&cl->fdio, fds, h->nfds); /* with the header's first byte */
        evbuffer_remove(in, hdr, sizeof(hdr));
        cg_dirty_frame_set_id(hdr, c->cid);
        evbuffer_add(out, hdr, sizeof(hdr));
        evbuffer_remove_buffer(in, out, size - sizeof(hdr));
        flush_later(cl);
        bool zc_full = cl->zc_inflight > CG_DIRTY_CLIENT_HIGH_WATER;
        if (zc_full || evbuffer_get_length(out) > CG_DIRTY_CLIENT_HIGH_WATER) {
            /* a big backlog: write now, pause below if it stays */
            cg_dirty_relay_flush_out(cl->bev, &cl->fdio);
        }
        if (h->type == CG_DIRTY_CHUNK && cg_metrics != NULL) {
            atomic_fetch_add_explicit(&cg_metrics->dirty.stream_chunks, 1, memory_order_relaxed);
        } else if (h->type != CG_DIRTY_CHUNK && !c->timed_out) {
            cg_dirty_relay_count(arb, c, h->type == CG_DIRTY_ERROR ? CG_METRICS_DIRTY_APP_ERROR
                                                                   : CG_METRICS_DIRTY_OK);
        }
        if (h->type == CG_DIRTY_CHUNK && c->timer != NULL && !c->timed_out) {
            cg_dirty_relay_rearm(c); /* dirty_timeout counts from the last chunk */
        }
        if (zc_full && !cg_dirty_relay_zc_busy(cl)) {
            zc_full = false; /* it read them all already */
        }
        if (zc_full || evbuffer_get_length(out) > CG_DIRTY_CLIENT_HIGH_WATER) {
            /* Slow reader: stop reading this worker until it drains. */
            event_del(w->rev);
            w->paused_by = cl;
            cl->paused_workers = true;
            if (zc_full && cl->zc_timer != NULL) {
                struct timeval tv = { 0, 2000 };
                evtimer_add(cl->zc_timer, &tv);
            }
        }
    }
    if (c != NULL && h->type != CG_DIRTY_CHUNK) {
        call_complete(arb, c);
    }
    return 0;
}

static void on_worker_event(struct bufferevent *bev, short what, void *arg);

static void on_worker_readable(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_wk *w = arg;
    struct cg_dirty_arb *arb = w->arb;
    struct evbuffer *in = w->in;
    struct cg_dirty_header h;
    struct cg_err err = { { 0 } };
    char why[2200];
    int rc = 0;
    (void)what;

    /* Read only when no whole frame is waiting: a resumed worker (see
     * on_client_write) first drains what it already sent, so a slow client
     * holds at most ~HIGH_WATER + one read's worth of this worker's output
     * here, and the rest stays in the socket (the worker blocks: back-pressure). */
    if (w->paused_by == NULL &&
        cg_dirty_relay_frame_peek(in, SIZE_MAX, &h, &err) == CG_DIRTY_PEEK_NEED_MORE) {
        rc = cg_dirty_relay_fill(in, &((struct cg_dirty_relay_fdio *)w->fdio)->in, fd);
    }
    int saved = errno;

    while (w->link != NULL && w->paused_by == NULL) {
        enum cg_dirty_peek pk = cg_dirty_relay_frame_peek(in, SIZE_MAX, &h, &err);
        if (pk == CG_DIRTY_PEEK_NEED_MORE) {
            break;
        }
        if (pk == CG_DIRTY_PEEK_BAD || on_worker_frame(arb, w, &h, &err) < 0) {
            cg_log(CG_LOG_ERROR, "Dirty worker (pid:%d) sent a bad frame: %s; killing it",
                   (int)w->pid, err.msg);
            snprintf(why, sizeof(why), "it sent a malformed frame (%s)", err.msg);
            cg_dirty_arb_kill(arb, w, SIGKILL);
            cg_dirty_relay_link_lost(arb, w, why);
            flush_pending(arb);
            return;
        }
    }
    flush_pending(arb);
    if (rc < 0 && w->link != NULL) {
        on_worker_event(w->link, saved == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR, w);
    }
}

static void on_worker_event(struct bufferevent *bev, short what, void *arg)
{
    struct cg_dirty_wk *w = arg;
    (void)bev;

    if (w->inflight.n > 0) {
        cg_log(CG_LOG_WARNING, "Dirty worker (pid:%d) connection lost with %zu call(s) in flight",
               (int)w->pid, w->inflight.n);
    }
    cg_dirty_relay_link_lost(w->arb, w,
                             (what & BEV_EVENT_EOF) ? "it exited or crashed"
                                                    : "its connection failed");
}

int cg_dirty_relay_link_open(struct cg_dirty_arb *arb, struct cg_dirty_wk *w)
{
    evutil_make_socket_nonblocking(w->fd);
    w->arb = arb;
    w->link = bufferevent_socket_new(arb->base, w->fd, BEV_OPT_CLOSE_ON_FREE);
    if (w->link == NULL) {
        cg_log(CG_LOG_ERROR, "dirty arbiter: cannot watch dirty worker (pid:%d)", (int)w->pid);
        return -1;
    }
    w->fd = -1; /* owned by the bufferevent now */
    cg_dirty_relay_tune(w->link);
    w->rev = event_new(arb->base, bufferevent_getfd(w->link), EV_READ | EV_PERSIST,
                       on_worker_readable, w);
    w->in = evbuffer_new();
    w->fdio = calloc(1, sizeof(struct cg_dirty_relay_fdio));
    if (w->rev == NULL || w->in == NULL || w->fdio == NULL ||
        cg_dirty_relay_fdio_init(w->fdio, arb, w->link) < 0) {
        cg_log(CG_LOG_ERROR, "dirty arbiter: cannot watch dirty worker (pid:%d)", (int)w->pid);
        return -1;
    }
    bufferevent_setcb(w->link, NULL, on_link_write, on_worker_event, w);
    bufferevent_disable(w->link, EV_WRITE | EV_READ); /* see cg_dirty_relay_flush_out() */
    event_add(w->rev, NULL);
    return 0;
}

void cg_dirty_relay_link_lost(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, const char *why)
{
    if (w->link == NULL) {
        return;
    }
    w->link_dead = true;
    if (w->rev != NULL) {
        event_free(w->rev);
        w->rev = NULL;
    }
    if (w->in != NULL) {
        evbuffer_free(w->in);
        w->in = NULL;
    }
    cg_dirty_relay_fdio_deinit(w->fdio);
    free(w->fdio);
    w->fdio = NULL;
    bufferevent_free(w->link);
    w->link = NULL;
    if (w->paused_by != NULL) {
        w->paused_by = NULL;
    }
    while (w->inflight.head != NULL) {
        struct cg_dirty_call *c = w->inflight.head;
        if (c->client != NULL && !c->timed_out) {
            cg_dirty_relay_count(arb, c, CG_METRICS_DIRTY_WORKER_DIED);
        }
        if (c->client != NULL) {
            cg_dirty_relay_send_error(c->client, c->cid, "DirtyWorkerError",
                                      json_pack("{s:i,s:s,s:s}", "worker_id", (int)w->pid,
                                                "app_path", app_path(arb, c), "action",
                                                c->action),
                                      "Dirty worker (pid:%d) died while running %s.%s: %s",
                                      (int)w->pid, app_path(arb, c), c->action, why);
        }
        cg_dirty_pool_finish(&arb->pool, c);
        cg_dirty_relay_call_free(c);
    }
    cg_dirty_arb_maybe_stop(arb);
}

size_t cg_dirty_relay_pending(const struct cg_dirty_arb *arb)
{
    size_t n = 0;
    for (size_t i = 0; i < arb->pool.napps; i++) {
        n += arb->pool.apps[i].queue.n;
    }
    for (const struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        n += w->inflight.n;
    }
    return n;
}

void cg_dirty_relay_abort_all(struct cg_dirty_arb *arb, const char *type, const char *message)
{
    for (size_t i = 0; i < arb->pool.napps; i++) {
        while (arb->pool.apps[i].queue.head != NULL) {
            struct cg_dirty_call *c = arb->pool.apps[i].queue.head;
            cg_dirty_relay_send_error(c->client, c->cid, type, NULL, "%s", message);
            cg_dirty_pool_dequeue(&arb->pool, c);
            cg_dirty_relay_call_free(c);
        }
    }
    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        for (struct cg_dirty_call *c = w->inflight.head; c != NULL; c = c->next) {
            cg_dirty_relay_send_error(c->client, c->cid, type, NULL, "%s", message);
            cg_dirty_relay_call_detach(c);
        }
    }
}
