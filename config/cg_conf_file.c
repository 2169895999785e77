/* The config file: "python:module" is imported, "file:PATH" or PATH is executed
 * as module __config__ (as gunicorn does), and every module-level name that is a
 * setting is validated and applied. Other names are ignored, as gunicorn. */
#include <string.h>
#include <unistd.h>

#include "cg_conf_int.h"

/* Prints the pending exception's traceback to stderr and sets err to
 * "PATH:LINE: Type: message"; clears the exception. */
static void report_exec_error(const char *path, struct cg_err *err)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL, *desc = NULL;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    fprintf(stderr, "Failed to read config file: %s\n", path);
    fflush(stderr);
    Py_XINCREF(type);
    Py_XINCREF(value);
    Py_XINCREF(tb);
    PyErr_Restore(type, value, tb);
    PyErr_Print(); /* traceback to sys.stderr, like gunicorn */
    desc = cg_conf_helper_call("describe_error", err, "(Os)", value ? value : Py_None, path);
    if (desc != NULL) {
        cg_err_set(err, "config file %s", PyUnicode_AsUTF8(desc));
    }
    Py_XDECREF(desc);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

static int apply_names(PyObject *values, PyObject *ns, const char *where, struct cg_err *err)
{
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    PyObject *items = PyDict_Copy(ns); /* iterate a copy: validators may run code */
    int rc = -1;

    if (items == NULL) {
        cg_conf_err_from_exc(err);
        return -1;
    }
    while (PyDict_Next(items, &pos, &key, &val)) {
        const struct cg_conf_setting *s;
        const char *name;

        if (!PyUnicode_Check(key)) {
            continue;
        }
        name = PyUnicode_AsUTF8(key);
        s = name != NULL ? cg_conf_setting_find(name) : NULL;
        if (s == NULL) {
            PyErr_Clear();
            continue;
        }
        if (cg_conf_value_set(values, s, val, err) < 0) {
            PyObject *r = cg_conf_helper_call("short_repr", NULL, "(O)", val);
            char reason[sizeof(err->msg)];
            snprintf(reason, sizeof(reason), "%s", err->msg);
            cg_err_set(err, "%s: invalid value for %s = %s: %s", where, name,
                       r != NULL ? PyUnicode_AsUTF8(r) : "?", reason);
            Py_XDECREF(r);
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    Py_DECREF(items);
    return rc;
}

int cg_conf_file_load(PyObject *values, const char *location, struct cg_err *err)
{
    PyObject *ns = NULL;
    const char *path = location;
    int rc = -1;

    if (strncmp(location, "python:", 7) == 0) {
        ns = cg_conf_helper_call("load_config_module", err, "(s)", location + 7);
        if (ns == NULL) {
            cg_err_prefix(err, "config %s", location);
            goto cleanup;
        }
    } else {
        if (strncmp(location, "file:", 5) == 0) {
            path = location + 5;
        }
        if (access(path, F_OK) != 0) {
            cg_err_set(err, "'%s' doesn't exist; pass an existing config file to -c", path);
            goto cleanup;
        }
        PyObject *mod = cg_conf_helpers(err); /* borrowed */
        if (mod == NULL) {
            goto cleanup;
        }
        ns = PyObject_CallMethod(mod, "load_config_file", "s", path);
        if (ns == NULL) {
            report_exec_error(path, err);
            goto cleanup;
        }
    }
    rc = apply_names(values, ns, path, err);
cleanup:
    Py_XDECREF(ns);
    return rc;
}
