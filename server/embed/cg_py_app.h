/* Loading the application object named by an APP_MODULE string, as gunicorn:
 * "module" (callable `application`), "module:name", "module:factory(args)" with
 * literal arguments. */
#ifndef CG_PY_APP_H
#define CG_PY_APP_H

#include <Python.h>

#include "cg_err.h"

/* Imports and returns the application (new reference). On failure returns NULL
 * with err set to gunicorn's one-line message (e.g. "Failed to find attribute
 * 'app' in 'mod'.", "No module named 'x'"), and, when traceback is not NULL,
 * *traceback set to the formatted traceback (new str reference, or NULL).
 * No exception is left pending. Needs the GIL. */
PyObject *cg_py_app_load(const char *uri, PyObject **traceback, struct cg_err *err);

#endif
