/* The master's reloads, as gunicorn's arbiter:
 *
 * HUP  (cg_master_reload): re-read the configuration from the same command
 *      line (config file, GUNICORN_CMD_ARGS, flags), apply it (environment,
 *      log level and file, listeners when `bind` changed, pid file, process
 *      title), run on_reload, start `workers` new workers and stop the old
 *      ones gracefully. The listeners stay open throughout, so no request is
 *      refused. A configuration that no longer loads is logged and the old
 *      one kept (gunicorn would exit).
 * USR2 (cg_master_reexec): fork, run pre_exec in the child, and exec this
 *      binary again with the listeners passed in GUNICORN_FD (or LISTEN_FDS
 *      under systemd) and our pid in GUNICORN_PID. The new master names
 *      itself "Master.2" and writes "<pidfile>.2" until the old master exits
 *      (cg_master_maybe_promote), then takes over "<pidfile>". */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_control.h"
#include "cg_log.h"
#include "cg_master_int.h"
#include "cg_metrics_http.h"
#include "cg_py.h"
#include "cg_py_logconfig.h"
#include "cg_py_ssl_context.h"
#include "cg_sig.h"
#include "cg_statsd.h"
#include "cg_supervisor.h"

static bool same_binds(const struct cg_strlist *a, const struct cg_strlist *b)
{
    if (a->n != b->n) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i], b->v[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* Loads the configuration again into `out`. Returns 0, or -1 (logged). */
static int load_again(struct cg_master *m, struct cg_conf *out)
{
    struct cg_err err = { { 0 } };
    enum cg_conf_mode mode;
    enum cg_log_level level;
    int code = 0;

    if (chdir(m->cwd) < 0) {
        cg_log_errno(CG_LOG_WARNING, errno, "reload: chdir %s", m->cwd);
    }
    if (cg_conf_load(out, m->argc, m->argv, &mode, &code, &err) < 0 || mode != CG_CONF_RUN ||
        cg_conf_apply_pythonpath(out, &err) < 0 || cg_conf_check_binds(out, &err) < 0 ||
        cg_log_level_parse(out->loglevel, &level, &err) < 0 ||
        cg_py_ssl_context_install(out, NULL, &err) < 0) {
        cg_log(CG_LOG_ERROR, "reloading the configuration failed, keeping the previous one: %s",
               err.msg[0] ? err.msg : "(see above)");
        PyErr_Clear();
        cg_conf_free(out);
        return -1;
    }
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* The master's own listeners besides `bind`, as served before a HUP. */
struct served {
    char *metrics_bind;   /* owned */
    char *control_socket; /* owned */
    int control_mode;
    bool control_disable;
};

/* Moves the metrics listener and the control socket to the new conf's
 * values. One that cannot be moved keeps serving where it was, is logged
 * (naming the setting, the value and the address kept), and its old value
 * goes back into the running conf: what `show config` reports is what is
 * served, and the next HUP tries the new value again. Frees `old`. */
static void move_served(struct cg_master *m, struct served *old)
{
    struct cg_err err = { { 0 } };
    struct cg_conf *cur = m->conf;
    char *swap;

    if (!same_str(old->metrics_bind, cur->metrics_bind) &&
        cg_master_move_metrics(m, cur->metrics_bind, &err) < 0) {
        cg_log(CG_LOG_ERROR, "%s; keeping %s", err.msg,
               old->metrics_bind && old->metrics_bind[0] ? old->metrics_bind
                                                         : "no metrics listener");
        swap = cur->metrics_bind;
        cur->metrics_bind = old->metrics_bind;
        old->metrics_bind = swap;
    }
    if ((!same_str(old->control_socket, cur->control_socket) ||
         old->control_mode != cur->control_socket_mode ||
         old->control_disable != cur->control_socket_disable) &&
        cg_control_reconfigure(m) < 0) {
        swap = cur->control_socket;
        cur->control_socket = old->control_socket;
        old->control_socket = swap;
        cur->control_socket_mode = old->control_mode;
    }
    free(old->metrics_bind);
    free(old->control_socket);
}

/* Applies what changed between the running conf and `next`, then makes
 * `next` the running conf (its contents move into *m->conf). */
static void apply(struct cg_master *m, struct cg_conf *next)
{
    struct cg_err err = { { 0 } };
    struct cg_conf *cur = m->conf;
    enum cg_log_level level = CG_LOG_INFO;
    bool rebind = !same_binds(&cur->bind, &next->bind);
    bool new_log = (cur->errorlog == NULL) != (next->errorlog == NULL) ||
                   (cur->errorlog && strcmp(cur->errorlog, next->errorlog) != 0);

    /* gunicorn resets the variables raw_env set, then applies the new ones. */
    for (size_t i = 0; i < cur->raw_env.n; i++) {
        char key[256];
        const char *eq = strchr(cur->raw_env.v[i], '=');
        size_t n = eq ? (size_t)(eq - cur->raw_env.v[i]) : 0;
        if (n > 0 && n < sizeof(key)) {
            memcpy(key, cur->raw_env.v[i], n);
            key[n] = '\0';
            PyObject *os = PyImport_ImportModule("os"); /* owned */
            PyObject *env = os ? PyObject_GetAttrString(os, "environ") : NULL; /* owned */
            PyObject *r = env ? PyObject_CallMethod(env, "pop", "sO", key, Py_None) : NULL;
            Py_XDECREF(r);
            Py_XDECREF(env);
            Py_XDECREF(os);
            PyErr_Clear();
        }
    }
    if (cg_conf_apply_env(next, &err) < 0) {
        cg_log(CG_LOG_ERROR, "raw_env: %s", err.msg);
    }
    cg_log_level_parse(next->loglevel, &level, &err);
    if (new_log && cg_log_open(next->errorlog, level, &err) < 0) {
        cg_log(CG_LOG_ERROR, "%s", err.msg);
    }
    cg_log_set_level(level);
    if (cg_statsd_open(next->statsd_host, next->statsd_prefix, next->dogstatsd_tags, &err) < 0) {
        cg_log(CG_LOG_WARNING, "%s; no StatsD metrics will be sent (fix statsd_host)", err.msg);
        cg_statsd_open(NULL, NULL, NULL, &err);
    }
    /* What metrics_bind and the control socket were: kept (taken out of
     * `cur` before it is freed) to put back when the new value fails. */
    struct served old = { .metrics_bind = cur->metrics_bind, .control_socket = cur->control_socket,
                          .control_mode = cur->control_socket_mode,
                          .control_disable = cur->control_socket_disable };
    cur->metrics_bind = cur->control_socket = NULL;
    cg_conf_free(cur);
    *cur = *next; /* moves ownership */
    memset(next, 0, sizeof(*next));
    cg_py_hooks_set_conf(&m->hooks, cur);
    if (cg_py_logconfig_apply(cur, &err) < 0) {
        cg_log(CG_LOG_ERROR, "logging configuration not applied: %s", err.msg);
    }
    move_served(m, &old);
    if (rebind) {
        struct cg_listener *ls = NULL;
        size_t nls = 0;
        char names[4096];
        if (cg_listen_open_all((const char *const *)cur->bind.v, cur->bind.n, cur->backlog,
                               cur->reuse_port, cur->umask, &ls, &nls, &err) < 0) {
            cg_log(CG_LOG_ERROR, "cannot listen on the new addresses, keeping the old ones: %s",
                   err.msg);
        } else {
            cg_listen_close_all(m->ls, m->nls, false);
            m->ls = ls;
            m->nls = nls;
            cg_listen_describe(ls, nls, names, sizeof(names));
            cg_log(CG_LOG_INFO, "Listening at: %s", names);
        }
    }
}

struct old_workers {
    struct cg_master *m;
    int last_age; /* workers of this age or older are the ones HUP replaces */
};

static bool no_old_worker_left(struct cg_sup *sup, void *arg)
{
    const struct old_workers *old = arg;
    (void)sup;

    for (int i = 0; i < old->m->nkids; i++) {
        if (old->m->kids[i].age <= old->last_age) {
            return false;
        }
    }
    return true;
}

void cg_master_reload(struct cg_master *m)
{
    struct cg_conf next;
    struct cg_err err = { { 0 } };
    int last_age = m->age;

    m->stats.reloads++;
    cg_log(CG_LOG_INFO, "Hang up: %s", m->master_name);
    if (load_again(m, &next) == 0) {
        apply(m, &next);
    }
    cg_master_set_num_workers(m, m->conf->workers, false);
    cg_log_reopen();
    if (cg_py_hooks_call(m->hooks.fn.on_reload, "Unhandled exception in main loop", "(O)",
                         m->hooks.server) < 0) {
        m->fatal = true;
        return;
    }
    cg_pidfile_unlink(&m->pidfile);
    if (m->conf->pidfile != NULL && cg_pidfile_create(&m->pidfile, m->conf->pidfile, getpid(),
                                                      &err) < 0) {
        cg_log(CG_LOG_ERROR, "%s", err.msg);
    }
    snprintf(m->proc_name, sizeof(m->proc_name), "%s%s",
             m->conf->proc_name ? m->conf->proc_name : m->conf->default_proc_name,
             m->master_pid ? ".2" : "");
    cg_master_set_title(m);
    /* New workers first; then the old ones (older than last_age) stop
     * gracefully. The listeners stay open throughout. */
    for (int i = 0; i < m->conf->workers && !m->fatal; i++) {
        cg_master_spawn_worker(m);
    }
    for (int i = 0; i < m->nkids; i++) {
        if (m->kids[i].age <= last_age && !m->kids[i].stopping) {
            m->kids[i].stopping = true;
            m->kids[i].reloading = true;
            m->stats.killed++;
            cg_sup_stop_one(&m->sup, m->kids[i].pid, SIGTERM);
        }
    }
    cg_master_manage_workers(m);
    /* Wait on the self-pipe (reaping) until the old workers are gone, at
     * most graceful_timeout. */
    struct old_workers old = { .m = m, .last_age = last_age };
    uint64_t deadline = cg_monotonic_ms() + (uint64_t)m->conf->graceful_timeout * 1000u;
    cg_sup_wait(&m->sup, CG_SUP_ROLE(CG_ROLE_WORKER), deadline, no_old_worker_left, &old);
}

void cg_master_reexec(struct cg_master *m)
{
    char fds[4096] = "", num[32];
    pid_t master = getpid();

    if (m->reexec_pid != 0) {
        cg_log(CG_LOG_WARNING, "USR2 signal ignored. Child exists.");
        return;
    }
    if (m->master_pid != 0) {
        cg_log(CG_LOG_WARNING, "USR2 signal ignored. Parent exists.");
        return;
    }
    /* The metrics listener goes to the new master too, as a descriptor
     * without close-on-exec: a dup, since the fork closes the original in
     * the child (the poller's atfork). */
    int metrics_fd = cg_metrics_http_fd() >= 0 ? dup(cg_metrics_http_fd()) : -1;
    struct cg_sup_spec spec = { .role = CG_ROLE_MASTER, .respawn = CG_SUP_RESPAWN_NEVER };
    pid_t pid = cg_sup_spawn(&m->sup, &spec);
    if (pid != 0 && metrics_fd >= 0) {
        close(metrics_fd);
    }
    if (pid < 0) {
        cg_log_errno(CG_LOG_ERROR, errno, "USR2: fork failed");
        return;
    }
    if (pid > 0) {
        m->reexec_pid = pid;
        cg_py_hooks_server_set(&m->hooks, "reexec_pid", PyLong_FromLong((long)pid));
        return;
    }
    /* The child: becomes the new master. */
    if (cg_py_hooks_call(m->hooks.fn.pre_exec, "Exception in pre_exec hook", "(O)",
                         m->hooks.server) < 0) {
        _exit(1);
    }
    for (size_t i = 0; i < m->nls; i++) {
        int fd = m->ls[i].fd;
        fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) & ~FD_CLOEXEC);
        size_t n = strlen(fds);
        snprintf(fds + n, sizeof(fds) - n, "%s%d", i ? "," : "", fd);
    }
    snprintf(num, sizeof(num), "%d", (int)master);
    setenv("GUNICORN_PID", num, 1);
    if (metrics_fd >= 0) {
        snprintf(num, sizeof(num), "%d", metrics_fd);
        setenv("CGUNICORN_METRICS_FD", num, 1);
        setenv("CGUNICORN_METRICS_BIND", m->conf->metrics_bind ? m->conf->metrics_bind : "", 1);
    }
    if (m->systemd) {
        snprintf(num, sizeof(num), "%d", (int)getpid());
        setenv("LISTEN_PID", num, 1);
        snprintf(num, sizeof(num), "%zu", m->nls);
        setenv("LISTEN_FDS", num, 1);
    } else {
        setenv("GUNICORN_FD", fds, 1);
    }
    if (chdir(m->cwd) < 0) {
        cg_log_errno(CG_LOG_ERROR, errno, "USR2: chdir %s", m->cwd);
    }
    cg_py_flush_stdio();
    execv(m->exe, m->argv);
    cg_log_errno(CG_LOG_ERROR, errno, "USR2: cannot execute %s", m->exe);
    _exit(1);
}

void cg_master_maybe_promote(struct cg_master *m)
{
    struct cg_err err = { { 0 } };

    if (m->master_pid == 0 || m->master_pid == getppid()) {
        return;
    }
    cg_log(CG_LOG_INFO, "Master has been promoted.");
    m->master_name = "Master";
    m->master_pid = 0;
    snprintf(m->proc_name, sizeof(m->proc_name), "%s",
             m->conf->proc_name ? m->conf->proc_name : m->conf->default_proc_name);
    unsetenv("GUNICORN_PID");
    cg_py_hooks_server_set(&m->hooks, "master_pid", PyLong_FromLong(0));
    cg_py_hooks_server_set(&m->hooks, "master_name", PyUnicode_FromString(m->master_name));
    cg_py_hooks_server_set(&m->hooks, "proc_name", PyUnicode_FromString(m->proc_name));
    if (m->pidfile.path[0] != '\0' && m->conf->pidfile != NULL &&
        cg_pidfile_rename(&m->pidfile, m->conf->pidfile, &err) < 0) {
        cg_log(CG_LOG_ERROR, "%s", err.msg);
    }
    cg_master_set_title(m);
}
