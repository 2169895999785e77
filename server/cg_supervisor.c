/* The process supervisor (see cg_supervisor.h): the only file of the server
 * that calls fork() or waitpid(). The master and the dirty arbiter each own
 * one `struct cg_sup`; the child table is a small array searched by pid (a
 * few hundred children at most). */
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_sig.h"
#include "cg_supervisor.h"

/* After a stop's KILL, how often it is sent again while a child is left. */
#define KILL_AGAIN_MS 5000u

void cg_sup_init(struct cg_sup *sup, cg_sup_on_exit_fn on_exit, void *arg)
{
    *sup = (struct cg_sup){ .on_exit = on_exit, .arg = arg };
}

void cg_sup_deinit(struct cg_sup *sup)
{
    free(sup->kids);
    sup->kids = NULL;
    sup->n = sup->cap = 0;
}

/* Python's fork protocol applies only where an interpreter runs (the
 * supervisor's unit test forks without one). */
static bool have_python(void)
{
    return Py_IsInitialized() && PyGILState_Check();
}

static struct cg_sup_poller poller; /* this process's extra fds; empty in a child */

void cg_sup_set_poller(const struct cg_sup_poller *p)
{
    poller = p != NULL ? *p : (struct cg_sup_poller){ 0 };
}

int cg_sup_poll(struct pollfd *p, int max, int ms)
{
    int n = 1;
    p[0] = (struct pollfd){ .fd = cg_sig_fd(), .events = POLLIN };
    if (poller.fill != NULL) {
        n += poller.fill(p + 1, max - 1);
    }
    int rc = poll(p, (nfds_t)n, ms);
    if (poller.service != NULL && n > 1) { /* also on timeout: client deadlines */
        poller.service(p + 1, n - 1);
    }
    return rc;
}

pid_t cg_sup_fork(enum cg_role role)
{
    bool py = have_python();
    sigset_t all, old;

    /* Signals stay blocked across fork(): one sent to the new child before
     * its handlers are reset would otherwise run the parent's recording
     * handler there and be forgotten (a TERM to the process group while a
     * worker is being forked left that worker running until KILL). In the
     * child, cg_sig_reset_child() unblocks them once the dispositions are
     * the defaults. */
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    if (py) {
        PyOS_BeforeFork(); /* GIL held; this process runs no other threads */
    }
    pid_t pid = fork();
    if (pid != 0) { /* parent, or fork failed */
        int saved = errno;
        if (py) {
            PyOS_AfterFork_Parent();
        }
        sigprocmask(SIG_SETMASK, &old, NULL);
        errno = saved;
        return pid;
    }
    if (py) {
        PyOS_AfterFork_Child(); /* first Python call in the child */
    }
    cg_sig_reset_child(); /* default handlers, then the mask emptied */
    if (poller.atfork_child != NULL) {
        poller.atfork_child(); /* the parent's extra fds are not the child's */
    }
    poller = (struct cg_sup_poller){ 0 };
    if (role == CG_ROLE_DIRTY_ARBITER || role == CG_ROLE_DIRTY_WORKER) {
        cg_listen_close_inherited(); /* only HTTP workers keep the listeners */
    }
    cg_proc = (struct cg_proc){ .role = role, .pid = getpid() };
    return 0; /* the child builds its own event_base */
}

pid_t cg_sup_spawn(struct cg_sup *sup, const struct cg_sup_spec *spec)
{
    if (sup->n == sup->cap) {
        size_t cap = sup->cap ? sup->cap * 2 : 16;
        struct cg_sup_child *k = realloc(sup->kids, cap * sizeof(*k));
        if (k == NULL) {
            errno = ENOMEM;
            return -1;
        }
        sup->kids = k;
        sup->cap = cap;
    }
    pid_t pid = cg_sup_fork(spec->role);
    if (pid <= 0) {
        return pid;
    }
    sup->kids[sup->n++] = (struct cg_sup_child){
        .pid = pid,
        .spec = *spec,
        .boot_deadline = spec->boot_ms ? cg_monotonic_ms() + spec->boot_ms : 0,
    };
    return pid;
}

struct cg_sup_child *cg_sup_find(struct cg_sup *sup, pid_t pid)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (sup->kids[i].pid == pid) {
            return &sup->kids[i];
        }
    }
    return NULL;
}

void cg_sup_booted(struct cg_sup *sup, pid_t pid)
{
    struct cg_sup_child *c = cg_sup_find(sup, pid);
    if (c != NULL) {
        c->booted = true;
        c->boot_deadline = 0;
    }
}

/* The name gunicorn's exit lines give a child of `role`; NULL: not logged. */
static const char *role_name(enum cg_role role)
{
    switch (role) {
    case CG_ROLE_WORKER:
        return "Worker";
    case CG_ROLE_DIRTY_ARBITER:
        return "Dirty arbiter";
    case CG_ROLE_DIRTY_WORKER:
        return "Dirty worker";
    case CG_ROLE_MASTER:
        break; /* a USR2 master: gunicorn only forgets its pid */
    }
    return NULL;
}

void cg_sup_log_exit(enum cg_role role, pid_t pid, int status)
{
    const char *what = role_name(role);

    if (what == NULL) {
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        cg_log(CG_LOG_ERROR, "%s (pid:%d) exited with code %d.", what, (int)pid,
               WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *name = cg_sig_name(sig);
        char sname[32];
        if (strcmp(name, "?") == 0) {
            snprintf(sname, sizeof(sname), "signal %d", sig); /* as Python's fallback */
        } else {
            snprintf(sname, sizeof(sname), "SIG%s", name);
        }
        if (sig == SIGKILL) {
            cg_log(CG_LOG_ERROR, "%s (pid:%d) was sent %s! Perhaps out of memory?", what,
                   (int)pid, sname);
        } else {
            /* TERM is what a graceful stop sends; anything else is unexpected */
            cg_log(sig == SIGTERM ? CG_LOG_INFO : CG_LOG_WARNING, "%s (pid:%d) was sent %s!",
                   what, (int)pid, sname);
        }
    }
}

uint64_t cg_sup_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t max_ms)
{
    uint64_t d = base_ms;

    if (failures == 0) {
        return 0;
    }
    for (unsigned i = 1; i < failures && d < max_ms; i++) {
        d *= 2;
    }
    return d < max_ms ? d : max_ms;
}

long cg_sup_rss_mb(pid_t pid)
{
    char path[64];
    unsigned long size = 0, resident = 0;

    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2) {
        return -1;
    }
    return (long)(resident * (unsigned long)sysconf(_SC_PAGESIZE) / (1024u * 1024u));
}

/* Removes kids[i] and reports its exit with `status`. */
static void exited(struct cg_sup *sup, size_t i, int status)
{
    struct cg_sup_child c = sup->kids[i];
    struct cg_sup_exit ex = {
        .pid = c.pid,
        .role = c.spec.role,
        .status = status,
        .code = WIFEXITED(status) ? WEXITSTATUS(status) : -1,
        .signo = WIFSIGNALED(status) ? WTERMSIG(status) : 0,
        .stopping = c.stopping,
        .booted = c.booted,
        .boot_timed_out = c.boot_timed_out,
        .owner = c.spec.owner,
    };
    bool boot_failed = c.boot_timed_out ||
                       (c.spec.boot_error_code != 0 && ex.code == c.spec.boot_error_code);
    ex.respawn = c.spec.respawn == CG_SUP_RESPAWN_ON_CRASH && !c.stopping && !boot_failed;
    sup->kids[i] = sup->kids[--sup->n]; /* before the callback, which may spawn */
    if (!c.boot_timed_out) { /* else reported once, when it was killed */
        cg_sup_log_exit(ex.role, ex.pid, status);
    }
    if (sup->on_exit != NULL) {
        sup->on_exit(sup, &ex, sup->arg);
    }
}

int cg_sup_reap(struct cg_sup *sup)
{
    int status = 0, reaped = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct cg_sup_child *c = cg_sup_find(sup, pid);
        if (c == NULL) {
            /* waitpid(-1) also reaps orphans the kernel gave us (pid 1) */
            cg_log_debug("Reaped unknown child process (pid:%d, status:%d)", (int)pid, status);
            continue;
        }
        exited(sup, (size_t)(c - sup->kids), status);
        reaped++;
    }
    return reaped;
}

int cg_sup_wait_one(pid_t pid, int *status)
{
    pid_t r;
    bool py = have_python();
    PyThreadState *ts = py ? PyEval_SaveThread() : NULL;

    while ((r = waitpid(pid, status, 0)) < 0 && errno == EINTR) {
    }
    int saved = errno;
    if (py) {
        PyEval_RestoreThread(ts);
    }
    errno = saved;
    return r == pid ? 0 : -1;
}

void cg_sup_kill(struct cg_sup *sup, pid_t pid, int signo)
{
    (void)sup;
    if (pid > 0 && kill(pid, signo) < 0 && errno != ESRCH) {
        cg_log_errno(CG_LOG_WARNING, errno, "kill(%d, SIG%s)", (int)pid, cg_sig_name(signo));
    }
}

void cg_sup_stop_one(struct cg_sup *sup, pid_t pid, int signo)
{
    struct cg_sup_child *c = cg_sup_find(sup, pid);
    if (c != NULL) {
        c->stopping = true;
    }
    cg_sup_kill(sup, pid, signo);
}

void cg_sup_signal(struct cg_sup *sup, unsigned roles, int signo)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (roles & CG_SUP_ROLE(sup->kids[i].spec.role)) {
            cg_sup_kill(sup, sup->kids[i].pid, signo);
        }
    }
}

size_t cg_sup_count(const struct cg_sup *sup, unsigned roles)
{
    size_t n = 0;
    for (size_t i = 0; i < sup->n; i++) {
        n += (roles & CG_SUP_ROLE(sup->kids[i].spec.role)) != 0;
    }
    return n;
}

void cg_sup_stop_start(struct cg_sup *sup, unsigned roles, int signo, uint64_t deadline_ms)
{
    for (size_t i = 0; i < sup->n; i++) {
        if (roles & CG_SUP_ROLE(sup->kids[i].spec.role)) {
            sup->kids[i].stopping = true;
        }
    }
    cg_sup_signal(sup, roles, signo);
    sup->kill_roles |= roles;
    if (sup->kill_at == 0 || deadline_ms < sup->kill_at) {
        sup->kill_at = deadline_ms;
    }
}

void cg_sup_stop_hasten(struct cg_sup *sup, uint64_t deadline_ms)
{
    if (sup->kill_at != 0 && deadline_ms < sup->kill_at) {
        sup->kill_at = deadline_ms;
    }
}

/* ms from `now` to `t` for a poll timeout (0 when due). */
static int until(uint64_t now, uint64_t t)
{
    if (t <= now) {
        return 0;
    }
    uint64_t d = t - now;
    return d > INT32_MAX ? INT32_MAX : (int)d;
}

int cg_sup_tick(struct cg_sup *sup, uint64_t now)
{
    int next = -1;

    for (size_t i = 0; i < sup->n; i++) {
        struct cg_sup_child *c = &sup->kids[i];
        if (c->boot_deadline == 0) {
            continue;
        }
        if (now >= c->boot_deadline) {
            const char *what = role_name(c->spec.role);
            unsigned long long ms = (unsigned long long)c->spec.boot_ms;
            if (ms % 1000u == 0) {
                cg_log(CG_LOG_ERROR, "%s (pid:%d) did not boot within %llu s; killing it",
                       what ? what : "Child", (int)c->pid, ms / 1000u);
            } else {
                cg_log(CG_LOG_ERROR, "%s (pid:%d) did not boot within %llu ms; killing it",
                       what ? what : "Child", (int)c->pid, ms);
            }
            c->boot_deadline = 0;
            c->boot_timed_out = true;
            cg_sup_kill(sup, c->pid, SIGKILL);
            continue;
        }
        int d = until(now, c->boot_deadline);
        next = next < 0 || d < next ? d : next;
    }
    if (sup->kill_at != 0) {
        if (cg_sup_count(sup, sup->kill_roles) == 0) {
            sup->kill_at = 0;
            sup->kill_roles = 0;
        } else if (now >= sup->kill_at) {
            cg_sup_signal(sup, sup->kill_roles, SIGKILL);
            sup->kill_at = now + KILL_AGAIN_MS;
        }
    }
    if (sup->kill_at != 0) {
        int d = until(now, sup->kill_at);
        next = next < 0 || d < next ? d : next;
    }
    return next;
}

/* Waits up to `ms` for the self-pipe (a signal, SIGCHLD among them), with
 * the GIL released; empties it. Flags stay pending for their takers. */
static void wait_pipe(int ms)
{
    struct pollfd pfd[CG_SUP_POLL_MAX];
    bool py = have_python();
    PyThreadState *ts = py ? PyEval_SaveThread() : NULL;

    if (cg_sig_fd() >= 0) {
        cg_sup_poll(pfd, CG_SUP_POLL_MAX, ms);
    } else {
        poll(pfd, 0, ms);
    }
    if (py) {
        PyEval_RestoreThread(ts);
    }
    if (cg_sig_fd() >= 0) {
        cg_sig_drain();
    }
}

int cg_sup_wait(struct cg_sup *sup, unsigned roles, uint64_t deadline_ms, cg_sup_wake_fn wake,
                void *arg)
{
    for (;;) {
        cg_sup_reap(sup);
        if (cg_sup_count(sup, roles) == 0 || (wake != NULL && wake(sup, arg))) {
            return 0;
        }
        uint64_t now = cg_monotonic_ms();
        if (now >= deadline_ms) {
            return -1;
        }
        int next = cg_sup_tick(sup, now);
        int ms = until(now, deadline_ms);
        wait_pipe(next >= 0 && next < ms ? next : ms);
    }
}

int cg_sup_stop(struct cg_sup *sup, unsigned roles, int signo, uint64_t deadline_ms,
                cg_sup_wake_fn wake, void *arg)
{
    int killed = 0;
    bool woke = false;

    cg_sup_stop_start(sup, roles, signo, deadline_ms);
    for (;;) {
        cg_sup_reap(sup);
        if (cg_sup_count(sup, roles) == 0) {
            break;
        }
        if (wake != NULL && wake(sup, arg)) {
            woke = true;
            break;
        }
        uint64_t now = cg_monotonic_ms();
        if (sup->kill_at != 0 && now >= sup->kill_at) {
            killed = 1;
        }
        int next = cg_sup_tick(sup, now);
        wait_pipe(next >= 0 ? next : (int)KILL_AGAIN_MS);
    }
    if (woke || cg_sup_count(sup, sup->kill_roles) == 0) { /* the owner ended the stop */
        sup->kill_at = 0;
        sup->kill_roles = 0;
    }
    return killed;
}
