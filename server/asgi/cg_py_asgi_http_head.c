/* Response heads of an ASGI HTTP request: http.response.start validated and
 * formatted (status line with gunicorn's reason phrases, the app's headers
 * checked against response splitting, Content-Length or chunked framing,
 * Server, Date and Connection added as gunicorn's ASGI worker does), and
 * http.response.informational (1xx, e.g. 103 Early Hints) written at once.
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include "cg_http_date.h"
#include "cg_py_asgi_int.h"

/* gunicorn's ASGI reason phrases (an unknown status gets "Unknown"). */
static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool valid_value(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return false;
        }
    }
    return true;
}

/* bytes or str (latin-1) to a borrowed buffer; *tmp keeps an encoded str. */
static int as_bytes(PyObject *o, const char **p, Py_ssize_t *n, PyObject **tmp)
{
    if (PyBytes_Check(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        *tmp = PyUnicode_AsLatin1String(o);
        if (*tmp == NULL) {
            return -1;
        }
        *p = PyBytes_AS_STRING(*tmp);
        *n = PyBytes_GET_SIZE(*tmp);
        return 0;
    }
    if (PyByteArray_Check(o)) {
        *p = PyByteArray_AS_STRING(o);
        *n = PyByteArray_GET_SIZE(o);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "ASGI header names and values must be bytes, not %.100s",
                 Py_TYPE(o)->tp_name);
    return -1;
}

struct headbuf {
    char *p;
    size_t len, cap;
};

static int hb_put(struct headbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *nb = realloc(b->p, cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = nb;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static bool name_is(const char *p, size_t n, const char *lower)
{
    return n == strlen(lower) && strncasecmp(p, lower, n) == 0;
}

/* Will the connection close after this response (gunicorn's _will_close)? */
static bool will_close(struct cg_asgi_req *r)
{
    struct cg_worker *w = r->conn->srv->w;
    return r->should_close || !w->alive || r->conn->srv->conf->keepalive <= 0 ||
           (w->max_requests > 0 && w->nr + 1 >= w->max_requests);
}

static PyObject *exc_class(struct cg_asgi_srv *s, bool name)
{
    return name ? s->wsgi->exc_header_name : s->wsgi->exc_header;
}

/* One [name, value] pair of an ASGI headers list, validated (a token name;
 * a value without CR, LF or other controls: never response splitting).
 * Returns 0 with borrowed buffers (*ntmp and *vtmp own encoded copies of str
 * items; the caller releases them), or -1 with an exception. */
static int header_item(struct cg_asgi_srv *s, PyObject *pair, const char **np, Py_ssize_t *nl,
                       PyObject **ntmp, const char **vp, Py_ssize_t *vl, PyObject **vtmp)
{
    PyObject *name = NULL, *value = NULL;
    int rc = -1;

    if (!PyTuple_Check(pair) && !PyList_Check(pair)) {
        PyErr_SetString(PyExc_TypeError, "ASGI response headers must be [name, value] pairs");
        return -1;
    }
    if (PySequence_Size(pair) != 2) {
        PyErr_SetString(PyExc_ValueError, "ASGI response headers must be [name, value] pairs");
        return -1;
    }
    name = PySequence_GetItem(pair, 0);
    value = PySequence_GetItem(pair, 1);
    if (name == NULL || value == NULL || as_bytes(name, np, nl, ntmp) < 0 ||
        as_bytes(value, vp, vl, vtmp) < 0) {
        goto done;
    }
    bool good_name = *nl > 0;
    for (Py_ssize_t j = 0; j < *nl && good_name; j++) {
        good_name = is_tchar((unsigned char)(*np)[j]);
    }
    if (!good_name || !valid_value(*vp, (size_t)*vl)) {
        PyObject *nb = PyBytes_FromStringAndSize(*np, *nl);
        PyObject *rep = nb ? PyObject_Repr(nb) : NULL;
        if (rep != NULL) {
            PyErr_SetObject(exc_class(s, !good_name), rep);
        }
        Py_XDECREF(rep);
        Py_XDECREF(nb);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(value);
    return rc;
}

/* The message's "status" into *status. Returns 0, or -1 with an exception
 * (KeyError when it is missing). */
static int msg_status(struct cg_asgi_srv *s, PyObject *msg, long *status)
{
    PyObject *o = PyDict_GetItemWithError(msg, s->k.status); /* borrowed */

    if (o == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "status");
        }
        return -1;
    }
    *status = PyLong_AsLong(o);
    return (*status == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The message's "headers" as a fast sequence (an empty list when absent).
 * New reference, or NULL with an exception. */
static PyObject *msg_headers(struct cg_asgi_srv *s, PyObject *msg)
{
    PyObject *headers = PyDict_GetItemWithError(msg, s->k.headers); /* borrowed */

    if (headers == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return headers ? PySequence_Fast(headers, "ASGI response headers must be iterable")
                   : PyList_New(0);
}

/* Appends the status line, in the request's HTTP version. */
static int put_status_line(struct headbuf *b, const struct cg_asgi_req *r, long status)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "HTTP/%d.%d %ld %s\r\n", r->ver_major, r->ver_minor,
                     status, reason_phrase((int)status));
    return hb_put(b, line, (size_t)n);
}

/* http.response.start: validates and formats the head (written with the
 * first body bytes). Returns 0 or -1 with an exception. */
int cg_py_asgi_http_head_format(struct cg_asgi_req *r, PyObject *msg)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *seq = NULL, *log_hdrs = NULL;
    struct headbuf b = { 0 };
    bool has_cl = false, has_te = false, has_server = false, has_date = false, has_conn = false;
    int64_t cl = -1;
    int rc = -1;
    long status;

    if (msg_status(s, msg, &status) < 0 || (seq = msg_headers(s, msg)) == NULL) {
        return -1;
    }
    if (s->wsgi->access_log != NULL) {
        log_hdrs = PyList_New(0);
        if (log_hdrs == NULL) {
            goto done;
        }
    }
    bool omits = r->is_head || status == 204 || status == 304 || (status >= 100 && status < 200);
    bool forbids_cl = status == 204 || (status >= 100 && status < 200);
    if (put_status_line(&b, r, status) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *ntmp = NULL, *vtmp = NULL;
        const char *np, *vp;
        Py_ssize_t nl, vl;
        int ok = header_item(s, PySequence_Fast_GET_ITEM(seq, i), &np, &nl, &ntmp, &vp, &vl,
                             &vtmp) == 0;
        bool keep = true;
        if (ok) {
            if (name_is(np, (size_t)nl, "content-length")) {
                has_cl = true;
                char tmp[32];
                size_t k = (size_t)vl < sizeof(tmp) - 1 ? (size_t)vl : sizeof(tmp) - 1;
                memcpy(tmp, vp, k);
                tmp[k] = '\0';
                char *end = NULL;
                long long v = strtoll(tmp, &end, 10);
                cl = (end != tmp && *end == '\0' && v >= 0) ? v : -1;
                keep = !(omits && forbids_cl);
            } else if (name_is(np, (size_t)nl, "transfer-encoding")) {
                has_te = true;
                keep = !omits;
            } else if (name_is(np, (size_t)nl, "server")) {
                has_server = true;
            } else if (name_is(np, (size_t)nl, "date")) {
                has_date = true;
            } else if (name_is(np, (size_t)nl, "connection")) {
                has_conn = true;
            }
        }
        if (ok && keep) {
            ok = hb_put(&b, np, (size_t)nl) == 0 && hb_put(&b, ": ", 2) == 0 &&
                 hb_put(&b, vp, (size_t)vl) == 0 && hb_put(&b, "\r\n", 2) == 0;
        }
        if (ok && log_hdrs != NULL) {
            PyObject *p2 = Py_BuildValue("(NN)", PyUnicode_DecodeLatin1(np, nl, NULL),
                                         PyUnicode_DecodeLatin1(vp, vl, NULL));
            ok = p2 != NULL && PyList_Append(log_hdrs, p2) == 0;
            Py_XDECREF(p2);
        }
        Py_XDECREF(ntmp);
        Py_XDECREF(vtmp);
        if (!ok) {
            goto done;
        }
    }
    r->chunked = has_te && !omits;
    if (!has_cl && !has_te && !omits && (r->ver_major > 1 || r->ver_minor >= 1)) {
        r->chunked = true;
        if (hb_put(&b, "transfer-encoding: chunked\r\n", 28) < 0) {
            goto done;
        }
    }
    r->length = (has_cl && !r->chunked && !omits) ? cl : -1;
    r->close_announced = will_close(r);
    /* gunicorn's asgi worker adds Server and Date on HTTP/1 only */
    has_server = has_server || r->conn->is_stream;
    has_date = has_date || r->conn->is_stream;
    if ((!has_server && hb_put(&b, "Server: gunicorn/asgi\r\n", 23) < 0) ||
        (!has_date && (hb_put(&b, "Date: ", 6) < 0 ||
                       hb_put(&b, cg_http_date_now(), CG_HTTP_DATE_LEN) < 0 ||
                       hb_put(&b, "\r\n", 2) < 0)) ||
        (r->close_announced && !has_conn && hb_put(&b, "Connection: close\r\n", 19) < 0) ||
        hb_put(&b, "\r\n", 2) < 0) {
        goto done;
    }
    r->status = (int)status;
    r->omits_body = omits;
    r->started = true;
    r->head = b.p;
    r->head_len = b.len;
    b.p = NULL;
    Py_XSETREF(r->resp_headers, log_hdrs);
    log_hdrs = NULL;
    rc = 0;
done:
    free(b.p);
    Py_XDECREF(log_hdrs);
    Py_DECREF(seq);
    return rc;
}

/* http.response.informational (e.g. 103 Early Hints), as gunicorn's ASGI
 * worker writes it: only to HTTP/1.1+ clients and before the final
 * response, the status line and the app's headers alone (no Server, Date
 * or framing headers). Returns 0 or -1 with an exception. */
int cg_py_asgi_http_send_informational(struct cg_asgi_req *r, PyObject *msg)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *seq = NULL;
    struct headbuf b = { 0 };
    int rc = -1;
    long status;

    if (msg_status(s, msg, &status) < 0) {
        return -1;
    }
    if (status < 100 || status > 199) {
        PyErr_Format(PyExc_ValueError,
                     "http.response.informational status must be 1xx (100-199), not %ld", status);
        return -1;
    }
    if (r->ver_major == 1 && r->ver_minor == 0) {
        return 0; /* HTTP/1.0 clients do not understand 1xx */
    }
    if (r->conn->is_stream) {
        return 0; /* HTTP/2: the stream relays final heads only (cg_h2.c) */
    }
    if (r->conn->state == CG_ASGI_CLOSED || r->detached) {
        return 0;
    }
    seq = msg_headers(s, msg);
    if (seq == NULL) {
        return -1;
    }
    if (put_status_line(&b, r, status) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *ntmp = NULL, *vtmp = NULL;
        const char *np, *vp;
        Py_ssize_t nl, vl;
        int ok = header_item(s, PySequence_Fast_GET_ITEM(seq, i), &np, &nl, &ntmp, &vp, &vl,
                             &vtmp) == 0 &&
                 hb_put(&b, np, (size_t)nl) == 0 && hb_put(&b, ": ", 2) == 0 &&
                 hb_put(&b, vp, (size_t)vl) == 0 && hb_put(&b, "\r\n", 2) == 0;
        Py_XDECREF(ntmp);
        Py_XDECREF(vtmp);
        if (!ok) {
            goto done;
        }
    }
    if (hb_put(&b, "\r\n", 2) < 0) {
        goto done;
    }
    struct iovec iov = { b.p, b.len };
    cg_py_asgi_conn_write(r->conn, &iov, 1);
    if (status == 100) {
        r->continue_sent = true;
    }
    rc = 0;
done:
    free(b.p);
    Py_DECREF(seq);
    return rc;
}

