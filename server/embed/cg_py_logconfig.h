/* logconfig, logconfig_dict, logconfig_json: the error and access logs go
 * through Python's logging ("gunicorn.error", "gunicorn.access"), set up by
 * cgunicorn.logconfig as gunicorn's Logger.setup() does. Without those
 * settings nothing changes: the logs are written from C. */
#ifndef CG_PY_LOGCONFIG_H
#define CG_PY_LOGCONFIG_H

#include <Python.h>
#include <stdbool.h>

#include "cg_conf.h"
#include "cg_err.h"

/* In the master, once the error log is open (and again on HUP): when a
 * logging configuration is set, sets the loggers up and routes cg_log()
 * into "gunicorn.error" (every forked process inherits this); else routes
 * it back to the file. Needs the GIL. Returns 0, or -1 with err naming the
 * setting and the problem. */
int cg_py_logconfig_apply(const struct cg_conf *conf, struct cg_err *err);

bool cg_py_logconfig_active(void);

/* A cgunicorn.logconfig.AccessLog for access_log_format (new reference),
 * or NULL with a Python exception. Only while active. */
PyObject *cg_py_logconfig_access_log(const char *fmt);

#endif
