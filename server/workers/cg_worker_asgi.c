/* The asgi worker: builds the serving state (struct cg_asgi_srv) and a small
 * Python-visible Server object, then hands over to cgunicorn.asgi.run(),
 * which owns the event loop, the lifespan protocol and the shutdown
 * sequence, and calls back into Server for the C parts: watching the
 * listeners and the signal pipe, liveness and keep-alive sweeps, and
 * closing connections.
 *
 * Signals: the self-pipe (cg_sig_fd()) is a loop reader. TERM (or
 * max_requests, or a parent change) asks for a graceful stop: stop
 * accepting, serve the listen queues (TERM), end idle keep-alive
 * connections after CG_STOP_IDLE_MS (cg_worker.h), let in-flight requests
 * finish within graceful_timeout, run lifespan shutdown. QUIT/INT (a
 * Python handler that defers to the loop, worker.quit_defers) stop quickly:
 * no queue, CG_QUIT_IDLE_MS for idle connections, CG_QUIT_GRACE_MS for the
 * rest, no lifespan shutdown. */
#include <Python.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_asgi_int.h"
#include "cg_sig.h"
#include "cg_worker_asgi.h"

typedef struct {
    PyObject_HEAD
    struct cg_asgi_srv *s; /* not owned: lives on cg_worker_asgi_run's stack */
} server_t;

static struct cg_asgi_srv *srv_of(PyObject *self)
{
    struct cg_asgi_srv *s = ((server_t *)self)->s;
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the asgi server is gone");
    }
    return s;
}

static void wake(struct cg_asgi_srv *s)
{
    if (s->wake == NULL) {
        return;
    }
    PyObject *r = PyObject_CallNoArgs(s->wake);
    if (r == NULL) {
        cg_py_log_exception("asgi: waking the worker loop");
    }
    Py_XDECREF(r);
}

/* A QUIT/INT handler asked for the quick stop (quit_after_request): the
 * stop's deadline comes down to CG_QUIT_GRACE_MS from now. */
static void notice_quit(struct cg_asgi_srv *s)
{
    if (s->quick || !s->w->quit_after_request) {
        return;
    }
    uint64_t end = cg_monotonic_ms() + CG_QUIT_GRACE_MS;
    s->quick = true;
    s->w->alive = false;
    s->queue_open = false;
    if (s->stop_deadline_ms == 0 || s->stop_deadline_ms > end) {
        s->stop_deadline_ms = end;
    }
    wake(s);
}

/* Loop reader on the signal pipe. */
static PyObject *on_signal(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    cg_worker_check_signals(s->w);
    notice_quit(s);
    if (!s->w->alive) {
        wake(s);
    }
    Py_RETURN_NONE;
}

static PyObject *on_accept(PyObject *self, PyObject *idx)
{
    struct cg_asgi_srv *s = srv_of(self);
    if (s == NULL) {
        return NULL;
    }
    return cg_py_asgi_accept(s, PyLong_AsSize_t(idx));
}

/* call_soon callback: releases the connections closed since the last run
 * (cg_py_asgi_conn_close never frees the connection it runs on). */
static PyObject *on_release(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    cg_py_asgi_conn_release(s);
    Py_RETURN_NONE;
}

static PyMethodDef on_signal_def = { "on_signal", on_signal, METH_NOARGS, NULL };
static PyMethodDef on_release_def = { "on_release", on_release, METH_NOARGS, NULL };

/* start(loop, state, wake): registers the listeners and the signal pipe. */
static PyObject *srv_start(PyObject *self, PyObject *args)
{
    struct cg_asgi_srv *s = srv_of(self);
    PyObject *loop, *state, *wake_cb, *accept = NULL, *sig_cb = NULL, *r = NULL;

    if (s == NULL || !PyArg_ParseTuple(args, "OOO:start", &loop, &state, &wake_cb)) {
        return NULL;
    }
    s->loop = Py_NewRef(loop);
    s->state = state == Py_None ? NULL : Py_NewRef(state);
    s->wake = Py_NewRef(wake_cb);
    static const char *names[] = { "add_reader", "remove_reader", "add_writer", "remove_writer",
                                   "create_task", "create_future", "call_later", "call_soon" };
    PyObject **slots[] = { &s->add_reader, &s->remove_reader, &s->add_writer, &s->remove_writer,
                           &s->create_task, &s->create_future, &s->call_later, &s->call_soon };
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        *slots[i] = PyObject_GetAttrString(loop, names[i]);
        if (*slots[i] == NULL) {
            return NULL;
        }
    }
    s->release_cb = PyCFunction_New(&on_release_def, self);
    if (s->release_cb == NULL) {
        return NULL;
    }
    accept = PyObject_GetAttrString(self, "_accept");
    s->listen_cbs = accept ? PyList_New(0) : NULL;
    if (s->listen_cbs == NULL) {
        goto done;
    }
    for (size_t i = 0; i < s->w->nlisteners; i++) {
        int fd = s->w->listeners[i].fd;
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0) {
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        }
        /* The accept callback gets the listener's index. */
        PyObject *partial_mod = PyImport_ImportModule("functools");
        PyObject *bound = partial_mod ? PyObject_CallMethod(partial_mod, "partial", "On", accept,
                                                            (Py_ssize_t)i)
                                      : NULL;
        Py_XDECREF(partial_mod);
        if (bound == NULL || PyList_Append(s->listen_cbs, bound) < 0) {
            Py_XDECREF(bound);
            goto done;
        }
        Py_DECREF(bound);
        cg_log(CG_LOG_INFO, "ASGI server listening on %s", s->w->listeners[i].name);
    }
    if (cg_py_asgi_h2_start(s) < 0) {
        goto done;
    }
    s->accepting = true;
    cg_py_asgi_listen(s);
    sig_cb = PyCFunction_New(&on_signal_def, self);
    PyObject *rr = sig_cb ? PyObject_CallFunction(s->add_reader, "iO", cg_sig_fd(), sig_cb) : NULL;
    if (rr == NULL) {
        goto done;
    }
    Py_DECREF(rr);
    r = Py_NewRef(Py_None);
done:
    Py_XDECREF(accept);
    Py_XDECREF(sig_cb);
    return r;
}

/* tick(): liveness, parent check, keep-alive sweep. */
static PyObject *srv_tick(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    cg_worker_notify(s->w);
    if (getppid() != s->w->ppid && s->w->alive) {
        cg_log(CG_LOG_INFO, "Parent changed, shutting down: %d", (int)getpid());
        s->w->alive = false;
    }
    notice_quit(s);
    if (s->queue_open && !s->quick) {
        cg_py_asgi_drain_queues(s); /* what waited for a free connection slot */
    }
    cg_py_asgi_conn_sweep(s);
    Py_RETURN_NONE;
}

static PyObject *srv_alive(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    notice_quit(s);
    return PyBool_FromLong(s->w->alive);
}

static PyObject *srv_quick(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    notice_quit(s);
    return PyBool_FromLong(s->quick);
}

/* stop_due(): the stop's deadline (graceful_timeout, or CG_QUIT_GRACE_MS
 * after a QUIT) has passed. */
static PyObject *srv_stop_due(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    notice_quit(s);
    return PyBool_FromLong(s->stop_deadline_ms != 0 && cg_monotonic_ms() >= s->stop_deadline_ms);
}

static PyObject *srv_nconns(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    return s ? PyLong_FromSize_t(s->nconns) : NULL;
}

/* draining(): TERM, and the listen queues may still hold connections. */
static PyObject *srv_draining(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    return s ? PyBool_FromLong(s->queue_open) : NULL;
}

static PyObject *srv_stop_accepting(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    uint64_t now = cg_monotonic_ms();
    notice_quit(s);
    s->accepting = false;
    s->stop_ms = now;
    uint64_t end = now + (uint64_t)s->conf->graceful_timeout * 1000u;
    if (s->stop_deadline_ms == 0 || s->stop_deadline_ms > end) {
        s->stop_deadline_ms = end;
    }
    if (s->w->terminating && !s->quick) {
        s->queue_open = true;
        cg_py_asgi_drain_queues(s);
    }
    cg_py_asgi_listen(s);
    cg_py_asgi_h2_stop(s);
    Py_RETURN_NONE;
}

static PyObject *srv_close_all(PyObject *self, PyObject *unused)
{
    struct cg_asgi_srv *s = srv_of(self);
    (void)unused;
    if (s == NULL) {
        return NULL;
    }
    while (s->conns != NULL) {
        cg_py_asgi_conn_close(s->conns);
    }
    if (s->add_reader != NULL) {
        PyObject *r = PyObject_CallFunction(s->remove_reader, "i", cg_sig_fd());
        Py_XDECREF(r);
        if (s->h2_hub_cb != NULL) {
            r = PyObject_CallFunction(s->remove_reader, "i", s->hub.efd);
            Py_XDECREF(r);
        }
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyObject *srv_accept(PyObject *self, PyObject *idx)
{
    return on_accept(self, idx);
}

static PyMethodDef srv_methods[] = {
    { "start", srv_start, METH_VARARGS, "start(loop, state, wake)" },
    { "tick", srv_tick, METH_NOARGS, "report liveness; close expired keep-alive connections" },
    { "alive", srv_alive, METH_NOARGS, NULL },
    { "quick", srv_quick, METH_NOARGS, "QUIT/INT: the quick stop" },
    { "stop_due", srv_stop_due, METH_NOARGS, "the stop's deadline has passed" },
    { "nconns", srv_nconns, METH_NOARGS, NULL },
    { "draining", srv_draining, METH_NOARGS, NULL },
    { "stop_accepting", srv_stop_accepting, METH_NOARGS, NULL },
    { "close_all", srv_close_all, METH_NOARGS, NULL },
    { "_accept", srv_accept, METH_O, NULL },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject server_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.asgi.Server",
    .tp_basicsize = sizeof(server_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = srv_methods,
};

static void srv_deinit(struct cg_asgi_srv *s)
{
    Py_CLEAR(s->loop);
    Py_CLEAR(s->state);
    Py_CLEAR(s->root_path);
    Py_CLEAR(s->path_prefix);
    Py_CLEAR(s->raw_path_prefix);
    Py_CLEAR(s->wake);
    Py_CLEAR(s->add_reader);
    Py_CLEAR(s->remove_reader);
    Py_CLEAR(s->add_writer);
    Py_CLEAR(s->remove_writer);
    Py_CLEAR(s->create_task);
    Py_CLEAR(s->create_future);
    Py_CLEAR(s->call_later);
    Py_CLEAR(s->call_soon);
    Py_CLEAR(s->release_cb);
    Py_CLEAR(s->ready_none);
    Py_CLEAR(s->listen_cbs);
    Py_CLEAR(s->sha1);
    cg_py_asgi_h2_deinit(s);
    cg_py_asgi_keys_deinit(&s->k);
    cg_py_wsgi_free(s->wsgi);
    s->wsgi = NULL;
}

int cg_worker_asgi_run(struct cg_worker *w)
{
    const struct cg_conf *conf = w->conf;
    struct cg_asgi_srv s = { 0 };
    struct cg_err err = { { 0 } };
    server_t *obj = NULL;
    PyObject *mod = NULL, *hashlib = NULL, *opts = NULL, *res = NULL;
    int code = CG_WORKER_BOOT_ERROR;

    if (conf->threads > 1 && w->age <= 1) {
        cg_log(CG_LOG_WARNING, "ASGI worker does not use threads configuration. "
                               "Use worker_connections instead.");
    }
    s.w = w;
    s.conf = conf;
    s.app = w->app;
    s.ws_max = conf->websocket_max_message_size > 0 ? (uint64_t)conf->websocket_max_message_size
                                                    : 16777216u;
    s.wsgi = cg_py_wsgi_new(w, &err);
    if (s.wsgi == NULL) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        return CG_WORKER_BOOT_ERROR;
    }
    if (cg_py_asgi_h2_init(&s, &err) < 0) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        cg_py_wsgi_free(s.wsgi);
        return CG_WORKER_BOOT_ERROR;
    }
    if (cg_py_asgi_types_ready() < 0 || PyType_Ready(&server_type) < 0 ||
        cg_py_asgi_keys_init(&s.k) < 0) {
        goto pyfail;
    }
    s.ready_none = cg_py_asgi_ready_new(Py_None);
    s.root_path = PyUnicode_FromString(conf->root_path ? conf->root_path : "");
    if (conf->root_path_in_path && conf->root_path != NULL && conf->root_path[0] != '\0') {
        s.path_prefix = Py_XNewRef(s.root_path);
        s.raw_path_prefix = PyUnicode_AsEncodedString(s.root_path, "latin-1", "strict");
        if (s.raw_path_prefix == NULL) {
            goto pyfail;
        }
    }
    hashlib = PyImport_ImportModule("hashlib");
    s.sha1 = hashlib ? PyObject_GetAttrString(hashlib, "sha1") : NULL;
    mod = s.sha1 ? PyImport_ImportModule("cgunicorn.asgi") : NULL;
    obj = mod ? PyObject_New(server_t, &server_type) : NULL;
    if (obj == NULL || s.ready_none == NULL || s.root_path == NULL) {
        goto pyfail;
    }
    obj->s = &s;
    opts = Py_BuildValue("{s:s,s:s,s:i,s:d}", "loop", conf->asgi_loop ? conf->asgi_loop : "auto",
                         "lifespan", conf->asgi_lifespan ? conf->asgi_lifespan : "auto",
                         "graceful_timeout", conf->graceful_timeout, "tick",
                         conf->timeout > 0 && conf->timeout < 2 ? conf->timeout / 2.0 : 1.0);
    w->quit_defers = true;
    res = opts ? PyObject_CallMethod(mod, "run", "OOO", (PyObject *)obj, w->app, opts) : NULL;
    w->quit_defers = false;
    if (res == NULL) {
        goto pyfail;
    }
    code = (int)PyLong_AsLong(res);
    if (code == -1 && PyErr_Occurred()) {
        goto pyfail;
    }
    goto done;
pyfail:
    cg_py_log_exception("Worker exception");
    code = CG_WORKER_BOOT_ERROR;
done:
    while (s.conns != NULL) {
        cg_py_asgi_conn_close(s.conns);
    }
    cg_py_asgi_conn_release(&s);
    if (obj != NULL) {
        obj->s = NULL;
    }
    Py_XDECREF((PyObject *)obj);
    Py_XDECREF(res);
    Py_XDECREF(opts);
    Py_XDECREF(mod);
    Py_XDECREF(hashlib);
    srv_deinit(&s);
    return code;
}
