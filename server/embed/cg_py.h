/* The embedded interpreter's life cycle: start (with the user's virtualenv),
 * the importer for the modules embedded in the binary, exception logging. */
#ifndef CG_PY_H
#define CG_PY_H

#include <Python.h>

#include "cg_err.h"

/* Starts the interpreter for this process (the master; children inherit it
 * through fork). Honours $VIRTUAL_ENV and a cgunicorn installed in a venv's
 * bin/. C keeps the signal handlers. sys.argv is set from argv. Installs the
 * embedded-module importer. Returns 0, or -1 with err. Leaves the GIL held. */
int cg_py_init(int argc, char **argv, struct cg_err *err);

/* Finalizes the interpreter (the master, at exit). */
void cg_py_fini(void);

/* Logs the pending Python exception with its traceback at ERROR level,
 * prefixed by `context`, and clears it. Needs the GIL. */
void cg_py_log_exception(const char *context);

/* Formats the pending exception's traceback into a new str (new reference)
 * and clears it; NULL if none is pending. Needs the GIL. */
PyObject *cg_py_format_exception(void);

/* Inserts `dir` at the front of sys.path (unless already first). Needs the GIL.
 * Returns 0 or -1 with err. */
int cg_py_path_prepend(const char *dir, struct cg_err *err);

/* Flushes sys.stdout and sys.stderr, ignoring errors (a worker about to
 * _exit). Needs the GIL. */
void cg_py_flush_stdio(void);

#endif
