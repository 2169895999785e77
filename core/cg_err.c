/* struct cg_err helpers: format, prefix, and capture a Python exception. */
#include <Python.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cg_err.h"

void cg_err_set(struct cg_err *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

void cg_err_prefix(struct cg_err *err, const char *fmt, ...)
{
    char head[512];
    char old[sizeof(err->msg)];
    va_list ap;

    if (err == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t hn = strlen(head);
    size_t on = strnlen(old, sizeof(old) - 1);
    size_t cap = sizeof(err->msg) - 1;
    size_t n = 0;
    memcpy(err->msg, head, hn); /* hn < 512 < cap */
    n = hn;
    memcpy(err->msg + n, ": ", 2);
    n += 2;
    if (on > cap - n) {
        on = cap - n;
    }
    memcpy(err->msg + n, old, on);
    err->msg[n + on] = '\0';
}

int cg_err_from_python(struct cg_err *err)
{
    PyObject *type = NULL, *exc = NULL, *tb = NULL; /* owned */
    PyObject *text = NULL;                          /* owned */
    const char *s = NULL;

    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (exc == NULL) {
        cg_err_set(err, "unknown Python error");
        return -1;
    }
    text = PyObject_Str(exc);
    s = text ? PyUnicode_AsUTF8(text) : NULL;
    if (s != NULL && s[0] != '\0') {
        cg_err_set(err, "%s: %s", Py_TYPE(exc)->tp_name, s);
    } else {
        cg_err_set(err, "%s", Py_TYPE(exc)->tp_name);
    }
    PyErr_Clear();
    Py_XDECREF(text);
    Py_DECREF(exc);
    return -1;
}
