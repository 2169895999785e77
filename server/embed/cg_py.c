/* Embedded CPython: configuration from PyConfig, virtualenv detection, and
 * the importer that serves the Python sources compiled into the binary
 * (build/gen/cg_pysrc.c). The master calls cg_py_init(); every child gets the
 * interpreter through fork (cg_sup_fork in server/cg_supervisor.c runs the
 * after-fork protocol). */
#include <Python.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_modules.h"
#include "cg_pysrc.h"

#ifndef CG_PYTHON_BASE
#define CG_PYTHON_BASE ""
#endif

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Picks the interpreter path whose prefix/venv sys.prefix should come from:
 * $VIRTUAL_ENV first, then a venv that holds this binary, else the base
 * Python we were built against. Writes into out (PATH_MAX). */
static void choose_executable(char *out)
{
    const char *venv = getenv("VIRTUAL_ENV");
    char self[PATH_MAX];
    char probe[PATH_MAX + 32];

    out[0] = '\0';
    if (venv != NULL && venv[0] != '\0') {
        snprintf(probe, sizeof(probe), "%s/pyvenv.cfg", venv);
        if (file_exists(probe)) {
            snprintf(out, PATH_MAX, "%s/bin/python", venv);
            return;
        }
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(probe, sizeof(probe), "%s/../pyvenv.cfg", self);
            if (file_exists(probe)) {
                snprintf(out, PATH_MAX, "%s/python", self);
                return;
            }
        }
    }
    snprintf(out, PATH_MAX, "%s", CG_PYTHON_BASE);
}

static int status_ok(PyStatus st, const char *what, struct cg_err *err)
{
    if (!PyStatus_Exception(st)) {
        return 0;
    }
    cg_err_set(err, "Python start-up failed at %s: %s", what,
               st.err_msg ? st.err_msg : "unknown error");
    return -1;
}

/* Runs _cgunicorn_boot.py and hands it the table of embedded sources. */
static int install_importer(struct cg_err *err)
{
    const struct cg_pysrc *boot = NULL;
    PyObject *table = NULL, *mod = NULL, *code = NULL, *res = NULL; /* owned */
    int rc = -1;

    table = PyDict_New();
    if (table == NULL) {
        goto cleanup;
    }
    for (const struct cg_pysrc *p = cg_pysrc_table; p->name != NULL; p++) {
        if (strcmp(p->name, "_cgunicorn_boot") == 0) {
            boot = p;
            continue;
        }
        PyObject *row = Py_BuildValue("(iss)", p->is_package, p->path, p->source);
        if (row == NULL || PyDict_SetItemString(table, p->name, row) < 0) {
            Py_XDECREF(row);
            goto cleanup;
        }
        Py_DECREF(row);
    }
    if (boot == NULL) {
        cg_err_set(err, "embedded Python sources lack _cgunicorn_boot (broken build)");
        Py_CLEAR(table);
        return -1;
    }
    code = Py_CompileString(boot->source, boot->path, Py_file_input);
    if (code == NULL) {
        goto cleanup;
    }
    mod = PyImport_ExecCodeModule("_cgunicorn_boot", code);
    if (mod == NULL) {
        goto cleanup;
    }
    res = PyObject_CallMethod(mod, "install", "O", table);
    if (res == NULL) {
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (rc < 0 && PyErr_Occurred()) {
        cg_err_from_python(err);
        cg_err_prefix(err, "installing the embedded-module importer");
    }
    Py_XDECREF(res);
    Py_XDECREF(mod);
    Py_XDECREF(code);
    Py_XDECREF(table);
    return rc;
}

int cg_py_init(int argc, char **argv, struct cg_err *err)
{
    PyConfig config;
    char exe[PATH_MAX];
    int rc = -1;

    if (cg_py_modules_register(err) < 0) {
        return -1;
    }
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* C owns signals */
    config.parse_argv = 0;
    config.safe_path = 1; /* sys.path[0] is set by --chdir/--pythonpath rules */
    choose_executable(exe);
    if (exe[0] != '\0') {
        if (status_ok(PyConfig_SetBytesString(&config, &config.executable, exe), "executable",
                      err) < 0) {
            goto cleanup;
        }
    }
    if (status_ok(PyConfig_SetBytesArgv(&config, argc, argv), "argv", err) < 0) {
        goto cleanup;
    }
    if (status_ok(Py_InitializeFromConfig(&config), "initialization", err) < 0) {
        goto cleanup;
    }
    if (install_importer(err) < 0) {
        goto cleanup;
    }
    rc = 0;
cleanup:
    PyConfig_Clear(&config);
    return rc;
}

void cg_py_fini(void)
{
    if (Py_IsInitialized()) {
        Py_FinalizeEx();
    }
}

PyObject *cg_py_format_exception(void)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL; /* owned */
    PyObject *tbmod = NULL, *lines = NULL, *sep = NULL, *text = NULL;

    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    tbmod = PyImport_ImportModule("traceback");
    if (tbmod != NULL) {
        lines = PyObject_CallMethod(tbmod, "format_exception", "OOO", type,
                                    value ? value : Py_None, tb ? tb : Py_None);
    }
    if (lines != NULL) {
        sep = PyUnicode_FromString("");
        text = sep ? PyUnicode_Join(sep, lines) : NULL;
    }
    if (text == NULL) {
        PyErr_Clear();
        text = value ? PyObject_Str(value) : PyUnicode_FromString("unknown error");
        PyErr_Clear();
    }
    Py_XDECREF(sep);
    Py_XDECREF(lines);
    Py_XDECREF(tbmod);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return text;
}

void cg_py_log_exception(const char *context)
{
    PyObject *text = cg_py_format_exception(); /* owned */
    const char *s = text ? PyUnicode_AsUTF8(text) : NULL;

    if (s == NULL) {
        PyErr_Clear();
        s = "(traceback unavailable)";
    }
    size_t n = strlen(s);
    cg_log_exception("%s\n%.*s", context, (int)(n > 0 && s[n - 1] == '\n' ? n - 1 : n), s);
    Py_XDECREF(text);
}

int cg_py_path_prepend(const char *dir, struct cg_err *err)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *item = NULL;                    /* owned */
    int rc = -1;

    if (path == NULL || !PyList_Check(path)) {
        cg_err_set(err, "sys.path is missing");
        return -1;
    }
    item = PyUnicode_DecodeFSDefault(dir);
    if (item == NULL) {
        return cg_err_from_python(err);
    }
    if (PyList_GET_SIZE(path) > 0) {
        int same = PyObject_RichCompareBool(PyList_GET_ITEM(path, 0), item, Py_EQ);
        if (same == 1) {
            rc = 0;
            goto cleanup;
        }
    }
    if (PyList_Insert(path, 0, item) < 0) {
        cg_err_from_python(err);
        goto cleanup;
    }
    rc = 0;
cleanup:
    Py_XDECREF(item);
    return rc;
}

void cg_py_flush_stdio(void)
{
    static const char *const names[] = { "stdout", "stderr" };

    for (size_t i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]); /* borrowed */
        if (f != NULL && f != Py_None) {
            PyObject *r = PyObject_CallMethod(f, "flush", NULL);
            Py_XDECREF(r);
        }
        PyErr_Clear();
    }
}
