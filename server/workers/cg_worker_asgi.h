/* The asgi worker class (also what uvicorn.workers.UvicornWorker and
 * uvicorn_worker.UvicornWorker run as). */
#ifndef CG_WORKER_ASGI_H
#define CG_WORKER_ASGI_H

#include "cg_worker.h"

/* Serves w->app (an ASGI 3 application) on an asyncio or uvloop loop until
 * the worker stops. Returns the process exit code: 0, or
 * CG_WORKER_BOOT_ERROR when set-up or the lifespan startup failed. Worker
 * process, GIL held. */
int cg_worker_asgi_run(struct cg_worker *w);

#endif
