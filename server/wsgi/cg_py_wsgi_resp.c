/* The WSGI response side: the start_response callable (a C type reused for
 * every request of a worker), header processing as gunicorn's Response does
 * it (type and character checks, hop-by-hop headers dropped, Content-Length
 * kept, chunked when no length on HTTP/1.1), and writing the head and body
 * with as few syscalls as possible (head + first body part in one writev). */
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <inttypes.h>
#include <unistd.h>

#include "cg_http_response.h"
#include "cg_log.h"
#include "cg_py_wsgi_int.h"

typedef struct {
    PyObject_HEAD
    struct cg_wsgi *g;
    struct cg_wsgi_resp *resp; /* current request's response, or NULL */
} StartResponseObject;

/* Sends; returns 0 or -1 with errno. First one send that cannot block,
 * with the GIL held: a response that fits in the socket buffer (the usual
 * case) then costs no GIL hand-off to another thread. What is left (a full
 * buffer, a large body) is sent with the GIL released, waiting as needed.
 * flags: CG_TRANSPORT_MORE or 0. */
static int sendv_nogil(struct cg_wsgi_conn *c, struct iovec *iov, int n, int flags)
{
    ssize_t w = cg_transport_sendv(&c->t, iov, n, CG_TRANSPORT_NOWAIT | flags);
    int rc;

    if (w == -1) {
        return -1;
    }
    iov = cg_transport_iov_advance(iov, &n, w > 0 ? (size_t)w : 0);
    if (n == 0) {
        return 0;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = cg_transport_sendv_all_flags(&c->t, iov, n, c->io_timeout_ms, flags);
    Py_END_ALLOW_THREADS
    return rc;
}

static int send_nogil(struct cg_wsgi_conn *c, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    return sendv_nogil(c, &iov, 1, 0);
}

/* Raises the Python exception matching a response-side error. */
static void raise_http_error(struct cg_wsgi *g, const struct cg_http_error *e)
{
    switch (e->kind) {
    case CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME:
        PyErr_SetString(g->exc_header_name, e->detail);
        break;
    case CG_HTTP_ERR_INVALID_RESPONSE_HEADER:
        PyErr_SetString(g->exc_header, e->detail);
        break;
    case CG_HTTP_ERR_VALUE:
        PyErr_SetString(PyExc_ValueError, e->detail);
        break;
    default:
        PyErr_NoMemory();
        break;
    }
}

/* Encodes a header name or value to latin-1. A character above U+00FF
 * cannot be sent: it raises the error gunicorn's regexes would. */
static PyObject *latin1_or_raise(struct cg_wsgi *g, PyObject *s, PyObject *name, bool is_name)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%R is not a string", s);
        return NULL;
    }
    PyObject *b = PyUnicode_AsLatin1String(s);
    if (b == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        PyErr_Format(is_name ? g->exc_header_name : g->exc_header, "%R", name);
    }
    return b;
}

static int add_headers(struct cg_wsgi *g, struct cg_wsgi_resp *resp, PyObject *headers)
{
    PyObject *it = PyObject_GetIter(headers);
    PyObject *item = NULL;
    struct cg_http_error e;

    if (it == NULL) {
        return -1;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *pair = PySequence_Tuple(item); /* owned */
        PyObject *bn = NULL, *bv = NULL;         /* owned */
        int rc = -1;
        if (pair == NULL || PyTuple_GET_SIZE(pair) != 2) {
            if (pair != NULL) {
                PyErr_Format(PyExc_ValueError, "response header %R is not a (name, value) pair",
                             item);
            }
            goto next;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0);
        bn = latin1_or_raise(g, name, name, true);
        bv = bn ? latin1_or_raise(g, PyTuple_GET_ITEM(pair, 1), name, false) : NULL;
        if (bv == NULL) {
            goto next;
        }
        if (cg_http_response_add_header(&resp->r, PyBytes_AS_STRING(bn),
                                        (size_t)PyBytes_GET_SIZE(bn), PyBytes_AS_STRING(bv),
                                        (size_t)PyBytes_GET_SIZE(bv), &e) < 0) {
            raise_http_error(g, &e);
            goto next;
        }
        rc = 0;
    next:
        Py_XDECREF(bn);
        Py_XDECREF(bv);
        Py_XDECREF(pair);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *start_response_call(StartResponseObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "status", "headers", "exc_info", NULL };
    struct cg_wsgi_resp *resp = self->resp;
    PyObject *status = NULL, *headers = NULL, *exc_info = Py_None;
    PyObject *bstatus = NULL; /* owned */
    struct cg_http_error e;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:start_response", kwlist, &status, &headers,
                                     &exc_info)) {
        return NULL;
    }
    if (resp == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called outside of a request");
        return NULL;
    }
    if (exc_info != Py_None && PyObject_IsTrue(exc_info)) {
        if (resp->r.started && resp->headers_sent) {
            /* PEP 3333: too late to change the response; re-raise. */
            PyObject *t = NULL, *v = NULL, *tb = NULL;
            if (!PyArg_ParseTuple(exc_info, "OOO", &t, &v, &tb)) {
                return NULL;
            }
            PyErr_Restore(Py_NewRef(t), Py_NewRef(v), tb == Py_None ? NULL : Py_NewRef(tb));
            return NULL;
        }
        cg_http_response_reset(&resp->r);
        Py_CLEAR(resp->status);
    } else if (resp->r.started) {
        PyErr_SetString(PyExc_AssertionError, "Response headers already set!");
        return NULL;
    }
    if (!PyUnicode_Check(status)) {
        PyErr_Format(PyExc_TypeError, "%R is not a string", status);
        return NULL;
    }
    bstatus = PyUnicode_AsLatin1String(status);
    if (bstatus == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "Invalid status %R", status);
        return NULL;
    }
    if (cg_http_response_start(&resp->r, PyBytes_AS_STRING(bstatus),
                               (size_t)PyBytes_GET_SIZE(bstatus), &e) < 0) {
        Py_DECREF(bstatus);
        raise_http_error(self->g, &e);
        return NULL;
    }
    Py_DECREF(bstatus);
    if (add_headers(self->g, resp, headers) < 0) {
        cg_http_response_reset(&resp->r);
        return NULL;
    }
    resp->status = Py_NewRef(status);
    return PyObject_GetAttrString((PyObject *)self, "write");
}

/* The flags for a send that `more` parts follow: CG_TRANSPORT_MORE when the
 * transport can hold bytes and the response is registered with the pause
 * flusher (registered on its first held send). */
static int hold_flags(struct cg_wsgi_resp *resp, bool more)
{
    if (!more || !resp->may_hold) {
        return 0;
    }
    if (!resp->hold.on && !cg_wsgi_hold_begin(&resp->hold, resp->conn->t.fd)) {
        resp->may_hold = false; /* no flusher thread: send each part now */
        return 0;
    }
    return CG_TRANSPORT_MORE;
}

/* Sends [head] [chunk prefix] data [chunk suffix] with one writev (held in
 * the kernel when `more`: see cg_py_wsgi_resp_write). A send error is
 * recorded in resp->write_errno (the connection is then dead). Returns 0,
 * or -1 with an exception (out of memory formatting the head). */
static int send_parts(struct cg_wsgi *g, struct cg_wsgi_resp *resp, const char *data, size_t n,
                      bool more)
{
    struct iovec iov[4];
    int niov = 0;
    char prefix[CG_HTTP_CHUNK_PREFIX_MAX];
    struct cg_http_error e;

    (void)g;
    if (resp->write_errno != 0) {
        return 0;
    }
    if (!resp->headers_sent) {
        const char *head = NULL;
        size_t head_len = 0;
        if (resp->conn->stopping != NULL && atomic_load(resp->conn->stopping)) {
            cg_http_response_force_close(&resp->r);
        }
        if (cg_http_response_head(&resp->r, &head, &head_len, &e) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        iov[niov++] = (struct iovec){ (void *)head, head_len };
        resp->headers_sent = true;
    }
    if (n > 0) {
        if (resp->r.chunked) {
            iov[niov++] = (struct iovec){ prefix, cg_http_chunk_prefix(prefix, n) };
        }
        iov[niov++] = (struct iovec){ (void *)data, n };
        if (resp->r.chunked) {
            iov[niov++] = (struct iovec){ CG_HTTP_CHUNK_SUFFIX, 2 };
        }
    }
    if (niov > 0) {
        int flags = hold_flags(resp, more);
        if (sendv_nogil(resp->conn, iov, niov, flags) < 0) {
            resp->write_errno = errno;
        }
        resp->held = flags != 0;
    }
    return 0;
}

int cg_py_wsgi_resp_write(struct cg_wsgi *g, struct cg_wsgi_resp *resp, PyObject *data,
                          bool more)
{
    char *p = NULL;
    Py_ssize_t n = 0;

    if (!resp->r.started) {
        PyErr_SetString(PyExc_AssertionError,
                        "the application wrote body data before calling start_response");
        return -1;
    }
    if (!PyBytes_Check(data)) {
        if (send_parts(g, resp, NULL, 0, false) < 0) { /* gunicorn sends the head first */
            return -1;
        }
        PyErr_Format(PyExc_TypeError, "%R is not a byte", data);
        return -1;
    }
    PyBytes_AsStringAndSize(data, &p, &n);
    /* The head goes out now, alone when there is no body part to send with
     * it (send_parts joins them in one writev otherwise). */
    if ((resp->r.omits_body || n == 0) && send_parts(g, resp, NULL, 0, more) < 0) {
        return -1;
    }
    if (resp->r.omits_body) {
        if (n > 0 && !resp->omits_body_warned) {
            /* Most apps answer HEAD like GET: dropping the body is routine,
             * so debug, not a warning per request. */
            cg_log(CG_LOG_DEBUG, "WSGI app sent body bytes on a no-body response "
                                   "(method=%.*s status=%d); dropping per RFC 9110.",
                   (int)resp->req->method.len, resp->req->method.ptr, resp->r.status_code);
            resp->omits_body_warned = true;
        }
        return 0;
    }
    size_t tosend = cg_http_response_body_take(&resp->r, (size_t)n);
    if (tosend == 0) {
        return send_parts(g, resp, NULL, 0, more); /* the head, if not out yet */
    }
    return send_parts(g, resp, p, tosend, more);
}

void cg_py_wsgi_resp_close(struct cg_wsgi *g, struct cg_wsgi_resp *resp)
{
    if (!resp->r.started) {
        return;
    }
    if (send_parts(g, resp, NULL, 0, false) < 0) {
        PyErr_Clear();
        return;
    }
    if (resp->r.chunked && resp->write_errno == 0) {
        /* sent without CG_TRANSPORT_MORE: pushes whatever was held */
        if (send_nogil(resp->conn, CG_HTTP_CHUNK_LAST, strlen(CG_HTTP_CHUNK_LAST)) < 0) {
            resp->write_errno = errno;
        }
        resp->held = false;
    }
    cg_py_wsgi_resp_unhold(resp);
}

void cg_py_wsgi_resp_unhold(struct cg_wsgi_resp *resp)
{
    if (resp->held) {
        cg_transport_push_fd(resp->conn->t.fd);
        resp->held = false;
    }
    cg_wsgi_hold_end(&resp->hold);
}

/* The file descriptor of wrapper.filelike, or -1 (no exception) when it has
 * none: the wrapper is then iterated instead. */
static int wrapped_fd(PyObject *wrapper)
{
    PyObject *filelike = PyObject_GetAttrString(wrapper, "filelike"); /* owned */
    PyObject *num = filelike ? PyObject_CallMethod(filelike, "fileno", NULL) : NULL;
    long fd = num ? PyLong_AsLong(num) : -1;

    Py_XDECREF(num);
    Py_XDECREF(filelike);
    PyErr_Clear();
    return fd < 0 || fd > INT32_MAX ? -1 : (int)fd;
}

int cg_py_wsgi_resp_sendfile(struct cg_wsgi *g, struct cg_wsgi_resp *resp, PyObject *wrapper)
{
    struct stat st;
    int fd = -1;

    if (!g->conf->sendfile || !resp->r.started || (fd = wrapped_fd(wrapper)) < 0) {
        return 0;
    }
    off_t offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0 || fstat(fd, &st) < 0) {
        return 0;
    }
    uint64_t nbytes = resp->r.has_length ? (uint64_t)(resp->r.length < 0 ? 0 : resp->r.length)
                                         : (uint64_t)(st.st_size - offset);
    if (send_parts(g, resp, NULL, 0, false) < 0) {
        return -1;
    }
    if (resp->r.omits_body) {
        return 1;
    }
    /* As gunicorn: the chunk size line, the file, the chunk's CRLF. */
    if (resp->r.chunked && resp->write_errno == 0) {
        char prefix[CG_HTTP_CHUNK_PREFIX_MAX];
        size_t k = cg_http_chunk_prefix(prefix, nbytes);
        if (send_nogil(resp->conn, prefix, k) < 0) {
            resp->write_errno = errno;
        }
    }
    off_t pos = offset;
    uint64_t left = cg_http_response_body_take(&resp->r, (size_t)nbytes);
    if (left > 0 && resp->write_errno == 0) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = cg_wsgi_conn_sendfile(resp->conn, fd, &pos, left);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            resp->write_errno = errno;
        }
    }
    if (resp->r.chunked && resp->write_errno == 0 &&
        send_nogil(resp->conn, CG_HTTP_CHUNK_SUFFIX, 2) < 0) {
        resp->write_errno = errno;
    }
    lseek(fd, offset, SEEK_SET);
    return 1;
}

void cg_py_wsgi_resp_init(struct cg_wsgi *g, struct cg_wsgi_resp *resp, struct cg_wsgi_conn *c,
                          const struct cg_http_request *req)
{
    memset(resp, 0, sizeof(*resp));
    resp->conn = c;
    resp->req = req;
    resp->may_hold = c->l != NULL && cg_transport_can_hold(&c->t, c->l->family);
    cg_http_response_init(&resp->r, req, g->server_header);
}

void cg_py_wsgi_resp_deinit(struct cg_wsgi_resp *resp)
{
    cg_py_wsgi_resp_unhold(resp);
    Py_CLEAR(resp->status);
    cg_http_response_deinit(&resp->r);
}

/* The headers as sent (after filtering), as a list of (name, value) str
 * pairs for the access log's {name}o atoms. New reference. */
PyObject *cg_py_wsgi_resp_headers(const struct cg_wsgi_resp *resp)
{
    PyObject *list = PyList_New(0);
    const char *p = resp->r.hdrs, *end = resp->r.hdrs + resp->r.hdrs_len;

    while (list != NULL && p != NULL && p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (eol == NULL || colon == NULL || colon > eol) {
            break;
        }
        PyObject *pair = Py_BuildValue("(NN)",
                                       PyUnicode_DecodeLatin1(p, colon - p, NULL),
                                       PyUnicode_DecodeLatin1(colon + 2, eol - colon - 2, NULL));
        if (pair == NULL || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(pair);
        p = eol + 2;
    }
    return list;
}

static PyObject *sr_write(StartResponseObject *self, PyObject *data)
{
    if (self->resp == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "write() called outside of a request");
        return NULL;
    }
    if (cg_py_wsgi_resp_write(self->g, self->resp, data, false) < 0) {
        return NULL;
    }
    if (self->resp->write_errno != 0) {
        errno = self->resp->write_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* wsgi.early_hints(headers): sends "103 Early Hints" with the given headers
 * before the response, as gunicorn does (HTTP/1.1+ only; ignored once the
 * response head went out). */
static PyObject *sr_early_hints(StartResponseObject *self, PyObject *headers)
{
    struct cg_wsgi_resp *resp = self->resp;
    PyObject *it = NULL, *item = NULL, *out = NULL; /* owned */
    const char *line = "HTTP/1.1 103 Early Hints\r\n";

    if (resp == NULL || resp->headers_sent || resp->req->version_major < 1 ||
        (resp->req->version_major == 1 && resp->req->version_minor < 1)) {
        Py_RETURN_NONE;
    }
    out = PyBytes_FromString(line);
    it = out ? PyObject_GetIter(headers) : NULL;
    if (it == NULL) {
        goto fail;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *name = NULL, *value = NULL, *bn = NULL, *bv = NULL;
        if (!PyArg_ParseTuple(item, "OO", &name, &value)) {
            goto fail;
        }
        bn = PyBytes_Check(name) ? Py_NewRef(name) : latin1_or_raise(self->g, name, name, true);
        bv = bn == NULL ? NULL
             : PyBytes_Check(value) ? Py_NewRef(value)
                                    : latin1_or_raise(self->g, value, name, false);
        if (bv == NULL) {
            Py_XDECREF(bn);
            goto fail;
        }
        const char *v = PyBytes_AS_STRING(bv);
        size_t vl = (size_t)PyBytes_GET_SIZE(bv);
        if (!cg_http_is_token(PyBytes_AS_STRING(bn), (size_t)PyBytes_GET_SIZE(bn))) {
            PyErr_Format(self->g->exc_header_name, "%R", name);
        } else if (!cg_http_is_field_value(v, vl)) {
            PyErr_Format(self->g->exc_header, "%R", name);
        } else {
            while (vl > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vl--;
            }
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
                vl--;
            }
            PyObject *piece = PyBytes_FromFormat("%s: %.*s\r\n", PyBytes_AS_STRING(bn),
                                                 (int)vl, v);
            PyBytes_ConcatAndDel(&out, piece);
        }
        Py_DECREF(bn);
        Py_DECREF(bv);
        Py_CLEAR(item);
        if (out == NULL || PyErr_Occurred()) {
            goto fail;
        }
    }
    if (PyErr_Occurred()) {
        goto fail;
    }
    PyBytes_ConcatAndDel(&out, PyBytes_FromString("\r\n"));
    if (out == NULL) {
        goto fail;
    }
    send_nogil(resp->conn, PyBytes_AS_STRING(out), (size_t)PyBytes_GET_SIZE(out));
    Py_DECREF(out);
    Py_DECREF(it);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(item);
    Py_XDECREF(it);
    Py_XDECREF(out);
    return NULL;
}

static void sr_dealloc(StartResponseObject *self)
{
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef sr_methods[] = {
    { "write", (PyCFunction)sr_write, METH_O, "write(data): the WSGI write() callable" },
    { "early_hints", (PyCFunction)sr_early_hints, METH_O,
      "early_hints(headers): send a 103 Early Hints response (wsgi.early_hints)" },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject StartResponseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.StartResponse",
    .tp_basicsize = sizeof(StartResponseObject),
    .tp_dealloc = (destructor)sr_dealloc,
    .tp_call = (ternaryfunc)start_response_call,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "start_response(status, headers, exc_info=None)",
    .tp_methods = sr_methods,
};

int cg_py_wsgi_resp_type_ready(void)
{
    if (StartResponseType.tp_flags & Py_TPFLAGS_READY) {
        return 0;
    }
    return PyType_Ready(&StartResponseType);
}

PyObject *cg_py_wsgi_start_response_new(struct cg_wsgi *g, struct cg_wsgi_resp *resp)
{
    StartResponseObject *self = PyObject_New(StartResponseObject, &StartResponseType);
    if (self != NULL) {
        self->g = g;
        self->resp = resp;
    }
    return (PyObject *)self;
}

void cg_py_wsgi_start_response_unbind(PyObject *sr)
{
    ((StartResponseObject *)sr)->resp = NULL;
}
