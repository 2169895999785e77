/* The master (gunicorn's "arbiter"): binds the listeners, forks and watches
 * HTTP workers and the dirty arbiter, and acts on signals in its loop.
 *
 * Loop: poll(self-pipe, 1 s) -> handle signal flags -> reap children ->
 * abort silent workers (timeout) -> spawn/cull to the wanted count.
 * Signal semantics follow gunicorn: TERM graceful stop, INT/QUIT quick stop,
 * HUP replace workers, TTIN/TTOU one more/less, USR1 reopen logs. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cg_dirty_arbiter.h"
#include "cg_log.h"
#include "cg_master.h"
#include "cg_proc.h"
#include "cg_py_app.h"
#include "cg_sig.h"
#include "cg_worker.h"

#define MAX_SLOTS 1024

struct child {
    pid_t pid;
    int slot;
    int age;
    bool aborted;
    bool stopping; /* sent TERM (HUP/TTOU/cull) */
};

struct master {
    struct cg_conf *conf;
    struct cg_listener *ls;
    size_t nls;
    struct cg_worker_slot *slots; /* shared mapping, MAX_SLOTS entries */
    struct child kids[MAX_SLOTS];
    int nkids;
    int num_workers;
    int age;
    PyObject *preloaded_app; /* owned; NULL unless preload_app */
    pid_t dirty_pid;
    bool dirty_on;
    int exit_status;
    const char *halt_reason;
};

static const int master_signals[] = {
    SIGHUP, SIGQUIT, SIGINT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD, 0,
};

uint64_t cg_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int free_slot(struct master *m)
{
    for (int s = 0; s < MAX_SLOTS; s++) {
        if (atomic_load(&m->slots[s].pid) == 0) {
            return s;
        }
    }
    return -1;
}

static int spawn_worker(struct master *m)
{
    int slot = free_slot(m);
    if (slot < 0 || m->nkids >= MAX_SLOTS) {
        cg_log(CG_LOG_ERROR, "cannot spawn a worker: %d workers is the most this build runs",
               MAX_SLOTS);
        return -1;
    }
    m->age++;
    atomic_store(&m->slots[slot].beat_ms, cg_monotonic_ms());
    atomic_store(&m->slots[slot].requests, 0);
    atomic_store(&m->slots[slot].pid, -1); /* reserved until the child fills it */
    pid_t pid = cg_proc_fork(CG_ROLE_WORKER);
    if (pid < 0) {
        cg_log_errno(CG_LOG_ERROR, errno, "fork of a worker failed");
        atomic_store(&m->slots[slot].pid, 0);
        return -1;
    }
    if (pid == 0) {
        struct cg_worker w = {
            .conf = m->conf,
            .listeners = m->ls,
            .nlisteners = m->nls,
            .slot = &m->slots[slot],
            .age = m->age,
            .ppid = getppid(),
            .alive = true,
        };
        atomic_store(&w.slot->pid, (int32_t)getpid());
        cg_worker_main(&w, m->preloaded_app);
    }
    atomic_store(&m->slots[slot].pid, (int32_t)pid);
    m->kids[m->nkids++] = (struct child){ .pid = pid, .slot = slot, .age = m->age };
    cg_log(CG_LOG_INFO, "Booting worker with pid: %d", (int)pid);
    return 0;
}

static int live_workers(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->nkids; i++) {
        n += !m->kids[i].stopping;
    }
    return n;
}

/* Kills the oldest running workers beyond num_workers, gracefully. */
static void cull_workers(struct master *m)
{
    while (live_workers(m) > m->num_workers) {
        struct child *oldest = NULL;
        for (int i = 0; i < m->nkids; i++) {
            if (!m->kids[i].stopping && (oldest == NULL || m->kids[i].age < oldest->age)) {
                oldest = &m->kids[i];
            }
        }
        if (oldest == NULL) {
            return;
        }
        oldest->stopping = true;
        kill(oldest->pid, SIGTERM);
    }
}

static void manage_workers(struct master *m)
{
    while (live_workers(m) < m->num_workers) {
        if (spawn_worker(m) < 0) {
            break;
        }
    }
    cull_workers(m);
}

static void signal_workers(struct master *m, int signo)
{
    for (int i = 0; i < m->nkids; i++) {
        kill(m->kids[i].pid, signo);
    }
}

static void forward_dirty(struct master *m, int signo)
{
    if (m->dirty_pid > 0) {
        kill(m->dirty_pid, signo);
    }
}

static void spawn_dirty(struct master *m)
{
    struct cg_err err = { { 0 } };

    cg_log(CG_LOG_INFO, "Spawning dirty arbiter...");
    m->dirty_pid = cg_dirty_arbiter_spawn(m->conf, &err);
    if (m->dirty_pid < 0) {
        cg_log(CG_LOG_ERROR, "cannot start the dirty arbiter: %s", err.msg);
        m->dirty_pid = 0;
    }
}

static void log_child_exit(const char *what, pid_t pid, int status)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        cg_log(CG_LOG_ERROR, "%s (pid:%d) exited with code %d.", what, (int)pid,
               WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGKILL) {
            cg_log(CG_LOG_ERROR, "%s (pid:%d) was sent SIGKILL! Perhaps out of memory?", what,
                   (int)pid);
        } else {
            cg_log(sig == SIGTERM ? CG_LOG_INFO : CG_LOG_WARNING, "%s (pid:%d) was sent SIG%s!",
                   what, (int)pid, cg_sig_name(sig));
        }
    }
}

/* Reaps every exited child. Returns -1 when the server must halt (a worker
 * failed to boot), with m->exit_status and m->halt_reason set. */
static int reap(struct master *m)
{
    int status = 0;
    pid_t pid;
    int rc = 0;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == m->dirty_pid) {
            m->dirty_pid = 0;
            log_child_exit("Dirty arbiter", pid, status);
            if (WIFEXITED(status) && WEXITSTATUS(status) == CG_WORKER_BOOT_ERROR) {
                m->exit_status = CG_WORKER_BOOT_ERROR;
                m->halt_reason = "Dirty arbiter failed to boot.";
                rc = -1;
            }
            continue;
        }
        int idx = -1;
        for (int i = 0; i < m->nkids; i++) {
            if (m->kids[i].pid == pid) {
                idx = i;
                break;
            }
        }
        if (idx < 0) {
            cg_log_debug("Reaped unknown child process (pid:%d, status:%d)", (int)pid, status);
            continue;
        }
        log_child_exit("Worker", pid, status);
        atomic_store(&m->slots[m->kids[idx].slot].pid, 0);
        m->kids[idx] = m->kids[--m->nkids];
        if (WIFEXITED(status) && WEXITSTATUS(status) == CG_WORKER_BOOT_ERROR) {
            m->exit_status = CG_WORKER_BOOT_ERROR;
            m->halt_reason = "Worker failed to boot.";
            rc = -1;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == CG_APP_LOAD_ERROR) {
            m->exit_status = CG_APP_LOAD_ERROR;
            m->halt_reason = "App failed to load.";
            rc = -1;
        }
    }
    return rc;
}

/* Aborts workers that have not reported in for `timeout` seconds. */
static void murder_workers(struct master *m)
{
    if (m->conf->timeout <= 0) {
        return;
    }
    uint64_t now = cg_monotonic_ms();
    uint64_t limit = (uint64_t)m->conf->timeout * 1000u;
    for (int i = 0; i < m->nkids; i++) {
        struct child *c = &m->kids[i];
        uint64_t beat = atomic_load(&m->slots[c->slot].beat_ms);
        if (now - beat <= limit) {
            continue;
        }
        if (!c->aborted) {
            cg_log(CG_LOG_CRITICAL, "WORKER TIMEOUT (pid:%d)", (int)c->pid);
            c->aborted = true;
            kill(c->pid, SIGABRT);
        } else {
            kill(c->pid, SIGKILL);
        }
    }
}

/* Stops every child: TERM (graceful) or QUIT (quick), then waits up to
 * graceful_timeout and SIGKILLs what is left. */
static void stop_all(struct master *m, bool graceful)
{
    int signo = graceful ? SIGTERM : SIGQUIT;
    uint64_t deadline = cg_monotonic_ms() + (uint64_t)m->conf->graceful_timeout * 1000u;

    cg_listen_close_all(m->ls, m->nls, true);
    m->ls = NULL;
    m->nls = 0;
    signal_workers(m, signo);
    forward_dirty(m, signo);
    while ((m->nkids > 0 || m->dirty_pid > 0) && cg_monotonic_ms() < deadline) {
        reap(m);
        usleep(20000);
    }
    signal_workers(m, SIGKILL);
    forward_dirty(m, SIGKILL);
    while (m->nkids > 0 || m->dirty_pid > 0) {
        int before = m->nkids + (m->dirty_pid > 0);
        reap(m);
        if (m->nkids + (m->dirty_pid > 0) == before) {
            usleep(10000);
        }
    }
}

/* Acts on pending signals. Returns 1 to stop gracefully, 2 quickly, 0 to go on. */
static int handle_signals(struct master *m)
{
    int stop = 0;

    cg_sig_drain();
    if (cg_sig_take(SIGCHLD)) {
        cg_log_debug("Handling signal: chld");
    }
    if (cg_sig_take(SIGINT) || cg_sig_take(SIGQUIT)) {
        cg_log(CG_LOG_INFO, "Handling signal: %s", "int/quit");
        stop = 2;
    }
    if (cg_sig_take(SIGTERM)) {
        cg_log(CG_LOG_INFO, "Handling signal: term");
        stop = stop ? stop : 1;
    }
    if (stop) {
        return stop;
    }
    if (cg_sig_take(SIGHUP)) {
        cg_log(CG_LOG_INFO, "Handling signal: hup");
        cg_log(CG_LOG_INFO, "Hang up: Master");
        /* New workers first, then the old ones stop gracefully (no request is
         * refused: the listeners stay open throughout). */
        for (int i = 0; i < m->nkids; i++) {
            m->kids[i].stopping = true;
        }
        int old = m->nkids;
        for (int i = 0; i < m->num_workers; i++) {
            spawn_worker(m);
        }
        for (int i = 0; i < old; i++) {
            kill(m->kids[i].pid, SIGTERM);
        }
        forward_dirty(m, SIGHUP);
    }
    if (cg_sig_take(SIGTTIN)) {
        cg_log(CG_LOG_INFO, "Handling signal: ttin");
        m->num_workers++;
    }
    if (cg_sig_take(SIGTTOU)) {
        cg_log(CG_LOG_INFO, "Handling signal: ttou");
        if (m->num_workers > 1) {
            m->num_workers--;
        }
    }
    if (cg_sig_take(SIGUSR1)) {
        cg_log(CG_LOG_INFO, "Handling signal: usr1");
        cg_log_reopen();
        signal_workers(m, SIGUSR1);
        forward_dirty(m, SIGUSR1);
    }
    if (cg_sig_take(SIGUSR2)) {
        cg_log(CG_LOG_WARNING, "Handling signal: usr2: binary upgrade is not implemented yet "
                               "in cgunicorn; signal ignored (use HUP to replace workers)");
    }
    if (cg_sig_take(SIGWINCH)) {
        cg_log_debug("SIGWINCH ignored. Not daemonized");
    }
    return 0;
}

static int setup(struct master *m, struct cg_err *err)
{
    struct cg_conf *conf = m->conf;

    m->slots = mmap(NULL, sizeof(struct cg_worker_slot) * MAX_SLOTS, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m->slots == MAP_FAILED) {
        m->slots = NULL;
        cg_err_set(err, "cannot map the worker liveness table: %s", strerror(errno));
        return -1;
    }
    if (cg_sig_open(master_signals, err) < 0) {
        return -1;
    }
    if (conf->preload_app) {
        PyObject *tb = NULL; /* owned */
        m->preloaded_app = cg_py_app_load(conf->app_uri, &tb, err);
        if (m->preloaded_app == NULL) {
            const char *text = tb ? PyUnicode_AsUTF8(tb) : NULL;
            if (text != NULL) {
                cg_log(CG_LOG_ERROR, "%s", text);
            }
            PyErr_Clear();
            Py_XDECREF(tb);
            return -1;
        }
    }
    if (cg_listen_open_all((const char *const *)conf->bind.v, conf->bind.n, conf->backlog,
                           conf->reuse_port, conf->umask, &m->ls, &m->nls, err) < 0) {
        return -1;
    }
    return 0;
}

int cg_master_run(struct cg_conf *conf, struct cg_err *err)
{
    static struct master m; /* large (kids table); one per process */
    char names[4096];
    int stop = 0;

    memset(&m, 0, sizeof(m));
    m.conf = conf;
    m.num_workers = conf->workers;
    cg_log(CG_LOG_INFO, "Starting gunicorn %s", "27.0.1 (cgunicorn 0.1.0)");
    cg_conf_warn_unimplemented(conf);
    if (setup(&m, err) < 0) {
        Py_XDECREF(m.preloaded_app);
        return 1;
    }
    cg_listen_describe(m.ls, m.nls, names, sizeof(names));
    cg_log(CG_LOG_INFO, "Listening at: %s (%d)", names, (int)getpid());
    cg_log(CG_LOG_INFO, "Using worker: %s", conf->worker_class);
    cg_proc_set_title("cgunicorn: master [%s]",
                      conf->proc_name ? conf->proc_name : conf->default_proc_name);
    m.dirty_on = cg_dirty_wanted(conf);
    if (m.dirty_on) {
        if (cg_dirty_prepare(conf, err) < 0) {
            cg_listen_close_all(m.ls, m.nls, true);
            return 1;
        }
        spawn_dirty(&m);
    }
    manage_workers(&m);
    while (!stop) {
        struct pollfd pfd = { .fd = cg_sig_fd(), .events = POLLIN };
        Py_BEGIN_ALLOW_THREADS
        poll(&pfd, 1, 1000);
        Py_END_ALLOW_THREADS
        stop = handle_signals(&m);
        if (stop) {
            break;
        }
        if (reap(&m) < 0) {
            stop = 2;
            break;
        }
        murder_workers(&m);
        manage_workers(&m);
        if (m.dirty_on && m.dirty_pid == 0) {
            spawn_dirty(&m);
        }
    }
    stop_all(&m, stop == 1);
    if (m.dirty_on) {
        cg_dirty_cleanup();
    }
    if (m.exit_status != 0) {
        cg_log(CG_LOG_ERROR, "Shutting down: Master");
        cg_log(CG_LOG_ERROR, "Reason: %s", m.halt_reason);
    } else {
        cg_log(CG_LOG_INFO, "Shutting down: Master");
    }
    Py_XDECREF(m.preloaded_app);
    munmap(m.slots, sizeof(struct cg_worker_slot) * MAX_SLOTS);
    return m.exit_status;
}
