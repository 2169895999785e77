/* The one fork path every process goes through: CPython's embedder fork
 * protocol, the signal reset, and the listeners closed in children that do
 * not serve HTTP. */
#ifndef CG_PROC_FORK_H
#define CG_PROC_FORK_H

#include <sys/types.h>

#include "cg_proc.h"

/* Forks a child of `role`, following CPython's embedder fork protocol
 * (PyOS_BeforeFork/AfterFork_*). Needs the GIL, and no other thread may be
 * running in this process. In the child: signal handlers reset to default,
 * signal mask emptied, the parent's self-pipe closed, cg_proc set; a dirty
 * arbiter or dirty worker also closes the inherited listeners. Returns the
 * child's pid in the parent, 0 in the child, -1 with errno on failure. */
pid_t cg_proc_fork(enum cg_role role);

#endif
