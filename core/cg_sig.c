/* Self-pipe signal handling shared by every role. The handler is the only code
 * here that runs in signal context: it saves errno, sets a flag, writes one
 * byte, and restores errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "cg_sig.h"
#include "cg_sig_table.h"

/* Deliveries not yet taken, per signal; lock-free atomics are
 * async-signal-safe. */
static atomic_int pending[NSIG];
static bool handled[NSIG];
static int pipe_r = -1;
static int pipe_w = -1;

static void on_signal(int signo)
{
    int saved = errno;
    atomic_fetch_add(&pending[signo], 1);
    if (write(pipe_w, "", 1) < 0) {
        /* pipe full: a wake-up is already queued */
    }
    errno = saved;
}

int cg_sig_open(const int *signals, struct cg_err *err)
{
    int fds[2];

    if (pipe_r < 0) {
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
            cg_err_set(err, "signal self-pipe: %s", strerror(errno));
            return -1;
        }
        pipe_r = fds[0];
        pipe_w = fds[1];
    }
    signal(SIGPIPE, SIG_IGN);
    for (const int *s = signals; *s != 0; s++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(*s, &sa, NULL) < 0) {
            cg_err_set(err, "sigaction(%s): %s", cg_sig_name(*s), strerror(errno));
            return -1;
        }
        handled[*s] = true;
    }
    return 0;
}

int cg_sig_fd(void)
{
    return pipe_r;
}

void cg_sig_drain(void)
{
    char buf[64];
    while (read(pipe_r, buf, sizeof(buf)) > 0) {
    }
}

bool cg_sig_take(int signo)
{
    return cg_sig_take_count(signo) > 0;
}

int cg_sig_take_count(int signo)
{
    if (signo <= 0 || signo >= NSIG) {
        return 0;
    }
    return atomic_exchange(&pending[signo], 0);
}

bool cg_sig_any_pending(void)
{
    for (int s = 1; s < NSIG; s++) {
        if (atomic_load(&pending[s]) != 0) {
            return true;
        }
    }
    return false;
}

void cg_sig_reset_child(void)
{
    sigset_t empty;

    for (int s = 1; s < NSIG; s++) {
        if (handled[s]) {
            signal(s, SIG_DFL);
            handled[s] = false;
        }
        atomic_store(&pending[s], 0);
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
    if (pipe_r >= 0) {
        close(pipe_r);
        close(pipe_w);
        pipe_r = pipe_w = -1;
    }
}

const char *cg_sig_name(int signo)
{
    const struct cg_sig_row *row = cg_sig_row(signo);
    return row != NULL ? row->name : "?";
}
