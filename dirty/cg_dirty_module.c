/* The builtin module `_cgunicorn_dirty`: the dirty IPC codec for Python code
 * inside the binary (gunicorn.dirty's client and stash, dirty workers).
 *
 *   encode(type, id, body, max_message=DEFAULT_MAX_MESSAGE) -> bytes
 *       a whole frame; raises UnsupportedValueError (a TypeError) naming the
 *       value's type and path, or MessageTooLargeError (a ValueError)
 *   encode_parts(type, id, body, max_message=...) -> list
 *       the same frame as [header + JSON bytes, each bytes-like value...]
 *       for socket.sendmsg() (large payloads are not copied)
 *   encode_fds(type, id, body, max_message, threshold, max_payload) -> (list, fds)
 *       as encode_parts(), with bytes values above `threshold` (0: none) in
 *       sealed memfds: `fds` is a list of descriptors the caller sends with
 *       the frame's first byte (SCM_RIGHTS) and then closes; raises
 *       PayloadTooLargeError (a ValueError) naming dirty_max_payload_size
 *   decode_header(buf, max_message=DEFAULT_MAX_MESSAGE) -> (type, id, J, B)
 *       raises ValueError for a bad header or one past max_message; the
 *       frame's descriptor count is byte 5 of the header (buf[5])
 *   decode_body(buf, json_len, fds=(), max_payload=DEFAULT_MAX_PAYLOAD) -> dict
 *       buf holds the J + B bytes; fds the descriptors that came with the
 *       frame (still the caller's to close); memfd values arrive as bytes
 *   stats() -> dict       memfds this process made and mapped (counters)
 *   type_name(type) -> str
 *   REQUEST .. STATUS, HEADER_SIZE, VERSION, DEFAULT_MAX_MESSAGE, MAX_DEPTH
 *
 * Registered by the table in server/embed/cg_py_modules.c. */
#include <Python.h>

#include <stdbool.h>
#include <unistd.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_mem.h"
#include "cg_dirty_module.h"

/* Created once per process at import (single-phase init, one interpreter);
 * owned by the module. */
static PyObject *unsupported_error;
static PyObject *too_large_error;
static PyObject *payload_error;

static int parse_max(PyObject *obj, size_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = CG_DIRTY_DEFAULT_MAX_MESSAGE;
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "max_message must be a positive number of bytes");
        return -1;
    }
    if (v < CG_DIRTY_HEADER_SIZE + 2) {
        PyErr_Format(PyExc_ValueError, "max_message %llu is too small: a frame needs at least "
                     "%d bytes", v, CG_DIRTY_HEADER_SIZE + 2);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static int parse_type(int type)
{
    if (type < CG_DIRTY_REQUEST || type > CG_DIRTY_TYPE_MAX) {
        PyErr_Format(PyExc_ValueError, "unknown dirty message type %d (expected 1..%d)", type,
                     CG_DIRTY_TYPE_MAX);
        return -1;
    }
    return 0;
}

/* Re-raises the pending encode error as the module's own class (same
 * message) so that callers can map it to the right DirtyError without
 * parsing text. */
static void reraise(enum cg_dirty_enc_error why)
{
    if (why == CG_DIRTY_ENC_OTHER) {
        return;
    }
    /* Re-raise as the module's own class (same message) so that callers can
     * map it to the right DirtyError without parsing text. */
    PyObject *etype = NULL, *evalue = NULL, *etb = NULL; /* owned */
    PyErr_Fetch(&etype, &evalue, &etb);
    PyErr_NormalizeException(&etype, &evalue, &etb);
    PyObject *msg = evalue != NULL ? PyObject_Str(evalue) : NULL; /* owned */
    if (msg != NULL) {
        PyErr_SetObject(why == CG_DIRTY_ENC_TOO_LARGE           ? too_large_error
                        : why == CG_DIRTY_ENC_PAYLOAD_TOO_LARGE ? payload_error
                                                                : unsupported_error,
                        msg);
        Py_DECREF(msg);
    }
    Py_XDECREF(etype);
    Py_XDECREF(evalue);
    Py_XDECREF(etb);
}

static PyObject *encode_common(PyObject *args, PyObject *kwargs, const char *fmt, bool parts)
{
    static char *kwlist[] = { "type", "id", "body", "max_message", NULL };
    int type;
    unsigned long long id;
    PyObject *body;                         /* borrowed */
    PyObject *max_obj = NULL;               /* borrowed */
    size_t max_message;
    enum cg_dirty_enc_error why = CG_DIRTY_ENC_OTHER;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, &type, &id, &PyDict_Type, &body,
                                     &max_obj)) {
        return NULL;
    }
    if (parse_type(type) < 0 || parse_max(max_obj, &max_message) < 0) {
        return NULL;
    }
    PyObject *frame = parts ? cg_dirty_frame_encode_py_parts((enum cg_dirty_type)type, id, body,
                                                             max_message, &why)
                            : cg_dirty_frame_encode_py((enum cg_dirty_type)type, id, body,
                                                       max_message, &why);
    if (frame == NULL) {
        reraise(why);
    }
    return frame;
}

static PyObject *mod_encode_fds(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = { "type", "id", "body", "max_message", "threshold", "max_payload",
                              NULL };
    int type;
    unsigned long long id, threshold = 0, max_payload = CG_DIRTY_DEFAULT_MAX_PAYLOAD;
    PyObject *body;           /* borrowed */
    PyObject *max_obj = NULL; /* borrowed */
    PyObject *parts = NULL, *fdlist = NULL, *result = NULL; /* owned */
    size_t max_message, nfds = 0;
    int fds[CG_DIRTY_MAX_FDS];
    enum cg_dirty_enc_error why = CG_DIRTY_ENC_OTHER;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iKO!|OKK:encode_fds", kwlist, &type, &id,
                                     &PyDict_Type, &body, &max_obj, &threshold, &max_payload)) {
        return NULL;
    }
    if (parse_type(type) < 0 || parse_max(max_obj, &max_message) < 0) {
        return NULL;
    }
    struct cg_dirty_zc zc = { .threshold = (size_t)threshold, .max_payload = (size_t)max_payload };
    parts = cg_dirty_frame_encode_py_parts_fds((enum cg_dirty_type)type, id, body, max_message,
                                               &zc, fds, &nfds, &why);
    if (parts == NULL) {
        reraise(why);
        return NULL;
    }
    fdlist = PyList_New((Py_ssize_t)nfds);
    for (size_t i = 0; fdlist != NULL && i < nfds; i++) {
        PyObject *n = PyLong_FromLong(fds[i]);
        if (n == NULL) {
            Py_CLEAR(fdlist);
            break;
        }
        PyList_SET_ITEM(fdlist, (Py_ssize_t)i, n); /* steals */
    }
    if (fdlist != NULL) {
        result = PyTuple_Pack(2, parts, fdlist);
    }
    if (result == NULL) {
        for (size_t i = 0; i < nfds; i++) {
            close(fds[i]);
        }
    }
    Py_DECREF(parts);
    Py_XDECREF(fdlist);
    return result;
}

static PyObject *mod_encode(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return encode_common(args, kwargs, "iKO!|O:encode", false);
}

static PyObject *mod_encode_parts(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return encode_common(args, kwargs, "iKO!|O:encode_parts", true);
}

static PyObject *mod_decode_header(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = { "buf", "max_message", NULL };
    Py_buffer view = { 0 };
    PyObject *max_obj = NULL; /* borrowed */
    PyObject *result = NULL;
    size_t max_message;
    struct cg_dirty_header h;
    struct cg_err err = { { 0 } };

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|O:decode_header", kwlist, &view,
                                     &max_obj)) {
        return NULL;
    }
    if (parse_max(max_obj, &max_message) < 0) {
        goto cleanup;
    }
    if (view.len < CG_DIRTY_HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "truncated dirty frame header: %zd bytes, expected %d",
                     view.len, CG_DIRTY_HEADER_SIZE);
        goto cleanup;
    }
    if (cg_dirty_header_decode(view.buf, max_message, &h, &err) < 0) {
        PyErr_SetString(PyExc_ValueError, err.msg);
        goto cleanup;
    }
    result = Py_BuildValue("(iKkk)", (int)h.type, (unsigned long long)h.id,
                           (unsigned long)h.json_len, (unsigned long)h.blob_len);
cleanup:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *mod_decode_body(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = { "buf", "json_len", "fds", "max_payload", NULL };
    Py_buffer view = { 0 };
    Py_ssize_t json_len;
    PyObject *fd_obj = NULL; /* borrowed */
    PyObject *seq = NULL;    /* owned */
    unsigned long long max_payload = CG_DIRTY_DEFAULT_MAX_PAYLOAD;
    PyObject *result = NULL;
    int fds[CG_DIRTY_MAX_FDS];
    size_t nfds = 0;

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*n|OK:decode_body", kwlist, &view,
                                     &json_len, &fd_obj, &max_payload)) {
        return NULL;
    }
    if (fd_obj != NULL && fd_obj != Py_None) {
        seq = PySequence_Fast(fd_obj, "decode_body: fds must be a sequence of descriptors");
        if (seq == NULL) {
            goto cleanup;
        }
        if (PySequence_Fast_GET_SIZE(seq) > CG_DIRTY_MAX_FDS) {
            PyErr_Format(PyExc_ValueError, "decode_body: more than %d descriptors",
                         CG_DIRTY_MAX_FDS);
            goto cleanup;
        }
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
            if (fd == -1 && PyErr_Occurred()) {
                goto cleanup;
            }
            fds[nfds++] = (int)fd;
        }
    }
    if (json_len < 0 || json_len > view.len) {
        PyErr_Format(PyExc_ValueError, "decode_body: json_len %zd outside the %zd-byte buffer",
                     json_len, view.len);
        goto cleanup;
    }
    const unsigned char *buf = view.buf;
    result = cg_dirty_body_decode_py_fds(buf, (size_t)json_len, buf + json_len,
                                         (size_t)(view.len - json_len), fds, nfds,
                                         (size_t)max_payload);
cleanup:
    Py_XDECREF(seq);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *mod_stats(PyObject *self, PyObject *unused)
{
    struct cg_dirty_zc_stats st;
    (void)self;
    (void)unused;

    cg_dirty_zc_stats_get(&st);
    return Py_BuildValue("{s:K,s:K,s:K,s:K}", "memfd_sent", st.sent, "memfd_sent_bytes",
                         st.sent_bytes, "memfd_received", st.received, "memfd_received_bytes",
                         st.received_bytes);
}

static PyObject *mod_type_name(PyObject *self, PyObject *arg)
{
    (void)self;
    long t = PyLong_AsLong(arg);
    if (t == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyUnicode_FromString(cg_dirty_type_name((int)t));
}

static PyMethodDef dirty_methods[] = {
    { "encode", (PyCFunction)(void (*)(void))mod_encode, METH_VARARGS | METH_KEYWORDS,
      "encode(type, id, body, max_message=DEFAULT_MAX_MESSAGE) -> bytes: a whole frame" },
    { "encode_parts", (PyCFunction)(void (*)(void))mod_encode_parts,
      METH_VARARGS | METH_KEYWORDS,
      "encode_parts(type, id, body, max_message=DEFAULT_MAX_MESSAGE) -> list: the frame as "
      "[header+JSON bytes, then each bytes-like value itself] for socket.sendmsg()" },
    { "decode_header", (PyCFunction)(void (*)(void))mod_decode_header,
      METH_VARARGS | METH_KEYWORDS,
      "decode_header(buf, max_message=DEFAULT_MAX_MESSAGE) -> (type, id, json_len, blob_len)" },
    { "encode_fds", (PyCFunction)(void (*)(void))mod_encode_fds, METH_VARARGS | METH_KEYWORDS,
      "encode_fds(type, id, body, max_message, threshold=0, max_payload=DEFAULT_MAX_PAYLOAD) "
      "-> (parts, fds): bytes values above threshold in sealed memfds the caller sends with "
      "SCM_RIGHTS and then closes" },
    { "decode_body", (PyCFunction)(void (*)(void))mod_decode_body, METH_VARARGS | METH_KEYWORDS,
      "decode_body(buf, json_len, fds=(), max_payload=DEFAULT_MAX_PAYLOAD) -> dict; buf holds "
      "the JSON then the blob section, fds the descriptors that came with the frame" },
    { "stats", mod_stats, METH_NOARGS,
      "stats() -> dict: memfds this process made (sent) and mapped (received)" },
    { "type_name", mod_type_name, METH_O, "type_name(type) -> 'request', 'response', ..." },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef dirty_def = {
    PyModuleDef_HEAD_INIT, "_cgunicorn_dirty", "cgunicorn dirty IPC codec", -1, dirty_methods,
    NULL, NULL, NULL, NULL,
};

static const struct {
    const char *name;
    long value;
} constants[] = {
    { "REQUEST", CG_DIRTY_REQUEST },   { "RESPONSE", CG_DIRTY_RESPONSE },
    { "ERROR", CG_DIRTY_ERROR },       { "CHUNK", CG_DIRTY_CHUNK },
    { "END", CG_DIRTY_END },           { "CANCEL", CG_DIRTY_CANCEL },
    { "STASH", CG_DIRTY_STASH },       { "STATUS", CG_DIRTY_STATUS },
    { "HEADER_SIZE", CG_DIRTY_HEADER_SIZE }, { "VERSION", CG_DIRTY_VERSION },
    { "DEFAULT_MAX_MESSAGE", (long)CG_DIRTY_DEFAULT_MAX_MESSAGE },
    { "MAX_DEPTH", CG_DIRTY_MAX_DEPTH },
    { "MAX_FDS", CG_DIRTY_MAX_FDS },
    { "DEFAULT_ZERO_COPY_THRESHOLD", (long)CG_DIRTY_DEFAULT_ZC_THRESHOLD },
    { "DEFAULT_MAX_PAYLOAD", (long)CG_DIRTY_DEFAULT_MAX_PAYLOAD },
};

PyObject *cg_dirty_module_init(void)
{
    PyObject *m = PyModule_Create(&dirty_def); /* owned until returned */

    cg_dirty_mem_tune(); /* this process moves dirty frames: keep big blocks */
    if (m == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(constants) / sizeof(constants[0]); i++) {
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            goto fail;
        }
    }
    if (unsupported_error == NULL) {
        unsupported_error = PyErr_NewExceptionWithDoc(
            "_cgunicorn_dirty.UnsupportedValueError",
            "A value the dirty protocol cannot carry (the message names its type and path).",
            PyExc_TypeError, NULL);
        too_large_error = PyErr_NewExceptionWithDoc(
            "_cgunicorn_dirty.MessageTooLargeError",
            "A message larger than the limit (dirty_max_message_size).", PyExc_ValueError, NULL);
        payload_error = PyErr_NewExceptionWithDoc(
            "_cgunicorn_dirty.PayloadTooLargeError",
            "A bytes value larger than the limit (dirty_max_payload_size).", PyExc_ValueError,
            NULL);
        if (unsupported_error == NULL || too_large_error == NULL || payload_error == NULL) {
            goto fail;
        }
    }
    if (PyModule_AddObjectRef(m, "UnsupportedValueError", unsupported_error) < 0 ||
        PyModule_AddObjectRef(m, "MessageTooLargeError", too_large_error) < 0 ||
        PyModule_AddObjectRef(m, "PayloadTooLargeError", payload_error) < 0) {
        goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
