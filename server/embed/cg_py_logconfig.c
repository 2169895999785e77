/* The bridge from cg_log() to Python's logging while a logging
 * configuration is set (see cg_py_logconfig.h). */
#include <Python.h>
#include <stdbool.h>
#include <string.h>

#include "cg_log.h"
#include "cg_py_logconfig.h"

static PyObject *mod;  /* cgunicorn.logconfig while active; owned */
static PyObject *emit; /* its emit(); owned */
static _Thread_local bool in_sink; /* a handler that logs through cg_log */

/* cg_log()'s sink: any thread, with or without the GIL. */
static int sink(enum cg_log_level level, bool exception, const char *text)
{
    PyObject *type, *value, *tb, *r = NULL;
    PyGILState_STATE st;

    if (in_sink || emit == NULL || !Py_IsInitialized()) {
        return -1;
    }
    in_sink = true;
    st = PyGILState_Ensure();
    PyErr_Fetch(&type, &value, &tb); /* the caller's pending exception, if any */
    PyObject *s = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (s != NULL) {
        r = PyObject_CallFunction(emit, "iO", exception ? 5 : (int)level, s);
        Py_DECREF(s);
    }
    if (r == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
    PyGILState_Release(st);
    in_sink = false;
    return r != NULL ? 0 : -1;
}

static void sink_reopen(void)
{
    if (mod == NULL || !Py_IsInitialized()) {
        return;
    }
    PyGILState_STATE st = PyGILState_Ensure();
    PyObject *r = PyObject_CallMethod(mod, "reopen", NULL);
    if (r == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(r);
    PyGILState_Release(st);
}

/* logging's level number to the C filter's level. */
static enum cg_log_level level_of(long n)
{
    return n <= 10 ? CG_LOG_DEBUG : n <= 20 ? CG_LOG_INFO : n <= 30 ? CG_LOG_WARNING
         : n <= 40 ? CG_LOG_ERROR : CG_LOG_CRITICAL;
}

int cg_py_logconfig_apply(const struct cg_conf *conf, struct cg_err *err)
{
    PyObject *m = PyImport_ImportModule("cgunicorn.logconfig"); /* owned */
    PyObject *values = conf->values ? conf->values : Py_None;
    PyObject *wanted = m ? PyObject_CallMethod(m, "wanted", "O", values) : NULL;
    int rc = -1;

    if (wanted == NULL) {
        cg_err_from_python(err);
        goto done;
    }
    if (!PyObject_IsTrue(wanted)) {
        cg_log_set_sink(NULL, NULL);
        Py_CLEAR(emit);
        Py_CLEAR(mod);
        rc = 0;
        goto done;
    }
    PyObject *level = PyObject_CallMethod(m, "setup", "O", values); /* owned */
    if (level == NULL) {
        cg_err_from_python(err);
        goto done;
    }
    long n = PyLong_AsLong(level);
    Py_DECREF(level);
    PyObject *fn = PyObject_GetAttrString(m, "emit");
    if (fn == NULL) {
        cg_err_from_python(err);
        goto done;
    }
    Py_XSETREF(emit, fn);
    Py_XSETREF(mod, Py_NewRef(m));
    cg_log_set_sink(sink, sink_reopen);
    cg_log_set_level(level_of(n));
    rc = 0;
done:
    Py_XDECREF(wanted);
    Py_XDECREF(m);
    return rc;
}

bool cg_py_logconfig_active(void)
{
    return mod != NULL;
}

PyObject *cg_py_logconfig_access_log(const char *fmt)
{
    return PyObject_CallMethod(mod, "AccessLog", "s", fmt);
}
