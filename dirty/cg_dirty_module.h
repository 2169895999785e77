/* The builtin module `_cgunicorn_dirty` (dirty/cg_dirty_module.c). */
#ifndef CG_DIRTY_MODULE_H
#define CG_DIRTY_MODULE_H

#include <Python.h>

/* Module init for PyImport_AppendInittab: a new module, or NULL with an
 * exception set. */
PyObject *cg_dirty_module_init(void);

#endif
