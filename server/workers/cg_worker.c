/* The part of an HTTP worker process that does not depend on its class:
 * boot (title, hooks, privileges, signals, app import), dispatch to the
 * class's loop, signal flags, liveness, and the exit codes the master
 * understands. The sequence follows gunicorn's spawn_worker/init_process:
 *   "Booting worker" -> post_fork -> set user/group -> (reloader) -> load app
 *   -> post_worker_init -> run -> "Worker exiting" -> worker_exit. */
#include <errno.h>
#include <malloc.h>
#include <grp.h>
#include <pwd.h>
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
#include "cg_sig_table.h"
#include "cg_transport_tls.h"
#include "cg_metrics.h"
#include "cg_worker.h"
#include "cg_worker_class.h"

/* Signals: the table in core/cg_sig_table.c; QUIT, INT and ABRT are Python
 * handlers there (cg_py_hooks_worker_boot). */

bool cg_worker_check_signals(struct cg_worker *w)
{
    cg_sig_drain();
    if (PyGILState_Check() && PyErr_CheckSignals() < 0) {
        cg_py_log_exception("Exception in a signal handler");
        PyErr_Clear();
    }
    if (cg_sig_take(SIGTERM)) {
        w->alive = false;
        w->terminating = true;
    }
    if (cg_sig_take(SIGUSR1)) {
        cg_log_reopen();
        if (PyGILState_Check() && w->hooks != NULL) {
            PyObject *r = PyObject_CallMethod(w->hooks->mod, "reopen_access_logs", NULL);
            if (r == NULL) {
                cg_py_log_exception("cannot reopen the access log");
                PyErr_Clear();
            }
            Py_XDECREF(r);
        }
    }
    cg_sig_take(SIGWINCH); /* gunicorn workers ignore WINCH */
    if (getppid() != w->ppid) {
        cg_log(CG_LOG_INFO, "Parent changed, shutting down: <Worker %d>", (int)cg_proc.pid);
        w->alive = false;
    }
    return w->quit_after_request;
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

/* gunicorn's util.set_owner_process: group (or initgroups), then user. */
static int set_owner(const struct cg_conf *conf, struct cg_err *err)
{
    uid_t uid = (uid_t)conf->user;
    gid_t gid = (gid_t)conf->group;

    if (gid != getgid() || (conf->initgroups && uid != getuid())) {
        struct passwd *pw = getpwuid(uid);
        if (conf->initgroups && pw != NULL && initgroups(pw->pw_name, gid) < 0) {
            cg_err_set(err, "initgroups(%s, %u): %s", pw->pw_name, (unsigned)gid,
                       strerror(errno));
            return -1;
        }
        if (!conf->initgroups && geteuid() == 0 && setgroups(0, NULL) < 0) {
            cg_err_set(err, "setgroups: %s", strerror(errno));
            return -1;
        }
        if (setgid(gid) < 0) {
            cg_err_set(err, "--group %u: setgid: %s (the master must run as root to switch)",
                       (unsigned)gid, strerror(errno));
            return -1;
        }
    }
    if (uid != getuid() && setuid(uid) < 0) {
        cg_err_set(err, "--user %u: setuid: %s (the master must run as root to switch)",
                   (unsigned)uid, strerror(errno));
        return -1;
    }
    return 0;
}

/* Imports the app. Returns 0, or the exit code gunicorn uses: an exception
 * while importing is logged with its traceback (WORKER_BOOT_ERROR); an app
 * that cannot be found prints its one-line message (APP_LOAD_ERROR). */
static int load_app(struct cg_worker *w, PyObject *preloaded_app)
{
    struct cg_err err = { { 0 } };
    PyObject *tb = NULL; /* owned */

    if (preloaded_app != NULL) {
        w->app = Py_NewRef(preloaded_app);
        return 0;
    }
    w->app = cg_py_app_load(w->conf->app_uri, &tb, &err);
    if (w->app != NULL) {
        return 0;
    }
    const char *text = tb ? PyUnicode_AsUTF8(tb) : NULL;
    /* gunicorn: AppImportError (the app object cannot be found) prints its
     * message and exits APP_LOAD_ERROR, any other exception is logged with
     * its traceback and exits WORKER_BOOT_ERROR. cg_py_app_load formats
     * both; the exception's type names which one it was. */
    bool not_found = text == NULL || strstr(text, "AppImportError: ") != NULL;
    if (not_found) {
        if (text != NULL) {
            cg_log_debug("Exception while loading the application\n%s", text);
        }
        PyErr_Clear();
        fprintf(stderr, "%s\n", err.msg);
        fflush(stderr);
    } else {
        cg_log(CG_LOG_ERROR, "Exception in worker process\n%s", text);
    }
    Py_XDECREF(tb);
    return not_found ? CG_APP_LOAD_ERROR : CG_WORKER_BOOT_ERROR;
}

static void start_reloader(struct cg_worker *w)
{
    const struct cg_conf *conf = w->conf;
    PyObject *extra = PyList_New(0), *r = NULL; /* owned */

    for (size_t i = 0; extra != NULL && i < conf->reload_extra_files.n; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(conf->reload_extra_files.v[i]);
        if (s == NULL || PyList_Append(extra, s) < 0) {
            Py_XDECREF(s);
            Py_CLEAR(extra);
            break;
        }
        Py_DECREF(s);
    }
    if (extra != NULL) {
        r = PyObject_CallMethod(w->hooks->mod, "start_reloader", "OOOOs", w->hooks->server,
                                w->py_worker, extra,
                                w->hooks->fn.worker_int ? w->hooks->fn.worker_int : Py_None,
                                conf->reload_engine ? conf->reload_engine : "auto");
    }
    if (r == NULL) {
        cg_py_log_exception("cannot start the reloader");
        PyErr_Clear();
    }
    Py_XDECREF(r);
    Py_XDECREF(extra);
}

/* Boots the worker; returns 0 to run, else the exit code. */
static int boot(struct cg_worker *w, PyObject *preloaded_app)
{
    struct cg_err err = { { 0 } };
    const struct cg_conf *conf = w->conf;
    PyObject *server = w->hooks->server; /* borrowed */

    if (cg_sig_open_role(CG_ROLE_WORKER, &err) < 0) {
        cg_log(CG_LOG_ERROR, "worker %d: %s", (int)getpid(), err.msg);
        return CG_WORKER_BOOT_ERROR;
    }
    w->max_requests = requests_limit(conf);
    if (cg_py_hooks_worker_boot(w) < 0) {
        return CG_WORKER_BOOT_ERROR;
    }
    cg_log(CG_LOG_INFO, "Booting worker with pid: %d", (int)getpid());
    if (cg_py_hooks_call(w->hooks->fn.post_fork, "Exception in worker process", "(OO)", server,
                         w->py_worker) < 0) {
        return CG_WORKER_BOOT_ERROR;
    }
    cg_worker_class_run_fn prepare = cg_worker_class_prepare(conf->worker_class);
    int code = prepare != NULL ? prepare(w) : 0;
    if (code != 0) {
        return code;
    }
    if (set_owner(conf, &err) < 0) {
        cg_log(CG_LOG_ERROR, "Exception in worker process\n%s", err.msg);
        return CG_WORKER_BOOT_ERROR;
    }
    cg_worker_notify(w);
    if (conf->reload) {
        start_reloader(w);
    }
    code = load_app(w, preloaded_app);
    if (code != 0) {
        return code;
    }
    if (PyObject_SetAttrString(w->py_worker, "app", w->app) < 0 ||
        PyObject_SetAttrString(w->py_worker, "wsgi", w->app) < 0) {
        PyErr_Clear();
    }
    cg_worker_notify(w);
    if (cg_py_hooks_call(w->hooks->fn.post_worker_init, "Exception in worker process", "(O)",
                         w->py_worker) < 0) {
        return CG_WORKER_BOOT_ERROR;
    }
    w->booted = true;
    /* Boot (config, imports, the app's import) freed much of what it
     * malloc'ed; hand the free pages back so they do not count in every
     * worker's RSS. */
    malloc_trim(0);
    cg_metrics_worker_booted();
    cg_py_hooks_worker_sync(w);
    return 0;
}

void cg_worker_main(struct cg_worker *w, PyObject *preloaded_app)
{
    const struct cg_conf *conf = w->conf;
    int code;

    srand((unsigned)getpid());
    cg_proc_set_title("gunicorn: worker [%s]",
                      conf->proc_name ? conf->proc_name : conf->default_proc_name);
    cg_worker_notify(w);
    code = boot(w, preloaded_app);
    if (code == 0) {
        cg_worker_class_run_fn run = cg_worker_class_entry(conf->worker_class);
        if (run != NULL) {
            code = run(w);
        } else {
            cg_log(CG_LOG_ERROR,
                   "worker class '%s' is not implemented yet in cgunicorn; use -k sync",
                   conf->worker_class);
            code = CG_WORKER_BOOT_ERROR;
        }
    }
    cg_log(CG_LOG_INFO, "Worker exiting (pid: %d)", (int)getpid());
    w->alive = false;
    cg_transport_tls_use(NULL, 0, true); /* every connection is closed by now */
    cg_py_hooks_worker_sync(w);
    if (w->hooks->fn.worker_exit != NULL) {
        PyObject *r = PyObject_CallFunctionObjArgs(w->hooks->fn.worker_exit, w->hooks->server,
                                                   w->py_worker, NULL);
        if (r == NULL) {
            PyObject *tb = cg_py_format_exception();
            cg_log(CG_LOG_WARNING, "Exception during worker exit:\n%s",
                   tb && PyUnicode_AsUTF8(tb) ? PyUnicode_AsUTF8(tb) : "?");
            Py_XDECREF(tb);
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    Py_CLEAR(w->app);
    cg_py_flush_stdio();
    _exit(code);
}

void cg_worker_cap_evicted(struct cg_cap_log *l, int worker_connections)
{
    uint64_t now = cg_monotonic_ms();

    l->evicted++;
    if (l->logged_ms == 0 || now - l->logged_ms >= 60000u) {
        cg_log(CG_LOG_WARNING,
               "worker_connections (%d) reached: closed %llu idle connection(s) to admit "
               "new ones (raise worker_connections if this repeats)",
               worker_connections, (unsigned long long)l->evicted);
        l->evicted = 0;
        l->logged_ms = now;
    }
}
