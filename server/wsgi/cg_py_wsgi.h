/* WSGI (PEP 3333) serving for HTTP workers: per-worker state (interned keys,
 * environ template, the reusable start_response object, access log) and the
 * serving of one connection. */
#ifndef CG_PY_WSGI_H
#define CG_PY_WSGI_H

#include <sys/socket.h>

#include "cg_err.h"
#include "cg_listen.h"
#include "cg_worker.h"

struct cg_wsgi;

/* Builds the worker's WSGI state for w->app. Needs the GIL. Returns NULL
 * with err on failure. Free with cg_py_wsgi_free(). */
struct cg_wsgi *cg_py_wsgi_new(struct cg_worker *w, struct cg_err *err);
void cg_py_wsgi_free(struct cg_wsgi *g);

/* Serves one accepted connection (sync worker: one request, then close).
 * Takes ownership of fd (closes it). Never raises: every failure is an HTTP
 * error response and/or a log line. Needs the GIL (released around I/O). */
void cg_py_wsgi_serve(struct cg_wsgi *g, int fd, const struct cg_listener *l,
                      const struct sockaddr *peer, socklen_t peer_len);

#endif
