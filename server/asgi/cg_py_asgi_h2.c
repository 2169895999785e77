/* HTTP/2 in the asgi worker: the session of cg_h2.c (settings, flood
 * defences, flow control, the socket's I/O: shared with gthread) on the
 * asyncio loop, and each stream served by the HTTP/1 request code as a
 * stream connection of its own (cg_py_asgi_conn_new_stream): its transport
 * is the stream's (the request as an HTTP/1 message, the response taken
 * back as one), so scope, receive, send, limits and the access log are
 * those of HTTP/1, with http_version "2".
 *
 * An HTTP/1.1 "Upgrade: h2c" request (state H2UP) that cg_h2_upgrade_new
 * honours has its body read as it arrives, then gets 101 and, once that
 * is written, a session whose stream 1 it is (cg_h2_conn_upgrade): the
 * rules and stream 1 are cg_h2.c's, shared with gthread.
 *
 * The loop watches the session's socket (the connection's reader and
 * writer run cg_py_asgi_h2_io) and the hub's eventfd. A stream connection
 * has no socket: the session's news (hub.wake: body bytes, the body's end,
 * room for the response, the stream reset) and its own wish to read or
 * write put it on srv->h2_pending, which a call_soon callback runs; what
 * the streams did (a response head, body bytes taken, the job done)
 * reaches the session through the hub's ready list, run right after.
 *
 * Flow control follows the app: a stream connection reads the body into
 * its buffer only up to CG_ASGI_READ_HIGH, and the peer's window opens
 * only as it reads (cg_h2.c); a send() waits while the stream holds
 * CG_H2_OUT_HIGH bytes the peer has not taken (the transport's AGAIN).
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <string.h>

#include "cg_clock.h"
#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_asgi_int.h"

static struct cg_asgi_srv *srv_of(PyObject *capsule)
{
    return PyCapsule_GetPointer(capsule, "cgunicorn.asgi.srv");
}

/* ---- the pending stream connections ---- */

/* Runs the pending list's callback soon (once). */
static void kick(struct cg_asgi_srv *s)
{
    if (s->h2_pending == NULL || s->h2_run_scheduled || s->call_soon == NULL) {
        return;
    }
    PyObject *h = PyObject_CallOneArg(s->call_soon, s->h2_run_cb);
    if (h == NULL) {
        cg_py_log_exception("asgi: scheduling HTTP/2 streams");
        return;
    }
    Py_DECREF(h);
    s->h2_run_scheduled = true;
}

/* Puts c on the pending list (C only: hub.wake calls it under the
 * session's lock). */
static void note(struct cg_asgi_conn *c)
{
    struct cg_asgi_srv *s = c->srv;

    if (c->pending || c->state == CG_ASGI_CLOSED) {
        return;
    }
    c->pending = true;
    Py_INCREF(c);
    c->pnext = s->h2_pending;
    s->h2_pending = c;
}

void cg_py_asgi_h2_schedule(struct cg_asgi_conn *c)
{
    note(c);
    kick(c->srv);
}

static void on_wake(void *arg, struct cg_h2_job *job)
{
    (void)arg;
    if (job->data != NULL) {
        note(job->data);
    }
}

/* A stream's head is complete: a stream connection serves it once the
 * pending list runs (never inside the session's own calls). */
static void on_submit(void *arg, struct cg_h2_job *job)
{
    struct cg_asgi_conn *parent = cg_h2_conn_owner(cg_h2_job_conn(job));
    struct cg_asgi_conn *c = cg_py_asgi_conn_new_stream(parent, job);

    if (c == NULL) {
        cg_py_log_exception("asgi: cannot set up an HTTP/2 stream");
        cg_h2_job_done(job, false);
        return;
    }
    (void)arg;
    job->data = c;
    c->snext = parent->streams; /* the list holds the new reference */
    if (parent->streams != NULL) {
        parent->streams->sprev = c;
    }
    parent->streams = c;
    note(c);
}

/* Acts on what a session asks for after a step. */
static void apply(struct cg_asgi_conn *c, enum cg_h2_next next)
{
    uint64_t now = cg_monotonic_ms();

    if (cg_h2_conn_active(c->h2) > 0) {
        c->idle_since_ms = now; /* keepalive counts from the last stream */
    }
    switch (next) {
    case CG_H2_CLOSE:
        cg_py_asgi_conn_close(c);
        return;
    case CG_H2_WAIT: /* the streams' hand-back wakes it */
        cg_py_asgi_conn_want_read(c, false);
        cg_py_asgi_conn_want_write(c, false);
        c->h2_write_since_ms = 0;
        return;
    case CG_H2_WRITE:
        cg_py_asgi_conn_want_read(c, false);
        cg_py_asgi_conn_want_write(c, true);
        if (c->h2_write_since_ms == 0) {
            c->h2_write_since_ms = now;
        }
        return;
    case CG_H2_READ:
        cg_py_asgi_conn_want_write(c, false);
        cg_py_asgi_conn_want_read(c, true);
        c->h2_write_since_ms = 0;
        return;
    }
}

void cg_py_asgi_h2_io(struct cg_asgi_conn *c)
{
    Py_INCREF(c);
    if (c->state == CG_ASGI_H2) {
        enum cg_h2_next next = cg_h2_conn_io(c->h2);
        kick(c->srv);
        apply(c, next);
    }
    Py_DECREF(c);
}

/* The sessions the streams moved along (their eventfd, or right after the
 * pending list ran). */
static void hub_run(struct cg_asgi_srv *s)
{
    for (struct cg_h2_conn *hc = cg_h2_hub_take(&s->hub), *next; hc != NULL; hc = next) {
        next = cg_h2_conn_next_ready(hc);
        struct cg_asgi_conn *c = cg_h2_conn_owner(hc);
        if (c->state == CG_ASGI_H2) {
            cg_py_asgi_h2_io(c);
        }
    }
}

static PyObject *on_hub(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;

    if (s != NULL) {
        hub_run(s);
    }
    Py_RETURN_NONE;
}

static PyObject *on_run(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;

    if (s == NULL) {
        return NULL;
    }
    s->h2_run_scheduled = false;
    struct cg_asgi_conn *list = s->h2_pending;
    s->h2_pending = NULL;
    while (list != NULL) {
        struct cg_asgi_conn *c = list;
        list = c->pnext;
        c->pnext = NULL;
        c->pending = false;
        if (c->state != CG_ASGI_CLOSED) {
            cg_py_asgi_conn_stream_step(c);
        }
        Py_DECREF(c);
    }
    hub_run(s);
    kick(s); /* what the sessions' steps noted */
    Py_RETURN_NONE;
}

static PyMethodDef on_hub_def = { "on_h2_hub", on_hub, METH_NOARGS, NULL };
static PyMethodDef on_run_def = { "on_h2_run", on_run, METH_NOARGS, NULL };

/* ---- set-up ---- */

int cg_py_asgi_h2_init(struct cg_asgi_srv *s, struct cg_err *err)
{
    if (!cg_h2_enabled(s->conf)) {
        return 0;
    }
    if (cg_h2_hub_init(&s->hub, s->conf, &s->wsgi->limits, err) < 0) {
        return -1;
    }
    s->h2_on = true;
    s->hub.submit = on_submit;
    s->hub.submit_arg = s;
    s->hub.wake = on_wake;
    s->hub.wake_arg = s;
    s->hub.nowait = true;
    s->hub.share = SIZE_MAX; /* every stream runs at once, up to
                                http2_max_concurrent_streams */
    return 0;
}

int cg_py_asgi_h2_start(struct cg_asgi_srv *s)
{
    if (!s->h2_on) {
        return 0;
    }
    PyObject *cap = PyCapsule_New(s, "cgunicorn.asgi.srv", NULL);
    s->h2_hub_cb = cap ? PyCFunction_New(&on_hub_def, cap) : NULL;
    s->h2_run_cb = cap ? PyCFunction_New(&on_run_def, cap) : NULL;
    Py_XDECREF(cap);
    PyObject *r = s->h2_hub_cb && s->h2_run_cb
                      ? PyObject_CallFunction(s->add_reader, "iO", s->hub.efd, s->h2_hub_cb)
                      : NULL;
    Py_XDECREF(r);
    return r != NULL ? 0 : -1;
}

void cg_py_asgi_h2_deinit(struct cg_asgi_srv *s)
{
    while (s->h2_pending != NULL) {
        struct cg_asgi_conn *c = s->h2_pending;
        s->h2_pending = c->pnext;
        c->pending = false;
        Py_DECREF(c);
    }
    Py_CLEAR(s->h2_hub_cb);
    Py_CLEAR(s->h2_run_cb);
    if (s->h2_on) {
        cg_h2_hub_deinit(&s->hub);
        s->h2_on = false;
    }
}

/* ---- a connection's protocol ---- */

/* Switches a connection to HTTP/2: a session fed the bytes already
 * received (buf[0..n)), or the h2c upgrade `up` (owned) answered 101. */
static void begin(struct cg_asgi_conn *c, const char *buf, size_t n, struct cg_h2_upgrade *up)
{
    struct cg_asgi_srv *s = c->srv;
    struct cg_err err = { { 0 } };

    c->h2_checked = true;
    c->h2 = cg_h2_conn_new(&s->hub, &c->t, c->l, (const struct sockaddr *)&c->peer,
                           sizeof(c->peer), c, buf, n, &err);
    if (c->h2 == NULL) {
        cg_h2_upgrade_free(up);
        cg_log(CG_LOG_ERROR, "%s", err.msg);
        cg_py_asgi_conn_close(c);
        return;
    }
    c->in.start = c->in.end;
    c->state = CG_ASGI_H2; /* from here the close frees the session */
    if (up != NULL && cg_h2_conn_upgrade(c->h2, up, &err) < 0) {
        cg_log(CG_LOG_ERROR, "%s", err.msg);
        cg_py_asgi_conn_close(c);
        return;
    }
    if (!s->w->alive) {
        cg_h2_conn_goaway(c->h2);
    }
    kick(s);
    cg_py_asgi_h2_io(c);
}

bool cg_py_asgi_h2_check(struct cg_asgi_conn *c)
{
    struct cg_asgi_srv *s = c->srv;
    const char *buf = c->in.p != NULL ? c->in.p + c->in.start : "";
    size_t n = c->in.end - c->in.start;

    switch (cg_h2_detect(&s->hub, &c->t, (const struct sockaddr *)&c->peer, buf, n)) {
    case CG_H2_DETECT_H1:
        c->h2_checked = true;
        return false;
    case CG_H2_DETECT_MORE:
        if (c->eof) {
            c->h2_checked = true;
            return false;
        }
        cg_py_asgi_conn_want_read(c, true);
        return true;
    case CG_H2_DETECT_REFUSE: {
        struct cg_http_error e;
        c->h2_checked = true;
        cg_h2_preface_error(&e);
        cg_py_asgi_conn_error_page(c, &e);
        return true;
    }
    case CG_H2_DETECT_H2:
        break;
    }
    begin(c, buf, n, NULL);
    return true;
}

bool cg_py_asgi_h2_upgrade_begin(struct cg_asgi_conn *c, const struct cg_http_request *req)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    c->h2up = cg_h2_upgrade_new(&c->srv->hub, req, (const struct sockaddr *)&c->peer);
    if (c->h2up == NULL) {
        return false;
    }
    c->state = CG_ASGI_H2UP;
    c->h2up_sent = false;
    if (req->expect_continue) {
        struct iovec iov = { (void *)cont, sizeof(cont) - 1 };
        cg_py_asgi_conn_write(c, &iov, 1);
    }
    return true;
}

/* Reads the upgrade's body from the buffer. Returns 1 once it is all in,
 * 0 to wait for more, -1 when the connection ended. */
static int upgrade_body(struct cg_asgi_conn *c)
{
    for (;;) {
        size_t dlen = 0;
        const char *data = NULL;
        enum cg_http_status st = cg_conn_body_next(&c->parser, &c->in, &data, &dlen);
        if (st == CG_HTTP_BODY_DATA && cg_h2_upgrade_add_body(c->h2up, data, dlen) == 0) {
            continue;
        }
        if (st == CG_HTTP_BODY_DONE) {
            return 1;
        }
        if (st == CG_HTTP_NEED_MORE && !c->eof) {
            cg_py_asgi_conn_want_read(c, true);
            return 0;
        }
        /* a chunked body past the limit, a malformed or cut one: the body
         * is spent, HTTP/1.1 cannot take over (as gthread) */
        cg_log_debug("h2c upgrade from a client abandoned: %s",
                     st == CG_HTTP_ERROR ? cg_http_parser_error(&c->parser)->detail
                                         : "request body over 64 KiB or cut short");
        cg_py_asgi_conn_close(c);
        return -1;
    }
}

void cg_py_asgi_h2_upgrade_step(struct cg_asgi_conn *c)
{
    if (!c->h2up_sent) {
        if (upgrade_body(c) <= 0) {
            return;
        }
        /* what the client sent behind the request is its preface and
         * frames; the rest waits in the socket for the session */
        if (cg_h2_upgrade_set_pending(c->h2up, c->in.p + c->in.start,
                                      c->in.end - c->in.start) < 0) {
            cg_log(CG_LOG_ERROR, "h2c upgrade: out of memory");
            cg_py_asgi_conn_close(c);
            return;
        }
        c->in.start = c->in.end;
        c->h2up_sent = true;
        cg_py_asgi_conn_want_read(c, false);
        struct iovec iov = { (void *)CG_H2_UPGRADE_101, strlen(CG_H2_UPGRADE_101) };
        if (cg_py_asgi_conn_write(c, &iov, 1) < 0) {
            return; /* closed */
        }
    }
    if (c->out_end > c->out_start) {
        return; /* the writer calls again once the 101 is out */
    }
    struct cg_h2_upgrade *up = c->h2up;
    c->h2up = NULL;
    begin(c, NULL, 0, up);
}

void cg_py_asgi_h2_close(struct cg_asgi_conn *c)
{
    if (c->h2 == NULL) {
        return;
    }
    cg_h2_conn_end(c->h2); /* a live session says GOAWAY before the close */
    while (c->streams != NULL) {
        cg_py_asgi_conn_close(c->streams); /* unlinks it */
    }
    cg_h2_conn_free(c->h2);
    c->h2 = NULL;
}

void cg_py_asgi_h2_stream_closed(struct cg_asgi_conn *c)
{
    struct cg_asgi_conn *p = c->parent;

    if (c->job != NULL) {
        c->job->data = NULL;
        cg_h2_job_done(c->job, c->h2_clean);
        c->job = NULL;
    }
    if (p == NULL) {
        return;
    }
    if (c->sprev != NULL) {
        c->sprev->snext = c->snext;
    } else {
        p->streams = c->snext;
    }
    if (c->snext != NULL) {
        c->snext->sprev = c->sprev;
    }
    c->sprev = c->snext = NULL;
    c->parent = NULL; /* cg_py_asgi_conn_close releases the list's reference */
}

void cg_py_asgi_h2_sweep(struct cg_asgi_conn *c, uint64_t now)
{
    struct cg_asgi_srv *s = c->srv;
    uint64_t timeout = s->conf->timeout > 0 ? (uint64_t)s->conf->timeout * 1000u : 0;
    uint64_t ka = (uint64_t)(s->conf->keepalive > 0 ? s->conf->keepalive : 1) * 1000u;

    Py_INCREF(c);
    if (timeout > 0 && c->h2_write_since_ms != 0 && now - c->h2_write_since_ms >= timeout) {
        /* a peer that has not read for a whole timeout (PING or SETTINGS
         * floods without reading, a stalled client): give up on it */
        cg_h2_conn_kill(c->h2);
    } else {
        if (s->stop_ms != 0 || (cg_h2_conn_active(c->h2) == 0 && now - c->idle_since_ms >= ka)) {
            cg_h2_conn_goaway(c->h2);
        }
        if (timeout > 0) {
            cg_h2_conn_reset_stalled(c->h2, now, timeout);
        }
    }
    cg_py_asgi_h2_io(c);
    Py_DECREF(c);
}

void cg_py_asgi_h2_stop(struct cg_asgi_srv *s)
{
    for (struct cg_asgi_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->state == CG_ASGI_H2) {
            cg_h2_conn_goaway(c->h2); /* streams begun finish; new ones are refused */
            cg_py_asgi_h2_io(c);
        }
    }
}
