/* The master (arbiter) process: binds, forks and supervises workers and the
 * dirty arbiter, acts on signals. */
#ifndef CG_MASTER_H
#define CG_MASTER_H

#include "cg_conf.h"
#include "cg_err.h"

/* Remembers the command line and the current directory as they are at
 * start-up (HUP reloads the configuration from them; USR2 re-executes them),
 * before the process title overwrites argv and the configuration's chdir
 * moves. Call first in main. */
void cg_master_init_early(int argc, char **argv);

/* Runs the master until shutdown. `conf` is replaced in place by a HUP
 * reload. Returns the process exit code (0 on a clean
 * shutdown, gunicorn's 3/4 when a worker failed to boot / the app failed to
 * load, 255 when a hook raised in the loop); on a start-up failure returns 1
 * with err set (or with err empty when the failure was logged). Needs the GIL. */
int cg_master_run(struct cg_conf *conf, struct cg_err *err);

#endif
