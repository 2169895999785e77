/* Forking and process identity. Every fork goes through cg_proc_fork() so the
 * interpreter's after-fork work and the signal reset happen in one place. */
#include <Python.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cg_listen.h"
#include "cg_proc.h"
#include "cg_sig.h"

struct cg_proc cg_proc = { .role = CG_ROLE_MASTER, .pid = 0 };

static char *title_area;
static size_t title_len;

void cg_proc_init(int argc, char **argv)
{
    cg_proc.pid = getpid();
    if (argc > 0) {
        /* argv strings are contiguous; the title may use all of them. */
        title_area = argv[0];
        char *end = argv[argc - 1] + strlen(argv[argc - 1]);
        title_len = (size_t)(end - argv[0]);
    }
}

void cg_proc_set_title(const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, buf, 0, 0, 0);
    if (title_area != NULL && title_len > 0) {
        size_t n = strlen(buf);
        if (n > title_len) {
            n = title_len;
        }
        memset(title_area, 0, title_len);
        memcpy(title_area, buf, n);
    }
}

pid_t cg_proc_fork(enum cg_role role)
{
    PyOS_BeforeFork(); /* GIL held; this process runs no other threads */
    pid_t pid = fork();
    if (pid != 0) { /* parent, or fork failed */
        int saved = errno;
        PyOS_AfterFork_Parent();
        errno = saved;
        return pid;
    }
    PyOS_AfterFork_Child(); /* first Python call in the child */
    cg_sig_reset_child();
    if (role == CG_ROLE_DIRTY_ARBITER || role == CG_ROLE_DIRTY_WORKER) {
        cg_listen_close_inherited(); /* only HTTP workers keep the listeners */
    }
    cg_proc = (struct cg_proc){ .role = role, .pid = getpid() };
    return 0; /* the child builds its own event_base */
}
