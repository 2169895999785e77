/* The gevent worker class (also what gunicorn.workers.ggevent.GeventWorker,
 * gevent_wsgi and gevent_pywsgi select): greenlets on gevent's hub. */
#ifndef CG_WORKER_GEVENT_H
#define CG_WORKER_GEVENT_H

#include "cg_worker.h"

/* Before the app is loaded: imports gevent and runs monkey.patch_all(), as
 * gunicorn's GeventWorker.init_process does. Returns 0, or
 * CG_WORKER_BOOT_ERROR after logging why (gevent missing: the message names
 * pip install gevent). Worker process, GIL held. */
int cg_worker_gevent_prepare(struct cg_worker *w);

/* Serves w->app (WSGI) with one greenlet per connection until the worker
 * stops. Returns the process exit code. Worker process, GIL held. */
int cg_worker_gevent_run(struct cg_worker *w);

#endif
