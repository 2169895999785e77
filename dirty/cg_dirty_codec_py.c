/* The dirty IPC codec, Python half: Python values to a whole frame (header +
 * JSON + blob in one bytes object) and frame bodies back to Python values.
 * Used by the HTTP workers' client (through _cgunicorn_dirty) and by the
 * dirty workers. Every function here needs the GIL.
 *
 * Encoding writes JSON straight from the Python objects into a growing
 * buffer and records each bytes-like value as a slice (no copy); the final
 * bytes object is allocated once at its exact size and each slice is copied
 * into it once. Decoding parses with cg_dirty_json.c and builds each bytes
 * value with one copy out of the blob section.
 *
 * Zero-copy payloads (struct cg_dirty_zc): a bytes value above the
 * threshold is written once into a sealed memfd instead of the blob; the
 * receiver copies it once out of a read-only mapping. Whoever relays the
 * frame (the arbiter) passes the descriptor on and never touches the bytes. */
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_codec_int.h"

struct slice {
    const char *data;
    size_t len;
    PyObject *owner; /* owned: keeps `data` alive */
    Py_buffer view;  /* held when is_view (bytearray, memoryview): pins the memory */
    int is_view;
};

struct enc {
    char *buf; /* JSON text, after CG_DIRTY_HEADER_SIZE reserved bytes */
    size_t len, cap;
    struct slice *slices;
    size_t nslices, cap_slices;
    size_t blob_len;
    size_t max_message;
    struct cg_dirty_path path;
    enum cg_dirty_type type;
    enum cg_dirty_enc_error why;
    struct cg_dirty_zc zc;       /* threshold 0: no memfds */
    int fds[CG_DIRTY_MAX_FDS];   /* memfds made, owned until handed to the caller */
    size_t nfds;
};

static struct cg_dirty_zc_stats zc_stats; /* GIL-protected */

void cg_dirty_zc_stats_get(struct cg_dirty_zc_stats *out)
{
    *out = zc_stats;
}

static const char supported_types[] = "bytes, str, int, float, bool, None, list or dict";

static int fail_unsupported(struct enc *e, const char *fmt, const char *detail)
{
    e->why = CG_DIRTY_ENC_UNSUPPORTED;
    PyErr_Format(PyExc_TypeError, fmt, e->path.buf, detail, supported_types);
    return -1;
}

static int fail_too_large(struct enc *e, size_t size)
{
    e->why = CG_DIRTY_ENC_TOO_LARGE;
    PyErr_Format(PyExc_ValueError,
                 "dirty %s message of at least %zu bytes exceeds the limit of %zu bytes "
                 "(the dirty_max_message_size setting); send less data per call",
                 cg_dirty_type_name(e->type), size, e->max_message);
    return -1;
}

static size_t enc_size(const struct enc *e)
{
    return e->len + e->blob_len; /* e->len counts the reserved header bytes */
}

static int reserve(struct enc *e, size_t n)
{
    if (e->cap - e->len >= n) {
        return 0;
    }
    if (enc_size(e) + n > e->max_message) {
        return fail_too_large(e, enc_size(e) + n);
    }
    size_t cap = e->cap ? e->cap : 256;
    while (cap - e->len < n) {
        cap *= 2;
    }
    char *grown = realloc(e->buf, cap);
    if (grown == NULL) {
        e->why = CG_DIRTY_ENC_OTHER;
        PyErr_NoMemory();
        return -1;
    }
    e->buf = grown;
    e->cap = cap;
    return 0;
}

static int put(struct enc *e, const char *s, size_t n)
{
    if (reserve(e, n) < 0) {
        return -1;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    return 0;
}

#define PUT_LIT(e, lit) put((e), (lit), sizeof(lit) - 1)

/* Appends a JSON string literal for n bytes of UTF-8 at s, with `prefix_nul`
 * extra leading NUL (escaping user dict keys that start with NUL). */
static int put_string(struct enc *e, const char *s, size_t n, int prefix_nul)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    /* Worst case every byte becomes \u00XX: reserve once. */
    if (reserve(e, n * 6 + 8) < 0) {
        return -1;
    }
    e->buf[e->len++] = '"';
    if (prefix_nul) {
        memcpy(e->buf + e->len, "\\u0000", 6);
        e->len += 6;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        memcpy(e->buf + e->len, s + run, i - run);
        e->len += i - run;
        run = i + 1;
        char *o = e->buf + e->len;
        if (c == '"' || c == '\\') {
            o[0] = '\\';
            o[1] = (char)c;
            e->len += 2;
        } else if (c == '\n') {
            memcpy(o, "\\n", 2);
            e->len += 2;
        } else {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            e->len += 6;
        }
    }
    memcpy(e->buf + e->len, s + run, n - run);
    e->len += n - run;
    e->buf[e->len++] = '"';
    return 0;
}

static int put_tag_str(struct enc *e, char letter, const char *text, size_t n)
{
    char head[] = "{\"\\u0000?\":";
    head[8] = letter;
    if (put(e, head, sizeof(head) - 1) < 0 || put_string(e, text, n, 0) < 0) {
        return -1;
    }
    return PUT_LIT(e, "}");
}

/* Writes n bytes at p into a new memfd and seals it; returns the fd, or -1
 * with OSError set. The bytes are pinned by the caller (an owned reference
 * or a buffer view), so the copy runs without the GIL. */
static int memfd_make(const char *p, size_t n)
{
    int fd = memfd_create("cgunicorn-dirty", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int saved = 0;

    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            saved = errno;
            break;
        }
        done += (size_t)w;
    }
    if (saved == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
                                                 F_SEAL_SEAL) < 0) {
        saved = errno;
    }
    Py_END_ALLOW_THREADS
    if (saved != 0) {
        close(fd);
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return fd;
}

/* A bytes value above the zero-copy threshold: into a memfd, tagged. */
static int add_memfd(struct enc *e, const char *data, size_t len)
{
    char tag[80];

    if (len > e->zc.max_payload) {
        e->why = CG_DIRTY_ENC_PAYLOAD_TOO_LARGE;
        PyErr_Format(PyExc_ValueError,
                     "%s: a bytes value of %zu bytes exceeds the limit of %zu bytes (the "
                     "dirty_max_payload_size setting); send less data per call",
                     e->path.buf, len, e->zc.max_payload);
        return -1;
    }
    int fd = memfd_make(data, len);
    if (fd < 0) {
        e->why = CG_DIRTY_ENC_OTHER;
        return -1;
    }
    size_t k = e->nfds;
    e->fds[e->nfds++] = fd;
    zc_stats.sent++;
    zc_stats.sent_bytes += len;
    int n = snprintf(tag, sizeof(tag), "{\"\\u0000m\":[%zu,%zu]}", k, len);
    return put(e, tag, (size_t)n);
}

static int add_slice(struct enc *e, PyObject *obj)
{
    struct slice s = { 0 };
    char tag[80];

    if (e->zc.threshold > 0 && e->nfds < CG_DIRTY_MAX_FDS) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) == 0) {
            int rc = 1;
            if ((size_t)view.len > e->zc.threshold) {
                rc = add_memfd(e, view.buf, (size_t)view.len);
            }
            PyBuffer_Release(&view);
            if (rc <= 0) {
                return rc;
            }
        } else {
            PyErr_Clear(); /* non-contiguous: refused below */
        }
    }

    if (PyBytes_Check(obj)) {
        s.data = PyBytes_AS_STRING(obj);
        s.len = (size_t)PyBytes_GET_SIZE(obj);
        s.owner = Py_NewRef(obj);
    } else {
        if (PyObject_GetBuffer(obj, &s.view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            return fail_unsupported(e, "%s: cannot send a non-contiguous %s to a dirty app; "
                                    "convert it with bytes() first (supported: %s)",
                                    Py_TYPE(obj)->tp_name);
        }
        s.is_view = 1;
        s.data = s.view.buf;
        s.len = (size_t)s.view.len;
    }
    if (e->nslices == e->cap_slices) {
        size_t cap = e->cap_slices ? e->cap_slices * 2 : 8;
        struct slice *grown = realloc(e->slices, cap * sizeof(*grown));
        if (grown == NULL) {
            goto nomem;
        }
        e->slices = grown;
        e->cap_slices = cap;
    }
    size_t off = e->blob_len;
    e->slices[e->nslices++] = s;
    e->blob_len += s.len;
    if (enc_size(e) > e->max_message) {
        return fail_too_large(e, enc_size(e));
    }
    int n = snprintf(tag, sizeof(tag), "{\"\\u0000b\":[%zu,%zu]}", off, s.len);
    return put(e, tag, (size_t)n);
nomem:
    if (s.is_view) {
        PyBuffer_Release(&s.view);
    }
    Py_XDECREF(s.owner);
    e->why = CG_DIRTY_ENC_OTHER;
    PyErr_NoMemory();
    return -1;
}

static int enc_value(struct enc *e, PyObject *v, int depth);

/* Starts a path at a body member's name: "args", then "args[1]['img']". */
static void set_root(struct cg_dirty_path *p, const char *name, size_t n)
{
    n = strnlen(name, n);
    if (n > 200) {
        n = 200;
    }
    memcpy(p->buf, name, n);
    cg_dirty_path_pop(p, n);
}

static int enc_long(struct enc *e, PyObject *v)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    char tmp[32];

    if (x == -1 && PyErr_Occurred()) {
        e->why = CG_DIRTY_ENC_OTHER;
        return -1;
    }
    if (!overflow) {
        int n = snprintf(tmp, sizeof(tmp), "%lld", x);
        return put(e, tmp, (size_t)n);
    }
    /* int's own repr, not a subclass's __repr__ (no Python code runs here). */
    PyObject *text = PyLong_Type.tp_repr(v); /* owned */
    if (text == NULL) {
        e->why = CG_DIRTY_ENC_UNSUPPORTED;
        return -1;
    }
    Py_ssize_t n = 0;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    int rc = s == NULL ? -1 : put_tag_str(e, 'i', s, (size_t)n);
    if (s == NULL) {
        e->why = CG_DIRTY_ENC_OTHER;
    }
    Py_DECREF(text);
    return rc;
}

static int enc_float(struct enc *e, double d)
{
    if (isnan(d)) {
        return put_tag_str(e, 'f', "nan", 3);
    }
    if (isinf(d)) {
        return d > 0 ? put_tag_str(e, 'f', "inf", 3) : put_tag_str(e, 'f', "-inf", 4);
    }
    /* repr() digits: the shortest text that reads back as the same double. */
    char *s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL) {
        e->why = CG_DIRTY_ENC_OTHER;
        return -1;
    }
    int rc = put(e, s, strlen(s));
    PyMem_Free(s);
    return rc;
}

static int enc_str(struct enc *e, PyObject *v, int is_key)
{
    Py_ssize_t n = 0;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);

    if (s == NULL) {
        PyErr_Clear();
        return fail_unsupported(e, "%s: %s cannot be encoded as UTF-8 (it holds a lone "
                                "surrogate); clean the text before sending it (supported: %s)",
                                is_key ? "dict key" : "str");
    }
    return put_string(e, s, (size_t)n, is_key && n > 0 && s[0] == '\0');
}

static int enc_list(struct enc *e, PyObject *v, int depth)
{
    if (PUT_LIT(e, "[") < 0) {
        return -1;
    }
    /* Re-read the size each time: nothing here runs Python code, but an
     * allocation may run the GC, and a finalizer could shrink the list. */
    int is_list = PyList_Check(v);
    for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(v) : PyTuple_GET_SIZE(v)); i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
        if (i > 0 && PUT_LIT(e, ",") < 0) {
            return -1;
        }
        size_t saved = cg_dirty_path_push_index(&e->path, (size_t)i);
        Py_INCREF(item);
        int rc = enc_value(e, item, depth + 1);
        Py_DECREF(item);
        if (rc < 0) {
            return -1;
        }
        cg_dirty_path_pop(&e->path, saved);
    }
    return PUT_LIT(e, "]");
}

static int enc_dict(struct enc *e, PyObject *v, int depth)
{
    PyObject *key, *item; /* borrowed from the dict, then held while used */
    Py_ssize_t pos = 0;
    int first = 1;

    if (PUT_LIT(e, "{") < 0) {
        return -1;
    }
    while (PyDict_Next(v, &pos, &key, &item)) {
        if (!PyUnicode_Check(key)) {
            return fail_unsupported(e, "%s: dict key of type '%.100s' cannot be sent to a dirty "
                                    "app; use str keys (values may be %s)",
                                    Py_TYPE(key)->tp_name);
        }
        Py_ssize_t kn = 0;
        const char *ks = PyUnicode_AsUTF8AndSize(key, &kn);
        if (ks == NULL) {
            PyErr_Clear();
            kn = 0;
            ks = "?";
        }
        size_t saved = cg_dirty_path_push_key(&e->path, ks, (size_t)kn);
        if ((!first && PUT_LIT(e, ",") < 0) || enc_str(e, key, 1) < 0 || PUT_LIT(e, ":") < 0) {
            return -1;
        }
        first = 0;
        Py_INCREF(item);
        int rc = enc_value(e, item, depth + 1);
        Py_DECREF(item);
        if (rc < 0) {
            return -1;
        }
        cg_dirty_path_pop(&e->path, saved);
    }
    return PUT_LIT(e, "}");
}

static int enc_value(struct enc *e, PyObject *v, int depth)
{
    if (v == Py_None) {
        return PUT_LIT(e, "null");
    }
    if (v == Py_True) {
        return PUT_LIT(e, "true");
    }
    if (v == Py_False) {
        return PUT_LIT(e, "false");
    }
    if (PyLong_Check(v)) {
        return enc_long(e, v);
    }
    if (PyFloat_Check(v)) {
        return enc_float(e, PyFloat_AS_DOUBLE(v));
    }
    if (PyUnicode_Check(v)) {
        return enc_str(e, v, 0);
    }
    if (PyBytes_Check(v) || PyByteArray_Check(v) || PyMemoryView_Check(v)) {
        return add_slice(e, v);
    }
    if (PyList_Check(v) || PyTuple_Check(v) || PyDict_Check(v)) {
        if (depth > CG_DIRTY_MAX_DEPTH) {
            char detail[32];
            snprintf(detail, sizeof(detail), "%d", CG_DIRTY_MAX_DEPTH);
            return fail_unsupported(e, "%s: containers nested more than %s levels deep (or a "
                                    "list/dict that contains itself) cannot be sent; flatten "
                                    "the data (supported: %s)", detail);
        }
        return PyDict_Check(v) ? enc_dict(e, v, depth) : enc_list(e, v, depth);
    }
    return fail_unsupported(e, "%s: cannot send object of type '%.100s' to a dirty app; "
                            "convert it to %s", Py_TYPE(v)->tp_name);
}

static void enc_release(struct enc *e)
{
    for (size_t i = 0; i < e->nslices; i++) {
        if (e->slices[i].is_view) {
            PyBuffer_Release(&e->slices[i].view);
        }
        Py_XDECREF(e->slices[i].owner);
    }
    for (size_t i = 0; i < e->nfds; i++) {
        close(e->fds[i]);
    }
    free(e->slices);
    free(e->buf);
    memset(e, 0, sizeof(*e));
}

/* Writes the body dict; top-level keys are path roots ("args", not "['args']"). */
static int enc_body(struct enc *e, PyObject *body)
{
    PyObject *key, *item;
    Py_ssize_t pos = 0;
    int first = 1;

    if (!PyDict_Check(body)) {
        e->why = CG_DIRTY_ENC_UNSUPPORTED;
        PyErr_Format(PyExc_TypeError, "dirty message body must be a dict, not '%.100s'",
                     Py_TYPE(body)->tp_name);
        return -1;
    }
    if (PUT_LIT(e, "{") < 0) {
        return -1;
    }
    while (PyDict_Next(body, &pos, &key, &item)) {
        Py_ssize_t kn = 0;
        const char *ks = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &kn) : NULL;
        if (ks == NULL) {
            PyErr_Clear();
            e->why = CG_DIRTY_ENC_UNSUPPORTED;
            PyErr_Format(PyExc_TypeError, "dirty message body keys must be str, not '%.100s'",
                         Py_TYPE(key)->tp_name);
            return -1;
        }
        set_root(&e->path, ks, (size_t)kn);
        /* Body keys are protocol field names: written as they are, never escaped. */
        if ((!first && PUT_LIT(e, ",") < 0) || put_string(e, ks, (size_t)kn, 0) < 0 ||
            PUT_LIT(e, ":") < 0) {
            return -1;
        }
        first = 0;
        Py_INCREF(item);
        int rc = enc_value(e, item, 1);
        Py_DECREF(item);
        if (rc < 0) {
            return -1;
        }
    }
    return PUT_LIT(e, "}");
}

/* Encodes the body after a reserved header and fills the header in.
 * Returns 0, or -1 with a Python exception and e->why. */
static int enc_frame(struct enc *e, uint64_t id, PyObject *body)
{
    struct cg_dirty_header h = { .type = e->type, .id = id };

    if (reserve(e, CG_DIRTY_HEADER_SIZE + 64) < 0) {
        return -1;
    }
    e->len = CG_DIRTY_HEADER_SIZE;
    if (enc_body(e, body) < 0) {
        return -1;
    }
    size_t json_len = e->len - CG_DIRTY_HEADER_SIZE;
    if (enc_size(e) > e->max_message || json_len > UINT32_MAX || e->blob_len > UINT32_MAX) {
        return fail_too_large(e, enc_size(e));
    }
    h.json_len = (uint32_t)json_len;
    h.blob_len = (uint32_t)e->blob_len;
    h.nfds = (unsigned)e->nfds;
    cg_dirty_header_encode((unsigned char *)e->buf, &h);
    return 0;
}

static void enc_set_zc(struct enc *e, const struct cg_dirty_zc *zc)
{
    if (zc != NULL && zc->threshold > 0) {
        e->zc = *zc;
    }
}

int cg_dirty_frame_encode_py_iov(enum cg_dirty_type type, uint64_t id, PyObject *body,
                                 size_t max_message, const struct cg_dirty_zc *zc,
                                 struct cg_dirty_py_frame *f, enum cg_dirty_enc_error *why)
{
    struct enc *e = calloc(1, sizeof(*e)); /* owned; moves into f->priv */

    memset(f, 0, sizeof(*f));
    if (e == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    e->max_message = max_message;
    e->type = type;
    enc_set_zc(e, zc);
    if (enc_frame(e, id, body) < 0) {
        goto fail;
    }
    f->iov = malloc((1 + e->nslices) * sizeof(*f->iov));
    if (f->iov == NULL) {
        PyErr_NoMemory();
        e->why = CG_DIRTY_ENC_OTHER;
        goto fail;
    }
    f->iov[0].iov_base = e->buf;
    f->iov[0].iov_len = e->len;
    f->iovcnt = 1;
    for (size_t i = 0; i < e->nslices; i++) {
        if (e->slices[i].len > 0) {
            f->iov[f->iovcnt].iov_base = (void *)e->slices[i].data;
            f->iov[f->iovcnt].iov_len = e->slices[i].len;
            f->iovcnt++;
        }
    }
    f->len = enc_size(e);
    f->fds = e->fds;
    f->nfds = (int)e->nfds;
    f->priv = e;
    return 0;
fail:
    if (why != NULL) {
        *why = (e != NULL && e->why) ? e->why : CG_DIRTY_ENC_OTHER;
    }
    if (e != NULL) {
        enc_release(e);
        free(e);
    }
    return -1;
}

void cg_dirty_py_frame_release(struct cg_dirty_py_frame *f)
{
    if (f->priv != NULL) {
        enc_release(f->priv);
        free(f->priv);
    }
    free(f->iov);
    memset(f, 0, sizeof(*f));
}

PyObject *cg_dirty_frame_encode_py_parts(enum cg_dirty_type type, uint64_t id, PyObject *body,
                                         size_t max_message, enum cg_dirty_enc_error *why)
{
    size_t nfds = 0;
    return cg_dirty_frame_encode_py_parts_fds(type, id, body, max_message, NULL, NULL, &nfds,
                                              why);
}

PyObject *cg_dirty_frame_encode_py_parts_fds(enum cg_dirty_type type, uint64_t id,
                                             PyObject *body, size_t max_message,
                                             const struct cg_dirty_zc *zc, int *fds,
                                             size_t *nfds, enum cg_dirty_enc_error *why)
{
    struct enc e = { .max_message = max_message, .type = type };
    PyObject *parts = NULL; /* owned until returned */

    *nfds = 0;
    if (fds != NULL) {
        enc_set_zc(&e, zc);
    }
    if (enc_frame(&e, id, body) < 0) {
        goto cleanup;
    }
    parts = PyList_New((Py_ssize_t)(1 + e.nslices));
    if (parts == NULL) {
        goto nomem;
    }
    PyObject *head = PyBytes_FromStringAndSize(e.buf, (Py_ssize_t)e.len);
    if (head == NULL) {
        goto nomem;
    }
    PyList_SET_ITEM(parts, 0, head);
    for (size_t i = 0; i < e.nslices; i++) {
        struct slice *sl = &e.slices[i];
        /* the whole object: PyBUF_SIMPLE views cover all of it */
        PyObject *obj = sl->is_view ? sl->view.obj : sl->owner;
        PyList_SET_ITEM(parts, (Py_ssize_t)(1 + i), Py_NewRef(obj));
    }
    if (e.nfds > 0) { /* the memfds move to the caller */
        memcpy(fds, e.fds, e.nfds * sizeof(int));
        *nfds = e.nfds;
        e.nfds = 0;
    }
    goto cleanup;
nomem:
    Py_CLEAR(parts);
    e.why = CG_DIRTY_ENC_OTHER;
cleanup:
    if (parts == NULL && why != NULL) {
        *why = e.why ? e.why : CG_DIRTY_ENC_OTHER;
    }
    enc_release(&e);
    return parts;
}

PyObject *cg_dirty_frame_encode_py(enum cg_dirty_type type, uint64_t id, PyObject *body,
                                   size_t max_message, enum cg_dirty_enc_error *why)
{
    struct enc e = { .max_message = max_message, .type = type };
    PyObject *frame = NULL; /* owned until returned */

    if (enc_frame(&e, id, body) < 0) {
        goto cleanup;
    }
    frame = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)enc_size(&e));
    if (frame == NULL) {
        e.why = CG_DIRTY_ENC_OTHER;
        goto cleanup;
    }
    char *out = PyBytes_AS_STRING(frame);
    memcpy(out, e.buf, e.len);
    out += e.len;
    for (size_t i = 0; i < e.nslices; i++) {
        memcpy(out, e.slices[i].data, e.slices[i].len);
        out += e.slices[i].len;
    }
cleanup:
    if (frame == NULL && why != NULL) {
        *why = e.why ? e.why : CG_DIRTY_ENC_OTHER;
    }
    enc_release(&e);
    return frame;
}

/* ---------------------------------------------------------------- decode */

struct dec {
    const unsigned char *blob;
    size_t blob_len;
    const int *fds;
    size_t nfds;
    size_t max_payload;
    struct cg_dirty_path path;
};

static PyObject *dec_fail(const char *msg)
{
    PyErr_Format(PyExc_ValueError, "malformed dirty message: %s", msg);
    return NULL;
}

static PyObject *dec_value(struct dec *d, const json_t *v);

/* The bytes of memfd #k: checked (sealed, large enough, within
 * max_payload), mapped read-only, copied once into a new bytes object. */
static PyObject *dec_memfd(struct dec *d, size_t k, size_t len)
{
    const unsigned int need = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
    int fd = d->fds[k];
    struct stat st;
    PyObject *b = NULL; /* owned until returned */

    if (len > d->max_payload) {
        PyErr_Format(PyExc_ValueError, "%s: a bytes value of %zu bytes exceeds the limit of "
                     "%zu bytes (the dirty_max_payload_size setting)", d->path.buf, len,
                     d->max_payload);
        return NULL;
    }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || ((unsigned int)seals & need) != need) {
        return dec_fail("a memfd payload is not sealed against writing and resizing");
    }
    if (fstat(fd, &st) < 0 || st.st_size < 0 || (unsigned long long)st.st_size < len) {
        return dec_fail("a memfd payload is shorter than its tag says");
    }
    b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (b == NULL || len == 0) {
        return b;
    }
    /* faulted in by the memcpy: measured faster than MAP_POPULATE here */
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        Py_DECREF(b);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    char *dst = PyBytes_AS_STRING(b); /* not shared yet: filled without the GIL */
    Py_BEGIN_ALLOW_THREADS
    memcpy(dst, m, len);
    munmap(m, len);
    Py_END_ALLOW_THREADS
    zc_stats.received++;
    zc_stats.received_bytes += len;
    return b;
}

static PyObject *dec_object(struct dec *d, const json_t *v)
{
    struct cg_err err = { { 0 } };
    size_t off = 0, len = 0, saved;
    const char *text = NULL;
    PyObject *dict = NULL; /* owned until returned */

    switch (cg_dirty_tag_classify(v, d->blob_len, d->nfds, &d->path, &off, &len, &text, &err)) {
    case CG_DIRTY_TAG_BYTES:
        return PyBytes_FromStringAndSize((const char *)d->blob + off, (Py_ssize_t)len);
    case CG_DIRTY_TAG_MEMFD:
        return dec_memfd(d, off, len);
    case CG_DIRTY_TAG_INT:
        return PyLong_FromString(text, NULL, 10);
    case CG_DIRTY_TAG_FLOAT:
        return PyFloat_FromDouble(text[0] == 'n' ? NAN : text[0] == '-' ? -INFINITY : INFINITY);
    case CG_DIRTY_TAG_NONE:
        break;
    default:
        return dec_fail(err.msg);
    }
    dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }
    const char *key;
    size_t key_len;
    json_t *item;
    json_object_keylen_foreach((json_t *)v, key, key_len, item) {
        /* A user key starting with NUL was escaped by doubling that NUL. */
        size_t skip = (key_len >= 2 && key[0] == '\0') ? 1 : 0;
        PyObject *k = PyUnicode_DecodeUTF8(key + skip, (Py_ssize_t)(key_len - skip), "strict");
        if (k == NULL) {
            Py_DECREF(dict);
            return NULL;
        }
        saved = cg_dirty_path_push_key(&d->path, key + skip, key_len - skip);
        PyObject *pv = dec_value(d, item);
        cg_dirty_path_pop(&d->path, saved);
        int rc = pv == NULL ? -1 : PyDict_SetItem(dict, k, pv);
        Py_DECREF(k);
        Py_XDECREF(pv);
        if (rc < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *dec_value(struct dec *d, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        Py_RETURN_NONE;
    case JSON_TRUE:
        Py_RETURN_TRUE;
    case JSON_FALSE:
        Py_RETURN_FALSE;
    case JSON_INTEGER:
        return PyLong_FromLongLong(json_integer_value(v));
    case JSON_REAL:
        return PyFloat_FromDouble(json_real_value(v));
    case JSON_STRING:
        return PyUnicode_DecodeUTF8(json_string_value(v), (Py_ssize_t)json_string_length(v),
                                    "strict");
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        PyObject *list = PyList_New((Py_ssize_t)n); /* owned until returned */
        for (size_t i = 0; list != NULL && i < n; i++) {
            size_t saved = cg_dirty_path_push_index(&d->path, i);
            PyObject *item = dec_value(d, json_array_get(v, i));
            cg_dirty_path_pop(&d->path, saved);
            if (item == NULL) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, item); /* steals */
        }
        return list;
    }
    case JSON_OBJECT:
        return dec_object(d, v);
    }
    return dec_fail("unknown JSON value kind");
}

PyObject *cg_dirty_value_to_py(const json_t *value, const unsigned char *blob, size_t blob_len,
                               const char *path)
{
    struct dec d = { .blob = blob, .blob_len = blob_len };

    cg_dirty_path_init(&d.path, path != NULL ? path : "value");
    return dec_value(&d, value);
}

PyObject *cg_dirty_body_decode_py(const unsigned char *json, size_t json_len,
                                  const unsigned char *blob, size_t blob_len)
{
    return cg_dirty_body_decode_py_fds(json, json_len, blob, blob_len, NULL, 0, 0);
}

PyObject *cg_dirty_body_decode_py_fds(const unsigned char *json, size_t json_len,
                                      const unsigned char *blob, size_t blob_len,
                                      const int *fds, size_t nfds, size_t max_payload)
{
    struct cg_err err = { { 0 } };
    struct dec d = { .blob = blob, .blob_len = blob_len, .fds = fds, .nfds = nfds,
                     .max_payload = max_payload };
    json_t *body = cg_dirty_json_parse(json, json_len, &err); /* owned */
    PyObject *dict = NULL;                                    /* owned until returned */

    if (body == NULL) {
        return dec_fail(err.msg);
    }
    if (!json_is_object(body)) {
        json_decref(body);
        return dec_fail("the JSON body is not an object");
    }
    dict = PyDict_New();
    const char *key;
    size_t key_len;
    json_t *item;
    json_object_keylen_foreach(body, key, key_len, item) {
        if (dict == NULL) {
            break;
        }
        set_root(&d.path, key, key_len);
        PyObject *k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)key_len, "strict");
        PyObject *pv = k == NULL ? NULL : dec_value(&d, item);
        int rc = pv == NULL ? -1 : PyDict_SetItem(dict, k, pv);
        Py_XDECREF(k);
        Py_XDECREF(pv);
        if (rc < 0) {
            Py_CLEAR(dict);
        }
    }
    json_decref(body);
    return dict;
}
