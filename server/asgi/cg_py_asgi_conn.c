/* An ASGI worker connection: accept on the inherited listeners, read into
 * the connection's buffer when the loop says the socket is readable, drive
 * the request parser, hand heads to the HTTP or WebSocket side, write with
 * writev and keep the rest until the socket is writable again, keep-alive,
 * pipelining (the next head waits in the buffer until the response before
 * it is complete) and back-pressure (reading stops while too many unread
 * bytes pile up; send() waits while too many unsent bytes do).
 *
 * Loop thread, GIL held. Every callback takes a reference to the connection
 * for its duration: closing drops the list's reference. */
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_asgi_int.h"
#include "cg_transport_tls.h"

#define READ_CHUNK (64 * 1024)

static void process_input(struct cg_asgi_conn *c);

/* ---- the Python type ---- */

static void conn_dealloc(struct cg_asgi_conn *c)
{
    if (c->parser_ready) {
        cg_http_parser_deinit(&c->parser);
    }
    cg_transport_close(&c->t);
    cg_conn_buf_free(&c->in);
    cg_h2_upgrade_free(c->h2up);
    free(c->out);
    Py_XDECREF(c->client);
    Py_XDECREF(c->server);
    Py_XDECREF(c->on_read);
    Py_XDECREF(c->on_write);
    Py_XDECREF(c->drain_waiter);
    Py_XDECREF((PyObject *)c->req);
    Py_XDECREF((PyObject *)c->ws);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

PyTypeObject cg_asgi_conn_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.asgi.Connection",
    .tp_basicsize = sizeof(struct cg_asgi_conn),
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

/* ---- loop registration ---- */

static void loop_call(PyObject *fn, int fd, PyObject *cb)
{
    PyObject *r = cb ? PyObject_CallFunction(fn, "iO", fd, cb) : PyObject_CallFunction(fn, "i", fd);
    if (r == NULL) {
        cg_py_log_exception("asgi worker: event loop registration failed");
    }
    Py_XDECREF(r);
}

void cg_py_asgi_conn_want_read(struct cg_asgi_conn *c, bool on)
{
    if (c->state == CG_ASGI_CLOSED || c->reading == on) {
        return;
    }
    c->reading = on;
    if (c->is_stream) { /* no socket: the session's news runs the reader */
        if (on) {
            cg_py_asgi_h2_schedule(c);
        }
        return;
    }
    loop_call(on ? c->srv->add_reader : c->srv->remove_reader, c->t.fd, on ? c->on_read : NULL);
}

void cg_py_asgi_conn_want_write(struct cg_asgi_conn *c, bool on)
{
    if (c->state == CG_ASGI_CLOSED || c->writing == on) {
        return;
    }
    c->writing = on;
    if (c->is_stream) {
        if (on) {
            cg_py_asgi_h2_schedule(c);
        }
        return;
    }
    loop_call(on ? c->srv->add_writer : c->srv->remove_writer, c->t.fd, on ? c->on_write : NULL);
}

/* ---- close ---- */

static void resolve_drain(struct cg_asgi_conn *c)
{
    if (c->req != NULL) {
        cg_py_asgi_http_on_drain(c->req);
    }
    if (c->ws != NULL) {
        cg_py_asgi_ws_on_drain(c->ws);
    }
}

static void listen_update(struct cg_asgi_srv *s);

/* Moves the server's reference to a closed connection to s->closed and,
 * for the first one, asks the loop to release them once the running
 * callback returned. Without a loop (the worker's teardown) they wait for
 * cg_py_asgi_conn_release. */
static void release_later(struct cg_asgi_srv *s, struct cg_asgi_conn *c)
{
    if (!cg_conn_release_push(&s->closed, &c->rel) || s->call_soon == NULL ||
        s->release_cb == NULL) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* close may run while an exception is pending */
    PyObject *h = PyObject_CallOneArg(s->call_soon, s->release_cb);
    if (h == NULL) {
        PyErr_Clear(); /* the loop is closing: the teardown releases them */
    }
    Py_XDECREF(h);
    PyErr_Restore(type, value, tb);
}

void cg_py_asgi_conn_close(struct cg_asgi_conn *c)
{
    struct cg_asgi_srv *s = c->srv;

    if (c->state == CG_ASGI_CLOSED) {
        return;
    }
    Py_INCREF(c);
    cg_py_asgi_conn_want_read(c, false);
    cg_py_asgi_conn_want_write(c, false);
    if (c->state == CG_ASGI_H2) {
        cg_py_asgi_h2_close(c); /* its streams first: they use the session */
    }
    c->state = CG_ASGI_CLOSED;
    c->eof = true;
    cg_transport_close(&c->t);
    c->out_start = c->out_end = 0;
    if (c->is_stream) {
        cg_py_asgi_h2_stream_closed(c); /* its parent's list held the reference */
    } else {
        if (c->prev != NULL) {
            c->prev->next = c->next;
        } else {
            s->conns = c->next;
        }
        if (c->next != NULL) {
            c->next->prev = c->prev;
        }
        c->prev = c->next = NULL;
        s->nconns--;
        s->cap_blocked = false;
    }
    /* Whoever waits on this connection learns that it is gone. */
    if (c->req != NULL) {
        cg_py_asgi_http_on_input(c->req);
        cg_py_asgi_http_on_lost(c->req);
    }
    if (c->ws != NULL) {
        cg_py_asgi_ws_on_input(c->ws);
    }
    resolve_drain(c);
    Py_CLEAR(c->req); /* it references c */
    Py_CLEAR(c->ws);
    Py_CLEAR(c->on_read); /* they reference c: break the cycle */
    Py_CLEAR(c->on_write);
    release_later(s, c); /* the list's reference */
    listen_update(s);
    Py_DECREF(c);
}

static void release_one(struct cg_conn_release_node *node, void *arg)
{
    struct cg_asgi_conn *c =
        (struct cg_asgi_conn *)((char *)node - offsetof(struct cg_asgi_conn, rel));
    (void)arg;

    Py_DECREF(c); /* may free it: nothing runs on it any more */
}

void cg_py_asgi_conn_release(struct cg_asgi_srv *s)
{
    cg_conn_release_run(&s->closed, release_one, NULL);
}

/* The response is out and the connection ends: when the client may still
 * be sending (a body the app did not read, bytes buffered or unread in the
 * kernel), a lingering close -- FIN now, its input discarded until its FIN
 * or CG_LINGER_MS (cg_listen.h) -- so that it gets the whole response, not
 * a reset; else the close. */
static void conn_finish(struct cg_asgi_conn *c, bool linger)
{
    if (c->is_stream) { /* its response is complete: the stream ends */
        c->h2_clean = true;
        cg_py_asgi_conn_close(c);
        return;
    }
    bool input = !c->eof && (linger || c->in.end > c->in.start ||
                             cg_http_parser_body_pending(&c->parser) ||
                             cg_transport_unread(&c->t) != 0);

    if (!input || c->linger_until_ms != 0 || cg_transport_shutdown(&c->t) < 0) {
        cg_py_asgi_conn_close(c);
        return;
    }
    c->close_when_flushed = false;
    c->linger_until_ms = cg_monotonic_ms() + CG_LINGER_MS;
    c->lingered = 0;
    c->in.start = c->in.end = 0;
    cg_py_asgi_conn_want_read(c, true);
}

/* Lingering: reads and drops what arrived; closes at EOF, an error, or past
 * CG_LINGER_MAX bytes. */
static void linger_step(struct cg_asgi_conn *c)
{
    char scratch[16384];

    for (;;) {
        ssize_t n = cg_transport_recv(&c->t, scratch, sizeof(scratch), 0);
        if (n == CG_TRANSPORT_AGAIN) {
            return;
        }
        if (n <= 0 || (c->lingered += (size_t)n) > CG_LINGER_MAX) {
            cg_py_asgi_conn_close(c);
            return;
        }
    }
}

void cg_py_asgi_conn_close_soon(struct cg_asgi_conn *c)
{
    if (c->out_end == c->out_start) {
        conn_finish(c, false);
        return;
    }
    c->close_when_flushed = true;
    cg_py_asgi_conn_want_read(c, false);
}

/* ---- writing ---- */

static int out_append(struct cg_asgi_conn *c, const char *p, size_t n)
{
    if (c->out_start > 0 && c->out_start == c->out_end) {
        c->out_start = c->out_end = 0;
    }
    if (c->out_end + n > c->out_cap) {
        if (c->out_start > 0) {
            memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
            c->out_end -= c->out_start;
            c->out_start = 0;
        }
        if (c->out_end + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 16384;
            while (cap < c->out_end + n) {
                cap *= 2;
            }
            char *nb = realloc(c->out, cap);
            if (nb == NULL) {
                return -1;
            }
            c->out = nb;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_end, p, n);
    c->out_end += n;
    return 0;
}

int cg_py_asgi_conn_write(struct cg_asgi_conn *c, const struct iovec *iov, int n)
{
    size_t total = 0, done = 0;

    if (c->state == CG_ASGI_CLOSED) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        total += iov[i].iov_len;
    }
    if (c->out_end == c->out_start && total > 0) {
        ssize_t w = cg_transport_sendv(&c->t, iov, n, 0);
        if (w == -1) {
            if (errno != EPIPE && errno != ECONNRESET) {
                cg_log_errno(CG_LOG_DEBUG, errno, "asgi: writing a response");
            }
            cg_py_asgi_conn_close(c);
            return -1;
        }
        done = w > 0 ? (size_t)w : 0;
    }
    /* Keep what the socket did not take. */
    size_t skip = done;
    for (int i = 0; i < n && done < total; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        if (out_append(c, (const char *)iov[i].iov_base + skip, iov[i].iov_len - skip) < 0) {
            cg_log(CG_LOG_ERROR, "asgi: out of memory buffering a response; closing");
            cg_py_asgi_conn_close(c);
            return -1;
        }
        skip = 0;
    }
    if (c->out_end > c->out_start) {
        cg_py_asgi_conn_want_write(c, true);
    }
    return 0;
}

bool cg_py_asgi_conn_congested(const struct cg_asgi_conn *c)
{
    return c->state != CG_ASGI_CLOSED && c->out_end - c->out_start > CG_ASGI_WRITE_HIGH;
}

PyObject *cg_py_asgi_conn_drain_future(struct cg_asgi_conn *c)
{
    return PyObject_CallNoArgs(c->srv->create_future);
}

static PyObject *conn_on_read(PyObject *self, PyObject *unused);

static PyObject *conn_on_write(PyObject *self, PyObject *unused)
{
    struct cg_asgi_conn *c = (struct cg_asgi_conn *)self;
    (void)unused;

    if (c->state == CG_ASGI_H2) {
        cg_py_asgi_h2_io(c);
        Py_RETURN_NONE;
    }
    Py_INCREF(c);
    if (c->read_wants_write && c->state != CG_ASGI_CLOSED) {
        c->read_wants_write = false;
        Py_XDECREF(conn_on_read(self, NULL));
    }
    while (c->state != CG_ASGI_CLOSED && c->out_end > c->out_start) {
        struct iovec iov = { c->out + c->out_start, c->out_end - c->out_start };
        ssize_t w = cg_transport_sendv(&c->t, &iov, 1, 0);
        if (w == CG_TRANSPORT_AGAIN) {
            break;
        }
        if (w <= 0) {
            cg_py_asgi_conn_close(c);
            break;
        }
        c->out_start += (size_t)w;
    }
    if (c->state != CG_ASGI_CLOSED && c->out_end == c->out_start) {
        c->out_start = c->out_end = 0;
        cg_py_asgi_conn_want_write(c, c->read_wants_write);
        if (c->close_when_flushed) {
            conn_finish(c, false);
        } else if (c->state == CG_ASGI_H2UP && c->h2up_sent) {
            cg_py_asgi_h2_upgrade_step(c); /* the 101 is out: the session starts */
        }
    }
    if (!cg_py_asgi_conn_congested(c)) {
        resolve_drain(c);
    }
    Py_DECREF(c);
    Py_RETURN_NONE;
}

/* ---- reading ---- */

/* Reads once. Returns bytes read, 0 on EOF/error (c->eof set), -1 when the
 * transport would block. */
static ssize_t conn_fill(struct cg_asgi_conn *c)
{
    ssize_t n = cg_conn_buf_fill(&c->in, &c->t, READ_CHUNK / 4);

    if (n == CG_TRANSPORT_AGAIN) {
        if (c->t.want == POLLOUT) { /* a TLS read that must write first */
            c->read_wants_write = true;
            cg_py_asgi_conn_want_write(c, true);
        }
        return -1;
    }
    if (n <= 0) {
        c->eof = true;
        return 0;
    }
    return n;
}

static PyObject *conn_on_read(PyObject *self, PyObject *unused)
{
    struct cg_asgi_conn *c = (struct cg_asgi_conn *)self;
    (void)unused;

    if (c->state == CG_ASGI_H2) {
        cg_py_asgi_h2_io(c);
        Py_RETURN_NONE;
    }
    Py_INCREF(c);
    if (c->state != CG_ASGI_CLOSED && c->linger_until_ms != 0) {
        linger_step(c);
    } else if (c->state != CG_ASGI_CLOSED && conn_fill(c) != -1) {
        if (c->eof) {
            cg_py_asgi_conn_want_read(c, false);
        }
        if (!c->srv->h2_on || c->h2_checked || !cg_py_asgi_h2_check(c)) {
            process_input(c);
        }
    } else if (c->state != CG_ASGI_CLOSED && c->srv->h2_on && !c->h2_checked &&
               cg_transport_is_tls(&c->t)) {
        cg_py_asgi_h2_check(c); /* the handshake may be done with no byte yet */
    }
    Py_DECREF(c);
    Py_RETURN_NONE;
}

/* Answers a request error the way gunicorn's ASGI worker does (its
 * text/plain page), logged as its WSGI workers' handle_error does. */
static void parse_error(struct cg_asgi_conn *c)
{
    cg_py_asgi_conn_error_page(c, cg_http_parser_error(&c->parser));
}

void cg_py_asgi_conn_error_page(struct cg_asgi_conn *c, const struct cg_http_error *e)
{
    char page[CG_HTTP_ERROR_RESPONSE_MAX];
    size_t n = cg_conn_error_page(e, CG_CONN_PAGE_PLAIN, page, sizeof(page));

    if (n == 0) {
        cg_py_asgi_conn_close(c);
        return;
    }
    cg_conn_log_request_error(e, &c->peer);
    struct iovec iov = { page, n };
    if (cg_py_asgi_conn_write(c, &iov, 1) == 0) {
        cg_py_asgi_conn_close_soon(c);
    }
}

/* Discards the unread rest of a request body (keep-alive after a response
 * that did not read it). Returns true when the body ended. */
static bool drain_body(struct cg_asgi_conn *c)
{
    size_t skipped = 0;

    switch (cg_conn_body_skip(&c->parser, &c->in, &skipped)) {
    case CG_CONN_SKIP_DONE:
        return true;
    case CG_CONN_SKIP_ERROR:
        conn_finish(c, false); /* the response is out; the client may still be sending */
        return false;
    case CG_CONN_SKIP_MORE:
        break;
    }
    if (c->eof) {
        cg_py_asgi_conn_close(c);
    }
    return false;
}

static void process_input(struct cg_asgi_conn *c)
{
    while (c->state != CG_ASGI_CLOSED) {
        switch (c->state) {
        case CG_ASGI_IDLE: {
            size_t used = 0;
            enum cg_http_status st = CG_HTTP_NEED_MORE;
            if (c->in.end > c->in.start) {
                st = cg_http_parser_head(&c->parser, c->in.p + c->in.start, c->in.end - c->in.start,
                                         &used);
                c->in.start += used;
            }
            if (st == CG_HTTP_ERROR) {
                parse_error(c);
                return;
            }
            if (st == CG_HTTP_NEED_MORE) {
                if (c->eof) {
                    if (cg_http_parser_eof(&c->parser) == CG_HTTP_ERROR &&
                        cg_http_parser_error(&c->parser)->kind != CG_HTTP_ERR_NO_MORE_DATA) {
                        parse_error(c);
                    } else {
                        cg_py_asgi_conn_close(c);
                    }
                    return;
                }
                cg_py_asgi_conn_want_read(c, true);
                return;
            }
            /* HEAD_DONE */
            const struct cg_http_request *req = cg_http_parser_request(&c->parser);
            if (!c->is_stream && c->srv->h2_on && cg_py_asgi_h2_upgrade_begin(c, req)) {
                break;
            }
            /* no WebSocket over HTTP/2 (RFC 8441 is not offered; nghttp2
             * refuses the HTTP/1 Upgrade headers on a stream anyway) */
            if (!c->is_stream && cg_py_asgi_ws_is_upgrade(req)) {
                cg_py_asgi_ws_start(c, req);
                return;
            }
            c->state = CG_ASGI_BUSY;
            if (cg_py_asgi_http_start(c, req) < 0) {
                return;
            }
            break;
        }
        case CG_ASGI_BUSY:
            if (c->req != NULL) {
                cg_py_asgi_http_on_input(c->req);
            }
            /* EOF: gunicorn's ASGI worker takes the client's FIN for a lost
             * connection (the grace period starts); a response the app
             * still sends in time is delivered before closing. */
            if (c->eof && c->req != NULL && c->state == CG_ASGI_BUSY) {
                cg_py_asgi_http_on_lost(c->req);
            }
            if (c->state == CG_ASGI_BUSY) {
                /* Back-pressure: stop reading while the app is behind. */
                cg_py_asgi_conn_want_read(c, !c->eof &&
                                                 cg_py_asgi_conn_buffered(c) < CG_ASGI_READ_HIGH);
                return;
            }
            break;
        case CG_ASGI_DRAIN:
            if (!drain_body(c)) {
                if (c->state == CG_ASGI_DRAIN) {
                    cg_py_asgi_conn_want_read(c, !c->eof);
                }
                return;
            }
            cg_http_parser_next(&c->parser);
            c->state = CG_ASGI_IDLE;
            c->idle_since_ms = cg_monotonic_ms();
            break;
        case CG_ASGI_WS:
            if (c->ws != NULL) {
                cg_py_asgi_ws_on_input(c->ws);
            }
            return;
        case CG_ASGI_H2UP:
            cg_py_asgi_h2_upgrade_step(c);
            return;
        case CG_ASGI_H2: /* its input is the session's (cg_py_asgi_h2_io) */
        case CG_ASGI_CLOSED:
            return;
        }
    }
}

void cg_py_asgi_conn_request_done(struct cg_asgi_conn *c, bool keep_alive)
{
    if (c->state == CG_ASGI_CLOSED) {
        return;
    }
    Py_CLEAR(c->req);
    /* keep_alive means the head went out without "Connection: close": the
     * client may send its next request at once, so the connection stays
     * open even when the worker began to stop after that head (a QUIT's
     * handler runs between any two bytecodes of the app). The next request
     * is answered with "Connection: close"; an idle one ends with the stop's
     * sweep (a FIN). Closing here instead cut that request. */
    if (!keep_alive || c->is_stream) { /* a stream: one request */
        cg_py_asgi_conn_close_soon(c);
        return;
    }
    Py_INCREF(c);
    c->idle_since_ms = cg_monotonic_ms();
    if (cg_http_parser_body_done(&c->parser)) {
        cg_http_parser_next(&c->parser);
        c->state = CG_ASGI_IDLE;
    } else {
        c->state = CG_ASGI_DRAIN;
    }
    if (c->srv->cap_blocked) { /* kept alive: closable at the cap */
        c->srv->cap_blocked = false;
        listen_update(c->srv);
    }
    process_input(c); /* a pipelined request may be waiting */
    Py_DECREF(c);
}

/* Closes what has waited too long: lingering closes past their bound, and
 * idle connections (waiting for a request, a new one that sent nothing yet
 * too, or discarding an unread body) past `keepalive` -- or, once the
 * worker stops, past CG_STOP_IDLE_MS (CG_QUIT_IDLE_MS on QUIT) from the
 * stop or their last request, whichever is later. An idle connection
 * ends with a FIN and a lingering close: a request the client is sending
 * just then meets a close it can see, not a reset. */
void cg_py_asgi_conn_sweep(struct cg_asgi_srv *s)
{
    uint64_t now = cg_monotonic_ms();
    uint64_t ka = (uint64_t)(s->conf->keepalive > 0 ? s->conf->keepalive : 0) * 1000u;
    uint64_t stop_idle = s->quick ? CG_QUIT_IDLE_MS : CG_STOP_IDLE_MS;
    struct cg_asgi_conn *c = s->conns;

    while (c != NULL) {
        struct cg_asgi_conn *next = c->next;
        if (c->state == CG_ASGI_H2) {
            cg_py_asgi_h2_sweep(c, now);
            c = next;
            continue;
        }
        if (c->linger_until_ms != 0) {
            if (now >= c->linger_until_ms) {
                cg_py_asgi_conn_close(c);
            }
            c = next;
            continue;
        }
        bool idle = (c->state == CG_ASGI_IDLE && c->in.end == c->in.start) ||
                    c->state == CG_ASGI_DRAIN;
        uint64_t since = c->idle_since_ms > s->stop_ms ? c->idle_since_ms : s->stop_ms;
        bool expired = now - c->idle_since_ms >= ka || (s->stop_ms != 0 && now - since >= stop_idle);
        /* Bytes the kernel holds are a request the read callback is about
         * to see: that connection is not idle. */
        if (idle && expired &&
            (c->state == CG_ASGI_DRAIN || cg_transport_unread(&c->t) == 0)) {
            conn_finish(c, true);
        }
        c = next;
    }
}

/* ---- accept ---- */

static PyMethodDef on_read_def = { "on_read", conn_on_read, METH_NOARGS, NULL };
static PyMethodDef on_write_def = { "on_write", conn_on_write, METH_NOARGS, NULL };

static struct cg_asgi_conn *conn_new(struct cg_asgi_srv *s, int fd, const struct cg_listener *l,
                                     const struct sockaddr_storage *peer)
{
    struct cg_asgi_conn *c = PyObject_New(struct cg_asgi_conn, &cg_asgi_conn_type);
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);

    if (c == NULL) {
        close(fd);
        return NULL;
    }
    memset((char *)c + sizeof(PyObject), 0, sizeof(*c) - sizeof(PyObject));
    c->srv = s;
    cg_transport_init(&c->t, fd);
    c->l = l;
    c->peer = *peer;
    c->state = CG_ASGI_IDLE;
    c->idle_since_ms = cg_monotonic_ms();
    c->client = cg_py_asgi_addr(l->family == AF_UNIX ? NULL : (const struct sockaddr *)peer);
    if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0 && l->family != AF_UNIX) {
        c->server = cg_py_asgi_addr((struct sockaddr *)&local);
    } else {
        c->server = Py_NewRef(Py_None);
    }
    c->on_read = PyCFunction_New(&on_read_def, (PyObject *)c);
    c->on_write = PyCFunction_New(&on_write_def, (PyObject *)c);
    if (c->client == NULL || c->server == NULL || c->on_read == NULL || c->on_write == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    cg_http_parser_init(&c->parser, &s->wsgi->limits,
                        l->family == AF_UNIX ? NULL : (const struct sockaddr *)peer);
    c->parser_ready = true;
    return c;
}

struct cg_asgi_conn *cg_py_asgi_conn_new_stream(struct cg_asgi_conn *parent,
                                                struct cg_h2_job *job)
{
    struct cg_asgi_srv *s = parent->srv;
    struct cg_asgi_conn *c = PyObject_New(struct cg_asgi_conn, &cg_asgi_conn_type);

    if (c == NULL) {
        return NULL;
    }
    memset((char *)c + sizeof(PyObject), 0, sizeof(*c) - sizeof(PyObject));
    c->srv = s;
    cg_h2_job_transport(job, &c->t);
    c->is_stream = true;
    c->job = job;
    c->parent = parent;
    c->h2_checked = true;
    c->l = parent->l;
    c->peer = parent->peer;
    c->state = CG_ASGI_IDLE;
    c->idle_since_ms = cg_monotonic_ms();
    c->client = Py_NewRef(parent->client);
    c->server = Py_NewRef(parent->server);
    cg_http_parser_init(&c->parser, &s->hub.limits,
                        c->l->family == AF_UNIX ? NULL : (const struct sockaddr *)&c->peer);
    c->parser_ready = true;
    return c;
}

void cg_py_asgi_conn_stream_step(struct cg_asgi_conn *c)
{
    Py_INCREF(c);
    if (!c->started) {
        c->started = true;
        if (cg_h2_job_closed(c->job)) { /* reset before it ran */
            cg_py_asgi_conn_close(c);
        } else {
            c->reading = true;
        }
    }
    /* No level-triggered reader here: read on while it wants to and the
     * stream has bytes (a few rounds, then its turn comes again). */
    int rounds = 0;
    while (c->state != CG_ASGI_CLOSED && c->reading && !c->eof) {
        if (++rounds > 16) {
            cg_py_asgi_h2_schedule(c);
            break;
        }
        if (conn_fill(c) == -1) {
            break;
        }
        if (c->eof) {
            cg_py_asgi_conn_want_read(c, false);
        }
        process_input(c);
    }
    if (c->state != CG_ASGI_CLOSED && c->writing) {
        Py_XDECREF(conn_on_write((PyObject *)c, NULL));
    }
    Py_DECREF(c);
}

static void listen_set(struct cg_asgi_srv *s, bool on)
{
    for (size_t i = 0; i < s->w->nlisteners; i++) {
        if (on) {
            loop_call(s->add_reader, s->w->listeners[i].fd,
                      PyList_GET_ITEM(s->listen_cbs, (Py_ssize_t)i));
        } else {
            loop_call(s->remove_reader, s->w->listeners[i].fd, NULL);
        }
    }
}

/* Watches the listeners while accepting and below worker_connections. */
static void listen_update(struct cg_asgi_srv *s)
{
    bool want = ((s->accepting && s->w->alive) || s->queue_open) &&
                (s->conf->worker_connections <= 0 ||
                 s->nconns < (size_t)s->conf->worker_connections ||
                 (s->w->alive && !s->cap_blocked));
    if (want != s->listening) {
        s->listening = want;
        listen_set(s, want);
    }
}

void cg_py_asgi_listen(struct cg_asgi_srv *s)
{
    listen_update(s);
}

/* Accepts one connection from l; NULL when there is none (or it could not
 * be set up). The server's list holds the reference returned (borrowed). */
static struct cg_asgi_conn *accept_one(struct cg_asgi_srv *s, const struct cg_listener *l)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                cg_log_errno(CG_LOG_ERROR, errno, "accept on %s", l->name);
            }
            return NULL;
        }
        if (l->family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        } else {
            memset(&peer, 0, sizeof(peer));
            peer.ss_family = AF_UNIX;
        }
        struct cg_asgi_conn *c = conn_new(s, fd, l, &peer);
        if (c == NULL) {
            cg_py_log_exception("asgi: cannot set up a connection");
            return NULL;
        }
        /* The list holds the new reference. */
        c->next = s->conns;
        if (s->conns != NULL) {
            s->conns->prev = c;
        }
        s->conns = c;
        s->nconns++;
        cg_py_asgi_conn_want_read(c, true);
        listen_update(s);
        if (!s->w->alive) { /* draining: read what it sent before a sweep takes it for idle */
            PyObject *r = conn_on_read((PyObject *)c, NULL);
            Py_XDECREF(r);
        }
        return c;
    }
}

/* At worker_connections, as nginx does with its reusable connections: the
 * oldest connection that waits for a request and has sent no byte of it
 * (new, or kept alive), or NULL when every connection is busy. A slow head
 * that has begun is never taken. */
static struct cg_asgi_conn *idle_victim(struct cg_asgi_srv *s)
{
    struct cg_asgi_conn *tail = s->conns;

    while (tail != NULL && tail->next != NULL) {
        tail = tail->next; /* the list is newest first */
    }
    for (struct cg_asgi_conn *c = tail; c != NULL; c = c->prev) {
        if (c->state == CG_ASGI_IDLE && c->in.end == c->in.start &&
            !c->parser.head_seen_bytes && cg_transport_unread(&c->t) == 0) {
            return c;
        }
    }
    return NULL;
}

PyObject *cg_py_asgi_accept(struct cg_asgi_srv *s, size_t idx)
{
    if (s->queue_open) {
        cg_py_asgi_drain_queues(s);
        Py_RETURN_NONE;
    }
    for (int i = 0; i < 64 && s->listening; i++) {
        struct cg_asgi_conn *victim = NULL;
        if (s->conf->worker_connections > 0 &&
            s->nconns >= (size_t)s->conf->worker_connections) {
            victim = idle_victim(s);
            if (victim == NULL) {
                s->cap_blocked = true; /* until a connection ends or goes idle */
                listen_update(s);
                break;
            }
        }
        if (accept_one(s, &s->w->listeners[idx]) == NULL) {
            break; /* nobody was waiting: the victim stays */
        }
        if (victim != NULL) {
            cg_py_asgi_conn_close(victim);
            cg_worker_cap_evicted(&s->cap_log, s->conf->worker_connections);
        }
    }
    Py_RETURN_NONE;
}

void cg_py_asgi_drain_queues(struct cg_asgi_srv *s)
{
    bool more = true;

    while (more) {
        more = false;
        for (size_t i = 0; i < s->w->nlisteners; i++) {
            if (s->conf->worker_connections > 0 &&
                s->nconns >= (size_t)s->conf->worker_connections) {
                listen_update(s);
                return; /* more once connections are done */
            }
            if (accept_one(s, &s->w->listeners[i]) != NULL) {
                more = true;
            }
        }
    }
    s->queue_open = false;
    listen_update(s);
}
