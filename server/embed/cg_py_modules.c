/* The table of builtin modules and the small `_cgunicorn` core module
 * (logging into the server's error log from Python; inotify for the
 * reloader, which the standard library does not wrap). */
#include <Python.h>
#include <errno.h>
#include <sys/inotify.h>

#include "cg_dirty_module.h"
#include "cg_log.h"
#include "cg_metrics.h"
#include "cg_py_hooks.h"
#include "cg_py_modules.h"
#include "cg_statsd.h"
#include "cg_syslog.h"

/* Logs `msg` at `level` (0 debug .. 4 critical) into the error log. */
static PyObject *core_log(PyObject *self, PyObject *args)
{
    int level;
    const char *msg;

    (void)self;
    if (!PyArg_ParseTuple(args, "is:log", &level, &msg)) {
        return NULL;
    }
    if (level < CG_LOG_DEBUG || level > CG_LOG_CRITICAL + 1) {
        PyErr_Format(PyExc_ValueError, "log level %d out of range 0..5", level);
        return NULL;
    }
    if (level == CG_LOG_CRITICAL + 1) {
        cg_log_exception("%s", msg); /* Logger.exception */
    } else {
        cg_log((enum cg_log_level)level, "%s", msg);
    }
    Py_RETURN_NONE;
}

/* inotify_open() -> fd: a non-blocking, close-on-exec inotify descriptor. */
static PyObject *core_inotify_open(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/* inotify_watch(fd, directory) -> wd: watches a directory for files being
 * written, replaced, created or removed (what editors and deploys do). */
static PyObject *core_inotify_watch(PyObject *self, PyObject *args)
{
    int fd;
    PyObject *path = NULL; /* owned (FSConverter) */

    (void)self;
    if (!PyArg_ParseTuple(args, "iO&:inotify_watch", &fd, PyUnicode_FSConverter, &path)) {
        return NULL;
    }
    int wd = inotify_add_watch(fd, PyBytes_AS_STRING(path),
                               IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
                                   IN_ATTRIB | IN_ONLYDIR);
    int saved = errno;
    Py_DECREF(path);
    if (wd < 0) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(wd);
}

/* statsd(name, value, kind): one metric through the server's StatsD
 * socket (gunicorn's Statsd logger methods); value is sent as str(value). */
static PyObject *core_statsd(PyObject *self, PyObject *args)
{
    const char *name, *kind;
    PyObject *value;

    (void)self;
    if (!PyArg_ParseTuple(args, "sOs:statsd", &name, &value, &kind)) {
        return NULL;
    }
    PyObject *text = PyObject_Str(value); /* owned */
    const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
    if (t == NULL) {
        Py_XDECREF(text);
        return NULL;
    }
    cg_statsd_metric(name, t, kind);
    Py_DECREF(text);
    Py_RETURN_NONE;
}

/* metric_register(kind, name, labels, help) -> cell index, or -1 (metrics
 * off, or the shared table full: logged once). */
static PyObject *core_metric_register(PyObject *self, PyObject *args)
{
    int kind;
    const char *name, *labels, *help;

    (void)self;
    if (!PyArg_ParseTuple(args, "Csss:metric_register", &kind, &name, &labels, &help)) {
        return NULL;
    }
    if (kind != 'c' && kind != 'g' && kind != 'h') {
        PyErr_Format(PyExc_ValueError, "metric kind %c: expected 'c', 'g' or 'h'", kind);
        return NULL;
    }
    return PyLong_FromLong(cg_metrics_user_register((char)kind, name, labels, help));
}

/* The fixed-point value of a float (units of 1e-6), saturating. */
static int fixed(PyObject *arg, int64_t *out)
{
    double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    v *= CG_METRICS_USER_SCALE;
    *out = v >= 9.2e18 ? INT64_MAX : v <= -9.2e18 ? INT64_MIN : (int64_t)(v < 0 ? v - 0.5 : v + 0.5);
    return 0;
}

/* metric_update(op, idx, value): op 0 add, 1 set, 2 observe. No GIL
 * release: three relaxed atomic operations at most. */
static PyObject *core_metric_update(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    int64_t v;

    (void)self;
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "metric_update(op, idx, value)");
        return NULL;
    }
    long op = PyLong_AsLong(args[0]), idx = PyLong_AsLong(args[1]);
    if ((op == -1 || idx == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (fixed(args[2], &v) < 0) {
        return NULL;
    }
    if (op == 0) {
        cg_metrics_user_add((int)idx, v);
    } else if (op == 1) {
        cg_metrics_user_set((int)idx, v);
    } else {
        cg_metrics_user_observe((int)idx, v);
    }
    Py_RETURN_NONE;
}

/* syslog_access(line): one access log line to syslog (the `syslog`
 * setting, unless disable_redirect_access_to_syslog). */
static PyObject *core_syslog_access(PyObject *self, PyObject *args)
{
    PyObject *line;

    (void)self;
    if (!PyArg_ParseTuple(args, "U:syslog_access", &line)) {
        return NULL;
    }
    Py_ssize_t n;
    const char *text = PyUnicode_AsUTF8AndSize(line, &n);
    if (text == NULL) {
        return NULL;
    }
    cg_syslog_send(CG_SYSLOG_ACCESS, CG_LOG_INFO, text, (size_t)n);
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    { "metric_register", core_metric_register, METH_VARARGS,
      "metric_register(kind, name, labels, help) -> index, or -1 (dropped)" },
    { "metric_update", (PyCFunction)(void (*)(void))core_metric_update, METH_FASTCALL,
      "metric_update(op, index, value): 0 add, 1 set, 2 observe" },
    { "syslog_access", core_syslog_access, METH_VARARGS,
      "syslog_access(line): send one access log line to syslog" },
    { "log", core_log, METH_VARARGS,
      "log(level, message): write to the server's error log (level 5: an exception, written at "
      "ERROR)" },
    { "statsd", core_statsd, METH_VARARGS,
      "statsd(name, value, kind): send one StatsD metric (kind: 'c|@1.0', 'g', 'ms', 'h')" },
    { "inotify_open", core_inotify_open, METH_NOARGS,
      "inotify_open() -> fd: a non-blocking inotify descriptor" },
    { "inotify_watch", core_inotify_watch, METH_VARARGS,
      "inotify_watch(fd, directory) -> wd: watch a directory for changed files" },
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
