/* One ASGI HTTP request/response cycle: the application task, receive()
 * (request body streamed from the connection buffer, http.disconnect when
 * the client leaves), send() (http.response.start/body with more_body,
 * Content-Length or chunked framing, HEAD and no-body statuses), the answer
 * to an application error (500 before the response started, close after),
 * and the access log line. Behaviour follows gunicorn 27's ASGI worker
 * (gunicorn/asgi/protocol.py): its status line, Server/Date/Connection
 * placement, and error responses.
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "cg_http_date.h"
#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_asgi_int.h"

#define MAX_SPANS 32

static void req_dealloc(struct cg_asgi_req *r)
{
    Py_XDECREF((PyObject *)r->conn);
    Py_XDECREF(r->task);
    Py_XDECREF(r->receive_waiter);
    Py_XDECREF(r->send_waiter);
    Py_XDECREF(r->log_info);
    Py_XDECREF(r->resp_headers);
    Py_XDECREF(r->grace_timer);
    free(r->head);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

PyTypeObject cg_asgi_req_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.asgi.Request",
    .tp_basicsize = sizeof(struct cg_asgi_req),
    .tp_dealloc = (destructor)req_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

/* gunicorn's ASGI reason phrases (an unknown status gets "Unknown"). */
static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void cg_py_asgi_http_error(struct cg_asgi_conn *c, int status, const char *reason,
                           const char *msg, const char *extra_headers)
{
    char head[512];
    size_t mlen = strlen(msg);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n",
                     status, reason, mlen, extra_headers ? extra_headers : "");
    struct iovec iov[2] = { { head, (size_t)n }, { (void *)msg, mlen } };

    if (c->state != CG_ASGI_CLOSED) {
        if (cg_py_asgi_conn_write(c, iov, 2) == 0) {
            cg_py_asgi_conn_close_soon(c);
        }
    }
}

/* ---- access log ---- */

static PyObject *latin1(const struct cg_http_span *s)
{
    return PyUnicode_DecodeLatin1(s->ptr, (Py_ssize_t)s->len, NULL);
}

/* (environ, request headers) for cgunicorn.accesslog, as gunicorn's ASGI
 * worker builds its minimal environ. New reference. */
static PyObject *log_info_new(struct cg_asgi_conn *c, const struct cg_http_request *req)
{
    PyObject *env = PyDict_New(), *hdrs = PyList_New(0), *info = NULL;
    const char *q = memchr(req->uri.ptr, '?', req->uri.len);
    size_t plen = q ? (size_t)(q - req->uri.ptr) : req->uri.len;
    char proto[32];

    if (env == NULL || hdrs == NULL) {
        goto done;
    }
    snprintf(proto, sizeof(proto), "HTTP/%d.%d", req->version_major, req->version_minor);
    PyObject *remote = PyTuple_Check(c->client) ? PyTuple_GET_ITEM(c->client, 0) : NULL;
    PyObject *vals[] = {
        latin1(&req->method),
        latin1(&req->uri),
        PyUnicode_DecodeLatin1(req->uri.ptr, (Py_ssize_t)plen, NULL),
        q ? PyUnicode_DecodeLatin1(q + 1, (Py_ssize_t)(req->uri.len - plen - 1), NULL)
          : PyUnicode_FromString(""),
        PyUnicode_FromString(proto),
        remote ? Py_NewRef(remote) : PyUnicode_FromString("-"),
    };
    const char *keys[] = { "REQUEST_METHOD", "RAW_URI",         "PATH_INFO",
                           "QUERY_STRING",   "SERVER_PROTOCOL", "REMOTE_ADDR" };
    int bad = 0;
    for (size_t i = 0; i < 6; i++) {
        if (vals[i] == NULL || PyDict_SetItemString(env, keys[i], vals[i]) < 0) {
            bad = 1;
        }
        Py_XDECREF(vals[i]);
    }
    for (size_t i = 0; !bad && i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        PyObject *name = latin1(&h->name), *value = latin1(&h->value);
        PyObject *key = name ? PyUnicode_FromFormat("HTTP_%U", name) : NULL;
        PyObject *k2 = key ? PyObject_CallMethod(key, "replace", "ss", "-", "_") : NULL;
        PyObject *pair = (name && value) ? PyTuple_Pack(2, name, value) : NULL;
        if (k2 == NULL || pair == NULL || PyDict_SetItem(env, k2, value) < 0 ||
            PyList_Append(hdrs, pair) < 0) {
            bad = 1;
        }
        Py_XDECREF(name);
        Py_XDECREF(value);
        Py_XDECREF(key);
        Py_XDECREF(k2);
        Py_XDECREF(pair);
    }
    if (!bad) {
        info = PyTuple_Pack(2, env, hdrs);
    }
done:
    Py_XDECREF(env);
    Py_XDECREF(hdrs);
    return info;
}

static void log_access(struct cg_asgi_req *r)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *res;

    if (s->wsgi->access_log == NULL || r->log_info == NULL) {
        return;
    }
    PyObject *hdrs = r->resp_headers ? Py_NewRef(r->resp_headers) : PyList_New(0);
    res = hdrs ? PyObject_CallMethod(s->wsgi->access_log, "log", "OiOKOK",
                                     PyTuple_GET_ITEM(r->log_info, 0), r->status, hdrs,
                                     (unsigned long long)r->sent,
                                     PyTuple_GET_ITEM(r->log_info, 1),
                                     (unsigned long long)(cg_py_asgi_now_us() - r->t0_us))
               : NULL;
    if (res == NULL) {
        cg_py_log_exception("access log failed");
    }
    Py_XDECREF(res);
    Py_XDECREF(hdrs);
    Py_CLEAR(r->log_info);
}

/* ---- completion ---- */

static void resolve(struct cg_asgi_srv *s, PyObject **waiter, PyObject *value)
{
    PyObject *f = *waiter;
    if (f == NULL) {
        return;
    }
    *waiter = NULL;
    PyObject *done = PyObject_CallMethodNoArgs(f, s->k.done);
    if (done == Py_False) {
        PyObject *res = PyObject_CallMethodOneArg(f, s->k.set_result, value);
        if (res == NULL) {
            cg_py_log_exception("asgi: resolving a future");
        }
        Py_XDECREF(res);
    } else if (done == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(done);
    Py_DECREF(f);
}

static PyObject *disconnect_msg(struct cg_asgi_srv *s)
{
    PyObject *d = PyDict_New();
    if (d != NULL && PyDict_SetItem(d, s->k.type, s->k.v_http_disconnect) < 0) {
        Py_CLEAR(d);
    }
    return d;
}

/* Counts the request against max_requests (gunicorn's worker.nr). */
static void count_request(struct cg_asgi_srv *s)
{
    struct cg_worker *w = s->w;
    w->nr++;
    if (w->max_requests > 0 && w->nr >= w->max_requests && w->alive) {
        cg_log(CG_LOG_INFO, "Autorestarting worker after current request.");
        w->alive = false;
        PyObject *res = PyObject_CallNoArgs(s->wake);
        if (res == NULL) {
            cg_py_log_exception("asgi: waking the worker loop");
        }
        Py_XDECREF(res);
    }
}

/* The response is complete (or abandoned): log it, then let the connection
 * go on with the next request or close. */
static void finish(struct cg_asgi_req *r, bool keep_alive)
{
    struct cg_asgi_conn *c = r->conn;
    struct cg_asgi_srv *s = c->srv;

    if (r->detached) {
        return;
    }
    r->detached = true;
    log_access(r);
    count_request(s);
    if (r->receive_waiter != NULL) {
        PyObject *m = disconnect_msg(s);
        if (m != NULL) {
            resolve(s, &r->receive_waiter, m);
            Py_DECREF(m);
        } else {
            PyErr_Clear();
        }
    }
    if (c->req == r) {
        cg_py_asgi_conn_request_done(c, keep_alive);
    }
}

static void send_500(struct cg_asgi_req *r)
{
    r->status = 500;
    r->started = true;
    Py_CLEAR(r->resp_headers);
    cg_py_asgi_http_error(r->conn, 500, "Internal Server Error", "Internal Server Error", NULL);
    finish(r, false);
}

static void log_exception_obj(PyObject *exc, const char *what)
{
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
    cg_py_log_exception(what);
}

/* ---- client gone: asgi_disconnect_grace_period ---- */

static void cancel_task(struct cg_asgi_req *r)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *done = r->task ? PyObject_CallMethodNoArgs(r->task, s->k.done) : NULL;
    if (done == Py_False) {
        PyObject *res = PyObject_CallMethodNoArgs(r->task, s->k.cancel);
        Py_XDECREF(res);
    }
    if (PyErr_Occurred()) {
        cg_py_log_exception("asgi: cancelling an application task");
    }
    Py_XDECREF(done);
}

/* call_later target: the grace period is over. */
static PyObject *req_grace_over(PyObject *self, PyObject *unused)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    (void)unused;
    Py_INCREF(r);
    Py_CLEAR(r->grace_timer);
    cancel_task(r);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef grace_def = { "_grace_over", req_grace_over, METH_NOARGS, NULL };

void cg_py_asgi_http_on_lost(struct cg_asgi_req *r)
{
    struct cg_asgi_srv *s = r->conn->srv;
    int grace = s->conf->asgi_disconnect_grace_period;
    PyObject *done = NULL, *cb = NULL;

    if (r->lost || r->task == NULL) {
        return;
    }
    r->lost = true;
    done = PyObject_CallMethodNoArgs(r->task, s->k.done);
    if (done != Py_False) {
        goto cleanup; /* finished already (or cannot tell: nothing to cancel) */
    }
    if (grace <= 0) {
        cancel_task(r);
        goto cleanup;
    }
    cb = PyCFunction_New(&grace_def, (PyObject *)r);
    r->grace_timer = cb ? PyObject_CallFunction(s->call_later, "iO", grace, cb) : NULL;
cleanup:
    if (PyErr_Occurred()) {
        cg_py_log_exception("asgi: arming asgi_disconnect_grace_period");
    }
    Py_XDECREF(done);
    Py_XDECREF(cb);
}

/* task.add_done_callback target: the application call ended. */
static PyObject *req_task_done(PyObject *self, PyObject *task)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *cancelled = PyObject_CallMethodNoArgs(task, s->k.cancelled);
    PyObject *exc = NULL;

    Py_INCREF(r);
    if (r->grace_timer != NULL) {
        PyObject *res = PyObject_CallMethodNoArgs(r->grace_timer, s->k.cancel);
        if (res == NULL) {
            cg_py_log_exception("asgi: disarming asgi_disconnect_grace_period");
        }
        Py_XDECREF(res);
        Py_CLEAR(r->grace_timer);
    }
    if (cancelled == Py_False) {
        exc = PyObject_CallMethodNoArgs(task, s->k.exception);
    }
    if (cancelled == NULL || (cancelled == Py_False && exc == NULL)) {
        cg_py_log_exception("asgi: inspecting the application task");
    }
    if (cancelled == Py_True) {
        cg_log_debug("Request cancelled (client disconnected)");
        if (!r->complete) {
            cg_py_asgi_conn_close(r->conn);
            finish(r, false);
        }
    } else if (exc != NULL && exc != Py_None) {
        if (r->complete) {
            cg_log_debug("Exception after response complete (client disconnected)");
        } else {
            log_exception_obj(exc, "Error in ASGI application");
            if (!r->started && r->conn->state != CG_ASGI_CLOSED) {
                send_500(r);
            } else {
                cg_py_asgi_conn_close(r->conn);
                finish(r, false);
            }
        }
    } else if (!r->started) {
        if (r->conn->state != CG_ASGI_CLOSED) {
            send_500(r);
        } else {
            finish(r, false);
        }
    } else if (!r->complete) {
        if (r->conn->state != CG_ASGI_CLOSED) {
            cg_log(CG_LOG_ERROR, "ASGI application returned without completing the response; "
                                 "closing the connection");
        }
        cg_py_asgi_conn_close(r->conn);
        finish(r, false);
    }
    Py_CLEAR(r->task); /* the task references r through send/receive */
    Py_XDECREF(exc);
    Py_XDECREF(cancelled);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* ---- receive ---- */

/* The request body is malformed (chunk framing, trailers). Before the
 * response started, gunicorn's ASGI worker answers the parser's error status
 * (400) and closes, as for a bad head; after, it can only close. The app
 * then sees http.disconnect and its sends are ignored. */
static void body_error(struct cg_asgi_req *r)
{
    struct cg_asgi_conn *c = r->conn;
    const struct cg_http_error *e = cg_http_parser_error(&c->parser);
    int status = cg_http_error_status(e->kind);

    cg_log_debug("asgi: bad request body: %s", e->detail);
    r->disconnected = true;
    if (r->started || status == 0 || c->state == CG_ASGI_CLOSED) {
        cg_py_asgi_conn_close(c);
        return;
    }
    r->started = r->complete = true;
    r->status = status;
    Py_CLEAR(r->log_info); /* error answers get no access line, as for a bad head */
    cg_py_asgi_http_error(c, status, cg_http_error_reason(e->kind), e->detail, NULL);
    finish(r, false);
}

/* Takes the request body bytes available now. Returns a new message, or
 * NULL without an exception when the caller must wait, or NULL with one. */
static PyObject *take_body(struct cg_asgi_req *r)
{
    struct cg_asgi_conn *c = r->conn;
    struct cg_asgi_srv *s = c->srv;
    struct iovec spans[MAX_SPANS];
    int nspans = 0;
    size_t total = 0;
    bool more = true;

    if (c->state == CG_ASGI_CLOSED || r->disconnected || r->complete) {
        return disconnect_msg(s);
    }
    if (r->body_eof_sent) {
        return NULL; /* wait for the disconnect */
    }
    while (nspans < MAX_SPANS && total < 1024 * 1024) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        enum cg_http_status st =
            cg_http_parser_body(&c->parser, c->in + c->in_start, c->in_end - c->in_start, &used,
                                SIZE_MAX, &data, &dlen);
        c->in_start += used;
        if (st == CG_HTTP_BODY_DATA) {
            spans[nspans++] = (struct iovec){ (void *)data, dlen };
            total += dlen;
            continue;
        }
        if (st == CG_HTTP_BODY_DONE) {
            more = false;
            break;
        }
        if (st == CG_HTTP_ERROR) {
            body_error(r);
            return disconnect_msg(s);
        }
        /* NEED_MORE */
        if (c->eof && nspans == 0) {
            st = cg_http_parser_eof(&c->parser);
            if (st != CG_HTTP_BODY_DONE) {
                /* The client left before the end of the body: the
                 * connection is lost (upstream answers nothing either). */
                r->disconnected = true;
                cg_py_asgi_conn_close(c);
                return disconnect_msg(s);
            }
            more = false;
        }
        break;
    }
    if (nspans == 0 && more) {
        return NULL;
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (body == NULL) {
        return NULL;
    }
    char *d = PyBytes_AS_STRING(body);
    for (int i = 0; i < nspans; i++) {
        memcpy(d, spans[i].iov_base, spans[i].iov_len);
        d += spans[i].iov_len;
    }
    if (!more) {
        r->body_done = true;
        r->body_eof_sent = true;
    }
    PyObject *m = PyDict_New();
    if (m == NULL || PyDict_SetItem(m, s->k.type, s->k.v_http_request) < 0 ||
        PyDict_SetItem(m, s->k.body, body) < 0 ||
        PyDict_SetItem(m, s->k.more_body, more ? Py_True : Py_False) < 0) {
        Py_CLEAR(m);
    }
    Py_DECREF(body);
    /* Room in the buffer again: read on (back-pressure released). */
    if (c->state == CG_ASGI_BUSY && !c->eof && cg_py_asgi_conn_buffered(c) < CG_ASGI_READ_HIGH) {
        cg_py_asgi_conn_want_read(c, true);
    }
    return m;
}

static void send_continue(struct cg_asgi_req *r)
{
    if (r->expect_continue && !r->continue_sent && !r->started) {
        static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
        struct iovec iov = { (void *)line, sizeof(line) - 1 };
        r->continue_sent = true;
        cg_py_asgi_conn_write(r->conn, &iov, 1);
    }
}

static PyObject *req_receive(PyObject *self, PyObject *unused)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    struct cg_asgi_srv *s = r->conn->srv;
    (void)unused;

    if (r->receive_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() waits");
        return NULL;
    }
    if (!r->body_eof_sent && !r->complete) {
        send_continue(r);
    }
    PyObject *m = take_body(r);
    if (m != NULL) {
        PyObject *a = cg_py_asgi_ready_new(m);
        Py_DECREF(m);
        return a;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    r->receive_waiter = PyObject_CallNoArgs(s->create_future);
    if (r->receive_waiter == NULL) {
        return NULL;
    }
    if (r->conn->state == CG_ASGI_BUSY && !r->conn->eof) {
        cg_py_asgi_conn_want_read(r->conn, true);
    }
    return Py_NewRef(r->receive_waiter);
}

void cg_py_asgi_http_on_input(struct cg_asgi_req *r)
{
    if (r->receive_waiter == NULL) {
        return;
    }
    Py_INCREF(r); /* take_body may close the connection, which drops its reference */
    /* After a closed connection, or EOF once the whole body was received,
     * the app learns of the disconnect. With the body incomplete, take_body
     * hands over what is buffered first and then treats EOF as lost. */
    if (r->conn->state == CG_ASGI_CLOSED || (r->conn->eof && r->body_eof_sent)) {
        r->disconnected = true;
    }
    PyObject *m = take_body(r);
    if (m != NULL) {
        resolve(r->conn->srv, &r->receive_waiter, m);
        Py_DECREF(m);
    } else if (PyErr_Occurred()) {
        cg_py_log_exception("asgi: reading a request body");
    }
    Py_DECREF(r);
}

void cg_py_asgi_http_on_drain(struct cg_asgi_req *r)
{
    if (r->send_waiter != NULL) {
        resolve(r->conn->srv, &r->send_waiter, Py_None);
    }
}

/* ---- send ---- */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool valid_value(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return false;
        }
    }
    return true;
}

/* bytes or str (latin-1) to a borrowed buffer; *tmp keeps an encoded str. */
static int as_bytes(PyObject *o, const char **p, Py_ssize_t *n, PyObject **tmp)
{
    if (PyBytes_Check(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        *tmp = PyUnicode_AsLatin1String(o);
        if (*tmp == NULL) {
            return -1;
        }
        *p = PyBytes_AS_STRING(*tmp);
        *n = PyBytes_GET_SIZE(*tmp);
        return 0;
    }
    if (PyByteArray_Check(o)) {
        *p = PyByteArray_AS_STRING(o);
        *n = PyByteArray_GET_SIZE(o);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "ASGI header names and values must be bytes, not %.100s",
                 Py_TYPE(o)->tp_name);
    return -1;
}

struct headbuf {
    char *p;
    size_t len, cap;
};

static int hb_put(struct headbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *nb = realloc(b->p, cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = nb;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static bool name_is(const char *p, size_t n, const char *lower)
{
    return n == strlen(lower) && strncasecmp(p, lower, n) == 0;
}

/* Will the connection close after this response (gunicorn's _will_close)? */
static bool will_close(struct cg_asgi_req *r)
{
    struct cg_worker *w = r->conn->srv->w;
    return r->should_close || !w->alive || r->conn->srv->conf->keepalive <= 0 ||
           (w->max_requests > 0 && w->nr + 1 >= w->max_requests);
}

static PyObject *exc_class(struct cg_asgi_srv *s, bool name)
{
    return name ? s->wsgi->exc_header_name : s->wsgi->exc_header;
}

/* One [name, value] pair of an ASGI headers list, validated (a token name;
 * a value without CR, LF or other controls: never response splitting).
 * Returns 0 with borrowed buffers (*ntmp and *vtmp own encoded copies of str
 * items; the caller releases them), or -1 with an exception. */
static int header_item(struct cg_asgi_srv *s, PyObject *pair, const char **np, Py_ssize_t *nl,
                       PyObject **ntmp, const char **vp, Py_ssize_t *vl, PyObject **vtmp)
{
    PyObject *name = NULL, *value = NULL;
    int rc = -1;

    if (!PyTuple_Check(pair) && !PyList_Check(pair)) {
        PyErr_SetString(PyExc_TypeError, "ASGI response headers must be [name, value] pairs");
        return -1;
    }
    if (PySequence_Size(pair) != 2) {
        PyErr_SetString(PyExc_ValueError, "ASGI response headers must be [name, value] pairs");
        return -1;
    }
    name = PySequence_GetItem(pair, 0);
    value = PySequence_GetItem(pair, 1);
    if (name == NULL || value == NULL || as_bytes(name, np, nl, ntmp) < 0 ||
        as_bytes(value, vp, vl, vtmp) < 0) {
        goto done;
    }
    bool good_name = *nl > 0;
    for (Py_ssize_t j = 0; j < *nl && good_name; j++) {
        good_name = is_tchar((unsigned char)(*np)[j]);
    }
    if (!good_name || !valid_value(*vp, (size_t)*vl)) {
        PyObject *nb = PyBytes_FromStringAndSize(*np, *nl);
        PyObject *rep = nb ? PyObject_Repr(nb) : NULL;
        if (rep != NULL) {
            PyErr_SetObject(exc_class(s, !good_name), rep);
        }
        Py_XDECREF(rep);
        Py_XDECREF(nb);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(value);
    return rc;
}

/* http.response.start: validates and formats the head (written with the
 * first body bytes). Returns 0 or -1 with an exception. */
static int response_start(struct cg_asgi_req *r, PyObject *msg)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *status_o = PyDict_GetItemWithError(msg, s->k.status); /* borrowed */
    PyObject *headers = NULL, *seq = NULL, *log_hdrs = NULL;
    struct headbuf b = { 0 };
    bool has_cl = false, has_te = false, has_server = false, has_date = false, has_conn = false;
    int64_t cl = -1;
    int rc = -1;
    char line[128];

    if (status_o == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "status");
        }
        return -1;
    }
    long status = PyLong_AsLong(status_o);
    if (status == -1 && PyErr_Occurred()) {
        return -1;
    }
    headers = PyDict_GetItemWithError(msg, s->k.headers); /* borrowed */
    if (headers == NULL && PyErr_Occurred()) {
        return -1;
    }
    seq = headers ? PySequence_Fast(headers, "ASGI response headers must be iterable")
                  : PyList_New(0);
    if (seq == NULL) {
        return -1;
    }
    if (s->wsgi->access_log != NULL) {
        log_hdrs = PyList_New(0);
        if (log_hdrs == NULL) {
            goto done;
        }
    }
    int n = snprintf(line, sizeof(line), "HTTP/%d.%d %ld %s\r\n", r->ver_major, r->ver_minor,
                     status, reason_phrase((int)status));
    bool omits = r->is_head || status == 204 || status == 304 || (status >= 100 && status < 200);
    bool forbids_cl = status == 204 || (status >= 100 && status < 200);
    if (hb_put(&b, line, (size_t)n) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *ntmp = NULL, *vtmp = NULL;
        const char *np, *vp;
        Py_ssize_t nl, vl;
        int ok = header_item(s, PySequence_Fast_GET_ITEM(seq, i), &np, &nl, &ntmp, &vp, &vl,
                             &vtmp) == 0;
        bool keep = true;
        if (ok) {
            if (name_is(np, (size_t)nl, "content-length")) {
                has_cl = true;
                char tmp[32];
                size_t k = (size_t)vl < sizeof(tmp) - 1 ? (size_t)vl : sizeof(tmp) - 1;
                memcpy(tmp, vp, k);
                tmp[k] = '\0';
                char *end = NULL;
                long long v = strtoll(tmp, &end, 10);
                cl = (end != tmp && *end == '\0' && v >= 0) ? v : -1;
                keep = !(omits && forbids_cl);
            } else if (name_is(np, (size_t)nl, "transfer-encoding")) {
                has_te = true;
                keep = !omits;
            } else if (name_is(np, (size_t)nl, "server")) {
                has_server = true;
            } else if (name_is(np, (size_t)nl, "date")) {
                has_date = true;
            } else if (name_is(np, (size_t)nl, "connection")) {
                has_conn = true;
            }
        }
        if (ok && keep) {
            ok = hb_put(&b, np, (size_t)nl) == 0 && hb_put(&b, ": ", 2) == 0 &&
                 hb_put(&b, vp, (size_t)vl) == 0 && hb_put(&b, "\r\n", 2) == 0;
        }
        if (ok && log_hdrs != NULL) {
            PyObject *p2 = Py_BuildValue("(NN)", PyUnicode_DecodeLatin1(np, nl, NULL),
                                         PyUnicode_DecodeLatin1(vp, vl, NULL));
            ok = p2 != NULL && PyList_Append(log_hdrs, p2) == 0;
            Py_XDECREF(p2);
        }
        Py_XDECREF(ntmp);
        Py_XDECREF(vtmp);
        if (!ok) {
            goto done;
        }
    }
    r->chunked = has_te && !omits;
    if (!has_cl && !has_te && !omits && (r->ver_major > 1 || r->ver_minor >= 1)) {
        r->chunked = true;
        if (hb_put(&b, "transfer-encoding: chunked\r\n", 28) < 0) {
            goto done;
        }
    }
    r->length = (has_cl && !r->chunked && !omits) ? cl : -1;
    r->close_announced = will_close(r);
    if ((!has_server && hb_put(&b, "Server: gunicorn/asgi\r\n", 23) < 0) ||
        (!has_date && (hb_put(&b, "Date: ", 6) < 0 ||
                       hb_put(&b, cg_http_date_now(), CG_HTTP_DATE_LEN) < 0 ||
                       hb_put(&b, "\r\n", 2) < 0)) ||
        (r->close_announced && !has_conn && hb_put(&b, "Connection: close\r\n", 19) < 0) ||
        hb_put(&b, "\r\n", 2) < 0) {
        goto done;
    }
    r->status = (int)status;
    r->omits_body = omits;
    r->started = true;
    r->head = b.p;
    r->head_len = b.len;
    b.p = NULL;
    Py_XSETREF(r->resp_headers, log_hdrs);
    log_hdrs = NULL;
    rc = 0;
done:
    free(b.p);
    Py_XDECREF(log_hdrs);
    Py_DECREF(seq);
    return rc;
}

/* http.response.informational (e.g. 103 Early Hints), as gunicorn's ASGI
 * worker writes it: only to HTTP/1.1+ clients and before the final
 * response, the status line and the app's headers alone (no Server, Date
 * or framing headers). Returns 0 or -1 with an exception. */
static int send_informational(struct cg_asgi_req *r, PyObject *msg)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *status_o = PyDict_GetItemWithError(msg, s->k.status); /* borrowed */
    PyObject *headers = NULL, *seq = NULL;
    struct headbuf b = { 0 };
    char line[64];
    int rc = -1;

    if (status_o == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "status");
        }
        return -1;
    }
    long status = PyLong_AsLong(status_o);
    if (status == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (status < 100 || status > 199) {
        PyErr_Format(PyExc_ValueError,
                     "http.response.informational status must be 1xx (100-199), not %ld", status);
        return -1;
    }
    if (r->ver_major == 1 && r->ver_minor == 0) {
        return 0; /* HTTP/1.0 clients do not understand 1xx */
    }
    if (r->conn->state == CG_ASGI_CLOSED || r->detached) {
        return 0;
    }
    headers = PyDict_GetItemWithError(msg, s->k.headers); /* borrowed */
    if (headers == NULL && PyErr_Occurred()) {
        return -1;
    }
    seq = headers ? PySequence_Fast(headers, "ASGI response headers must be iterable")
                  : PyList_New(0);
    if (seq == NULL) {
        return -1;
    }
    int n = snprintf(line, sizeof(line), "HTTP/%d.%d %ld %s\r\n", r->ver_major, r->ver_minor,
                     status, reason_phrase((int)status));
    if (hb_put(&b, line, (size_t)n) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *ntmp = NULL, *vtmp = NULL;
        const char *np, *vp;
        Py_ssize_t nl, vl;
        int ok = header_item(s, PySequence_Fast_GET_ITEM(seq, i), &np, &nl, &ntmp, &vp, &vl,
                             &vtmp) == 0 &&
                 hb_put(&b, np, (size_t)nl) == 0 && hb_put(&b, ": ", 2) == 0 &&
                 hb_put(&b, vp, (size_t)vl) == 0 && hb_put(&b, "\r\n", 2) == 0;
        Py_XDECREF(ntmp);
        Py_XDECREF(vtmp);
        if (!ok) {
            goto done;
        }
    }
    if (hb_put(&b, "\r\n", 2) < 0) {
        goto done;
    }
    struct iovec iov = { b.p, b.len };
    cg_py_asgi_conn_write(r->conn, &iov, 1);
    if (status == 100) {
        r->continue_sent = true;
    }
    rc = 0;
done:
    free(b.p);
    Py_DECREF(seq);
    return rc;
}

/* http.response.body. Returns 0 or -1 with an exception. */
static int response_body(struct cg_asgi_req *r, PyObject *msg)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *body = PyDict_GetItemWithError(msg, s->k.body);         /* borrowed */
    PyObject *more_o = PyDict_GetItemWithError(msg, s->k.more_body); /* borrowed */
    Py_buffer view = { 0 };
    struct iovec iov[5];
    int n = 0;
    char prefix[24];
    int more = 0;

    if (PyErr_Occurred()) {
        return -1;
    }
    if (more_o != NULL && (more = PyObject_IsTrue(more_o)) < 0) {
        return -1;
    }
    if (body != NULL && body != Py_None && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    size_t size = view.buf ? (size_t)view.len : 0;
    if (r->omits_body && size > 0) {
        cg_log(CG_LOG_WARNING,
               "ASGI app sent body bytes on a no-body response (status=%d); dropping per "
               "RFC 9110.",
               r->status);
        size = 0;
    }
    if (r->length >= 0 && size > (uint64_t)r->length - r->sent) {
        size = (size_t)((uint64_t)r->length - r->sent);
    }
    if (r->head != NULL) {
        iov[n++] = (struct iovec){ r->head, r->head_len };
    }
    if (size > 0) {
        if (r->chunked) {
            int pl = snprintf(prefix, sizeof(prefix), "%zx\r\n", size);
            iov[n++] = (struct iovec){ prefix, (size_t)pl };
            iov[n++] = (struct iovec){ view.buf, size };
            iov[n++] = (struct iovec){ (void *)(more ? "\r\n" : "\r\n0\r\n\r\n"), more ? 2u : 7u };
        } else {
            iov[n++] = (struct iovec){ view.buf, size };
        }
    } else if (!more && r->chunked) {
        iov[n++] = (struct iovec){ (void *)"0\r\n\r\n", 5 };
    }
    if (n > 0) {
        cg_py_asgi_conn_write(r->conn, iov, n);
    }
    free(r->head);
    r->head = NULL;
    r->sent += size;
    if (view.buf != NULL) {
        PyBuffer_Release(&view);
    }
    if (!more) {
        r->complete = true;
        bool keep = !r->close_announced && (r->length < 0 || r->sent >= (uint64_t)r->length) &&
                    !r->conn->eof;
        finish(r, keep);
    }
    return 0;
}

static PyObject *req_send(PyObject *self, PyObject *msg)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *type;

    if (!PyDict_Check(msg)) {
        PyErr_Format(PyExc_TypeError, "ASGI message must be a dict, not %.100s",
                     Py_TYPE(msg)->tp_name);
        return NULL;
    }
    type = PyDict_GetItemWithError(msg, s->k.type); /* borrowed */
    if (type == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "type");
        }
        return NULL;
    }
    Py_INCREF(type);
    int eq_start = PyUnicode_Check(type) ? PyUnicode_Compare(type, s->k.m_start) == 0 : 0;
    int eq_body = PyUnicode_Check(type) ? PyUnicode_Compare(type, s->k.m_body) == 0 : 0;
    int eq_info = PyUnicode_Check(type) ? PyUnicode_Compare(type, s->k.m_info) == 0 : 0;
    PyObject *ret = NULL;

    if (eq_start) {
        if (r->started) {
            PyErr_SetString(PyExc_RuntimeError, "Response already started");
        } else if (r->conn->state == CG_ASGI_CLOSED || r->detached) {
            ret = Py_NewRef(s->ready_none); /* client gone: ignored, as gunicorn */
        } else if (response_start(r, msg) == 0) {
            ret = Py_NewRef(s->ready_none);
        }
    } else if (eq_body) {
        if (!r->started) {
            PyErr_SetString(PyExc_RuntimeError, "Response not started");
        } else if (r->complete) {
            PyErr_SetString(PyExc_RuntimeError, "Response already complete");
        } else if (r->conn->state == CG_ASGI_CLOSED || r->detached) {
            ret = Py_NewRef(s->ready_none);
        } else if (response_body(r, msg) == 0) {
            if (!r->complete && cg_py_asgi_conn_congested(r->conn)) {
                Py_XDECREF(r->send_waiter);
                r->send_waiter = cg_py_asgi_conn_drain_future(r->conn);
                ret = r->send_waiter ? Py_NewRef(r->send_waiter) : NULL;
            } else {
                ret = Py_NewRef(s->ready_none);
            }
        }
    } else if (eq_info) {
        if (r->started) {
            PyErr_SetString(PyExc_RuntimeError, "Informational response after response start");
        } else if (send_informational(r, msg) == 0) {
            ret = Py_NewRef(s->ready_none);
        }
    } else {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R for an http scope",
                     type);
    }
    Py_DECREF(type);
    return ret;
}

/* ---- start ---- */

static PyMethodDef receive_def = { "receive", req_receive, METH_NOARGS, NULL };
static PyMethodDef send_def = { "send", req_send, METH_O, NULL };
static PyMethodDef done_def = { "_done", req_task_done, METH_O, NULL };

int cg_py_asgi_http_start(struct cg_asgi_conn *c, const struct cg_http_request *req)
{
    struct cg_asgi_srv *s = c->srv;
    struct cg_asgi_req *r = PyObject_New(struct cg_asgi_req, &cg_asgi_req_type);
    PyObject *scope = NULL, *receive = NULL, *send = NULL, *coro = NULL, *done_cb = NULL,
             *res = NULL;
    int rc = -1;

    if (r == NULL) {
        goto fail;
    }
    memset((char *)r + sizeof(PyObject), 0, sizeof(*r) - sizeof(PyObject));
    r->conn = (struct cg_asgi_conn *)Py_NewRef(c);
    r->t0_us = cg_py_asgi_now_us();
    r->ver_major = req->version_major;
    r->ver_minor = req->version_minor;
    r->is_head = req->method.len == 4 && memcmp(req->method.ptr, "HEAD", 4) == 0;
    r->expect_continue = req->expect_continue;
    r->should_close = cg_http_request_should_close(req);
    r->length = -1;
    r->status = 500;
    if (s->wsgi->access_log != NULL && (r->log_info = log_info_new(c, req)) == NULL) {
        goto fail;
    }
    scope = cg_py_asgi_scope(c, req, false);
    receive = scope ? PyCFunction_New(&receive_def, (PyObject *)r) : NULL;
    send = receive ? PyCFunction_New(&send_def, (PyObject *)r) : NULL;
    coro = send ? PyObject_CallFunctionObjArgs(s->app, scope, receive, send, NULL) : NULL;
    r->task = coro ? PyObject_CallOneArg(s->create_task, coro) : NULL;
    done_cb = r->task ? PyCFunction_New(&done_def, (PyObject *)r) : NULL;
    res = done_cb ? PyObject_CallMethodOneArg(r->task, s->k.add_done_callback, done_cb) : NULL;
    if (res == NULL) {
        goto fail;
    }
    Py_XSETREF(c->req, r);
    r = NULL;
    rc = 0;
    goto done;
fail:
    cg_py_log_exception("Error in ASGI application");
    if (r != NULL) {
        Py_CLEAR(r->task);
        r->started = true;
        r->status = 500;
        log_access(r);
    }
    cg_py_asgi_http_error(c, 500, "Internal Server Error", "Internal Server Error", NULL);
done:
    Py_XDECREF((PyObject *)r);
    Py_XDECREF(scope);
    Py_XDECREF(receive);
    Py_XDECREF(send);
    Py_XDECREF(coro);
    Py_XDECREF(done_cb);
    Py_XDECREF(res);
    return rc;
}
