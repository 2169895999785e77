/* The master (arbiter) process: binds, forks and supervises workers and the
 * dirty arbiter, acts on signals. */
#ifndef CG_MASTER_H
#define CG_MASTER_H

#include "cg_conf.h"
#include "cg_err.h"

/* Runs the master until shutdown. Returns the process exit code (0 on a clean
 * shutdown); on a start-up failure returns 1 with err set. Needs the GIL. */
int cg_master_run(struct cg_conf *conf, struct cg_err *err);

#endif
