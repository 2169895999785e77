/* The dirty arbiter's client connections (from HTTP workers, or a dirty
 * worker's stash use): accepting them, reading their frames (REQUEST,
 * CANCEL, and STASH/STATUS answered by the arbiter itself), refusing
 * oversized or unexpected frames, resuming workers paused for a slow reader,
 * and closing a connection with its calls.
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

static void client_free(struct cg_dirty_client *cl);

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

/* ------------------------------------------------------------------ */
/* Client frames                                                       */

/* A REQUEST: the header is at the front of `in` and the whole frame is there;
 * fds[0..h->nfds-1] came with it (taken: they go to the worker with the
 * frame, or are closed). */
static void on_client_request(struct cg_dirty_client *cl, const struct cg_dirty_header *h,
                              int *fds)
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
                                          h->nfds, &r, &err) < 0) {
        evbuffer_drain(in, size);
        cg_dirty_relay_send_error(cl, h->id, "DirtyProtocolError", NULL,
                                  "Bad dirty request: %s", err.msg);
        goto cleanup;
    }
    app = cg_dirty_pool_app_find(&arb->pool, r.app_path, strlen(r.app_path));
    if (app < 0) {
        evbuffer_drain(in, size);
        cg_dirty_relay_send_error(cl, h->id, "DirtyAppNotFoundError",
                                  json_pack("{s:s,s:s}", "app_path", r.app_path, "action",
                                            r.action),
                                  "Dirty app not found: %s", r.app_path);
        goto cleanup;
    }
    if (arb->state != CG_DIRTY_ARB_RUNNING ||
        (cg_dirty_pool_app_workers(&arb->pool, app) == 0 &&
         !cg_dirty_pool_respawn_has(&arb->pool, app))) {
        evbuffer_drain(in, size);
        cg_dirty_relay_send_error(cl, h->id, "DirtyNoWorkersAvailableError",
                                  json_pack("{s:s}", "app_path", r.app_path),
                                  "No workers available for app: %s%s", r.app_path,
                                  arb->state != CG_DIRTY_ARB_RUNNING
                                      ? " (the dirty arbiter is shutting down)"
                                      : "");
        goto cleanup;
    }
    struct cg_dirty_wk *w = cg_dirty_pool_pick(&arb->pool, app);
    size_t waiting = arb->pool.apps[app].queue.n;
    if (w == NULL && arb->queue_limit > 0 && waiting >= arb->queue_limit) {
        char why[128];
        evbuffer_drain(in, size);
        snprintf(why, sizeof(why), "%zu calls already wait for a worker (dirty_queue_limit %zu)",
                 waiting, arb->queue_limit);
        cg_dirty_relay_send_busy(arb, cl, h->id, app, r.action, why);
        goto cleanup;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->req = evbuffer_new()) == NULL) {
        evbuffer_drain(in, size);
        cg_dirty_relay_send_error(cl, h->id, "DirtyError", NULL, "dirty arbiter out of memory");
        free(c);
        goto cleanup;
    }
    cg_dirty_pool_call_init(&arb->pool, c, app);
    c->cid = h->id;
    c->arb = arb;
    snprintf(c->action, sizeof(c->action), "%s", r.action);
    if (h->nfds > 0) {
        c->fds = malloc(h->nfds * sizeof(int));
        if (c->fds == NULL) {
            evbuffer_drain(in, size);
            cg_dirty_relay_send_error(cl, h->id, "DirtyError", NULL,
                                      "dirty arbiter out of memory");
            cg_dirty_relay_call_free(c);
            goto cleanup;
        }
        memcpy(c->fds, fds, h->nfds * sizeof(int));
        c->nfds = h->nfds;
        fds = NULL; /* the call owns them now */
    }
    evbuffer_remove_buffer(in, c->req, size);
    client_calls_add(cl, c);

    c->started = cg_dirty_now();
    c->idle_sec = arb->timeout > 0 ? arb->timeout : 0;
    c->total_sec = r.timeout > 0 ? r.timeout : 0;
    c->queue_sec = w == NULL ? arb->queue_timeout : 0;
    if (c->idle_sec > 0 || c->total_sec > 0 || c->queue_sec > 0) {
        c->timer = evtimer_new(arb->base, cg_dirty_relay_on_call_timer, c);
        cg_dirty_relay_rearm(c);
    }
    if (w != NULL) {
        cg_dirty_relay_dispatch(arb, c, w);
    } else {
        cg_dirty_pool_enqueue(&arb->pool, c);
    }
cleanup:
    if (fds != NULL) {
        cg_dirty_fds_close(fds, h->nfds);
    }
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
    cg_dirty_relay_call_abandon(c);
    if (c->state == CG_DIRTY_CALL_QUEUED) {
        cg_dirty_pool_dequeue(&cl->arb->pool, c);
        cg_dirty_relay_call_free(c);
        cg_dirty_arb_maybe_stop(cl->arb);
        return;
    }
    cg_dirty_relay_send_cancel(c);
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
        const char *gpu = cg_dirty_gpus_for_slot(&arb->gpus, w->slot);
        json_array_append_new(workers,
                              json_pack("{s:i,s:i,s:o,s:b,s:i,s:b,s:b,s:I,s:i,s:s?}", "pid",
                                        (int)w->pid, "age", w->age, "apps", wapps, "booted",
                                        w->booted, "busy", w->busy, "retiring",
                                        w->retiring || w->link_dead, "recycling", w->recycling,
                                        "served", (json_int_t)w->served, "slot", w->slot,
                                        "device", gpu));
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        json_array_append_new(apps, json_string(arb->pool.apps[i].path));
    }
    return json_pack("{s:i,s:o,s:i,s:o,s:i,s:I}", "arbiter_pid", (int)getpid(), "workers",
                     workers, "worker_count", (int)arb->pool.nworkers, "apps", apps,
                     "target_workers", arb->num_workers, "memfds_forwarded",
                     (json_int_t)arb->fds_forwarded);
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

    if (h->nfds > 0) {
        /* stash values are stored by the arbiter: they travel inline */
        cg_dirty_relay_send_error(cl, h->id, "DirtyProtocolError", NULL, "Bad dirty %s message: "
                                  "it came with %u memfd(s); %s values travel inline",
                                  cg_dirty_type_name(h->type), h->nfds,
                                  cg_dirty_type_name(h->type));
        goto cleanup;
    }
    if (p == NULL || cg_dirty_msg_parse(p, size, arb->max_message, &m, &err) < 0) {
        cg_dirty_relay_send_error(cl, h->id, "DirtyProtocolError", NULL, "Bad dirty %s message: %s",
                                  cg_dirty_type_name(h->type), err.msg);
        goto cleanup;
    }
    if (h->type == CG_DIRTY_STATUS) {
        json_t *body = json_pack("{s:o}", "result", status_json(arb));
        if (cg_dirty_frame_build(&f, CG_DIRTY_RESPONSE, h->id, body, NULL, 0, arb->max_message,
                                 &err) < 0) {
            cg_dirty_relay_send_error(cl, h->id, "DirtyError", NULL, "status: %s", err.msg);
        }
        json_decref(body);
    } else if (cg_dirty_stash_handle(&arb->stash, &m, arb->max_message, &f, &err) < 0) {
        cg_dirty_relay_send_error(cl, h->id, "DirtyError", NULL, "stash: %s", err.msg);
    }
    cg_dirty_relay_send_frame(cl, &f);
cleanup:
    evbuffer_drain(in, size);
    cg_dirty_frame_deinit(&f);
    cg_dirty_msg_deinit(&m);
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
    int fds[CG_DIRTY_MAX_FDS];

    for (;;) {
        if (cl->skip > 0) {
            skip_bytes(in, &cl->skip);
            if (cl->skip > 0) {
                return true;
            }
        }
        enum cg_dirty_peek pk = cg_dirty_relay_frame_peek(in, arb->max_message, &h, &err);
        if (pk == CG_DIRTY_PEEK_NEED_MORE) {
            return true;
        }
        if (pk == CG_DIRTY_PEEK_BAD) {
            cg_log(CG_LOG_WARNING, "dirty arbiter: closing client connection: %s", err.msg);
            client_free(cl);
            return false;
        }
        /* The frame's memfds came with its first byte: they are queued by now. */
        if (cg_dirty_fdq_take(&cl->fdio.in, fds, h.nfds) < 0) {
            cg_log(CG_LOG_WARNING, "dirty arbiter: closing client connection: a %s frame "
                   "announced %u descriptors that did not come with it",
                   cg_dirty_type_name(h.type), h.nfds);
            client_free(cl);
            return false;
        }
        if (pk == CG_DIRTY_PEEK_TOO_BIG) {
            cg_dirty_fds_close(fds, h.nfds);
            cg_dirty_relay_send_error(cl, h.id, "DirtyProtocolError",
                                      json_pack("{s:I,s:I}", "size",
                                                (json_int_t)cg_dirty_frame_size(&h), "limit",
                                                (json_int_t)arb->max_message),
                                      "Dirty message of %zu bytes exceeds "
                                      "dirty_max_message_size (%zu bytes); "
                                      "send less or raise dirty_max_message_size",
                                      cg_dirty_frame_size(&h), arb->max_message);
            cl->skip = cg_dirty_frame_size(&h);
            continue;
        }
        switch (h.type) {
        case CG_DIRTY_REQUEST:
            on_client_request(cl, &h, fds);
            break;
        case CG_DIRTY_CANCEL:
            cg_dirty_fds_close(fds, h.nfds);
            evbuffer_drain(in, cg_dirty_frame_size(&h));
            on_client_cancel(cl, h.id);
            break;
        case CG_DIRTY_STASH:
        case CG_DIRTY_STATUS:
            cg_dirty_fds_close(fds, h.nfds);
            on_client_local(cl, &h);
            break;
        default:
            cg_dirty_fds_close(fds, h.nfds);
            evbuffer_drain(in, cg_dirty_frame_size(&h));
            cg_dirty_relay_send_error(cl, h.id, "DirtyProtocolError", NULL,
                                      "unexpected %s message from a dirty client; clients "
                                      "send request, cancel, stash or status",
                                      cg_dirty_type_name(h.type));
            break;
        }
    }
}

/* Output drained below the low mark: resume workers paused for us (bev
 * NULL: unconditionally, the client is going away). While memfds it has not
 * read yet hold them, the zc timer polls instead. */
static void on_client_write(struct bufferevent *bev, void *arg)
{
    struct cg_dirty_client *cl = arg;

    if (bev != NULL) {
        cg_dirty_relay_on_drained(bev);
    }
    if (!cl->paused_workers) {
        return;
    }
    if (bev != NULL && cg_dirty_relay_zc_busy(cl)) {
        struct timeval tv = { 0, 2000 };
        if (cl->zc_timer != NULL && !evtimer_pending(cl->zc_timer, NULL)) {
            evtimer_add(cl->zc_timer, &tv);
        }
        return;
    }
    cl->paused_workers = false;
    for (struct cg_dirty_wk *w = cl->arb->pool.workers; w != NULL; w = w->next) {
        if (w->paused_by == cl) {
            cg_dirty_relay_link_resume(w);
        }
    }
}

static void on_client_event(struct bufferevent *bev, short what, void *arg);

/* Workers wait for this client to read memfd replies: resume them once it
 * has, and once its output is below the low mark. */
static void on_zc_timer(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_client *cl = arg;
    struct timeval tv = { 0, 2000 };
    (void)fd;
    (void)what;

    if (!cl->paused_workers) {
        return;
    }
    if (cg_dirty_relay_zc_busy(cl) || evbuffer_get_length(bufferevent_get_output(cl->bev)) >
                                          CG_DIRTY_CLIENT_HIGH_WATER / 2) {
        evtimer_add(cl->zc_timer, &tv);
        return;
    }
    on_client_write(NULL, cl);
}

static void on_client_readable(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_client *cl = arg;
    int rc = cg_dirty_relay_fill(cl->in, &cl->fdio.in, fd);
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
        cg_dirty_relay_call_detach(c);
        if (c->state == CG_DIRTY_CALL_QUEUED) {
            cg_dirty_pool_dequeue(&arb->pool, c);
            cg_dirty_relay_call_free(c);
        } else {
            cg_dirty_relay_send_cancel(c);
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
    if (cl->zc_timer != NULL) {
        event_free(cl->zc_timer);
    }
    evbuffer_free(cl->in);
    cg_dirty_relay_fdio_deinit(&cl->fdio);
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
        cg_dirty_relay_tune(cl->bev);
        cl->rev = event_new(arb->base, cfd, EV_READ | EV_PERSIST, on_client_readable, cl);
        cl->zc_timer = evtimer_new(arb->base, on_zc_timer, cl);
        cl->in = evbuffer_new();
        if (cg_dirty_relay_fdio_init(&cl->fdio, arb, cl->bev) < 0) {
            cg_log(CG_LOG_ERROR, "dirty arbiter: out of memory for a client connection");
        }
        bufferevent_setcb(cl->bev, NULL, on_client_write, on_client_event, cl);
        bufferevent_disable(cl->bev, EV_WRITE | EV_READ); /* see cg_dirty_relay_flush_out() */
        bufferevent_setwatermark(cl->bev, EV_WRITE, CG_DIRTY_CLIENT_HIGH_WATER / 2, 0);
        event_add(cl->rev, NULL);
        cg_log_debug("dirty arbiter: new client connection");
    }
}

