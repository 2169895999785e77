/* Forking (see cg_proc_fork.h). Every fork goes through cg_proc_fork() so the
 * interpreter's after-fork work and the signal reset happen in one place. */
#include <Python.h>
#include <errno.h>
#include <unistd.h>

#include "cg_listen.h"
#include "cg_proc_fork.h"
#include "cg_sig.h"

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
