/* A Python module built from source text held in C (see cg_py_source.h). */
#include <Python.h>

#include "cg_py_source.h"

PyObject *cg_py_module_from_source(const char *name, const char *src, const char *filename)
{
    PyObject *mod = NULL;  /* owned until returned */
    PyObject *code = NULL; /* owned */
    PyObject *res = NULL;  /* owned */

    mod = PyModule_New(name);
    if (mod == NULL ||
        PyDict_SetItemString(PyModule_GetDict(mod), "__builtins__", PyEval_GetBuiltins()) < 0) {
        goto fail;
    }
    code = Py_CompileString(src, filename, Py_file_input);
    if (code == NULL) {
        goto fail;
    }
    res = PyEval_EvalCode(code, PyModule_GetDict(mod), PyModule_GetDict(mod));
    if (res == NULL) {
        goto fail;
    }
    Py_DECREF(res);
    Py_DECREF(code);
    return mod;
fail:
    Py_XDECREF(code);
    Py_XDECREF(mod);
    return NULL;
}
