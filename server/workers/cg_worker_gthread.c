/* The gthread worker's event loop.
 *
 * Threads: the worker's main thread runs a libevent 2.1 event_base WITHOUT
 * the GIL (it released it with PyEval_SaveThread() before starting the
 * pool, and takes it back only for a moment to act on signals, which may
 * run Python); `threads` pool threads (cg_worker_gthread_pool.c) run
 * requests under the GIL.
 *
 * Life of a connection (struct cg_gthread_conn):
 *
 *   accept ─► WAIT ──head complete──► RUN (job queue → pool thread runs the
 *              ▲                        │    app with cg_py_wsgi_handle)
 *              └──── keep-alive ◄───────┤
 *                                       └─► CLOSING (shutdown(SHUT_WR), the
 *                                            loop discards what the peer
 *                                            still sends, then close)
 *
 * WAIT: the loop reads the socket (non-blocking) and feeds the request
 * parser (cg_wsgi_conn_read_head(c, false)) until a head is complete; a
 * client dribbling its head only costs an event, never a thread. Deadlines:
 * an idle kept-alive connection (no byte of its next request yet) is closed
 * after `keepalive` seconds; a request head must be complete within
 * `timeout` seconds of its first byte (of the accept, for a new
 * connection); timeout 0 disables that limit.
 *
 * RUN: the pool thread runs the app. The request body is read by that thread
 * on demand (wsgi.input), blocking with poll() for at most `timeout` seconds
 * per wait (c.io_timeout_ms), as are the response writes. Pipelined requests
 * already buffered are answered in order (by the same thread, or queued
 * again behind other connections). The thread hands the connection back
 * through the done queue (eventfd).
 *
 * Limits, as gunicorn's gthread worker: at most `worker_connections` open
 * connections (the listeners are disabled at the cap); a response closes its
 * connection when keepalive is 0, when the parked connections reach
 * worker_connections - threads, when stopping, or at max_requests.
 *
 * Stopping: the signal self-pipe (cg_sig_fd()) is a loop event. TERM, a
 * parent change or max_requests start a graceful stop: the listeners are
 * disabled, idle kept-alive connections stay open at most CG_STOP_IDLE_MS
 * more (cg_worker.h; a request arriving meanwhile is answered with
 * "Connection: close"), in-flight requests get `graceful_timeout` seconds,
 * then the worker exits. QUIT/INT stop quickly: the listen queues are left
 * to the other workers, idle connections get CG_QUIT_IDLE_MS, and the loop
 * ends CG_QUIT_GRACE_MS after the signal. The loop reports liveness to the
 * master at least every second. */
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_py_deadline.h"
#include "cg_py_wsgi.h"
#include "cg_py_wsgi_int.h"
#include "cg_sig.h"
#include "cg_statsd.h"
#include "cg_worker_gthread.h"
#include "cg_worker_gthread_int.h"

#define ACCEPT_BATCH 64

static void on_conn_event(evutil_socket_t fd, short what, void *arg);

static uint64_t tick_ms(const struct cg_conf *conf)
{
    /* Report in at least twice per timeout period, and at least every second. */
    int ms = conf->timeout > 0 ? conf->timeout * 500 : 1000;
    return ms > 1000 ? 1000 : (ms < 50 ? 50 : (uint64_t)ms);
}

static struct timeval ms_tv(uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000u), (suseconds_t)((ms % 1000u) * 1000u) };
    return tv;
}

/* ---- accepting -------------------------------------------------------- */

static void set_accepting(struct cg_gthread *gt)
{
    bool want = (!gt->stopping || gt->queue_open) &&
                (gt->nconns < (size_t)gt->conf->worker_connections ||
                 (!gt->stopping && !gt->cap_blocked));
    if (want == gt->accepting) {
        return;
    }
    for (size_t i = 0; i < gt->w->nlisteners; i++) {
        if (want) {
            event_add(gt->listen_evs[i], NULL);
        } else {
            event_del(gt->listen_evs[i]);
        }
    }
    gt->accepting = want;
}

/* ---- connection states ------------------------------------------------- */

static void set_state(struct cg_gthread *gt, struct cg_gthread_conn *k, enum cg_gthread_state st)
{
    if (k->state == CG_GTHREAD_WAIT && st != CG_GTHREAD_WAIT) {
        atomic_fetch_sub(&gt->nwait, 1);
    } else if (k->state != CG_GTHREAD_WAIT && st == CG_GTHREAD_WAIT) {
        atomic_fetch_add(&gt->nwait, 1);
    }
    if (k->state == CG_GTHREAD_RUN) {
        gt->nrun--;
    }
    if (st == CG_GTHREAD_RUN) {
        gt->nrun++;
    }
    k->state = st;
}

static void drain_queues(struct cg_gthread *gt);
static void check_stop(struct cg_gthread *gt);

/* Frees a closed connection (its memory and its event). */
static void conn_release(struct cg_conn_release_node *node, void *arg)
{
    struct cg_gthread_conn *k =
        (struct cg_gthread_conn *)((char *)node - offsetof(struct cg_gthread_conn, rel));
    (void)arg;

    event_free(k->ev);
    cg_h2_conn_free(k->h2);
    cg_h2_upgrade_free(k->h2up);
    cg_wsgi_conn_deinit(&k->c);
    free(k);
}

/* The zero-timeout event run once the callbacks that closed connections
 * returned: releases them. */
static void on_release(evutil_socket_t fd, short what, void *arg)
{
    struct cg_gthread *gt = arg;
    (void)fd;
    (void)what;

    cg_conn_release_run(&gt->closed, conn_release, NULL);
}

/* Ends a connection now (socket closed, off the books, the listeners and
 * a stop updated); its memory is released after the running callback,
 * which may be the connection's own, returned (on_release). */
static void conn_free(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    if (k->state == CG_GTHREAD_H2) {
        cg_h2_conn_end(k->h2); /* a live session says GOAWAY before the close */
    }
    if (k->state == CG_GTHREAD_WAIT) {
        atomic_fetch_sub(&gt->nwait, 1);
    } else if (k->state == CG_GTHREAD_RUN) {
        gt->nrun--;
    }
    k->state = CG_GTHREAD_CLOSED;
    event_del(k->ev);
    cg_wsgi_conn_close(&k->c);
    if (k->prev != NULL) {
        k->prev->next = k->next;
    } else {
        gt->conns = k->next;
    }
    if (k->next != NULL) {
        k->next->prev = k->prev;
    }
    k->prev = k->next = NULL;
    gt->nconns--;
    if (cg_conn_release_push(&gt->closed, &k->rel)) {
        event_active(gt->release_ev, EV_TIMEOUT, 0);
    }
    gt->cap_blocked = false;
    set_accepting(gt);
    if (gt->stopping && gt->queue_open) {
        drain_queues(gt);
    }
    if (gt->stopping && gt->nconns == 0 && !gt->queue_open) {
        event_base_loopexit(gt->base, NULL);
    }
}

/* (Re)arms the connection's event with the time left to its deadline. */
static void conn_arm(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    uint64_t now = cg_monotonic_ms();

    if (k->deadline_ms == 0 && k->state == CG_GTHREAD_WAIT) {
        if (k->idle) {
            k->deadline_ms = now + (uint64_t)gt->conf->keepalive * 1000u;
        } else if (gt->conf->timeout > 0) {
            k->deadline_ms = now + (uint64_t)gt->conf->timeout * 1000u;
        }
    }
    if (gt->stopping && k->state == CG_GTHREAD_WAIT) {
        uint64_t linger = gt->quick ? CG_QUIT_IDLE_MS : CG_STOP_IDLE_MS;
        uint64_t cap = k->idle ? now + linger : gt->stop_deadline_ms;
        if (k->deadline_ms == 0 || k->deadline_ms > cap) {
            k->deadline_ms = cap;
        }
    }
    /* What the transport last waited for: a TLS handshake may need to
     * write before it can read on. */
    short what = k->c.t.want == POLLOUT ? EV_WRITE : EV_READ;
    if ((event_get_events(k->ev) & (EV_READ | EV_WRITE)) != what) {
        event_del(k->ev);
        event_assign(k->ev, gt->base, k->c.t.fd, what, on_conn_event, k);
    }
    if (k->deadline_ms == 0) {
        event_add(k->ev, NULL);
        return;
    }
    struct timeval tv = ms_tv(k->deadline_ms > now ? k->deadline_ms - now : 0);
    event_add(k->ev, &tv);
}

/* Ends a connection whose last response is out: half-close so the client
 * reads everything before the FIN (a close with unread input would send a
 * reset that can destroy the response), then discard its rest. */
static void conn_close_graceful(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    if (cg_transport_shutdown(&k->c.t) < 0) {
        conn_free(gt, k);
        return;
    }
    set_state(gt, k, CG_GTHREAD_CLOSING);
    k->drained = 0;
    k->deadline_ms = cg_monotonic_ms() + (uint64_t)CG_LINGER_MS;
    conn_arm(gt, k);
}

static void closing_step(struct cg_gthread *gt, struct cg_gthread_conn *k, short what)
{
    char scratch[16384];

    if (what & EV_TIMEOUT) {
        conn_free(gt, k);
        return;
    }
    for (;;) {
        ssize_t n = cg_transport_recv(&k->c.t, scratch, sizeof(scratch), 0);
        if (n > 0) {
            k->drained += (size_t)n;
            if (k->drained <= (size_t)CG_LINGER_MAX) {
                continue;
            }
        } else if (n == CG_TRANSPORT_AGAIN) {
            conn_arm(gt, k);
            return;
        }
        conn_free(gt, k); /* EOF, error, or too much */
        return;
    }
}

/* A complete head (or a refused one to log): queue it for the pool. */
static void dispatch(struct cg_gthread *gt, struct cg_gthread_conn *k, bool head_error)
{
    set_state(gt, k, CG_GTHREAD_RUN);
    k->head_error = head_error;
    k->deadline_ms = 0;
    cg_worker_gthread_pool_submit(gt, k);
}

/* The head read ended the connection: a bad request was answered (its
 * access line and metrics are logged by a pool thread, which has the GIL),
 * or the peer closed or failed. */
static void head_closed(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    const struct cg_http_error *e = cg_http_parser_error(&k->c.parser);

    if (e->kind == CG_HTTP_ERR_NONE) {
        conn_free(gt, k);
    } else if ((gt->wsgi->access_log != NULL || cg_statsd_on()) &&
               cg_http_parser_error_request(&k->c.parser) != NULL) {
        dispatch(gt, k, true);
    } else {
        conn_close_graceful(gt, k);
    }
}

/* ---- HTTP/2 connections (cg_h2.c) ---------------------------------------- */

/* Acts on what the session asks for after a step: wait for the socket
 * (with the idle keepalive, the stall check or the stop deadline as its
 * timeout), wait for the pool, or close. */
static void h2_next(struct cg_gthread *gt, struct cg_gthread_conn *k, enum cg_h2_next next)
{
    uint64_t now = cg_monotonic_ms();

    if (next == CG_H2_CLOSE) {
        conn_free(gt, k);
        return;
    }
    short what = (next == CG_H2_WRITE ? EV_WRITE : EV_READ) | EV_PERSIST;
    /* Waiting for the same readiness as before: the event stays in epoll
     * (persistent) and only its timeout is set again below, instead of an
     * epoll_ctl to remove it and one to add it back per step. */
    bool same = next != CG_H2_WAIT && event_pending(k->ev, EV_READ | EV_WRITE, NULL) &&
                event_get_events(k->ev) == what && event_get_callback(k->ev) == on_conn_event;
    if (!same) {
        event_del(k->ev);
        if (next == CG_H2_WAIT) {
            return; /* the pool's hand-back wakes it (on_h2_wake) */
        }
        event_assign(k->ev, gt->base, k->c.t.fd, what, on_conn_event, k);
    }
    uint64_t wait_ms;
    if (cg_h2_conn_active(k->h2) == 0) {
        int ka = gt->conf->keepalive > 0 ? gt->conf->keepalive : 1;
        wait_ms = (uint64_t)ka * 1000u; /* idle: GOAWAY after keepalive */
    } else {
        wait_ms = gt->conf->timeout > 0 ? (uint64_t)gt->conf->timeout * 1000u : 0;
    }
    if (gt->stopping && (wait_ms == 0 || now + wait_ms > gt->stop_deadline_ms)) {
        wait_ms = gt->stop_deadline_ms > now ? gt->stop_deadline_ms - now : 0;
    }
    if (wait_ms == 0 && !gt->stopping) {
        if (same) {
            event_del(k->ev); /* drops the timeout an earlier step set */
        }
        event_add(k->ev, NULL);
        return;
    }
    struct timeval tv = ms_tv(wait_ms);
    event_add(k->ev, &tv);
}

static void h2_event(struct cg_gthread *gt, struct cg_gthread_conn *k, short what)
{
    if ((what & EV_TIMEOUT) && (event_get_events(k->ev) & EV_WRITE)) {
        /* a peer that has not read for a whole deadline (PING or SETTINGS
         * floods without reading, a stalled client): give up on it */
        cg_h2_conn_kill(k->h2);
    } else if (what & EV_TIMEOUT) {
        if (cg_h2_conn_active(k->h2) == 0 || gt->stopping) {
            if (gt->stopping && cg_monotonic_ms() >= gt->stop_deadline_ms) {
                if (cg_h2_conn_jobs(k->h2) > 0) {
                    /* pool threads still run streams: they fail now, and
                     * their hand-back closes it (never freed under them) */
                    cg_h2_conn_end(k->h2);
                    event_del(k->ev);
                    return;
                }
                conn_free(gt, k);
                return;
            }
            cg_h2_conn_goaway(k->h2);
        } else if (gt->conf->timeout > 0) {
            cg_h2_conn_reset_stalled(k->h2, cg_monotonic_ms(),
                                     (uint64_t)gt->conf->timeout * 1000u);
        }
    }
    h2_next(gt, k, cg_h2_conn_io(k->h2));
}

/* Pool threads moved streams along: let their sessions send. */
static void on_h2_wake(evutil_socket_t fd, short what, void *arg)
{
    struct cg_gthread *gt = arg;
    (void)fd;
    (void)what;

    for (struct cg_h2_conn *hc = cg_h2_hub_take(&gt->hub), *next; hc != NULL; hc = next) {
        next = cg_h2_conn_next_ready(hc);
        struct cg_gthread_conn *k = cg_h2_conn_owner(hc);
        if (k->state == CG_GTHREAD_H2) {
            h2_next(gt, k, cg_h2_conn_io(hc));
        }
    }
    gt->w->nr = atomic_load(&gt->nr);
    check_stop(gt);
}

/* A new connection on a worker that serves HTTP/2: whether it speaks it
 * (ALPN, or the prior-knowledge preface from a trusted peer), decided
 * before any HTTP/1 parsing. Returns true when the connection was taken
 * care of (switched to HTTP/2, waiting for more bytes, refused or closed),
 * false when it is HTTP/1's. */
static void h2_begin(struct cg_gthread *gt, struct cg_gthread_conn *k, const char *buf, size_t n,
                     struct cg_h2_upgrade *up);

static bool h2_check(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    struct cg_wsgi_conn *c = &k->c;

    if (!c->eof && c->in.end - c->in.start < 24) {
        if (cg_wsgi_conn_fill(c, false) < 0 && c->read_errno != EAGAIN &&
            c->read_errno != EWOULDBLOCK) {
            conn_free(gt, k);
            return true;
        }
    }
    const char *buf = c->in.p != NULL ? c->in.p + c->in.start : "";
    size_t n = c->in.end - c->in.start;
    switch (cg_h2_detect(&gt->hub, &c->t, (const struct sockaddr *)&c->peer, buf, n)) {
    case CG_H2_DETECT_H1:
        k->h2_checked = true;
        return false;
    case CG_H2_DETECT_MORE:
        if (c->eof) {
            k->h2_checked = true;
            return false;
        }
        if (n > 0) {
            k->idle = false;
        }
        conn_arm(gt, k);
        return true;
    case CG_H2_DETECT_REFUSE: {
        struct cg_http_error e;
        cg_h2_preface_error(&e);
        cg_wsgi_conn_send_error(c, &e);
        conn_close_graceful(gt, k);
        return true;
    }
    case CG_H2_DETECT_H2:
        break;
    }
    h2_begin(gt, k, buf, n, NULL);
    return true;
}

/* Switches a connection to HTTP/2: a session fed the bytes already
 * received (buf[0..n)), or the h2c upgrade `up` (owned) a pool thread
 * answered 101 to. */
static void h2_begin(struct cg_gthread *gt, struct cg_gthread_conn *k, const char *buf, size_t n,
                     struct cg_h2_upgrade *up)
{
    struct cg_wsgi_conn *c = &k->c;
    struct cg_err err = { { 0 } };

    k->h2_checked = true;
    k->h2 = cg_h2_conn_new(&gt->hub, &c->t, c->l, (const struct sockaddr *)&c->peer,
                           c->peer_len, k, buf, n, &err);
    if (k->h2 == NULL || (up != NULL && cg_h2_conn_upgrade(k->h2, up, &err) < 0)) {
        if (k->h2 == NULL) {
            cg_h2_upgrade_free(up);
        }
        cg_log(CG_LOG_ERROR, "%s", err.msg);
        conn_free(gt, k);
        return;
    }
    c->in.start = c->in.end;
    set_state(gt, k, CG_GTHREAD_H2);
    k->idle = false;
    k->deadline_ms = 0;
    if (gt->stopping) {
        cg_h2_conn_goaway(k->h2);
    }
    h2_next(gt, k, cg_h2_conn_io(k->h2));
}

/* Reads and parses what the connection has; dispatches a complete head. */
static void head_step(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    bool was_idle = k->idle;

    if (gt->h2_on && !k->h2_checked && h2_check(gt, k)) {
        return;
    }
    switch (cg_worker_gthread_read_head(k)) {
    case CG_WSGI_HEAD_READY:
        dispatch(gt, k, false);
        break;
    case CG_WSGI_HEAD_MORE:
        if (was_idle && !k->idle) {
            k->deadline_ms = 0; /* the head's own deadline starts now */
        }
        conn_arm(gt, k);
        break;
    case CG_WSGI_HEAD_CLOSE:
        head_closed(gt, k);
        break;
    }
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct cg_gthread_conn *k = arg;
    struct cg_gthread *gt = k->gt;
    (void)fd;

    if (k->state == CG_GTHREAD_H2) {
        h2_event(gt, k, what);
    } else if (k->state == CG_GTHREAD_CLOSING) {
        closing_step(gt, k, what);
    } else if ((what & EV_TIMEOUT) && k->idle) {
        /* kept alive past keepalive (or a stopping worker's linger): a FIN
         * first, so that a request the client is sending meets a closed
         * connection it can see, not a reset */
        conn_close_graceful(gt, k);
    } else if (what & EV_TIMEOUT) {
        conn_free(gt, k); /* a head too slow */
    } else {
        head_step(gt, k);
    }
}

/* Accepts one connection from lfd and parks it waiting for its head.
 * Returns false when there is none to take (or it could not be set up). */
static bool accept_one(struct cg_gthread *gt, evutil_socket_t lfd,
                                const struct cg_listener *l)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                cg_log_errno(CG_LOG_ERROR, errno, "accept on %s", l->name);
            }
            return false;
        }
        struct cg_gthread_conn *k = calloc(1, sizeof(*k));
        if (k == NULL) {
            close(fd);
            cg_log(CG_LOG_ERROR, "out of memory accepting a connection on %s", l->name);
            return false;
        }
        cg_wsgi_conn_init(&k->c, fd, l, (struct sockaddr *)&peer, plen, &gt->wsgi->limits,
                          gt->conf->timeout > 0 ? gt->conf->timeout * 1000 : -1);
        k->c.owner = k;
        k->c.stopping = &gt->draining;
        k->gt = gt;
        k->ev = event_new(gt->base, fd, EV_READ, on_conn_event, k);
        if (k->ev == NULL) {
            cg_wsgi_conn_deinit(&k->c);
            free(k);
            cg_log(CG_LOG_ERROR, "out of memory accepting a connection on %s", l->name);
            return false;
        }
        k->state = CG_GTHREAD_WAIT;
        atomic_fetch_add(&gt->nwait, 1);
        k->t0_us = cg_py_wsgi_now_us();
        k->next = gt->conns;
        if (gt->conns != NULL) {
            gt->conns->prev = k;
        }
        gt->conns = k;
        gt->nconns++;
        set_accepting(gt);
        if (k->c.t.ops == &cg_transport_plain) {
            /* A client usually sends its request right after connecting:
             * read now rather than after an epoll round (a would-block
             * costs one recv, then the connection is armed as before). */
            head_step(gt, k);
        } else {
            conn_arm(gt, k);
        }
        return true;
    }
}

/* At worker_connections, as nginx does with its reusable connections: the
 * oldest connection that waits for a request and has sent no byte of it
 * (new, or kept alive), or NULL when every connection is busy. A slow head
 * that has begun is never taken. */
static struct cg_gthread_conn *idle_victim(struct cg_gthread *gt)
{
    struct cg_gthread_conn *tail = gt->conns;

    while (tail != NULL && tail->next != NULL) {
        tail = tail->next; /* the list is newest first */
    }
    for (struct cg_gthread_conn *k = tail; k != NULL; k = k->prev) {
        if (k->state == CG_GTHREAD_WAIT && !k->c.parser.head_seen_bytes &&
            k->c.in.end == k->c.in.start && cg_transport_unread(&k->c.t) == 0) {
            return k;
        }
    }
    return NULL;
}

static void evict(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    conn_free(gt, k);
    cg_worker_cap_evicted(&gt->cap_log, gt->conf->worker_connections);
}

/* TERM: takes what the listen queues hold (the master stopped new
 * connections from queueing), as far as worker_connections allows; the rest
 * is taken as connections finish (conn_free). Every request of a stopping
 * worker is answered with "Connection: close". The queues are known empty
 * once a pass over every listener accepts nothing. */
static void drain_queues(struct cg_gthread *gt)
{
    bool more = true;

    while (more) {
        more = false;
        for (size_t i = 0; i < gt->w->nlisteners; i++) {
            if (gt->nconns >= (size_t)gt->conf->worker_connections) {
                set_accepting(gt);
                return; /* more when a connection is done */
            }
            if (accept_one(gt, gt->w->listeners[i].fd, &gt->w->listeners[i])) {
                more = true;
            }
        }
    }
    gt->queue_open = false;
    set_accepting(gt);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct cg_gthread *gt = arg;
    const struct cg_listener *l = NULL;
    (void)what;

    if (gt->stopping) {
        if (gt->queue_open) {
            drain_queues(gt);
        }
        return;
    }
    for (size_t i = 0; i < gt->w->nlisteners; i++) {
        if (gt->w->listeners[i].fd == lfd) {
            l = &gt->w->listeners[i];
        }
    }
    for (int i = 0; l != NULL && i < ACCEPT_BATCH && gt->accepting; i++) {
        struct cg_gthread_conn *victim = NULL;
        if (gt->nconns >= (size_t)gt->conf->worker_connections) {
            victim = idle_victim(gt);
            if (victim == NULL) {
                gt->cap_blocked = true; /* until a connection ends or goes idle */
                set_accepting(gt);
                break;
            }
        }
        if (!accept_one(gt, lfd, l)) {
            break; /* nobody was waiting: the victim stays */
        }
        if (victim != NULL) {
            evict(gt, victim);
        }
    }
}

/* ---- stopping ---------------------------------------------------------- */

static void begin_stop(struct cg_gthread *gt)
{
    if (gt->stopping) {
        return;
    }
    gt->stopping = true;
    gt->w->alive = false;
    atomic_store(&gt->draining, true);
    gt->stop_deadline_ms = cg_monotonic_ms() + (uint64_t)gt->conf->graceful_timeout * 1000u;
    if (gt->w->terminating && !gt->quick) {
        gt->queue_open = true;
        drain_queues(gt);
    }
    set_accepting(gt);
    for (struct cg_gthread_conn *k = gt->conns, *next; k != NULL; k = next) {
        next = k->next;
        if (k->state == CG_GTHREAD_WAIT) {
            conn_arm(gt, k); /* caps the deadline */
        } else if (k->state == CG_GTHREAD_H2) {
            cg_h2_conn_goaway(k->h2); /* streams begun finish; new ones are refused */
            h2_next(gt, k, cg_h2_conn_io(k->h2));
        }
    }
    if (gt->nconns == 0 && !gt->queue_open) {
        event_base_loopexit(gt->base, NULL);
    }
}

/* QUIT/INT (also during a TERM stop): no more accepting, idle connections
 * get CG_QUIT_IDLE_MS, and the loop ends CG_QUIT_GRACE_MS from now. */
static void quick_stop(struct cg_gthread *gt)
{
    uint64_t now = cg_monotonic_ms();

    gt->quick = true;
    gt->queue_open = false;
    begin_stop(gt);
    if (gt->stop_deadline_ms > now + CG_QUIT_GRACE_MS) {
        gt->stop_deadline_ms = now + CG_QUIT_GRACE_MS;
    }
    set_accepting(gt);
    for (struct cg_gthread_conn *k = gt->conns; k != NULL; k = k->next) {
        if (k->state == CG_GTHREAD_WAIT) {
            conn_arm(gt, k);
        }
    }
    struct timeval tv = ms_tv(gt->stop_deadline_ms > now ? gt->stop_deadline_ms - now : 0);
    event_base_loopexit(gt->base, gt->nconns == 0 ? NULL : &tv);
}

static void check_stop(struct cg_gthread *gt)
{
    if (atomic_load(&gt->stop_asked) || !gt->w->alive) {
        begin_stop(gt);
    }
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct cg_gthread *gt = arg;
    (void)what;

    if (fd >= 0 && fd == gt->wake_r) {
        char buf[64];
        while (read(gt->wake_r, buf, sizeof(buf)) > 0) {
        }
    }

    /* Signal handling may run Python (hooks, Python-level handlers): it
     * takes the GIL for that moment. */
    PyEval_RestoreThread(gt->main_ts);
    bool now = cg_worker_check_signals(gt->w);
    gt->main_ts = PyEval_SaveThread();
    if (now && !gt->quick) {
        quick_stop(gt);
        return;
    }
    check_stop(gt);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct cg_gthread *gt = arg;
    (void)fd;
    (void)what;

    cg_worker_notify(gt->w);
    on_signal(-1, 0, gt); /* also notices a parent change */
    if (gt->stopping && cg_monotonic_ms() >= gt->stop_deadline_ms) {
        event_base_loopbreak(gt->base);
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct cg_gthread *gt = arg;
    struct cg_gthread_conn *k = cg_worker_gthread_pool_take_done(gt);
    (void)fd;
    (void)what;

    gt->w->nr = atomic_load(&gt->nr);
    check_stop(gt);
    while (k != NULL) {
        struct cg_gthread_conn *next = k->qnext;
        k->qnext = NULL;
        if (k->h2up != NULL) { /* answered 101: the upgraded request is stream 1 */
            struct cg_h2_upgrade *up = k->h2up;
            k->h2up = NULL;
            set_state(gt, k, CG_GTHREAD_WAIT);
            h2_begin(gt, k, NULL, 0, up);
        } else if (!k->reuse && k->c.t.ops == &cg_transport_plain &&
                   !cg_wsgi_conn_may_have_input(&k->c)) {
            /* Nothing unread (the sync worker's test before it lingers):
             * close now; a FIN-and-discard round is for a client that is
             * still sending. TLS keeps its close_notify (the shutdown). */
            conn_free(gt, k);
        } else if (!k->reuse) {
            conn_close_graceful(gt, k);
        } else {
            set_state(gt, k, CG_GTHREAD_WAIT);
            if (gt->cap_blocked) { /* kept alive: closable at the cap */
                gt->cap_blocked = false;
                set_accepting(gt);
            }
            if (k->probed) {
                conn_arm(gt, k); /* the thread found nothing complete */
            } else {
                head_step(gt, k); /* buffered pipelined bytes, or a quick client */
            }
        }
        k = next;
    }
}

/* ---- set-up and tear-down ---------------------------------------------- */

/* Signals with Python-level handlers (signal.signal) run those handlers only
 * when the main thread runs Python: point signal.set_wakeup_fd() at a pipe
 * the loop watches, so such a signal wakes the loop, which then takes the
 * GIL (on_signal). Without it (failure) the tick still catches them. Needs
 * the GIL. */
static void wakeup_open(struct cg_gthread *gt)
{
    int p[2];
    PyObject *mod = NULL, *fn = NULL, *args = NULL, *kw = NULL, *r = NULL;

    gt->wake_r = gt->wake_w = gt->old_wakeup = -1;
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        return;
    }
    mod = PyImport_ImportModule("signal");
    fn = mod ? PyObject_GetAttrString(mod, "set_wakeup_fd") : NULL;
    args = fn ? Py_BuildValue("(i)", p[1]) : NULL;
    kw = args ? Py_BuildValue("{s:O}", "warn_on_full_buffer", Py_False) : NULL;
    r = kw ? PyObject_Call(fn, args, kw) : NULL;
    if (r == NULL) {
        PyErr_Clear();
        close(p[0]);
        close(p[1]);
    } else {
        gt->wake_r = p[0];
        gt->wake_w = p[1];
        gt->old_wakeup = (int)PyLong_AsLong(r);
        PyErr_Clear();
    }
    Py_XDECREF(r);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(fn);
    Py_XDECREF(mod);
}

/* Gives the wakeup fd back and closes our pipe. Needs the GIL. */
static void wakeup_close(struct cg_gthread *gt)
{
    if (gt->wake_r < 0) {
        return;
    }
    PyObject *mod = PyImport_ImportModule("signal");
    PyObject *r = mod ? PyObject_CallMethod(mod, "set_wakeup_fd", "i", gt->old_wakeup) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(mod);
    PyErr_Clear();
    close(gt->wake_r);
    close(gt->wake_w);
    gt->wake_r = gt->wake_w = -1;
}

static int loop_open(struct cg_gthread *gt, struct cg_err *err)
{
    struct cg_worker *w = gt->w;

    gt->base = event_base_new();
    gt->listen_evs = calloc(w->nlisteners ? w->nlisteners : 1, sizeof(*gt->listen_evs));
    if (gt->base == NULL || gt->listen_evs == NULL) {
        cg_err_set(err, "cannot create the gthread event loop (out of memory?)");
        return -1;
    }
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (evutil_make_socket_nonblocking(w->listeners[i].fd) < 0) {
            cg_err_set(err, "listener %s: cannot make it non-blocking", w->listeners[i].name);
            return -1;
        }
        gt->listen_evs[i] = event_new(gt->base, w->listeners[i].fd, EV_READ | EV_PERSIST,
                                      on_accept, gt);
        if (gt->listen_evs[i] == NULL) {
            cg_err_set(err, "cannot watch listener %s", w->listeners[i].name);
            return -1;
        }
    }
    struct timeval tv = ms_tv(tick_ms(gt->conf));
    gt->sig_ev = event_new(gt->base, cg_sig_fd(), EV_READ | EV_PERSIST, on_signal, gt);
    gt->done_ev = event_new(gt->base, gt->done_fd, EV_READ | EV_PERSIST, on_done, gt);
    gt->tick_ev = event_new(gt->base, -1, EV_PERSIST, on_tick, gt);
    gt->release_ev = event_new(gt->base, -1, 0, on_release, gt);
    if (gt->wake_r >= 0) {
        gt->wake_ev = event_new(gt->base, gt->wake_r, EV_READ | EV_PERSIST, on_signal, gt);
        if (gt->wake_ev == NULL || event_add(gt->wake_ev, NULL) < 0) {
            cg_err_set(err, "cannot register the gthread loop's events");
            return -1;
        }
    }
    if (gt->sig_ev == NULL || gt->done_ev == NULL || gt->tick_ev == NULL ||
        gt->release_ev == NULL ||
        event_add(gt->sig_ev, NULL) < 0 || event_add(gt->done_ev, NULL) < 0 ||
        event_add(gt->tick_ev, &tv) < 0) {
        cg_err_set(err, "cannot register the gthread loop's events");
        return -1;
    }
    if (gt->h2_on) {
        gt->h2_ev = event_new(gt->base, gt->hub.efd, EV_READ | EV_PERSIST, on_h2_wake, gt);
        if (gt->h2_ev == NULL || event_add(gt->h2_ev, NULL) < 0) {
            cg_err_set(err, "cannot register the gthread loop's events");
            return -1;
        }
    }
    set_accepting(gt);
    return 0;
}

static void loop_close(struct cg_gthread *gt)
{
    /* Connections still in RUN belong to pool threads that outlived
     * graceful_timeout (or QUIT): left to the process exit. */
    for (struct cg_gthread_conn *k = gt->conns; k != NULL;) {
        struct cg_gthread_conn *next = k->next;
        if (k->state == CG_GTHREAD_H2 && cg_h2_conn_jobs(k->h2) > 0) {
            cg_h2_conn_end(k->h2);
            gt->h2_busy = true; /* pool threads still use it: left to the exit */
        } else if (k->state != CG_GTHREAD_RUN) {
            conn_free(gt, k);
        }
        k = next;
    }
    cg_conn_release_run(&gt->closed, conn_release, NULL);
    if (gt->release_ev != NULL) {
        event_free(gt->release_ev);
        gt->release_ev = NULL;
    }
    for (size_t i = 0; gt->listen_evs != NULL && i < gt->w->nlisteners; i++) {
        if (gt->listen_evs[i] != NULL) {
            event_free(gt->listen_evs[i]);
        }
    }
    free(gt->listen_evs);
    gt->listen_evs = NULL;
    if (gt->sig_ev != NULL) {
        event_free(gt->sig_ev);
    }
    if (gt->done_ev != NULL) {
        event_free(gt->done_ev);
    }
    if (gt->tick_ev != NULL) {
        event_free(gt->tick_ev);
    }
    if (gt->wake_ev != NULL) {
        event_free(gt->wake_ev);
    }
    if (gt->h2_ev != NULL) {
        event_free(gt->h2_ev);
        gt->h2_ev = NULL;
    }
    gt->sig_ev = gt->done_ev = gt->tick_ev = gt->wake_ev = NULL;
}

int cg_worker_gthread_run(struct cg_worker *w)
{
    const struct cg_conf *conf = w->conf;
    struct cg_gthread *gt = calloc(1, sizeof(*gt)); /* owned; leaked if threads outlive us */
    struct cg_err err = { { 0 } };
    int code = 0;

    if (gt == NULL) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: out of memory", (int)getpid());
        return CG_WORKER_BOOT_ERROR;
    }
    gt->w = w;
    gt->conf = conf;
    gt->done_fd = -1;
    pthread_mutex_init(&gt->mu, NULL);
    pthread_cond_init(&gt->cv, NULL);
    if (conf->keepalive > 0 && conf->worker_connections - conf->threads <= 0 && w->age <= 1) {
        cg_log(CG_LOG_WARNING, "No keepalived connections can be handled. "
                               "Check the number of worker connections and threads.");
    }
    gt->wsgi = cg_py_wsgi_new(w, &err);
    if (gt->wsgi == NULL) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        free(gt);
        return CG_WORKER_BOOT_ERROR;
    }
    if (cg_py_deadline_open(conf->request_timeout, (size_t)conf->threads, &err) < 0) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        cg_py_wsgi_free(gt->wsgi);
        free(gt);
        return CG_WORKER_BOOT_ERROR;
    }
    gt->hub.efd = -1;
    gt->h2_on = cg_h2_enabled(conf);
    if (gt->h2_on) {
        if (cg_h2_hub_init(&gt->hub, conf, &gt->wsgi->limits, &err) < 0) {
            cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
            cg_py_wsgi_free(gt->wsgi);
            free(gt);
            return CG_WORKER_BOOT_ERROR;
        }
        gt->hub.submit = cg_worker_gthread_pool_submit_h2;
        gt->hub.submit_arg = gt;
    }
    wakeup_open(gt);
    gt->main_ts = PyEval_SaveThread(); /* the loop runs without the GIL */
    if (cg_worker_gthread_pool_start(gt, &err) < 0 || loop_open(gt, &err) < 0) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        code = CG_WORKER_BOOT_ERROR;
    } else {
        cg_worker_notify(w);
        w->quit_defers = true;
        event_base_dispatch(gt->base);
        w->quit_defers = false;
    }
    loop_close(gt);
    /* Join the pool only when no thread still runs a request; otherwise the
     * threads, and what they use (gt, the WSGI state, the app), are left to
     * the process exit. */
    bool joined = gt->nrun == 0 && !gt->h2_busy;
    cg_worker_gthread_pool_stop(gt, joined);
    if (gt->base != NULL) {
        event_base_free(gt->base);
        gt->base = NULL;
    }
    PyEval_RestoreThread(gt->main_ts);
    wakeup_close(gt);
    if (joined) {
        if (gt->h2_on) {
            cg_h2_hub_deinit(&gt->hub);
        }
        cg_py_wsgi_free(gt->wsgi);
        pthread_mutex_destroy(&gt->mu);
        pthread_cond_destroy(&gt->cv);
        free(gt);
    } else {
        Py_INCREF(w->app); /* a pool thread may still be calling it */
    }
    return code;
}
