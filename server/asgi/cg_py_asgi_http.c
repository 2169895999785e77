/* One ASGI HTTP request/response cycle: the application task, receive()
 * (request body streamed from the connection buffer, http.disconnect when
 * the client leaves), send() (http.response.start/body with more_body,
 * Content-Length or chunked framing, HEAD and no-body statuses), the answer
 * to an application error (500 before the response started, close after),
 * and the access log line. Behaviour follows gunicorn 27's ASGI worker
 * (gunicorn/asgi/protocol.py): its status line, Server/Date/Connection
 * placement, and error responses.
 *
 * This file holds the request object, its life cycle (start, completion,
 * the task's end, a lost client), errors and the access log; the rest is in
 * cg_py_asgi_http_receive.c (receive()), cg_py_asgi_http_send.c (send())
 * and cg_py_asgi_http_head.c (response and 1xx head formatting).
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "cg_log.h"
#include "cg_metrics.h"
#include "cg_py.h"
#include "cg_http_date.h"
#include "cg_py_asgi_int.h"
#include "cg_statsd.h"

/* The request is no longer in flight (once, whichever comes first). */
static void metrics_end(struct cg_asgi_req *r)
{
    if (r->metrics_started) {
        r->metrics_started = false;
        cg_metrics_request_end();
    }
}

static void req_dealloc(struct cg_asgi_req *r)
{
    metrics_end(r);
    Py_XDECREF((PyObject *)r->conn);
    Py_XDECREF(r->task);
    Py_XDECREF(r->deadline_timer);
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

void cg_py_asgi_http_error(struct cg_asgi_conn *c, int status, const char *reason,
                           const char *msg, const char *extra_headers)
{
    char head[512];
    size_t mlen = strlen(msg);
    size_t n = cg_conn_plain_head(head, sizeof(head), status, reason, mlen, extra_headers);
    struct iovec iov[2] = { { head, n }, { (void *)msg, mlen } };

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

    if (r->status > 0 && (cg_metrics_mine || cg_statsd_on())) {
        uint64_t dur = cg_py_asgi_now_us() - r->t0_us;
        cg_metrics_request_done(r->metrics_method, r->status, dur);
        if (cg_statsd_on()) {
            cg_statsd_request(r->status, dur);
        }
    }
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

void cg_py_asgi_http_resolve(struct cg_asgi_srv *s, PyObject **waiter, PyObject *value)
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

PyObject *cg_py_asgi_http_disconnect_msg(struct cg_asgi_srv *s)
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
void cg_py_asgi_http_finish(struct cg_asgi_req *r, bool keep_alive)
{
    struct cg_asgi_conn *c = r->conn;
    struct cg_asgi_srv *s = c->srv;

    if (r->detached) {
        return;
    }
    r->detached = true;
    log_access(r);
    metrics_end(r);
    count_request(s);
    if (r->receive_waiter != NULL) {
        PyObject *m = cg_py_asgi_http_disconnect_msg(s);
        if (m != NULL) {
            cg_py_asgi_http_resolve(s, &r->receive_waiter, m);
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
    cg_py_asgi_http_finish(r, false);
}

static void send_504(struct cg_asgi_req *r)
{
    r->status = 504;
    r->started = true;
    Py_CLEAR(r->resp_headers);
    cg_py_asgi_http_error(r->conn, 504, "Gateway Timeout",
                          "The request ran longer than request_timeout.", NULL);
    cg_py_asgi_http_finish(r, false);
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

/* ---- request_timeout ---- */

/* call_later target: the request ran past request_timeout. Logs where the
 * task is (once) and cancels it; req_task_done answers 504. */
static PyObject *req_deadline_over(PyObject *self, PyObject *unused)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *mod, *where;
    (void)unused;

    Py_INCREF(r);
    Py_CLEAR(r->deadline_timer);
    mod = r->task ? PyImport_ImportModule("cgunicorn.asgi") : NULL;
    where = mod ? PyObject_CallMethod(mod, "task_stack", "O", r->task) : NULL;
    cg_log(CG_LOG_ERROR, "Request timed out after %d s (request_timeout): %s; where it was:\n%s",
           s->conf->request_timeout, r->what, where && PyUnicode_Check(where)
                                                   ? PyUnicode_AsUTF8(where) : "?");
    PyErr_Clear();
    Py_XDECREF(where);
    Py_XDECREF(mod);
    r->timed_out = true;
    cancel_task(r);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef deadline_def = { "_deadline_over", req_deadline_over, METH_NOARGS, NULL };

static void disarm(PyObject **timer, struct cg_asgi_srv *s, const char *what)
{
    if (*timer != NULL) {
        PyObject *res = PyObject_CallMethodNoArgs(*timer, s->k.cancel);
        if (res == NULL) {
            cg_py_log_exception(what);
        }
        Py_XDECREF(res);
        Py_CLEAR(*timer);
    }
}

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
    disarm(&r->grace_timer, s, "asgi: disarming asgi_disconnect_grace_period");
    disarm(&r->deadline_timer, s, "asgi: disarming request_timeout");
    if (cancelled == Py_False) {
        exc = PyObject_CallMethodNoArgs(task, s->k.exception);
    }
    if (cancelled == NULL || (cancelled == Py_False && exc == NULL)) {
        cg_py_log_exception("asgi: inspecting the application task");
    }
    if (cancelled == Py_True && r->timed_out) {
        if (!r->started && r->conn->state != CG_ASGI_CLOSED) {
            send_504(r);
        } else if (!r->complete) {
            cg_py_asgi_conn_close(r->conn); /* the response is cut */
            cg_py_asgi_http_finish(r, false);
        }
    } else if (cancelled == Py_True) {
        cg_log_debug("Request cancelled (client disconnected)");
        if (!r->complete) {
            cg_py_asgi_conn_close(r->conn);
            cg_py_asgi_http_finish(r, false);
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
                cg_py_asgi_http_finish(r, false);
            }
        }
    } else if (!r->started) {
        if (r->conn->state != CG_ASGI_CLOSED) {
            send_500(r);
        } else {
            cg_py_asgi_http_finish(r, false);
        }
    } else if (!r->complete) {
        if (r->conn->state != CG_ASGI_CLOSED) {
            cg_log(CG_LOG_ERROR, "ASGI application returned without completing the response; "
                                 "closing the connection");
        }
        cg_py_asgi_conn_close(r->conn);
        cg_py_asgi_http_finish(r, false);
    }
    Py_CLEAR(r->task); /* the task references r through send/receive */
    Py_XDECREF(exc);
    Py_XDECREF(cancelled);
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* ---- start ---- */

static PyMethodDef receive_def = { "receive", cg_py_asgi_http_receive, METH_NOARGS, NULL };
static PyMethodDef send_def = { "send", cg_py_asgi_http_send, METH_O, NULL };
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
    r->metrics_method = cg_metrics_req_method(req);
    r->metrics_started = cg_metrics_mine != NULL;
    cg_metrics_request_start(req);
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
    if (s->conf->request_timeout > 0) {
        snprintf(r->what, sizeof(r->what), "%.*s %.*s", (int)req->method.len, req->method.ptr,
                 (int)(req->uri.len > 200 ? 200 : req->uri.len), req->uri.ptr);
        PyObject *cb = PyCFunction_New(&deadline_def, (PyObject *)r);
        r->deadline_timer = cb ? PyObject_CallFunction(s->call_later, "iO",
                                                       s->conf->request_timeout, cb)
                               : NULL;
        Py_XDECREF(cb);
        if (r->deadline_timer == NULL) {
            cg_py_log_exception("asgi: arming request_timeout");
        }
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
