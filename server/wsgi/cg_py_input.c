/* wsgi.input as a C type. Reads go to the body source with the GIL released;
 * a small internal buffer serves readline() and iteration. Errors reading the
 * body raise OSError (gunicorn raises an http error from its parser; apps see
 * an exception either way and the worker answers or closes). */
#include <Python.h>
#include <string.h>

#include "cg_py_input.h"

#define CHUNK 65536

typedef struct {
    PyObject_HEAD
    struct cg_body_src src;
    int attached;
    int eof;
    char *buf; /* owned: bytes read from src, not yet returned */
    size_t len;
    size_t pos;
    size_t cap;
} InputObject;

/* One read from the source: what is buffered with the GIL held, else with
 * the GIL released (it may wait for the client). */
static ssize_t src_read(InputObject *self, char *dst, size_t n, struct cg_err *err)
{
    ssize_t got = CG_BODY_AGAIN;

    if (self->src.read_buffered != NULL) {
        got = self->src.read_buffered(self->src.ctx, dst, n, err);
    }
    if (got == CG_BODY_AGAIN) {
        Py_BEGIN_ALLOW_THREADS
        got = self->src.read(self->src.ctx, dst, n, err);
        Py_END_ALLOW_THREADS
    }
    return got;
}

/* Reads more from the source into buf. Returns bytes added, 0 at EOF, -1
 * with an exception. */
static Py_ssize_t fill(InputObject *self, size_t want)
{
    struct cg_err err = { { 0 } };
    ssize_t n = 0;

    if (!self->attached || self->eof) {
        return 0;
    }
    if (self->pos > 0) {
        memmove(self->buf, self->buf + self->pos, self->len - self->pos);
        self->len -= self->pos;
        self->pos = 0;
    }
    if (want < CHUNK) {
        want = CHUNK;
    }
    if (self->cap - self->len < want) {
        size_t cap = self->len + want;
        char *nb = PyMem_RawRealloc(self->buf, cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->buf = nb;
        self->cap = cap;
    }
    n = src_read(self, self->buf + self->len, self->cap - self->len, &err);
    if (n < 0) {
        PyErr_Format(PyExc_OSError, "reading the request body: %s", err.msg);
        return -1;
    }
    if (n == 0) {
        self->eof = 1;
    }
    self->len += (size_t)n;
    return n;
}

static PyObject *take(InputObject *self, size_t n)
{
    if (n == 0) {
        return PyBytes_FromStringAndSize(NULL, 0); /* buf may still be NULL */
    }
    PyObject *out = PyBytes_FromStringAndSize(self->buf + self->pos, (Py_ssize_t)n);
    if (out != NULL) {
        self->pos += n;
    }
    return out;
}

static int size_arg(PyObject *arg, Py_ssize_t *size)
{
    *size = -1;
    if (arg == NULL || arg == Py_None) {
        return 0;
    }
    *size = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    return (*size == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* read(size) with an empty buffer: the source writes into the bytes object
 * that is returned, until size bytes or the end of the body. */
static PyObject *read_direct(InputObject *self, size_t size)
{
    struct cg_err err = { { 0 } };
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    size_t have = 0;

    if (out == NULL) {
        return NULL;
    }
    while (have < size && self->attached && !self->eof) {
        ssize_t n;
        n = src_read(self, PyBytes_AS_STRING(out) + have, size - have, &err);
        if (n < 0) {
            Py_DECREF(out);
            PyErr_Format(PyExc_OSError, "reading the request body: %s", err.msg);
            return NULL;
        }
        if (n == 0) {
            self->eof = 1;
        }
        have += (size_t)n;
    }
    if (have < size && _PyBytes_Resize(&out, (Py_ssize_t)have) < 0) {
        return NULL;
    }
    return out;
}

static PyObject *input_read(InputObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "read() takes at most 1 argument");
        return NULL;
    }
    if (size_arg(nargs ? args[0] : NULL, &size) < 0) {
        return NULL;
    }
    if (size < 0) {
        for (;;) {
            Py_ssize_t n = fill(self, CHUNK);
            if (n < 0) {
                return NULL;
            }
            if (n == 0) {
                break;
            }
        }
        return take(self, self->len - self->pos);
    }
    /* Nothing buffered: read straight into the result (one copy). */
    if (self->len == self->pos && size >= 4096) {
        return read_direct(self, (size_t)size);
    }
    /* PEP 3333 allows a short read; gunicorn returns up to size, reading
     * until it has size bytes or the body ends. */
    while (self->len - self->pos < (size_t)size) {
        Py_ssize_t n = fill(self, (size_t)size - (self->len - self->pos));
        if (n < 0) {
            return NULL;
        }
        if (n == 0) {
            break;
        }
    }
    size_t avail = self->len - self->pos;
    return take(self, avail < (size_t)size ? avail : (size_t)size);
}

static PyObject *readline_impl(InputObject *self, Py_ssize_t size)
{
    size_t scanned = 0;

    for (;;) {
        size_t avail = self->len - self->pos;
        size_t limit = (size >= 0 && (size_t)size < avail) ? (size_t)size : avail;
        char *nl = limit > scanned
                       ? memchr(self->buf + self->pos + scanned, '\n', limit - scanned)
                       : NULL;
        if (nl != NULL) {
            return take(self, (size_t)(nl - (self->buf + self->pos)) + 1);
        }
        if (size >= 0 && avail >= (size_t)size) {
            return take(self, (size_t)size);
        }
        scanned = limit;
        Py_ssize_t n = fill(self, CHUNK);
        if (n < 0) {
            return NULL;
        }
        if (n == 0) {
            return take(self, self->len - self->pos);
        }
    }
}

static PyObject *input_readline(InputObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;

    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "readline() takes at most 1 argument");
        return NULL;
    }
    if (size_arg(nargs ? args[0] : NULL, &size) < 0) {
        return NULL;
    }
    return readline_impl(self, size);
}

static PyObject *input_readlines(InputObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint;
    Py_ssize_t total = 0;
    PyObject *lines = NULL;

    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "readlines() takes at most 1 argument");
        return NULL;
    }
    if (size_arg(nargs ? args[0] : NULL, &hint) < 0) {
        return NULL;
    }
    lines = PyList_New(0);
    if (lines == NULL) {
        return NULL;
    }
    for (;;) {
        PyObject *line = readline_impl(self, -1);
        if (line == NULL) {
            Py_DECREF(lines);
            return NULL;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(line);
        if (n == 0) {
            Py_DECREF(line);
            break;
        }
        if (PyList_Append(lines, line) < 0) {
            Py_DECREF(line);
            Py_DECREF(lines);
            return NULL;
        }
        Py_DECREF(line);
        total += n;
        if (hint > 0 && total >= hint) {
            break;
        }
    }
    return lines;
}

static PyObject *input_iternext(InputObject *self)
{
    PyObject *line = readline_impl(self, -1);
    if (line != NULL && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static void input_dealloc(InputObject *self)
{
    PyMem_RawFree(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef input_methods[] = {
    { "read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL, "read([size]) -> bytes" },
    { "readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL,
      "readline([size]) -> bytes" },
    { "readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL,
      "readlines([hint]) -> list of bytes" },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject InputType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.Body",
    .tp_basicsize = sizeof(InputObject),
    .tp_dealloc = (destructor)input_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the request body, read from the connection on demand",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_iternext,
    .tp_methods = input_methods,
};

int cg_py_input_ready(void)
{
    if (InputType.tp_flags & Py_TPFLAGS_READY) {
        return 0;
    }
    return PyType_Ready(&InputType);
}

PyObject *cg_py_input_new(const struct cg_body_src *src)
{
    InputObject *self = PyObject_New(InputObject, &InputType);
    if (self == NULL) {
        return NULL;
    }
    self->src = *src;
    self->attached = 1;
    self->eof = 0;
    self->buf = NULL;
    self->len = self->pos = self->cap = 0;
    return (PyObject *)self;
}

void cg_py_input_detach(PyObject *input)
{
    InputObject *self = (InputObject *)input;
    if (input != NULL) {
        self->attached = 0;
    }
}
