/* The dirty arbiter's connections: client connections from HTTP workers
 * (many concurrent calls each, told apart by the client's ids) and one
 * socketpair link per dirty worker. Frames are routed by header: a REQUEST's
 * JSON is read for app_path/action/timeout only, its body is moved (not
 * copied, not re-encoded) to the chosen worker with the id rewritten to an
 * arbiter-wide id; replies (RESPONSE/ERROR/CHUNK/END) travel back with the
 * client's id put back. Calls wait in per-app queues when every worker with
 * the app is busy. Deadlines, cancellation, worker loss and back-pressure
 * live in the relay; processes live in cg_dirty_arbiter.c.
 *
 * The relay is four files: this one holds what the others share (socket
 * reads and batched writes, replies to a client, a call's life cycle and
 * its dispatch to a worker); cg_dirty_relay_client.c the client
 * connections, cg_dirty_relay_link.c the worker links,
 * cg_dirty_relay_deadline.c deadlines and cancellation.
 *
 * Arbiter process only, single-threaded (libevent callbacks). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
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
#include "cg_metrics.h"

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

/* libevent 2.1 reads at most 4 KiB per read event (EVBUFFER_MAX_READ),
 * whatever max_single_read says, so the arbiter reads its sockets itself
 * (the bufferevents only write): up to 4 MiB per wake-up in 256 KiB steps.
 * Returns 0 (read what was there), or -1 at EOF (errno 0) or on error. */
int cg_dirty_relay_fill(struct evbuffer *in, struct cg_dirty_fdq *fds, evutil_socket_t fd)
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
        ssize_t n = cg_dirty_fds_recv(fd, iov, nv, fds);
        if (n <= 0) {
            evbuffer_commit_space(in, v, 0);
            if (n == 0) {
                errno = 0;
                return -1;
            }
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        }
        /* A read stops after data that came with descriptors: short is not empty. */
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

/* libevent reads 4 KiB per callback by default: a 1 MiB payload would take
 * 256 wake-ups. Let one read or write move up to 1 MiB. */
void cg_dirty_relay_tune(struct bufferevent *bev)
{
    cg_dirty_socket_tune(bufferevent_getfd(bev));
    bufferevent_set_max_single_read(bev, 1024 * 1024);
    bufferevent_set_max_single_write(bev, 1024 * 1024);
}

/* Forgets the caller: replies for this call are discarded from now on. */
void cg_dirty_relay_call_detach(struct cg_dirty_call *c)
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

void cg_dirty_relay_call_free(struct cg_dirty_call *c)
{
    cg_dirty_relay_call_detach(c);
    if (c->timer != NULL) {
        event_free(c->timer);
        c->timer = NULL;
    }
    if (c->req != NULL) {
        evbuffer_free(c->req);
        c->req = NULL;
    }
    if (c->fds != NULL) {
        cg_dirty_fds_close(c->fds, c->nfds);
        free(c->fds);
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
void cg_dirty_relay_flush_out(struct bufferevent *bev, struct cg_dirty_relay_fdio *io)
{
    struct evbuffer *out = bufferevent_get_output(bev);

    if (cg_dirty_relay_fdio_flush(io)) {
        return; /* descriptors to send: cg_dirty_relay_fds.c writes */
    }
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
void cg_dirty_relay_on_drained(struct bufferevent *bev)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        bufferevent_disable(bev, EV_WRITE);
    }
}

void cg_dirty_relay_send_frame(struct cg_dirty_client *cl, const struct cg_dirty_frame *f)
{
    if (cl != NULL && cl->bev != NULL && f->data != NULL) {
        bufferevent_write(cl->bev, f->data, f->len);
        cg_dirty_relay_flush_out(cl->bev, &cl->fdio);
    }
}

/* Sends an ERROR frame {"error": {"type", "message", ...extra}} to a client.
 * Takes ownership of `extra` (may be NULL). */
void cg_dirty_relay_send_error(struct cg_dirty_client *cl, uint64_t cid, const char *type,
                               json_t *extra, const char *fmt, ...)

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
            cg_dirty_relay_send_frame(cl, &f);
        }
    }
    cg_dirty_frame_deinit(&f);
    json_decref(extra);
}

void cg_dirty_relay_send_cancel(struct cg_dirty_call *c)
{
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    struct cg_dirty_header h = { .type = CG_DIRTY_CANCEL, .id = c->aid, .json_len = 2 };

    if (c->worker == NULL || c->worker->link == NULL) {
        return;
    }
    cg_dirty_header_encode(hdr, &h);
    bufferevent_write(c->worker->link, hdr, sizeof(hdr));
    bufferevent_write(c->worker->link, "{}", 2);
    cg_dirty_relay_flush_out(c->worker->link, c->worker->fdio);
}

/* Looks at the front of an input buffer: is a whole frame of at most
 * `max` bytes there? */
enum cg_dirty_peek cg_dirty_relay_frame_peek(struct evbuffer *in, size_t max,
                                             struct cg_dirty_header *h, struct cg_err *err)
{
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];

    if (evbuffer_get_length(in) < CG_DIRTY_HEADER_SIZE) {
        return CG_DIRTY_PEEK_NEED_MORE;
    }
    evbuffer_copyout(in, hdr, sizeof(hdr));
    if (cg_dirty_header_decode(hdr, SIZE_MAX, h, err) < 0) {
        return CG_DIRTY_PEEK_BAD;
    }
    if (cg_dirty_frame_size(h) > max) {
        return CG_DIRTY_PEEK_TOO_BIG;
    }
    return evbuffer_get_length(in) < cg_dirty_frame_size(h) ? CG_DIRTY_PEEK_NEED_MORE
                                                            : CG_DIRTY_PEEK_READY;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */

void cg_dirty_relay_send_busy(struct cg_dirty_arb *arb, struct cg_dirty_client *cl, uint64_t cid,
                              int app, const char *action, const char *why)
{
    const char *path = arb->pool.apps[app].path;
    double retry = cg_dirty_pool_retry_after(&arb->pool, app);

    cg_dirty_relay_send_error(cl, cid, "DirtyBusyError",
                              json_pack("{s:s,s:s,s:f}", "app_path", path, "action", action,
                                        "retry_after", retry),
                              "Dirty app %s is busy: %s; retry after %.1fs", path, why, retry);
}

void cg_dirty_relay_dispatch(struct cg_dirty_arb *arb, struct cg_dirty_call *c,
                             struct cg_dirty_wk *w)
{
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    struct evbuffer *req = c->req;
    struct evbuffer *out = bufferevent_get_output(w->link);

    cg_dirty_pool_assign(&arb->pool, c, w);
    c->dispatched = cg_dirty_now();
    /* The held frame starts with its header: rewrite the id there. */
    evbuffer_remove(req, hdr, sizeof(hdr));
    cg_dirty_frame_set_id(hdr, c->aid);
    if (c->fds != NULL) { /* the memfds go with the frame's first byte */
        cg_dirty_relay_fdio_mark(w->fdio, c->fds, c->nfds);
        free(c->fds);
        c->fds = NULL;
        c->nfds = 0;
    }
    evbuffer_add(out, hdr, sizeof(hdr));
    evbuffer_add_buffer(out, req);
    cg_dirty_relay_flush_out(w->link, w->fdio);
    evbuffer_free(req);
    c->req = NULL;
    if (c->timer != NULL && !c->timed_out) {
        cg_dirty_relay_rearm(c); /* the wait for the worker starts now */
    }
}

void cg_dirty_relay_gauges(struct cg_dirty_arb *arb)
{
    int64_t queued = 0, busy = 0;

    if (cg_metrics == NULL) {
        return;
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        queued += (int64_t)arb->pool.apps[i].queue.n;
    }
    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        busy += w->busy > 0;
    }
    atomic_store(&cg_metrics->dirty.queue_depth, queued);
    atomic_store(&cg_metrics->dirty.busy_workers, busy);
}

void cg_dirty_relay_count(struct cg_dirty_arb *arb, const struct cg_dirty_call *c, int outcome)
{
    if (cg_metrics == NULL) {
        return;
    }
    double sec = cg_dirty_now() - c->started;
    cg_metrics_dirty_call(arb->pool.apps[c->app].path, c->action,
                          (enum cg_metrics_dirty_outcome)outcome,
                          sec > 0 ? (uint64_t)(sec * 1e6) : 0);
}

void cg_dirty_relay_pump(struct cg_dirty_arb *arb, struct cg_dirty_wk *w)
{
    struct cg_dirty_call *c;

    if (w->link == NULL) {
        return;
    }
    while ((c = cg_dirty_pool_next_for(&arb->pool, w)) != NULL) {
        cg_dirty_pool_dequeue(&arb->pool, c);
        cg_dirty_relay_dispatch(arb, c, w);
    }
    cg_dirty_relay_gauges(arb);
}

