/* The gthread worker: a libevent loop without the GIL accepts connections,
 * reads request heads and parks idle keep-alive connections; a pool of
 * `threads` pthreads runs the requests under the GIL. See the comment at the
 * top of cg_worker_gthread.c for the life of a connection. */
#ifndef CG_WORKER_GTHREAD_H
#define CG_WORKER_GTHREAD_H

#include "cg_worker.h"

/* Runs the gthread loop until the worker stops (TERM, QUIT/INT,
 * max_requests, parent change). Called with the GIL held; returns with it
 * held. Returns the worker's exit code (0, or CG_WORKER_BOOT_ERROR when the
 * worker could not start). */
int cg_worker_gthread_run(struct cg_worker *w);

#endif
