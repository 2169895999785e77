/* The table of builtin modules and the small `_cgunicorn` core module
 * (logging into the server's error log from Python). */
#include <Python.h>

#include "cg_dirty_module.h"
#include "cg_log.h"
#include "cg_py_hooks.h"
#include "cg_py_modules.h"

/* Logs `msg` at `level` (0 debug .. 4 critical) into the error log. */
static PyObject *core_log(PyObject *self, PyObject *args)
{
    int level;
    const char *msg;

    (void)self;
    if (!PyArg_ParseTuple(args, "is:log", &level, &msg)) {
        return NULL;
    }
    if (level < CG_LOG_DEBUG || level > CG_LOG_CRITICAL) {
        PyErr_Format(PyExc_ValueError, "log level %d out of range 0..4", level);
        return NULL;
    }
    cg_log((enum cg_log_level)level, "%s", msg);
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    { "log", core_log, METH_VARARGS, "log(level, message): write to the server's error log" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef core_def = {
    PyModuleDef_HEAD_INIT, "_cgunicorn", "cgunicorn core helpers", -1, core_methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *core_init(void)
{
    return PyModule_Create(&core_def);
}

static const struct {
    const char *name;
    PyObject *(*init)(void);
} builtin_modules[] = {
    { "_cgunicorn", core_init },
    { "_cgunicorn_dirty", cg_dirty_module_init },
    { "_cgunicorn_hooks", cg_py_hooks_module_init },
};

int cg_py_modules_register(struct cg_err *err)
{
    for (size_t i = 0; i < sizeof(builtin_modules) / sizeof(builtin_modules[0]); i++) {
        if (PyImport_AppendInittab(builtin_modules[i].name, builtin_modules[i].init) < 0) {
            cg_err_set(err, "cannot register builtin module %s", builtin_modules[i].name);
            return -1;
        }
    }
    return 0;
}
