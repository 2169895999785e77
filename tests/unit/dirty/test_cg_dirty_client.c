/* Runs the Python-side client tests (tests/unit/dirty/dirty_client_cases.py)
 * inside the embedded interpreter, where gunicorn.dirty and the
 * _cgunicorn_dirty codec live (the project venv's python cannot import
 * them). Each test_* function of that file is one test; an exception fails
 * it. Run from the repository root (as `make check-unit` does). */
#include <Python.h>
#include <signal.h>

#include "cg_py.h"

#define CASES_FILE "tests/unit/dirty/dirty_client_cases.py"

int main(int argc, char **argv)
{
    struct cg_err err = { { 0 } };
    PyObject *ns = NULL, *tests = NULL; /* owned */
    int passed = 0, failed = 0;
    FILE *f = NULL;

    (void)argc;
    /* As in every cgunicorn process (cg_sig): a write to a peer that has
     * gone fails with EPIPE instead of killing the process. */
    signal(SIGPIPE, SIG_IGN);
    if (cg_py_init(1, argv, &err) < 0) {
        fprintf(stderr, "cannot start Python: %s\n", err.msg);
        return 2;
    }
    f = fopen(CASES_FILE, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open (run from the repository root)\n", CASES_FILE);
        return 2;
    }
    ns = PyDict_New();
    PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins());
    PyDict_SetItemString(ns, "__name__", PyUnicode_FromString("dirty_client_cases"));
    PyObject *r = PyRun_FileEx(f, CASES_FILE, Py_file_input, ns, ns, 1);
    if (r == NULL) {
        PyErr_Print();
        printf("0 passed, 1 failed\n");
        return 1;
    }
    Py_DECREF(r);
    tests = PyDict_GetItemString(ns, "TESTS"); /* borrowed */
    Py_XINCREF(tests);
    for (Py_ssize_t i = 0; tests != NULL && i < PyList_GET_SIZE(tests); i++) {
        PyObject *name = PyList_GET_ITEM(tests, i);          /* borrowed */
        PyObject *fn = PyDict_GetItemWithError(ns, name);      /* borrowed */
        PyObject *res = fn != NULL ? PyObject_CallNoArgs(fn) : NULL;
        if (res == NULL) {
            fprintf(stderr, "FAIL %s\n", PyUnicode_AsUTF8(name));
            PyErr_Print();
            failed++;
        } else {
            passed++;
        }
        Py_XDECREF(res);
    }
    Py_XDECREF(tests);
    Py_DECREF(ns);
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}
