/* request_timeout for WSGI requests (sync and gthread workers): a watchdog
 * thread raises cgunicorn.RequestTimeout in the thread that has run one
 * request for longer than the deadline. The exception arrives at that
 * thread's next bytecode boundary (PyThreadState_SetAsyncExc): code stuck in
 * C that never returns to Python is left to the worker timeout. It derives
 * from BaseException, so `except Exception` in the app does not swallow it.
 * The ASGI worker cancels the request's task instead (cg_py_asgi_http.c). */
#ifndef CG_PY_DEADLINE_H
#define CG_PY_DEADLINE_H

#include <Python.h>
#include <stdbool.h>
#include <stddef.h>

#include "cg_err.h"

/* cgunicorn.RequestTimeout (borrowed), or NULL while request_timeout is off
 * (it is created by cg_py_deadline_open). Never touches a pending error. */
PyObject *cg_py_deadline_exc(void);

/* Starts the watchdog for `nslots` request threads (GIL held). seconds 0:
 * nothing to do. */
int cg_py_deadline_open(int seconds, size_t nslots, struct cg_err *err);

/* The calling thread takes the next free slot for its requests (once). */
void cg_py_deadline_bind(void);

/* The calling thread's request starts / ends (GIL held). end() returns true
 * when the deadline fired for it, and takes back the exception if it has not
 * been raised yet, so it cannot hit the next request. */
void cg_py_deadline_start(void);
bool cg_py_deadline_end(void);

/* The seconds configured (0: off). */
int cg_py_deadline_seconds(void);

#endif
