/* Server hooks (gunicorn.conf.py's on_starting ... on_exit): the Python
 * objects they receive (cgunicorn.hooks.Server/Worker/Request/Response), and
 * calling them where gunicorn calls them, with gunicorn's handling of an
 * exception in each.
 *
 * The master owns one struct cg_hooks. Every worker inherits it through fork
 * and gets its own `worker` object, created in the master before the fork (so
 * pre_fork sees it) and finished in the child (pid, signals).
 *
 * All functions need the GIL. None leaves a Python exception pending unless
 * it says so. */
#ifndef CG_PY_HOOKS_H
#define CG_PY_HOOKS_H

#include <Python.h>
#include <stdbool.h>
#include <sys/types.h>

#include "cg_conf.h"
#include "cg_err.h"
#include "cg_py_hook_table.h"

struct cg_worker;
struct cg_http_request;
struct cg_wsgi_resp;

struct cg_hooks {
    const struct cg_conf *conf; /* not owned; replaced on reload */
    PyObject *mod;              /* cgunicorn.hooks; owned */
    PyObject *server;           /* cgunicorn.hooks.Server; owned */
    PyObject *workers;          /* server.WORKERS (pid -> Worker); owned */
    struct cg_hook_table fn;    /* the user's hooks, from conf (init, set_conf) */
};

/* Fills the hook table from `conf` and builds the `server` object. Returns
 * 0, or -1 with err. */
int cg_py_hooks_init(struct cg_hooks *h, const struct cg_conf *conf, int num_workers,
                     const char *proc_name, struct cg_err *err);
void cg_py_hooks_deinit(struct cg_hooks *h);

/* After a configuration reload: server.cfg reads the new values, and the
 * hook table takes the new hooks. */
void cg_py_hooks_set_conf(struct cg_hooks *h, const struct cg_conf *conf);

/* Sets a plain attribute of `server` (pid, num_workers, proc_name,
 * master_name, master_pid, reexec_pid); a failure is logged. */
void cg_py_hooks_server_set(struct cg_hooks *h, const char *attr, PyObject *value /* steals */);

/* Calls `fn(*args)` when fn is not NULL (a hook the user set); args is a
 * Py_BuildValue format for a tuple, e.g. "(OO)". Returns 0, or -1 after
 * logging "<what>" and the traceback at ERROR (no exception left). */
int cg_py_hooks_call(PyObject *fn, const char *what, const char *fmt, ...);

/* A new `worker` object for the worker about to be forked (pid "[booting]").
 * New reference, or NULL (logged). */
PyObject *cg_py_hooks_worker_new(struct cg_hooks *h, int age);

/* Parent side after the fork: worker.pid = pid, server.WORKERS[pid] = worker. */
void cg_py_hooks_worker_forked(struct cg_hooks *h, PyObject *worker, pid_t pid);

/* Removes and returns the worker object of `pid` (new reference), or NULL. */
PyObject *cg_py_hooks_worker_pop(struct cg_hooks *h, pid_t pid);

/* Child side, first thing after the fork: worker.pid, SIGABRT/SIGQUIT/SIGINT
 * Python handlers (worker_abort, worker_int, worker_exit hooks; the
 * traceback of a stuck request on SIGABRT), worker.notify(). Returns 0 or -1
 * (logged). */
int cg_py_hooks_worker_boot(struct cg_worker *w);

/* Syncs worker.alive / worker.nr / worker.booted from the C state. */
void cg_py_hooks_worker_sync(struct cg_worker *w);

/* Per request (cg_py_hooks_wsgi.c). pre_request(worker, req) runs the user's
 * hook, or gunicorn's default (a DEBUG line "METHOD PATH"). *hreq receives
 * the `req` object when post_request needs it (new reference), else NULL.
 * Returns 0, or -1 with the hook's exception left set (the caller answers
 * 500 and logs it, as gunicorn's handle_error). */
int cg_py_hooks_pre_request(struct cg_worker *w, const struct cg_http_request *req,
                            PyObject *environ, PyObject **hreq);

/* post_request(worker, req, environ, resp) when set; an exception is logged
 * as "Exception in post_request hook". Releases *hreq. */
void cg_py_hooks_post_request(struct cg_worker *w, PyObject **hreq, PyObject *environ,
                              const struct cg_wsgi_resp *resp);

/* The builtin module `_cgunicorn_hooks` (worker_notify, reopen_logs). */
PyObject *cg_py_hooks_module_init(void);

#endif
