/* The builtin extension modules the binary provides to Python, registered
 * with PyImport_AppendInittab before the interpreter starts:
 *   _cgunicorn        core helpers (server/embed/cg_py_modules.c)
 *   _cgunicorn_dirty  the dirty IPC codec (dirty/cg_dirty_module.c)
 * A subsystem adds its module by adding a row to the table in cg_py_modules.c. */
#ifndef CG_PY_MODULES_H
#define CG_PY_MODULES_H

#include "cg_err.h"

/* Registers every builtin module. Call before Py_Initialize. */
int cg_py_modules_register(struct cg_err *err);

#endif
