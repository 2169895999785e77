/* Server hooks: the `server` and `worker` objects (cgunicorn.hooks) and the
 * one calling convention every hook call site uses. Where each hook is called
 * and what an exception in it does is decided by the call sites (cg_master.c,
 * cg_worker.c, cg_py_hooks_wsgi.c), following gunicorn. */
#include <stdarg.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_hooks.h"
#include "cg_worker.h"

/* The worker this process runs, for worker.notify() (NULL in the master). */
static struct cg_worker *current_worker;

int cg_py_hooks_init(struct cg_hooks *h, const struct cg_conf *conf, int num_workers,
                     const char *proc_name, struct cg_err *err)
{
    PyObject *cls = NULL; /* owned */

    memset(h, 0, sizeof(*h));
    h->conf = conf;
    cg_py_hook_table_load(&h->fn, conf->values);
    h->mod = PyImport_ImportModule("cgunicorn.hooks");
    cls = h->mod ? PyObject_GetAttrString(h->mod, "Server") : NULL;
    h->server = cls ? PyObject_CallFunction(cls, "iOis", (int)getpid(), conf->values, num_workers,
                                            proc_name)
                    : NULL;
    h->workers = h->server ? PyObject_GetAttrString(h->server, "WORKERS") : NULL;
    Py_XDECREF(cls);
    if (h->workers == NULL) {
        PyObject *tb = cg_py_format_exception();
        cg_err_set(err, "cannot build the hooks' server object:\n%s",
                   tb && PyUnicode_AsUTF8(tb) ? PyUnicode_AsUTF8(tb) : "?");
        Py_XDECREF(tb);
        PyErr_Clear();
        cg_py_hooks_deinit(h);
        return -1;
    }
    return 0;
}

void cg_py_hooks_deinit(struct cg_hooks *h)
{
    cg_py_hook_table_clear(&h->fn);
    Py_CLEAR(h->workers);
    Py_CLEAR(h->server);
    Py_CLEAR(h->mod);
}

void cg_py_hooks_set_conf(struct cg_hooks *h, const struct cg_conf *conf)
{
    PyObject *r;

    h->conf = conf;
    cg_py_hook_table_load(&h->fn, conf->values);
    r = PyObject_CallMethod(h->server, "set_values", "O", conf->values);
    if (r == NULL) {
        cg_py_log_exception("cannot update the hooks' server.cfg");
    }
    Py_XDECREF(r);
}

void cg_py_hooks_server_set(struct cg_hooks *h, const char *attr, PyObject *value)
{
    if (value == NULL || PyObject_SetAttrString(h->server, attr, value) < 0) {
        cg_py_log_exception("cannot update the hooks' server object");
    }
    Py_XDECREF(value);
}

int cg_py_hooks_call(PyObject *fn, const char *what, const char *fmt, ...)
{
    PyObject *args = NULL, *res = NULL; /* owned */
    va_list ap;

    if (fn == NULL) {
        return 0;
    }
    va_start(ap, fmt);
    args = Py_VaBuildValue(fmt, ap);
    va_end(ap);
    if (args != NULL && !PyTuple_Check(args)) {
        PyObject *t = PyTuple_Pack(1, args);
        Py_SETREF(args, t);
    }
    res = args ? PyObject_Call(fn, args, NULL) : NULL;
    Py_XDECREF(args);
    if (res == NULL) {
        cg_py_log_exception(what);
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

PyObject *cg_py_hooks_worker_new(struct cg_hooks *h, int age)
{
    PyObject *w = PyObject_CallMethod(h->mod, "Worker", "Oii", h->server, age, (int)getpid());
    if (w == NULL) {
        cg_py_log_exception("cannot build the hooks' worker object");
    }
    return w;
}

void cg_py_hooks_worker_forked(struct cg_hooks *h, PyObject *worker, pid_t pid)
{
    PyObject *key = PyLong_FromLong((long)pid); /* owned */

    if (key == NULL || PyObject_SetAttrString(worker, "pid", key) < 0 ||
        PyDict_SetItem(h->workers, key, worker) < 0) {
        cg_py_log_exception("cannot record the hooks' worker object");
    }
    Py_XDECREF(key);
}

PyObject *cg_py_hooks_worker_pop(struct cg_hooks *h, pid_t pid)
{
    PyObject *key = PyLong_FromLong((long)pid); /* owned */
    PyObject *w = NULL;

    if (key != NULL) {
        w = PyDict_GetItemWithError(h->workers, key); /* borrowed */
        Py_XINCREF(w);
        if (w != NULL && PyDict_DelItem(h->workers, key) < 0) {
            PyErr_Clear();
        }
    }
    PyErr_Clear();
    Py_XDECREF(key);
    return w;
}

static int set_attr(PyObject *o, const char *name, PyObject *v /* steals */)
{
    int rc = v != NULL ? PyObject_SetAttrString(o, name, v) : -1;
    Py_XDECREF(v);
    return rc;
}

void cg_py_hooks_worker_sync(struct cg_worker *w)
{
    if (w->py_worker == NULL) {
        return;
    }
    if (set_attr(w->py_worker, "alive", PyBool_FromLong(w->alive)) < 0 ||
        set_attr(w->py_worker, "nr", PyLong_FromUnsignedLongLong(w->nr)) < 0 ||
        set_attr(w->py_worker, "booted", PyBool_FromLong(w->booted)) < 0) {
        cg_py_log_exception("cannot update the hooks' worker object");
        PyErr_Clear();
    }
}

int cg_py_hooks_worker_boot(struct cg_worker *w)
{
    PyObject *hooks = NULL, *r = NULL; /* owned */
    int rc = -1;

    current_worker = w;
    if (w->py_worker == NULL || w->hooks == NULL) {
        return -1;
    }
    const struct cg_hook_table *fn = &w->hooks->fn;
    hooks = Py_BuildValue("{s:O,s:O,s:O}", "worker_int", fn->worker_int ? fn->worker_int : Py_None,
                          "worker_abort", fn->worker_abort ? fn->worker_abort : Py_None,
                          "worker_exit", fn->worker_exit ? fn->worker_exit : Py_None);
    if (hooks == NULL || set_attr(w->py_worker, "pid", PyLong_FromLong((long)getpid())) < 0 ||
        set_attr(w->py_worker, "max_requests",
                 w->max_requests ? PyLong_FromUnsignedLongLong(w->max_requests)
                                 : PyLong_FromSsize_t(PY_SSIZE_T_MAX)) < 0) {
        goto cleanup;
    }
    r = PyObject_CallMethod(w->hooks->mod, "install_worker_signals", "OOO", w->hooks->server,
                            w->py_worker, hooks);
    if (r == NULL) {
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (rc < 0) {
        cg_py_log_exception("cannot set up the worker's hooks");
        PyErr_Clear();
    }
    Py_XDECREF(r);
    Py_XDECREF(hooks);
    return rc;
}

/* _cgunicorn_hooks.worker_notify(): worker.notify() for long requests. */
static PyObject *mod_worker_notify(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (current_worker != NULL) {
        cg_worker_notify(current_worker);
    }
    Py_RETURN_NONE;
}

/* _cgunicorn_hooks.reopen_logs(): the error log (log.reopen_files()). */
static PyObject *mod_reopen_logs(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    cg_log_reopen();
    Py_RETURN_NONE;
}

/* _cgunicorn_hooks.defer_quit(): from the QUIT/INT handler. When the worker
 * is serving a request (sync), or its loop winds down by itself (gthread),
 * it finishes what it holds and then exits (True); else False and the
 * handler exits at once. */
static PyObject *mod_defer_quit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (current_worker == NULL || !(current_worker->busy || current_worker->quit_defers)) {
        Py_RETURN_FALSE;
    }
    current_worker->alive = false;
    current_worker->quit_after_request = true;
    Py_RETURN_TRUE;
}

/* _cgunicorn_hooks.abort_request(): from the SIGABRT handler. When the
 * sync worker is serving a request, it stops after unwinding it (True). */
static PyObject *mod_abort_request(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (current_worker == NULL || !current_worker->busy) {
        Py_RETURN_FALSE;
    }
    current_worker->alive = false;
    current_worker->quit_after_request = true;
    Py_RETURN_TRUE;
}

static PyMethodDef mod_methods[] = {
    { "abort_request", mod_abort_request, METH_NOARGS, "Unwind the request, then exit." },
    { "defer_quit", mod_defer_quit, METH_NOARGS, "Exit after the current request." },
    { "worker_notify", mod_worker_notify, METH_NOARGS, "Report this worker alive." },
    { "reopen_logs", mod_reopen_logs, METH_NOARGS, "Reopen the error log." },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT, "_cgunicorn_hooks", "cgunicorn hook helpers", -1, mod_methods,
    NULL, NULL, NULL, NULL,
};

PyObject *cg_py_hooks_module_init(void)
{
    return PyModule_Create(&mod_def);
}
