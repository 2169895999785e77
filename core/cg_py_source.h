/* Python helper modules whose source is a C string: the config helpers
 * (config/) and the app loader (server/) run small Python functions this
 * way, without a file on disk. Part of the base layer (core/). */
#ifndef CG_PY_SOURCE_H
#define CG_PY_SOURCE_H

#include <Python.h>

/* Builds a module named `name` (not put in sys.modules) by running the
 * Python source `src`, compiled as `filename` (shown in tracebacks). Returns
 * a new reference, or NULL with an exception set. Needs the GIL. */
PyObject *cg_py_module_from_source(const char *name, const char *src, const char *filename);

#endif
