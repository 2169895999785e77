/* The master (gunicorn's "arbiter"): binds the listeners, forks and watches
 * HTTP workers and the dirty arbiter, runs the server hooks, and acts on
 * signals in its loop.
 *
 * Loop: poll(self-pipe, 1 s) -> handle signal flags -> reap children ->
 * abort silent workers (timeout) -> spawn/cull to the wanted count. Every
 * child is forked, signalled, reaped and stopped through the supervisor
 * (cg_supervisor.c), which also logs each exit.
 * Signal semantics follow gunicorn: TERM graceful stop, INT/QUIT quick stop,
 * HUP reload the configuration and replace the workers, TTIN/TTOU one
 * more/less, USR1 reopen logs, USR2 re-execute the binary (cg_master_reload.c),
 * WINCH stop the workers when daemonized. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_conf_worker_class.h"
#include "cg_control.h"
#include "cg_daemon.h"
#include "cg_dirty_arbiter.h"
#include "cg_log.h"
#include "cg_master.h"
#include "cg_master_int.h"
#include "cg_metrics.h"
#include "cg_metrics_http.h"
#include "cg_py.h"
#include "cg_py_app.h"
#include "cg_sig.h"
#include "cg_sig_table.h"
#include "cg_statsd.h"
#include "cg_supervisor.h"

#define HOOK_FAILED_IN_LOOP "Unhandled exception in main loop"

/* Says once which native worker serves a worker class that is not one of
 * gunicorn's own names, and what its CONFIG_KWARGS left without effect. */
static void log_worker_class(const struct cg_conf *conf)
{
    const char *raw = conf->worker_class_raw;

    /* gunicorn's own names (sync, gunicorn.workers.*) need no word. */
    if (raw != NULL && cg_conf_worker_class_named(raw) == NULL &&
        strncmp(raw, "gunicorn.workers.", 17) != 0) {
        cg_log(CG_LOG_INFO, "worker_class %s is served by cgunicorn's native %s worker", raw,
               conf->worker_class);
    }
    for (size_t i = 0; i < conf->worker_class_notes.n; i++) {
        cg_log(CG_LOG_INFO, "%s", conf->worker_class_notes.v[i]);
    }
}

void cg_master_set_title(struct cg_master *m)
{
    cg_proc_set_title("gunicorn: master [%s]", m->proc_name);
}

/* num_workers = n, with nworkers_changed(server, new, old) as gunicorn's
 * property setter (old is None the first time). */
void cg_master_set_num_workers(struct cg_master *m, int n, bool first)
{
    int old = m->num_workers;

    m->num_workers = n;
    cg_py_hooks_server_set(&m->hooks, "num_workers", PyLong_FromLong(n));
    if (m->hooks.fn.nworkers_changed == NULL) {
        return;
    }
    int rc = first ? cg_py_hooks_call(m->hooks.fn.nworkers_changed, HOOK_FAILED_IN_LOOP, "(OiO)",
                                      m->hooks.server, n, Py_None)
                   : cg_py_hooks_call(m->hooks.fn.nworkers_changed, HOOK_FAILED_IN_LOOP, "(Oii)",
                                      m->hooks.server, n, old);
    if (rc < 0) {
        m->fatal = true;
    }
}

static int free_slot(struct cg_master *m)
{
    for (int s = 0; s < CG_MASTER_MAX_SLOTS; s++) {
        if (atomic_load(&m->slots[s].pid) == 0) {
            return s;
        }
    }
    return -1;
}

int cg_master_spawn_worker(struct cg_master *m)
{
    int slot = free_slot(m);
    PyObject *pyw = NULL; /* owned */

    if (slot < 0 || m->nkids >= CG_MASTER_MAX_SLOTS) {
        cg_log(CG_LOG_ERROR, "cannot spawn a worker: %d workers is the most this build runs",
               CG_MASTER_MAX_SLOTS);
        return -1;
    }
    m->age++;
    pyw = cg_py_hooks_worker_new(&m->hooks, m->age);
    if (pyw == NULL) {
        return -1;
    }
    if (cg_py_hooks_call(m->hooks.fn.pre_fork, HOOK_FAILED_IN_LOOP, "(OO)", m->hooks.server,
                         pyw) < 0) {
        m->fatal = true;
        Py_DECREF(pyw);
        return -1;
    }
    atomic_store(&m->slots[slot].beat_ms, cg_monotonic_ms());
    atomic_store(&m->slots[slot].requests, 0);
    atomic_store(&m->slots[slot].pid, -1); /* reserved until the child fills it */
    struct cg_sup_spec spec = {
        .role = CG_ROLE_WORKER,
        .respawn = CG_SUP_RESPAWN_ON_CRASH, /* by count: cg_master_manage_workers */
        .boot_error_code = CG_WORKER_BOOT_ERROR,
    };
    pid_t pid = cg_sup_spawn(&m->sup, &spec);
    if (pid < 0) {
        cg_log_errno(CG_LOG_ERROR, errno, "fork of a worker failed");
        atomic_store(&m->slots[slot].pid, 0);
        Py_DECREF(pyw);
        return -1;
    }
    if (pid == 0) {
        cg_dirty_close_listener();
        struct cg_worker w = {
            .conf = m->conf,
            .listeners = m->ls,
            .nlisteners = m->nls,
            .slot = &m->slots[slot],
            .age = m->age,
            .ppid = getppid(),
            .alive = true,
            .hooks = &m->hooks,
            .py_worker = pyw,
        };
        atomic_store(&w.slot->pid, (int32_t)getpid());
        cg_metrics_attach(slot);
        cg_worker_main(&w, m->preloaded_app);
    }
    atomic_store(&m->slots[slot].pid, (int32_t)pid);
    m->kids[m->nkids++] = (struct cg_master_child){ .pid = pid, .slot = slot, .age = m->age };
    m->stats.spawned++;
    cg_py_hooks_worker_forked(&m->hooks, pyw, pid);
    Py_DECREF(pyw);
    return 0;
}

static int live_workers(const struct cg_master *m)
{
    int n = 0;
    for (int i = 0; i < m->nkids; i++) {
        n += !m->kids[i].stopping;
    }
    return n;
}

/* Stops the oldest running workers beyond num_workers, gracefully. */
static void cull_workers(struct cg_master *m)
{
    while (live_workers(m) > m->num_workers) {
        struct cg_master_child *oldest = NULL;
        for (int i = 0; i < m->nkids; i++) {
            if (!m->kids[i].stopping && (oldest == NULL || m->kids[i].age < oldest->age)) {
                oldest = &m->kids[i];
            }
        }
        if (oldest == NULL) {
            return;
        }
        oldest->stopping = true;
        m->stats.killed++;
        cg_sup_stop_one(&m->sup, oldest->pid, SIGTERM);
    }
}

/* Connections waiting in the TCP listeners' accept queues (tcpi_unacked
 * of a listening socket), or -1 when no listener is TCP. */
static long listen_backlog(const struct cg_master *m)
{
    long total = -1;
    for (size_t i = 0; i < m->nls; i++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (m->ls[i].family == AF_UNIX) {
            continue;
        }
        if (getsockopt(m->ls[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
            total = (total < 0 ? 0 : total) + (long)ti.tcpi_unacked;
        }
    }
    return total;
}

/* As gunicorn's manage_workers: the "N workers" debug line and the
 * gunicorn.workers gauge when the count changes; the backlog histogram on
 * every pass when enable_backlog_metric is on. */
static void report_workers(struct cg_master *m)
{
    int active = live_workers(m);
    if (active != m->last_reported_workers) {
        m->last_reported_workers = active;
        cg_log_debug("%d workers", active);
        cg_statsd_gauge("gunicorn.workers", active);
    }
    if (m->conf->enable_backlog_metric) {
        long backlog = listen_backlog(m);
        if (backlog >= 0) {
            cg_log_debug("socket backlog: %ld", backlog);
            cg_statsd_histogram("gunicorn.backlog", backlog);
        }
    }
}

void cg_master_manage_workers(struct cg_master *m)
{
    while (!m->fatal && live_workers(m) < m->num_workers) {
        if (cg_master_spawn_worker(m) < 0) {
            break;
        }
    }
    cull_workers(m);
    report_workers(m);
}

static void signal_workers(struct cg_master *m, int signo)
{
    cg_sup_signal(&m->sup, CG_SUP_ROLE(CG_ROLE_WORKER), signo);
}

static void forward_dirty(struct cg_master *m, int signo)
{
    cg_sup_signal(&m->sup, CG_SUP_ROLE(CG_ROLE_DIRTY_ARBITER), signo);
}

static void spawn_dirty(struct cg_master *m)
{
    struct cg_err err = { { 0 } };

    cg_log(CG_LOG_INFO, "Spawning dirty arbiter...");
    m->dirty_pid = cg_dirty_arbiter_spawn(&m->sup, m->conf, &m->hooks.fn, &err);
    if (m->dirty_pid < 0) {
        cg_log(CG_LOG_ERROR, "cannot start the dirty arbiter: %s", err.msg);
        m->dirty_pid = 0;
    }
}

/* One worker exited: gunicorn's reap_workers body. Returns -1 to halt. */
static int worker_exited(struct cg_master *m, int idx, pid_t pid, int status, bool asked)
{
    const struct cg_master_child *k = &m->kids[idx];
    int cause = k->aborted ? CG_METRICS_RESTART_TIMEOUT
              : k->reloading ? CG_METRICS_RESTART_RELOAD
              : k->over_memory ? CG_METRICS_RESTART_MEMORY
              : (asked || k->stopping) ? -1 /* culled or shutting down: not replaced */
              : (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? CG_METRICS_RESTART_MAX_REQUESTS
              : CG_METRICS_RESTART_CRASH;
    cg_metrics_retire_slot(k->slot, cause); /* before the slot can be reused */
    atomic_store(&m->slots[m->kids[idx].slot].pid, 0);
    m->kids[idx] = m->kids[--m->nkids];
    PyObject *pyw = cg_py_hooks_worker_pop(&m->hooks, pid); /* owned */
    int rc = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == CG_WORKER_BOOT_ERROR) {
        m->exit_status = CG_WORKER_BOOT_ERROR;
        m->halt_reason = "Worker failed to boot.";
        rc = -1;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == CG_APP_LOAD_ERROR) {
        m->exit_status = CG_APP_LOAD_ERROR;
        m->halt_reason = "App failed to load.";
        rc = -1;
    } else if (pyw != NULL && cg_py_hooks_call(m->hooks.fn.child_exit, HOOK_FAILED_IN_LOOP, "(OO)",
                                               m->hooks.server, pyw) < 0) {
        m->fatal = true;
    }
    Py_XDECREF(pyw);
    return rc;
}

/* The supervisor reaped a child (its exit already logged): gunicorn's
 * reap_workers, per kind of child. */
static void on_child_exit(struct cg_sup *sup, const struct cg_sup_exit *ex, void *arg)
{
    struct cg_master *m = arg;
    (void)sup;

    switch (ex->role) {
    case CG_ROLE_MASTER: /* the USR2 master */
        m->reexec_pid = 0;
        cg_py_hooks_server_set(&m->hooks, "reexec_pid", PyLong_FromLong(0));
        cg_control_reclaim(m); /* it had bound our control socket's path */
        break;
    case CG_ROLE_DIRTY_ARBITER:
        m->dirty_pid = 0;
        cg_metrics_dirty_arbiter_gone();
        if (ex->code == CG_DIRTY_ARBITER_EXIT_BOOT_ERROR) {
            m->exit_status = CG_WORKER_BOOT_ERROR;
            m->halt_reason = "Dirty arbiter failed to boot.";
            m->reap_rc = -1;
        }
        break;
    case CG_ROLE_WORKER:
        for (int i = 0; i < m->nkids; i++) {
            if (m->kids[i].pid == ex->pid) {
                if (worker_exited(m, i, ex->pid, ex->status, ex->stopping) < 0) {
                    m->reap_rc = -1;
                }
                break;
            }
        }
        break;
    case CG_ROLE_DIRTY_WORKER:
        break; /* the arbiter's children, never the master's */
    }
}

int cg_master_reap(struct cg_master *m)
{
    cg_sup_reap(&m->sup);
    int rc = m->reap_rc; /* also a halt asked for while HUP waited on old workers */
    m->reap_rc = 0;
    return rc;
}

/* Aborts workers that have not reported in for `timeout` seconds. */
static void murder_workers(struct cg_master *m)
{
    if (m->conf->timeout <= 0) {
        return;
    }
    uint64_t now = cg_monotonic_ms();
    uint64_t limit = (uint64_t)m->conf->timeout * 1000u;
    for (int i = 0; i < m->nkids; i++) {
        struct cg_master_child *c = &m->kids[i];
        uint64_t beat = atomic_load(&m->slots[c->slot].beat_ms);
        if (now - beat <= limit) {
            continue;
        }
        if (!c->aborted) {
            cg_log(CG_LOG_CRITICAL, "WORKER TIMEOUT (pid:%d)", (int)c->pid);
            c->aborted = true;
            cg_sup_kill(&m->sup, c->pid, SIGABRT);
        } else {
            cg_sup_kill(&m->sup, c->pid, SIGKILL);
        }
    }
}

/* max_worker_memory (MB of RSS; cgunicorn extension): a worker above it is
 * replaced; the new one is forked first, then the old one gets TERM and
 * finishes its current requests (connections meanwhile wait in the
 * listeners' queue, so none fails, even with one worker). */
static void check_memory(struct cg_master *m)
{
    int limit = m->conf->max_worker_memory;

    for (int i = 0; limit > 0 && i < m->nkids; i++) {
        if (m->kids[i].stopping) {
            continue;
        }
        pid_t pid = m->kids[i].pid;
        long mb = cg_sup_rss_mb(pid);
        if (mb <= limit) {
            continue;
        }
        cg_log(CG_LOG_INFO, "Worker (pid:%d) uses %ld MB, over max_worker_memory (%d MB); "
               "replacing it", (int)pid, mb, limit);
        m->kids[i].stopping = true;
        m->kids[i].over_memory = true;
        cg_master_manage_workers(m); /* its replacement first */
        cg_sup_stop_one(&m->sup, pid, SIGTERM);
    }
}

/* An INT or QUIT during a graceful stop makes it quick: QUIT to every
 * child, and at most 2 s more before KILL. */
static bool on_stop_wake(struct cg_sup *sup, void *arg)
{
    bool *graceful = arg;

    if (*graceful && (cg_sig_take(SIGINT) || cg_sig_take(SIGQUIT))) {
        cg_log(CG_LOG_INFO, "Quick shutdown requested");
        *graceful = false;
        cg_sup_signal(sup, CG_MASTER_KIDS, SIGQUIT);
        cg_sup_stop_hasten(sup, cg_monotonic_ms() + 2000u);
    }
    return false;
}

/* Stops every child: TERM (graceful) or QUIT (quick), then waits on the
 * self-pipe up to graceful_timeout (an INT/QUIT meanwhile turns it quick)
 * and SIGKILLs what is left (cg_sup_stop). A USR2 master is left running.
 * Unix sockets are unlinked unless a USR2 partner or systemd shares them. */
static void stop_all(struct cg_master *m, bool graceful)
{
    int signo = graceful ? SIGTERM : SIGQUIT;
    uint64_t deadline = cg_monotonic_ms() + (uint64_t)m->conf->graceful_timeout * 1000u;
    bool unlink_unix = m->reexec_pid == 0 && m->master_pid == 0 && !m->systemd &&
                       !m->conf->reuse_port;

    if (m->reexec_pid != 0 || m->master_pid != 0) {
        /* The USR2 partner serves the same metrics listener: leave the
         * probes and scrapes to it rather than answer 503 while draining. */
        cg_metrics_http_hand_off();
    } else {
        cg_metrics_set_draining(); /* /readyz says 503 before the listeners close */
    }
    if (graceful && unlink_unix) { /* unshared: the workers drain the queues */
        cg_listen_stop_queueing(m->ls, m->nls);
    }
    cg_listen_close_all(m->ls, m->nls, unlink_unix);
    m->ls = NULL;
    m->nls = 0;
    cg_sup_stop(&m->sup, CG_MASTER_KIDS, signo, deadline, on_stop_wake, &graceful);
}

/* Acts on pending signals. Returns 1 to stop gracefully, 2 quickly, 0 to go on. */
static int handle_signals(struct cg_master *m)
{
    cg_sig_drain();
    if (cg_sig_take(SIGCHLD)) {
        cg_log_debug("Handling signal: chld");
    }
    if (cg_sig_take(SIGINT)) {
        cg_log(CG_LOG_INFO, "Handling signal: int");
        return 2;
    }
    if (cg_sig_take(SIGQUIT)) {
        cg_log(CG_LOG_INFO, "Handling signal: quit");
        return 2;
    }
    if (cg_sig_take(SIGTERM)) {
        cg_log(CG_LOG_INFO, "Handling signal: term");
        return 1;
    }
    if (cg_sig_take(SIGHUP)) {
        cg_log(CG_LOG_INFO, "Handling signal: hup");
        cg_master_reload(m);
        forward_dirty(m, SIGHUP);
    }
    for (int n = cg_sig_take_count(SIGTTIN); n > 0; n--) {
        cg_log(CG_LOG_INFO, "Handling signal: ttin");
        cg_master_set_num_workers(m, m->num_workers + 1, false);
        cg_master_manage_workers(m);
    }
    for (int n = cg_sig_take_count(SIGTTOU); n > 0; n--) {
        cg_log(CG_LOG_INFO, "Handling signal: ttou");
        if (m->num_workers > 1) {
            cg_master_set_num_workers(m, m->num_workers - 1, false);
            cg_master_manage_workers(m);
        }
    }
    if (cg_sig_take(SIGUSR1)) {
        cg_log(CG_LOG_INFO, "Handling signal: usr1");
        cg_log_reopen();
        signal_workers(m, SIGUSR1);
        forward_dirty(m, SIGUSR1);
    }
    if (cg_sig_take(SIGUSR2)) {
        cg_log(CG_LOG_INFO, "Handling signal: usr2");
        cg_master_reexec(m);
    }
    if (cg_sig_take(SIGWINCH)) {
        cg_log(CG_LOG_INFO, "Handling signal: winch");
        if (m->conf->daemon) {
            cg_log(CG_LOG_INFO, "graceful stop of workers");
            cg_master_set_num_workers(m, 0, false);
            for (int i = 0; i < m->nkids; i++) {
                m->kids[i].stopping = true;
                cg_sup_stop_one(&m->sup, m->kids[i].pid, SIGTERM);
            }
        } else {
            cg_log_debug("SIGWINCH ignored. Not daemonized");
        }
    }
    return 0;
}

/* Listeners: systemd's (LISTEN_FDS), the old master's (GUNICORN_FD, after
 * USR2), else bound from `bind`. */
static int open_listeners(struct cg_master *m, struct cg_err *err)
{
    struct cg_conf *conf = m->conf;
    int nsd = cg_systemd_listen_fds();
    const char *inherited = getenv("GUNICORN_FD");

    if (nsd > 0 || (m->master_pid != 0 && inherited != NULL)) {
        int fds[CG_MASTER_MAX_SLOTS];
        int n = 0;
        if (nsd > 0) {
            m->systemd = true;
            for (; n < nsd && n < CG_MASTER_MAX_SLOTS; n++) {
                fds[n] = 3 + n;
            }
        } else {
            for (const char *p = inherited; *p != '\0' && n < CG_MASTER_MAX_SLOTS;) {
                char *end;
                fds[n++] = (int)strtol(p, &end, 10);
                p = *end == ',' ? end + 1 : end;
                if (end == p && *p != '\0') {
                    break;
                }
            }
        }
        unsetenv("GUNICORN_FD");
        m->ls = calloc((size_t)(n ? n : 1), sizeof(*m->ls));
        if (m->ls == NULL) {
            cg_err_set(err, "out of memory");
            return -1;
        }
        for (int i = 0; i < n; i++) {
            if (cg_listen_adopt_fd(fds[i], &m->ls[i], err) < 0) {
                return -1;
            }
            m->nls++;
        }
        return 0;
    }
    return cg_listen_open_all((const char *const *)conf->bind.v, conf->bind.n, conf->backlog,
                              conf->reuse_port, conf->umask, &m->ls, &m->nls, err);
}

_Static_assert(CG_METRICS_SLOTS == CG_MASTER_MAX_SLOTS, "one metrics slot per worker slot");

/* What /metrics, /healthz and /readyz read of the master (cg_metrics_http.c). */
static void metrics_state(struct cg_metrics_state *st, void *arg)
{
    const struct cg_master *m = arg;
    for (int i = 0; i < m->nkids && i < CG_METRICS_SLOTS; i++) {
        const struct cg_master_child *c = &m->kids[i];
        st->kids[i] = (struct cg_metrics_kid){ .slot = c->slot, .pid = (int)c->pid,
                                               .stopping = c->stopping,
                                               .beat_ms = atomic_load(&m->slots[c->slot].beat_ms) };
        st->nkids = i + 1;
    }
    st->wanted = m->num_workers;
    st->timeout_s = m->conf->timeout;
    st->dirty_on = m->dirty_on;
    st->ls = m->ls;
    st->nls = m->nls;
}

static const struct cg_sup_poller metrics_poller = {
    .fill = cg_metrics_http_pollfds,
    .service = cg_metrics_http_service,
    .atfork_child = cg_metrics_http_atfork_child,
};

/* After USR2: the old master's metrics listener, when it passed one
 * (CGUNICORN_METRICS_FD, cg_master_reexec) for the metrics_bind this
 * master runs with; else -1 (one passed for another address, or while
 * metrics are now off, is closed). The variables are removed either way:
 * the workers' environment is gunicorn's. */
static int inherited_metrics_fd(const struct cg_master *m)
{
    const char *fd_s = getenv("CGUNICORN_METRICS_FD");
    const char *bind = getenv("CGUNICORN_METRICS_BIND");
    const char *want = m->conf->metrics_bind ? m->conf->metrics_bind : "";
    int fd = fd_s != NULL && m->master_pid != 0 ? (int)strtol(fd_s, NULL, 10) : -1;

    if (fd >= 0 && fd < 3) {
        fd = -1; /* not a descriptor we passed */
    }
    if (fd >= 0 && (bind == NULL || strcmp(bind, want) != 0)) {
        if (want[0] != '\0') {
            cg_log(CG_LOG_INFO, "metrics_bind changed across USR2 ('%s', was '%s'): binding it",
                   want, bind ? bind : "");
        }
        close(fd);
        fd = -1;
    }
    unsetenv("CGUNICORN_METRICS_FD");
    unsetenv("CGUNICORN_METRICS_BIND");
    return fd;
}

/* The shared metrics region and the metrics listener, before any fork.
 * A USR2 master takes over the old master's listener (both serve it until
 * the old one stops); one whose metrics_bind differs binds its own, and
 * when that fails it serves no metrics (logged) rather than failing the
 * upgrade. */
static int open_metrics(struct cg_master *m, struct cg_err *err)
{
    int fd = inherited_metrics_fd(m);

    if (m->conf->metrics_bind == NULL || m->conf->metrics_bind[0] == '\0') {
        return 0;
    }
    if (cg_metrics_open(true, err) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    int rc = fd >= 0 ? cg_metrics_http_adopt(fd, metrics_state, m, err)
                     : cg_metrics_http_open(m->conf->metrics_bind, m->conf->umask, metrics_state,
                                            m, err);
    if (rc < 0) {
        if (m->master_pid == 0) {
            return -1;
        }
        cg_log(CG_LOG_ERROR, "%s", err->msg);
        return 0;
    }
    cg_sup_set_poller(&metrics_poller);
    return 0;
}

int cg_master_move_metrics(struct cg_master *m, const char *addr, struct cg_err *err)
{
    bool on = addr != NULL && addr[0] != '\0';
    bool late = on && cg_metrics == NULL;

    if (on && cg_metrics_open(true, err) < 0) {
        return -1;
    }
    if (cg_metrics_http_move(addr, m->conf->umask, metrics_state, m, err) < 0) {
        return -1;
    }
    if (late && m->dirty_pid != 0) {
        cg_metrics_dirty_assume_ready();
        cg_log(CG_LOG_WARNING, "metrics_bind set by a reload: the running dirty arbiter (pid %d) "
               "started without metrics; the dirty pool is counted from its next restart",
               (int)m->dirty_pid);
    }
    cg_sup_set_poller(&metrics_poller);
    return 0;
}

static int map_slots(struct cg_master *m, struct cg_err *err)
{
    m->slots = mmap(NULL, sizeof(struct cg_worker_slot) * CG_MASTER_MAX_SLOTS,
                    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m->slots == MAP_FAILED) {
        m->slots = NULL;
        cg_err_set(err, "cannot map the worker liveness table: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int preload(struct cg_master *m, struct cg_err *err)
{
    PyObject *tb = NULL; /* owned */

    m->preloaded_app = cg_py_app_load(m->conf->app_uri, &tb, err);
    if (m->preloaded_app != NULL) {
        return 0;
    }
    const char *text = tb ? PyUnicode_AsUTF8(tb) : NULL;
    if (text != NULL) {
        cg_log(CG_LOG_ERROR, "%s", text);
    }
    PyErr_Clear();
    Py_XDECREF(tb);
    return -1;
}

/* gunicorn's Arbiter.__init__/setup and start(): everything up to
 * when_ready. Returns 0, or -1 with err (or a hook's traceback logged). */
static int start(struct cg_master *m, struct cg_err *err)
{
    struct cg_conf *conf = m->conf;
    const char *oldpid = getenv("GUNICORN_PID");
    char names[4096];

    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    m->stats.start_time = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    snprintf(m->proc_name, sizeof(m->proc_name), "%s",
             conf->proc_name ? conf->proc_name : conf->default_proc_name);
    m->master_name = "Master";
    m->last_reported_workers = -1;
    if (map_slots(m, err) < 0 || cg_py_hooks_init(&m->hooks, conf, conf->workers, m->proc_name,
                                                   err) < 0) {
        return -1;
    }
    cg_master_set_num_workers(m, conf->workers, true);
    if (m->fatal || (conf->preload_app && preload(m, err) < 0)) {
        return -1;
    }
    cg_log(CG_LOG_INFO, "Starting gunicorn %s (cgunicorn %s)", CG_CONF_GUNICORN_VERSION, CG_CONF_VERSION_STRING);
    cg_conf_warn_unimplemented(conf);
    if (oldpid != NULL) {
        m->master_pid = (pid_t)strtol(oldpid, NULL, 10);
        size_t n = strlen(m->proc_name);
        snprintf(m->proc_name + n, sizeof(m->proc_name) - n, ".2");
        m->master_name = "Master.2";
        cg_py_hooks_server_set(&m->hooks, "master_pid", PyLong_FromLong((long)m->master_pid));
        cg_py_hooks_server_set(&m->hooks, "master_name", PyUnicode_FromString(m->master_name));
        cg_py_hooks_server_set(&m->hooks, "proc_name", PyUnicode_FromString(m->proc_name));
    }
    if (conf->pidfile != NULL) {
        char path[4096];
        snprintf(path, sizeof(path), "%s%s", conf->pidfile, m->master_pid ? ".2" : "");
        if (cg_pidfile_create(&m->pidfile, path, getpid(), err) < 0) {
            return -1;
        }
        cg_py_hooks_server_set(&m->hooks, "pidfile", PyUnicode_FromString(path));
    }
    if (cg_py_hooks_call(m->hooks.fn.on_starting, "Exception in on_starting hook", "(O)",
                         m->hooks.server) < 0) {
        cg_err_set(err, "the on_starting hook raised (traceback in the error log)");
        return -1;
    }
    if (cg_sig_open_role(CG_ROLE_MASTER, err) < 0 || open_listeners(m, err) < 0 ||
        open_metrics(m, err) < 0) {
        return -1;
    }
    cg_listen_describe(m->ls, m->nls, names, sizeof(names));
    PyObject *lst = PyUnicode_FromString(names);
    PyObject *split = lst ? PyUnicode_Split(lst, PyUnicode_FromString(","), -1) : NULL;
    Py_XDECREF(lst);
    if (split == NULL) {
        PyErr_Clear();
    } else {
        cg_py_hooks_server_set(&m->hooks, "LISTENERS", split);
    }
    cg_log_debug("Arbiter booted");
    cg_log(CG_LOG_INFO, "Listening at: %s (%d)", names, (int)getpid());
    cg_log(CG_LOG_INFO, "Using worker: %s", conf->worker_class);
    log_worker_class(conf);
    cg_systemd_notify("READY=1\nSTATUS=Gunicorn arbiter booted");
    m->dirty_on = cg_dirty_wanted(conf);
    if (m->dirty_on) {
        if (cg_dirty_prepare(conf, err) < 0) {
            return -1;
        }
        spawn_dirty(m);
    }
    if (cg_py_hooks_call(m->hooks.fn.when_ready, "Exception in when_ready hook", "(O)",
                         m->hooks.server) < 0) {
        cg_err_set(err, "the when_ready hook raised (traceback in the error log)");
        return -1;
    }
    return 0;
}

static struct cg_master the_master; /* large (kids table); one per process */

void cg_master_init_early(int argc, char **argv)
{
    struct cg_master *m = &the_master;
    ssize_t n;

    m->argc = argc;
    m->argv = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; m->argv != NULL && i < argc; i++) {
        m->argv[i] = strdup(argv[i]);
    }
    n = readlink("/proc/self/exe", m->exe, sizeof(m->exe) - 1);
    m->exe[n > 0 ? n : 0] = '\0';
    char *del = strstr(m->exe, " (deleted)");
    if (del != NULL && del[10] == '\0') {
        *del = '\0';
    }
    if (getcwd(m->cwd, sizeof(m->cwd)) == NULL) {
        snprintf(m->cwd, sizeof(m->cwd), "/");
    }
}

static void free_master(struct cg_master *m)
{
    cg_sup_set_poller(NULL);
    cg_metrics_http_close(m->reexec_pid == 0 && m->master_pid == 0);
    cg_metrics_close();
    cg_sup_deinit(&m->sup);
    cg_py_hooks_deinit(&m->hooks);
    Py_CLEAR(m->preloaded_app);
    if (m->slots != NULL) {
        munmap(m->slots, sizeof(struct cg_worker_slot) * CG_MASTER_MAX_SLOTS);
    }
    for (int i = 0; m->argv != NULL && i < m->argc; i++) {
        free(m->argv[i]);
    }
    free(m->argv);
}

/* gunicorn's halt(): stop, log, unlink the pid file, on_exit. */
static int halt(struct cg_master *m, bool graceful)
{
    stop_all(m, graceful);
    if (m->dirty_on) {
        cg_dirty_cleanup();
    }
    if (m->exit_status != 0) {
        cg_log(CG_LOG_ERROR, "Shutting down: %s", m->master_name);
        cg_log(CG_LOG_ERROR, "Reason: %s", m->halt_reason);
    } else {
        cg_log(CG_LOG_INFO, "Shutting down: %s", m->master_name);
    }
    cg_pidfile_unlink(&m->pidfile);
    cg_py_hooks_call(m->hooks.fn.on_exit, "Exception in on_exit hook", "(O)", m->hooks.server);
    return m->exit_status;
}

int cg_master_run(struct cg_conf *conf, struct cg_err *err)
{
    struct cg_master *m = &the_master;
    int stop = 0, code;

    m->conf = conf;
    cg_sup_init(&m->sup, on_child_exit, m);
    if (conf->daemon && cg_daemon_start(conf->enable_stdio_inheritance, err) < 0) {
        free_master(m);
        return 1;
    }
    if (start(m, err) < 0) {
        cg_listen_close_all(m->ls, m->nls, true);
        cg_pidfile_unlink(&m->pidfile);
        free_master(m);
        return 1;
    }
    cg_master_set_title(m);
    cg_master_manage_workers(m);
    cg_control_open(m); /* as gunicorn: once the first workers are spawned */
    while (!stop && !m->fatal) {
        /* the self-pipe, the control socket's fds, then metrics_bind's */
        struct pollfd pfd[1 + CG_CONTROL_MAX_POLLFDS + CG_SUP_POLL_MAX] = {
            { .fd = cg_sig_fd(), .events = POLLIN }
        };
        size_t nctl = cg_control_pollfds(pfd + 1);
        int nmet = cg_metrics_http_on()
                       ? cg_metrics_http_pollfds(pfd + 1 + nctl, CG_SUP_POLL_MAX - 1)
                       : 0;
        cg_master_maybe_promote(m);
        if (!cg_sig_any_pending()) { /* HUP's wait may have emptied the pipe */
            Py_BEGIN_ALLOW_THREADS
            poll(pfd, 1 + nctl + (size_t)nmet, 1000);
            Py_END_ALLOW_THREADS
        }
        if (nmet > 0) { /* also on a timeout: its clients' deadlines */
            cg_metrics_http_service(pfd + 1 + nctl, nmet);
        }
        cg_control_service(m, pfd + 1, nctl);
        stop = handle_signals(m);
        if (stop || m->fatal) {
            break;
        }
        if (cg_master_reap(m) < 0) {
            stop = 2;
            break;
        }
        murder_workers(m);
        check_memory(m);
        cg_master_manage_workers(m);
        if (m->dirty_on && m->dirty_pid == 0) {
            spawn_dirty(m);
        }
    }
    cg_control_close(); /* gunicorn stops the control server first */
    if (m->fatal) {
        /* A hook raised in the loop (logged with its traceback): gunicorn
         * stops the workers quickly and exits -1. */
        stop_all(m, false);
        if (m->dirty_on) {
            cg_dirty_cleanup();
        }
        cg_pidfile_unlink(&m->pidfile);
        code = 255;
    } else {
        code = halt(m, stop == 1);
    }
    free_master(m);
    return code;
}
