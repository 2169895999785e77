/* The signal table (see cg_sig_table.h). gunicorn's semantics: its
 * arbiter's SIGNALS list and the worker's init_signals for the master and
 * the HTTP workers, its dirty arbiter's for the dirty processes. A row whose
 * roles are all CG_SIG_DEFAULT only gives the signal its name (for exit
 * lines such as "was sent SIGSEGV!"). Keep the `does` texts in step with
 * docs/deployment.md: a test compares them cell by cell. */
#include <signal.h>
#include <stdbool.h>

#include "cg_sig.h"
#include "cg_sig_table.h"

#define REC(text) { CG_SIG_RECORD, text }
#define PY(text) { CG_SIG_PYTHON, text }
#define IGN(text) { CG_SIG_IGNORE, text }

const struct cg_sig_row cg_sig_table[] = {
    { SIGTERM, "TERM", {
        [CG_ROLE_MASTER] = REC("graceful stop within `graceful_timeout`"),
        [CG_ROLE_WORKER] = REC("graceful stop: finish the requests in hand, then exit"),
        [CG_ROLE_DIRTY_ARBITER] = REC("graceful stop within `dirty_graceful_timeout`"),
        [CG_ROLE_DIRTY_WORKER] = REC("finish the running calls, then exit"),
    } },
    { SIGINT, "INT", {
        [CG_ROLE_MASTER] = REC("quick stop"),
        [CG_ROLE_WORKER] = PY("quick stop"),
        [CG_ROLE_DIRTY_ARBITER] = REC("graceful stop within `dirty_graceful_timeout`"),
        [CG_ROLE_DIRTY_WORKER] = REC("finish the running calls, then exit"),
    } },
    { SIGQUIT, "QUIT", {
        [CG_ROLE_MASTER] = REC("quick stop"),
        [CG_ROLE_WORKER] = PY("quick stop"),
        [CG_ROLE_DIRTY_ARBITER] = REC("immediate stop"),
        [CG_ROLE_DIRTY_WORKER] = REC("immediate exit"),
    } },
    { SIGHUP, "HUP", {
        [CG_ROLE_MASTER] = REC("reload the configuration, start new workers, stop the old "
                               "ones gracefully (forwarded to the arbiter)"),
        [CG_ROLE_DIRTY_ARBITER] = REC("replace the dirty workers"),
    } },
    { SIGTTIN, "TTIN", {
        [CG_ROLE_MASTER] = REC("one HTTP worker more"),
        [CG_ROLE_DIRTY_ARBITER] = REC("one dirty worker more"),
    } },
    { SIGTTOU, "TTOU", {
        [CG_ROLE_MASTER] = REC("one HTTP worker less (never below 1)"),
        [CG_ROLE_DIRTY_ARBITER] = REC("one dirty worker less (never below what `:N` specs "
                                      "need)"),
    } },
    { SIGUSR1, "USR1", {
        [CG_ROLE_MASTER] = REC("reopen log files (forwarded to workers and the arbiter)"),
        [CG_ROLE_WORKER] = REC("reopen log files"),
        [CG_ROLE_DIRTY_ARBITER] = REC("reopen log files (forwarded to the dirty workers)"),
        [CG_ROLE_DIRTY_WORKER] = REC("reopen log files"),
    } },
    { SIGUSR2, "USR2", {
        [CG_ROLE_MASTER] = REC("upgrade on the fly: start a new master with this binary "
                               "on the same listeners"),
    } },
    { SIGWINCH, "WINCH", {
        [CG_ROLE_MASTER] = REC("stop the workers gracefully when daemonized, else ignored"),
        [CG_ROLE_WORKER] = REC("ignored"),
    } },
    { SIGCHLD, "CHLD", {
        [CG_ROLE_MASTER] = REC("reap exited children"),
        [CG_ROLE_DIRTY_ARBITER] = REC("reap exited dirty workers"),
    } },
    { SIGABRT, "ABRT", {
        [CG_ROLE_WORKER] = PY("sent by the master on worker timeout: log the tracebacks, "
                              "run `worker_abort`, exit"),
    } },
    { SIGPIPE, "PIPE", {
        [CG_ROLE_MASTER] = IGN("ignored"),
        [CG_ROLE_WORKER] = IGN("ignored"),
        [CG_ROLE_DIRTY_ARBITER] = IGN("ignored"),
        [CG_ROLE_DIRTY_WORKER] = IGN("ignored"),
    } },
    /* names only */
    { SIGILL, "ILL", { { 0 } } },
    { SIGBUS, "BUS", { { 0 } } },
    { SIGFPE, "FPE", { { 0 } } },
    { SIGKILL, "KILL", { { 0 } } },
    { SIGSEGV, "SEGV", { { 0 } } },
    { SIGALRM, "ALRM", { { 0 } } },
};

const size_t cg_sig_table_len = sizeof(cg_sig_table) / sizeof(cg_sig_table[0]);

const struct cg_sig_row *cg_sig_row(int signo)
{
    for (size_t i = 0; i < cg_sig_table_len; i++) {
        if (cg_sig_table[i].signo == signo) {
            return &cg_sig_table[i];
        }
    }
    return NULL;
}

/* A signal some role acts on (the name-only rows are left as they are). */
static bool managed(const struct cg_sig_row *r)
{
    for (int role = 0; role < CG_SIG_ROLES; role++) {
        if (r->role[role].how != CG_SIG_DEFAULT) {
            return true;
        }
    }
    return false;
}

int cg_sig_open_role(enum cg_role role, struct cg_err *err)
{
    int record[sizeof(cg_sig_table) / sizeof(cg_sig_table[0]) + 1];
    size_t n = 0;

    for (size_t i = 0; i < cg_sig_table_len; i++) {
        const struct cg_sig_action *a = &cg_sig_table[i].role[role];
        if (a->how == CG_SIG_RECORD) {
            record[n++] = cg_sig_table[i].signo;
        } else if (a->how == CG_SIG_IGNORE) {
            signal(cg_sig_table[i].signo, SIG_IGN);
        } else if (managed(&cg_sig_table[i])) {
            /* what this role leaves alone starts at the kernel's default,
             * whatever was inherited (nohup ignores HUP, a shell's `&`
             * ignores INT and QUIT); Python installs its own later */
            signal(cg_sig_table[i].signo, SIG_DFL);
        }
    }
    record[n] = 0;
    return cg_sig_open(record, err);
}
