/* The dirty arbiter's connections: client connections from HTTP workers
 * (many concurrent calls each, told apart by the client's ids) and one
 * socketpair link per dirty worker. Frames are routed by header: a REQUEST's
 * JSON is read for app_path/action/timeout only, its body is moved (not
 * copied, not re-encoded) to the chosen worker with the id rewritten to an
 * arbiter-wide id; replies (RESPONSE/ERROR/CHUNK/END) travel back with the
 * client's id put back. Calls wait in per-app queues when every worker with
 * the app is busy. Deadlines, cancellation, worker loss and back-pressure
 * live here; processes live in cg_dirty_arbiter.c.
 *
 * Arbiter process only, single-threaded (libevent callbacks). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cg_dirty_arbiter_int.h"
#include "cg_dirty_codec.h"
#include "cg_log.h"

static void client_free(struct cg_dirty_client *cl);

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

void cg_dirty_socket_tune(int fd)
{
    /* Unix sockets default to ~200 KiB of buffer: a 1 MiB payload then
     * needs several sleep/wake-up rounds per hop. Ask for more (the kernel
     * caps it at net.core.wmem_max/rmem_max; failure is harmless). */
    int size = 2 * 1024 * 1024;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

/* libevent reads 4 KiB per callback by default: a 1 MiB payload would take
 * 256 wake-ups. Let one read or write move up to 1 MiB. */
/* libevent 2.1 reads at most 4 KiB per read event (EVBUFFER_MAX_READ),
 * whatever max_single_read says, so the arbiter reads its sockets itself
 * (the bufferevents only write): up to 4 MiB per wake-up in 256 KiB steps.
 * Returns 0 (read what was there), or -1 at EOF (errno 0) or on error. */
static int fill(struct evbuffer *in, evutil_socket_t fd)
{
    for (size_t total = 0; total < 4u * 1024u * 1024u;) {
        struct evbuffer_iovec v[2];
        int nv = evbuffer_reserve_space(in, 256 * 1024, v, 2);
        if (nv <= 0) {
            errno = ENOMEM;
            return -1;
        }
        struct iovec iov[2];
        for (int i = 0; i < nv; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        ssize_t n = readv(fd, iov, nv);
        if (n <= 0) {
            evbuffer_commit_space(in, v, 0);
            if (n == 0) {
                errno = 0;
                return -1;
            }
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        }
        size_t left = (size_t)n;
        for (int i = 0; i < nv; i++) {
            size_t k = left < v[i].iov_len ? left : v[i].iov_len;
            v[i].iov_len = k;
            left -= k;
        }
        evbuffer_commit_space(in, v, nv);
        total += (size_t)n;
        if ((size_t)n < 256 * 1024) {
            return 0;
        }
    }
    return 0;
}

static void tune(struct bufferevent *bev)
{
    cg_dirty_socket_tune(bufferevent_getfd(bev));
    bufferevent_set_max_single_read(bev, 1024 * 1024);
    bufferevent_set_max_single_write(bev, 1024 * 1024);
}

static void client_calls_add(struct cg_dirty_client *cl, struct cg_dirty_call *c)
{
    c->cprev = NULL;
    c->cnext = cl->calls;
    if (cl->calls != NULL) {
        cl->calls->cprev = c;
    }
    cl->calls = c;
    c->client = cl;
}

/* Forgets the caller: replies for this call are discarded from now on. */
static void call_detach(struct cg_dirty_call *c)
{
    struct cg_dirty_client *cl = c->client;

    if (cl == NULL) {
        return;
    }
    if (c->cprev != NULL) {
        c->cprev->cnext = c->cnext;
    } else {
        cl->calls = c->cnext;
    }
    if (c->cnext != NULL) {
        c->cnext->cprev = c->cprev;
    }
    c->cprev = c->cnext = NULL;
    c->client = NULL;
    if (c->state == CG_DIRTY_CALL_RUNNING) {
        c->state = CG_DIRTY_CALL_ORPHANED;
    }
}

static void call_free(struct cg_dirty_call *c)
{
    call_detach(c);
    if (c->timer != NULL) {
        event_free(c->timer);
        c->timer = NULL;
    }
    if (c->req != NULL) {
        evbuffer_free(c->req);
        c->req = NULL;
    }
    free(c);
}

/* Output: frames are appended to a bufferevent's output buffer and written
 * at once with one writev (evbuffer_write); the bufferevent's write event is
 * enabled only while something is left over (a full socket), and disabled
 * again when the buffer drains (on_drained). A round trip so costs one
 * write per hop instead of epoll_ctl(ADD) + epoll_wait + write +
 * epoll_ctl(DEL). A write error enables the event, so the bufferevent
 * reports it through the event callback as before. */
static void flush_out(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    if (evbuffer_get_length(out) == 0 || (bufferevent_get_enabled(bev) & EV_WRITE)) {
        return; /* nothing to do, or the bufferevent is already on it */
    }
    /* a socket bufferevent keeps its output's start frozen except while it
     * writes itself; do as it does */
    evbuffer_unfreeze(out, 1);
    (void)evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) > 0) {
        bufferevent_enable(bev, EV_WRITE);
    }
}

/* Write callback: the output drained (to the low-water mark). */
static void on_drained(struct bufferevent *bev)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        bufferevent_disable(bev, EV_WRITE);
    }
}

static void on_link_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    on_drained(bev);
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
        flush_out(cl->bev);
    }
}

static void send_frame(struct bufferevent *bev, const struct cg_dirty_frame *f)
{
    if (bev != NULL && f->data != NULL) {
        bufferevent_write(bev, f->data, f->len);
        flush_out(bev);
    }
}

/* Sends an ERROR frame {"error": {"type", "message", ...extra}} to a client.
 * Takes ownership of `extra` (may be NULL). */
static void send_error(struct cg_dirty_client *cl, uint64_t cid, const char *type, json_t *extra,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void send_error(struct cg_dirty_client *cl, uint64_t cid, const char *type, json_t *extra,
                       const char *fmt, ...)
{
    struct cg_dirty_frame f = { 0 };
    struct cg_err err = { { 0 } };
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (cl != NULL && cl->bev != NULL) {
        if (cg_dirty_frame_build_error(&f, cid, type, msg, extra, &err) < 0) {
            cg_log(CG_LOG_ERROR, "dirty arbiter: cannot build %s reply: %s", type, err.msg);
        } else {
            send_frame(cl->bev, &f);
        }
    }
    cg_dirty_frame_deinit(&f);
    json_decref(extra);
}

static void send_cancel(struct cg_dirty_call *c)
{
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    struct cg_dirty_header h = { .type = CG_DIRTY_CANCEL, .id = c->aid, .json_len = 2 };

    if (c->worker == NULL || c->worker->link == NULL) {
        return;
    }
    cg_dirty_header_encode(hdr, &h);
    bufferevent_write(c->worker->link, hdr, sizeof(hdr));
    bufferevent_write(c->worker->link, "{}", 2);
    flush_out(c->worker->link);
}

static const char *app_path(const struct cg_dirty_arb *arb, const struct cg_dirty_call *c)
{
    return arb->pool.apps[c->app].path;
}

/* ------------------------------------------------------------------ */
/* Deadlines                                                           */

static void arm_timer(struct cg_dirty_call *c, double seconds)
{
    struct timeval tv;

    if (c->timer == NULL) {
        return;
    }
    if (seconds < 0) {
        seconds = 0;
    }
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    evtimer_add((struct event *)c->timer, &tv);
}

/* Arms the call's deadline: dirty_timeout from now (the wait for the
 * worker's next frame; restarted at dispatch and by every chunk), capped by
 * what is left of the caller's timeout for the whole call. */
static void rearm(struct cg_dirty_call *c)
{
    double wait = c->idle_sec > 0 ? c->idle_sec : -1;

    if (c->total_sec > 0) {
        double left = c->started + c->total_sec - cg_dirty_now();
        if (wait < 0 || left < wait) {
            wait = left;
        }
    }
    if (wait >= 0) {
        arm_timer(c, wait);
    }
}

/* The worker may read again (its output for a paused client is wanted no
 * more, or the client drained). Also handles what is already buffered. */
static void worker_resume(struct cg_dirty_wk *w)
{
    w->paused_by = NULL;
    if (w->rev != NULL) {
        event_add(w->rev, NULL);
        event_active(w->rev, EV_READ, 0);
    }
}

/* The caller gave up on a call (CANCEL, its deadline): later frames for it
 * are dropped, and a worker paused because that caller read too slowly is
 * let go so it can reach the cancellation. */
static void call_abandon(struct cg_dirty_call *c)
{
    struct cg_dirty_client *cl = c->client;

    call_detach(c);
    if (cl != NULL && c->worker != NULL && c->worker->paused_by == cl) {
        worker_resume(c->worker);
    }
}

/* A deadline passed (first firing) or the worker did not give the call up
 * within the grace period after it (second firing). */
static void on_call_timer(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_call *c = arg;
    struct cg_dirty_arb *arb = c->arb;
    (void)fd;
    (void)what;
    if (!c->timed_out) {
        double now = cg_dirty_now();
        bool total = c->total_sec > 0 && now >= c->started + c->total_sec - 0.001;
        if (!total && c->worker != NULL && c->worker->paused_by != NULL) {
            /* The worker's frames wait for a slow reader (back-pressure):
             * the worker is not late, a caller is. */
            rearm(c);
            return;
        }
        c->timed_out = true;
        if (c->client != NULL) {
            double t = total ? c->total_sec : c->idle_sec;
            send_error(c->client, c->cid, "DirtyTimeoutError",
                       json_pack("{s:f}", "timeout", t),
                       total ? "Dirty call %s.%s timed out after %gs (the client's timeout)"
                             : "Dirty call %s.%s timed out: no reply from the worker for %gs "
                               "(dirty_timeout)",
                       arb->pool.apps[c->app].path, c->action, t);
        }
        call_abandon(c);
        if (c->state == CG_DIRTY_CALL_QUEUED) {
            cg_dirty_pool_dequeue(&arb->pool, c);
            call_free(c);
            cg_dirty_arb_maybe_stop(arb);
            return;
        }
        send_cancel(c);
        arm_timer(c, CG_DIRTY_KILL_GRACE_SEC);
        return;
    }
    /* Still running after the grace period: the worker is stuck in it. */
    if (c->worker != NULL) {
        cg_log(CG_LOG_CRITICAL, "DIRTY WORKER TIMEOUT (pid:%d)", (int)c->worker->pid);
        struct cg_dirty_wk *w = c->worker;
        cg_dirty_arb_kill(arb, w, SIGKILL);
        cg_dirty_relay_link_lost(arb, w, "it was killed after a call passed its deadline");
    }
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */

static void dispatch(struct cg_dirty_arb *arb, struct cg_dirty_call *c, struct cg_dirty_wk *w)
{
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    struct evbuffer *req = c->req;
    struct evbuffer *out = bufferevent_get_output(w->link);

    cg_dirty_pool_assign(&arb->pool, c, w);
    /* The held frame starts with its header: rewrite the id there. */
    evbuffer_remove(req, hdr, sizeof(hdr));
    cg_dirty_frame_set_id(hdr, c->aid);
    evbuffer_add(out, hdr, sizeof(hdr));
    evbuffer_add_buffer(out, req);
    flush_out(w->link);
    evbuffer_free(req);
    c->req = NULL;
    if (c->timer != NULL && !c->timed_out) {
        rearm(c); /* the wait for the worker starts now */
    }
}

void cg_dirty_relay_pump(struct cg_dirty_arb *arb, struct cg_dirty_wk *w)
{
    struct cg_dirty_call *c;

    if (w->link == NULL) {
        return;
    }
    while ((c = cg_dirty_pool_next_for(&arb->pool, w)) != NULL) {
        cg_dirty_pool_dequeue(&arb->pool, c);
        dispatch(arb, c, w);
    }
}

/* A call ended (final frame, or its worker is gone): frees its slot and
 * lets the worker take the next queued call. */
static void call_complete(struct cg_dirty_arb *arb, struct cg_dirty_call *c)
{
    struct cg_dirty_wk *w = c->worker;

    cg_dirty_pool_finish(&arb->pool, c);
    call_free(c);
    if (w != NULL) {
        cg_dirty_relay_pump(arb, w);
    }
    cg_dirty_arb_maybe_stop(arb);
}

/* ------------------------------------------------------------------ */
/* Client frames                                                       */

/* A REQUEST: the header is at the front of `in` and the whole frame is there. */
static void on_client_request(struct cg_dirty_client *cl, const struct cg_dirty_header *h)
{
    struct cg_dirty_arb *arb = cl->arb;
    struct evbuffer *in = cl->in;
    size_t size = cg_dirty_frame_size(h);
    struct cg_dirty_route r = { 0 };
    struct cg_err err = { { 0 } };
    struct cg_dirty_call *c = NULL;
    unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(CG_DIRTY_HEADER_SIZE + h->json_len));
    int app;

    if (p == NULL || cg_dirty_route_parse(p + CG_DIRTY_HEADER_SIZE, h->json_len, h->blob_len,
                                          &r, &err) < 0) {
        evbuffer_drain(in, size);
        send_error(cl, h->id, "DirtyProtocolError", NULL, "Bad dirty request: %s", err.msg);
        return;
    }
    app = cg_dirty_pool_app_find(&arb->pool, r.app_path, strlen(r.app_path));
    if (app < 0) {
        evbuffer_drain(in, size);
        send_error(cl, h->id, "DirtyAppNotFoundError",
                   json_pack("{s:s,s:s}", "app_path", r.app_path, "action", r.action),
                   "Dirty app not found: %s", r.app_path);
        goto cleanup;
    }
    if (arb->state != CG_DIRTY_ARB_RUNNING ||
        (cg_dirty_pool_app_workers(&arb->pool, app) == 0 &&
         !cg_dirty_pool_respawn_has(&arb->pool, app))) {
        evbuffer_drain(in, size);
        send_error(cl, h->id, "DirtyNoWorkersAvailableError",
                   json_pack("{s:s}", "app_path", r.app_path),
                   "No workers available for app: %s%s", r.app_path,
                   arb->state != CG_DIRTY_ARB_RUNNING ? " (the dirty arbiter is shutting down)"
                                                      : "");
        goto cleanup;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->req = evbuffer_new()) == NULL) {
        evbuffer_drain(in, size);
        send_error(cl, h->id, "DirtyError", NULL, "dirty arbiter out of memory");
        free(c);
        goto cleanup;
    }
    cg_dirty_pool_call_init(&arb->pool, c, app);
    c->cid = h->id;
    c->arb = arb;
    snprintf(c->action, sizeof(c->action), "%s", r.action);
    evbuffer_remove_buffer(in, c->req, size);
    client_calls_add(cl, c);

    c->started = cg_dirty_now();
    c->idle_sec = arb->timeout > 0 ? arb->timeout : 0;
    c->total_sec = r.timeout > 0 ? r.timeout : 0;
    if (c->idle_sec > 0 || c->total_sec > 0) {
        c->timer = evtimer_new(arb->base, on_call_timer, c);
        rearm(c);
    }
    struct cg_dirty_wk *w = cg_dirty_pool_pick(&arb->pool, app);
    if (w != NULL) {
        dispatch(arb, c, w);
    } else {
        cg_dirty_pool_enqueue(&arb->pool, c);
    }
cleanup:
    cg_dirty_route_deinit(&r);
}

static void on_client_cancel(struct cg_dirty_client *cl, uint64_t cid)
{
    struct cg_dirty_call *c;

    for (c = cl->calls; c != NULL; c = c->cnext) {
        if (c->cid == cid) {
            break;
        }
    }
    if (c == NULL) {
        return; /* already finished: nothing to cancel */
    }
    call_abandon(c);
    if (c->state == CG_DIRTY_CALL_QUEUED) {
        cg_dirty_pool_dequeue(&cl->arb->pool, c);
        call_free(c);
        cg_dirty_arb_maybe_stop(cl->arb);
        return;
    }
    send_cancel(c);
}

static json_t *status_json(struct cg_dirty_arb *arb)
{
    json_t *workers = json_array(), *apps = json_array();

    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        json_t *wapps = json_array();
        for (size_t i = 0; i < arb->pool.napps; i++) {
            if (w->apps & (UINT64_C(1) << i)) {
                json_array_append_new(wapps, json_string(arb->pool.apps[i].path));
            }
        }
        json_array_append_new(workers,
                              json_pack("{s:i,s:i,s:o,s:b,s:i,s:b}", "pid", (int)w->pid, "age",
                                        w->age, "apps", wapps, "booted", w->booted, "busy",
                                        w->busy, "retiring", w->retiring || w->link_dead));
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        json_array_append_new(apps, json_string(arb->pool.apps[i].path));
    }
    return json_pack("{s:i,s:o,s:i,s:o,s:i}", "arbiter_pid", (int)getpid(), "workers", workers,
                     "worker_count", (int)arb->pool.nworkers, "apps", apps, "target_workers",
                     arb->num_workers);
}

/* STASH and STATUS: answered by the arbiter itself from the whole frame. */
static void on_client_local(struct cg_dirty_client *cl, const struct cg_dirty_header *h)
{
    struct cg_dirty_arb *arb = cl->arb;
    struct evbuffer *in = cl->in;
    size_t size = cg_dirty_frame_size(h);
    unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)size);
    struct cg_dirty_msg m = { 0 };
    struct cg_dirty_frame f = { 0 };
    struct cg_err err = { { 0 } };

    if (p == NULL || cg_dirty_msg_parse(p, size, arb->max_message, &m, &err) < 0) {
        send_error(cl, h->id, "DirtyProtocolError", NULL, "Bad dirty %s message: %s",
                   cg_dirty_type_name(h->type), err.msg);
        goto cleanup;
    }
    if (h->type == CG_DIRTY_STATUS) {
        json_t *body = json_pack("{s:o}", "result", status_json(arb));
        if (cg_dirty_frame_build(&f, CG_DIRTY_RESPONSE, h->id, body, NULL, 0, arb->max_message,
                                 &err) < 0) {
            send_error(cl, h->id, "DirtyError", NULL, "status: %s", err.msg);
        }
        json_decref(body);
    } else if (cg_dirty_stash_handle(&arb->stash, &m, arb->max_message, &f, &err) < 0) {
        send_error(cl, h->id, "DirtyError", NULL, "stash: %s", err.msg);
    }
    send_frame(cl->bev, &f);
cleanup:
    evbuffer_drain(in, size);
    cg_dirty_frame_deinit(&f);
    cg_dirty_msg_deinit(&m);
}

/* Outcome of looking at the front of an input buffer. */
enum frame_peek { PEEK_NEED_MORE, PEEK_READY, PEEK_BAD, PEEK_TOO_BIG };

static enum frame_peek frame_peek(struct evbuffer *in, size_t max, struct cg_dirty_header *h,
                                  struct cg_err *err)
{
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];

    if (evbuffer_get_length(in) < CG_DIRTY_HEADER_SIZE) {
        return PEEK_NEED_MORE;
    }
    evbuffer_copyout(in, hdr, sizeof(hdr));
    if (cg_dirty_header_decode(hdr, SIZE_MAX, h, err) < 0) {
        return PEEK_BAD;
    }
    if (cg_dirty_frame_size(h) > max) {
        return PEEK_TOO_BIG;
    }
    return evbuffer_get_length(in) < cg_dirty_frame_size(h) ? PEEK_NEED_MORE : PEEK_READY;
}

/* Drops up to `*skip` bytes of a refused frame from `in`. */
static void skip_bytes(struct evbuffer *in, uint64_t *skip)
{
    size_t n = evbuffer_get_length(in);
    if (n > *skip) {
        n = (size_t)*skip;
    }
    evbuffer_drain(in, n);
    *skip -= n;
}

/* Handles every whole frame in the client's input. Returns false when the
 * connection was closed (cl is freed). */
static bool client_process(struct cg_dirty_client *cl)
{
    struct cg_dirty_arb *arb = cl->arb;
    struct evbuffer *in = cl->in;
    struct cg_dirty_header h;
    struct cg_err err = { { 0 } };

    for (;;) {
        if (cl->skip > 0) {
            skip_bytes(in, &cl->skip);
            if (cl->skip > 0) {
                return true;
            }
        }
        enum frame_peek pk = frame_peek(in, arb->max_message, &h, &err);
        if (pk == PEEK_NEED_MORE) {
            return true;
        }
        if (pk == PEEK_BAD) {
            cg_log(CG_LOG_WARNING, "dirty arbiter: closing client connection: %s", err.msg);
            client_free(cl);
            return false;
        }
        if (pk == PEEK_TOO_BIG) {
            send_error(cl, h.id, "DirtyProtocolError",
                       json_pack("{s:I,s:I}", "size", (json_int_t)cg_dirty_frame_size(&h),
                                 "limit", (json_int_t)arb->max_message),
                       "Dirty message of %zu bytes exceeds dirty_max_message_size (%zu bytes); "
                       "send less or raise dirty_max_message_size",
                       cg_dirty_frame_size(&h), arb->max_message);
            cl->skip = cg_dirty_frame_size(&h);
            continue;
        }
        switch (h.type) {
        case CG_DIRTY_REQUEST:
            on_client_request(cl, &h);
            break;
        case CG_DIRTY_CANCEL:
            evbuffer_drain(in, cg_dirty_frame_size(&h));
            on_client_cancel(cl, h.id);
            break;
        case CG_DIRTY_STASH:
        case CG_DIRTY_STATUS:
            on_client_local(cl, &h);
            break;
        default:
            evbuffer_drain(in, cg_dirty_frame_size(&h));
            send_error(cl, h.id, "DirtyProtocolError", NULL,
                       "unexpected %s message from a dirty client; clients send request, "
                       "cancel, stash or status",
                       cg_dirty_type_name(h.type));
            break;
        }
    }
}

/* Output drained below the low mark: resume workers paused for us. */
static void on_client_write(struct bufferevent *bev, void *arg)
{
    struct cg_dirty_client *cl = arg;

    if (bev != NULL) {
        on_drained(bev);
    }
    if (!cl->paused_workers) {
        return;
    }
    cl->paused_workers = false;
    for (struct cg_dirty_wk *w = cl->arb->pool.workers; w != NULL; w = w->next) {
        if (w->paused_by == cl) {
            worker_resume(w);
        }
    }
}

static void on_client_event(struct bufferevent *bev, short what, void *arg);

static void on_client_readable(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_client *cl = arg;
    int rc = fill(cl->in, fd);
    int saved = errno;
    (void)what;

    if (client_process(cl) && rc < 0) {
        errno = saved;
        on_client_event(cl->bev, saved == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR, cl);
    }
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    struct cg_dirty_client *cl = arg;
    struct evbuffer *in = cl->in;
    (void)bev;

    if ((what & BEV_EVENT_EOF) && evbuffer_get_length(in) > 0 && cl->skip == 0) {
        cg_log(CG_LOG_WARNING,
               "dirty arbiter: client connection closed in the middle of a frame (%zu bytes "
               "of a truncated frame dropped)",
               evbuffer_get_length(in));
    } else if (what & BEV_EVENT_ERROR) {
        cg_log_debug("dirty arbiter: client connection error: %s", strerror(errno));
    }
    client_free(cl);
}

/* Closes a client connection: its queued calls are dropped, its running
 * calls are cancelled in their workers (their replies are discarded). */
static void client_free(struct cg_dirty_client *cl)
{
    struct cg_dirty_arb *arb = cl->arb;

    while (cl->calls != NULL) {
        struct cg_dirty_call *c = cl->calls;
        call_detach(c);
        if (c->state == CG_DIRTY_CALL_QUEUED) {
            cg_dirty_pool_dequeue(&arb->pool, c);
            call_free(c);
        } else {
            send_cancel(c);
        }
    }
    if (cl->want_flush) {
        for (struct cg_dirty_client **pp = &arb->flush; *pp != NULL; pp = &(*pp)->flush_next) {
            if (*pp == cl) {
                *pp = cl->flush_next;
                break;
            }
        }
        cl->want_flush = false;
    }
    cl->paused_workers = true;
    on_client_write(NULL, cl);
    if (cl->prev != NULL) {
        cl->prev->next = cl->next;
    } else {
        arb->clients = cl->next;
    }
    if (cl->next != NULL) {
        cl->next->prev = cl->prev;
    }
    event_free(cl->rev);
    evbuffer_free(cl->in);
    bufferevent_free(cl->bev);
    free(cl);
    cg_dirty_arb_maybe_stop(arb);
}

void cg_dirty_relay_on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_arb *arb = arg;
    struct cg_dirty_client *cl = NULL;
    (void)what;

    for (int i = 0; i < 64; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                cg_log_errno(CG_LOG_ERROR, errno, "dirty arbiter: accept on %s",
                             arb->socket_path);
            }
            return;
        }
        cl = calloc(1, sizeof(*cl));
        if (cl == NULL ||
            (cl->bev = bufferevent_socket_new(arb->base, cfd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
            cg_log(CG_LOG_ERROR, "dirty arbiter: out of memory for a client connection");
            free(cl);
            close(cfd);
            continue;
        }
        cl->arb = arb;
        cl->next = arb->clients;
        if (arb->clients != NULL) {
            arb->clients->prev = cl;
        }
        arb->clients = cl;
        tune(cl->bev);
        cl->rev = event_new(arb->base, cfd, EV_READ | EV_PERSIST, on_client_readable, cl);
        cl->in = evbuffer_new();
        bufferevent_setcb(cl->bev, NULL, on_client_write, on_client_event, cl);
        bufferevent_disable(cl->bev, EV_WRITE | EV_READ); /* see flush_out() */
        bufferevent_setwatermark(cl->bev, EV_WRITE, CG_DIRTY_CLIENT_HIGH_WATER / 2, 0);
        event_add(cl->rev, NULL);
        cg_log_debug("dirty arbiter: new client connection");
    }
}

/* ------------------------------------------------------------------ */
/* Worker links                                                        */

/* ERROR with id 0: the worker could not boot; its message carries the
 * traceback. Only the first is logged (every worker would fail the same
 * way), and workers still booting are stopped: the arbiter is going to stop
 * once the failed worker is reaped (cg_dirty_arbiter.c). */
static void boot_failure(struct cg_dirty_arb *arb, struct cg_dirty_wk *w,
                         const struct cg_dirty_header *h)
{
    struct evbuffer *in = w->in;
    size_t size = cg_dirty_frame_size(h);
    unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)size);
    struct cg_dirty_msg m = { 0 };
    struct cg_err err = { { 0 } };

    if (!arb->boot_error_logged) {
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
    size_t size = cg_dirty_frame_size(h);
    struct cg_dirty_call *c;
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];

    switch (h->type) {
    case CG_DIRTY_RESPONSE:
    case CG_DIRTY_ERROR:
    case CG_DIRTY_CHUNK:
    case CG_DIRTY_END:
        break;
    case CG_DIRTY_STATUS: /* the worker booted: its apps are loaded */
        evbuffer_drain(in, size);
        if (h->id == 0) {
            w->booted = true;
        }
        return 0;
    default:
        cg_err_set(err, "unexpected %s message", cg_dirty_type_name(h->type));
        return -1;
    }
    if (h->id == 0 && h->type == CG_DIRTY_ERROR) {
        boot_failure(arb, w, h);
        return 0;
    }
    c = cg_dirty_pool_find(w, h->id);
    if (c == NULL || c->client == NULL) {
        evbuffer_drain(in, size); /* late reply for a call already answered */
    } else {
        struct cg_dirty_client *cl = c->client;
        struct evbuffer *out = bufferevent_get_output(cl->bev);
        evbuffer_remove(in, hdr, sizeof(hdr));
        cg_dirty_frame_set_id(hdr, c->cid);
        evbuffer_add(out, hdr, sizeof(hdr));
        evbuffer_remove_buffer(in, out, size - sizeof(hdr));
        flush_later(cl);
        if (evbuffer_get_length(out) > CG_DIRTY_CLIENT_HIGH_WATER) {
            flush_out(cl->bev); /* a big backlog: write now, pause below if it stays */
        }
        if (h->type == CG_DIRTY_CHUNK && c->timer != NULL && !c->timed_out) {
            rearm(c); /* dirty_timeout counts from the last chunk */
        }
        if (evbuffer_get_length(out) > CG_DIRTY_CLIENT_HIGH_WATER) {
            /* Slow reader: stop reading this worker until it drains. */
            event_del(w->rev);
            w->paused_by = cl;
            cl->paused_workers = true;
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
    if (w->paused_by == NULL && frame_peek(in, SIZE_MAX, &h, &err) == PEEK_NEED_MORE) {
        rc = fill(in, fd);
    }
    int saved = errno;

    while (w->link != NULL && w->paused_by == NULL) {
        enum frame_peek pk = frame_peek(in, SIZE_MAX, &h, &err);
        if (pk == PEEK_NEED_MORE) {
            break;
        }
        if (pk == PEEK_BAD || on_worker_frame(arb, w, &h, &err) < 0) {
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
    tune(w->link);
    w->rev = event_new(arb->base, bufferevent_getfd(w->link), EV_READ | EV_PERSIST,
                       on_worker_readable, w);
    w->in = evbuffer_new();
    if (w->rev == NULL || w->in == NULL) {
        cg_log(CG_LOG_ERROR, "dirty arbiter: cannot watch dirty worker (pid:%d)", (int)w->pid);
        return -1;
    }
    bufferevent_setcb(w->link, NULL, on_link_write, on_worker_event, w);
    bufferevent_disable(w->link, EV_WRITE | EV_READ); /* see flush_out() */
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
    bufferevent_free(w->link);
    w->link = NULL;
    if (w->paused_by != NULL) {
        w->paused_by = NULL;
    }
    while (w->inflight.head != NULL) {
        struct cg_dirty_call *c = w->inflight.head;
        if (c->client != NULL) {
            send_error(c->client, c->cid, "DirtyWorkerError",
                       json_pack("{s:i,s:s,s:s}", "worker_id", (int)w->pid, "app_path",
                                 app_path(arb, c), "action", c->action),
                       "Dirty worker (pid:%d) died while running %s.%s: %s", (int)w->pid,
                       app_path(arb, c), c->action, why);
        }
        cg_dirty_pool_finish(&arb->pool, c);
        call_free(c);
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
            send_error(c->client, c->cid, type, NULL, "%s", message);
            cg_dirty_pool_dequeue(&arb->pool, c);
            call_free(c);
        }
    }
    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        for (struct cg_dirty_call *c = w->inflight.head; c != NULL; c = c->next) {
            send_error(c->client, c->cid, type, NULL, "%s", message);
            call_detach(c);
        }
    }
}
