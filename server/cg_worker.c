/* The part of an HTTP worker process that does not depend on its class:
 * boot (title, signals, app import), dispatch to the class's loop, signal
 * flags, liveness, and the exit codes the master understands. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_proc.h"
#include "cg_py.h"
#include "cg_py_app.h"
#include "cg_sig.h"
#include "cg_worker.h"
#include "cg_worker_asgi.h"
#include "cg_worker_gthread.h"

static const int worker_signals[] = { SIGTERM, SIGQUIT, SIGINT, SIGUSR1, SIGWINCH, 0 };

bool cg_worker_check_signals(struct cg_worker *w)
{
    bool now = false;

    cg_sig_drain();
    if (cg_sig_take(SIGQUIT) || cg_sig_take(SIGINT)) {
        now = true;
    }
    if (cg_sig_take(SIGTERM)) {
        w->alive = false;
    }
    if (cg_sig_take(SIGUSR1)) {
        cg_log_reopen();
    }
    cg_sig_take(SIGWINCH); /* gunicorn workers ignore WINCH */
    if (getppid() != w->ppid) {
        cg_log(CG_LOG_INFO, "Parent changed, shutting down: %d", (int)cg_proc.pid);
        w->alive = false;
    }
    return now;
}

static uint64_t requests_limit(const struct cg_conf *conf)
{
    if (conf->max_requests <= 0) {
        return 0;
    }
    uint64_t jitter = 0;
    if (conf->max_requests_jitter > 0) {
        jitter = (uint64_t)(rand() % (conf->max_requests_jitter + 1));
    }
    return (uint64_t)conf->max_requests + jitter;
}

void cg_worker_main(struct cg_worker *w, PyObject *preloaded_app)
{
    struct cg_err err = { { 0 } };
    const struct cg_conf *conf = w->conf;
    int code = 0;

    srand((unsigned)getpid());
    cg_proc_set_title("cgunicorn: worker [%s]",
                      conf->proc_name ? conf->proc_name : conf->default_proc_name);
    if (cg_sig_open(worker_signals, &err) < 0) {
        cg_log(CG_LOG_ERROR, "worker %d: %s", (int)getpid(), err.msg);
        _exit(CG_WORKER_BOOT_ERROR);
    }
    cg_worker_notify(w);
    w->max_requests = requests_limit(conf);
    if (preloaded_app != NULL) {
        Py_INCREF(preloaded_app);
        w->app = preloaded_app;
    } else {
        PyObject *tb = NULL; /* owned */
        w->app = cg_py_app_load(conf->app_uri, &tb, &err);
        if (w->app == NULL) {
            /* As gunicorn: an exception while importing is logged with its
             * traceback and the worker exits WORKER_BOOT_ERROR; an app that
             * cannot be found prints its one-line message, APP_LOAD_ERROR. */
            const char *text = tb ? PyUnicode_AsUTF8(tb) : NULL;
            if (text != NULL) {
                cg_log(CG_LOG_ERROR, "Exception in worker process\n%s", text);
            } else {
                PyErr_Clear();
                fprintf(stderr, "%s\n", err.msg);
                fflush(stderr);
            }
            int boot_code = text != NULL ? CG_WORKER_BOOT_ERROR : CG_APP_LOAD_ERROR;
            Py_XDECREF(tb);
            cg_py_flush_stdio();
            _exit(boot_code);
        }
    }
    cg_worker_notify(w);
    if (strcmp(conf->worker_class, "sync") == 0) {
        cg_worker_sync_run(w);
    } else if (strcmp(conf->worker_class, "gthread") == 0) {
        code = cg_worker_gthread_run(w);
    } else if (strcmp(conf->worker_class, "asgi") == 0) {
        code = cg_worker_asgi_run(w);
    } else {
        cg_log(CG_LOG_ERROR, "worker class '%s' is not implemented yet in cgunicorn; use -k sync",
               conf->worker_class);
        code = CG_WORKER_BOOT_ERROR;
    }
    cg_log(CG_LOG_INFO, "Worker exiting (pid: %d)", (int)getpid());
    Py_CLEAR(w->app);
    cg_py_flush_stdio();
    _exit(code);
}
