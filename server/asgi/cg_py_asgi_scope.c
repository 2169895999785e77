/* ASGI names and scopes: the strings interned once per worker, the http and
 * websocket scope dicts built from a parsed request (as gunicorn 27's ASGI
 * worker builds them), and the "ready" awaitable that receive()/send()
 * return when they can answer without waiting (no Future, no loop turn). */
#include <Python.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include "cg_py_asgi_int.h"

uint64_t cg_py_asgi_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the ready awaitable ---- */

typedef struct {
    PyObject_HEAD
    PyObject *value; /* owned */
} ready_t;

static void ready_dealloc(ready_t *self)
{
    Py_XDECREF(self->value);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ready_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* `await` in a coroutine uses am_send: the value comes back without an
 * exception object. */
static PySendResult ready_send(PyObject *self, PyObject *arg, PyObject **result)
{
    (void)arg;
    *result = Py_NewRef(((ready_t *)self)->value);
    return PYGEN_RETURN;
}

/* Plain iteration (yield from, asyncio's wrappers): StopIteration(value). */
static PyObject *ready_next(PyObject *self)
{
    PyObject *v = ((ready_t *)self)->value;
    if (v == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
    } else {
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, v);
        if (e != NULL) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
    }
    return NULL;
}

static PyObject *ready_send_method(PyObject *self, PyObject *arg)
{
    (void)arg;
    return ready_next(self);
}

static PyObject *ready_throw(PyObject *self, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O|OO:throw", &typ, &val, &tb)) {
        return NULL;
    }
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else {
        PyErr_SetObject(typ, val);
    }
    return NULL;
}

static PyObject *ready_close(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_NONE;
}

static PyMethodDef ready_methods[] = {
    { "send", ready_send_method, METH_O, NULL },
    { "throw", ready_throw, METH_VARARGS, NULL },
    { "close", ready_close, METH_NOARGS, NULL },
    { NULL, NULL, 0, NULL },
};

static PyAsyncMethods ready_async = {
    .am_await = ready_await,
    .am_send = ready_send,
};

static PyTypeObject ready_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.asgi.Ready",
    .tp_basicsize = sizeof(ready_t),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = ready_next,
    .tp_methods = ready_methods,
};

PyObject *cg_py_asgi_ready_new(PyObject *value)
{
    ready_t *r = PyObject_New(ready_t, &ready_type);
    if (r != NULL) {
        r->value = Py_NewRef(value);
    }
    return (PyObject *)r;
}

int cg_py_asgi_types_ready(void)
{
    if (PyType_Ready(&ready_type) < 0 || PyType_Ready(&cg_asgi_conn_type) < 0 ||
        PyType_Ready(&cg_asgi_req_type) < 0 || PyType_Ready(&cg_asgi_ws_type) < 0) {
        return -1;
    }
    return 0;
}

/* ---- interned names ---- */

int cg_py_asgi_keys_init(struct cg_asgi_keys *k)
{
    static const struct {
        size_t off;
        const char *s;
    } names[] = {
#define K(f, s) { offsetof(struct cg_asgi_keys, f), s }
        K(type, "type"), K(asgi, "asgi"), K(version, "version"), K(spec_version, "spec_version"),
        K(http_version, "http_version"), K(method, "method"), K(scheme, "scheme"),
        K(path, "path"), K(raw_path, "raw_path"), K(query_string, "query_string"),
        K(root_path, "root_path"), K(headers, "headers"), K(server, "server"),
        K(client, "client"), K(state, "state"), K(subprotocols, "subprotocols"),
        K(body, "body"), K(more_body, "more_body"), K(status, "status"), K(text, "text"),
        K(bytes, "bytes"), K(code, "code"), K(reason, "reason"), K(subprotocol, "subprotocol"),
        K(message, "message"),
        K(v_http, "http"), K(v_websocket, "websocket"), K(v_3_0, "3.0"), K(v_2_4, "2.4"),
        K(v_1_0, "1.0"), K(v_1_1, "1.1"), K(v_2, "2"), K(v_https, "https"), K(v_ws, "ws"),
        K(v_wss, "wss"),
        K(v_http_request, "http.request"), K(v_http_disconnect, "http.disconnect"),
        K(v_ws_connect, "websocket.connect"), K(v_ws_receive, "websocket.receive"),
        K(v_ws_disconnect, "websocket.disconnect"), K(empty_str, ""),
        K(m_start, "http.response.start"), K(m_body, "http.response.body"),
        K(m_info, "http.response.informational"), K(m_ws_accept, "websocket.accept"),
        K(m_ws_send, "websocket.send"), K(m_ws_close, "websocket.close"),
        K(add_done_callback, "add_done_callback"), K(set_result, "set_result"),
        K(done, "done"), K(cancel, "cancel"), K(exception, "exception"),
        K(cancelled, "cancelled"),
#undef K
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        PyObject *o = PyUnicode_InternFromString(names[i].s);
        if (o == NULL) {
            return -1;
        }
        *(PyObject **)((char *)k + names[i].off) = o;
    }
    k->empty_bytes = PyBytes_FromStringAndSize("", 0);
    return k->empty_bytes != NULL ? 0 : -1;
}

void cg_py_asgi_keys_deinit(struct cg_asgi_keys *k)
{
    PyObject **p = (PyObject **)k;
    for (size_t i = 0; i < sizeof(*k) / sizeof(PyObject *); i++) {
        Py_CLEAR(p[i]);
    }
}

/* ---- scopes ---- */

PyObject *cg_py_asgi_addr(const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN];
    int port;

    if (sa == NULL) {
        Py_RETURN_NONE;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    } else if (sa->sa_family == AF_UNIX) {
        /* asyncio gives the path (a str) for a unix socket's sockname and ""
         * for its peername; gunicorn's scope keeps the first two characters
         * of that, a quirk we do not copy: unix sockets give None, as
         * uvicorn does. */
        Py_RETURN_NONE;
    } else {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(si)", ip, port);
}

/* Lower-cases an upper-case header name into `buf` (the parser upper-cases
 * names; ASGI wants lower case). */
static PyObject *lower_bytes(const struct cg_http_span *s)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)s->len);
    if (b == NULL) {
        return NULL;
    }
    char *d = PyBytes_AS_STRING(b);
    for (size_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->ptr[i];
        d[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    return b;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* ASGI path: the raw path percent-decoded (urllib's unquote_to_bytes: a bad
 * escape stays as is), then decoded as UTF-8 with replacement, as gunicorn's
 * ASGI worker does. */
static PyObject *decode_path(const char *p, size_t n)
{
    char stackbuf[512];
    char *buf;
    size_t o = 0;
    PyObject *r;

    if (memchr(p, '%', n) == NULL) {
        return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
    }
    memset(stackbuf, 0, sizeof(stackbuf));
    buf = n <= sizeof(stackbuf) ? stackbuf : PyMem_Malloc(n);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (p[i] == '%' && i + 2 < n && (h = hexval((unsigned char)p[i + 1])) >= 0 &&
            (l = hexval((unsigned char)p[i + 2])) >= 0) {
            buf[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            buf[o++] = p[i];
        }
    }
    r = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)o, "replace");
    if (buf != stackbuf) {
        PyMem_Free(buf);
    }
    return r;
}

static PyObject *headers_list(const struct cg_http_request *req, PyObject **subprotocols)
{
    PyObject *list = PyList_New((Py_ssize_t)req->n_headers);
    if (list == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        PyObject *name = lower_bytes(&h->name);
        PyObject *value = PyBytes_FromStringAndSize(h->value.ptr, (Py_ssize_t)h->value.len);
        PyObject *pair = (name && value) ? PyTuple_Pack(2, name, value) : NULL;
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair); /* steals */
        if (subprotocols != NULL && *subprotocols == NULL && h->name.len == 22 &&
            memcmp(h->name.ptr, "SEC-WEBSOCKET-PROTOCOL", 22) == 0) {
            PyObject *v = PyUnicode_DecodeLatin1(h->value.ptr, (Py_ssize_t)h->value.len, NULL);
            PyObject *comma = PyUnicode_FromString(",");
            PyObject *parts = (v && comma) ? PyUnicode_Split(v, comma, -1) : NULL;
            Py_XDECREF(v);
            Py_XDECREF(comma);
            if (parts == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(parts); j++) {
                PyObject *s = PyObject_CallMethod(PyList_GET_ITEM(parts, j), "strip", NULL);
                if (s == NULL) {
                    Py_DECREF(parts);
                    Py_DECREF(list);
                    return NULL;
                }
                PyList_SetItem(parts, j, s); /* steals */
            }
            *subprotocols = parts;
        }
    }
    return list;
}

PyObject *cg_py_asgi_scope(struct cg_asgi_conn *c, const struct cg_http_request *req, bool ws)
{
    struct cg_asgi_srv *s = c->srv;
    struct cg_asgi_keys *k = &s->k;
    PyObject *scope = NULL, *asgi = NULL, *hv = NULL, *method = NULL, *path = NULL,
             *raw_path = NULL, *qs = NULL, *headers = NULL, *subprotocols = NULL,
             *state = NULL;
    /* path is the path of the request-target, as WSGI's PATH_INFO: an
     * absolute-form target's scheme and authority are not part of it, nor is
     * a fragment (gunicorn's own ASGI worker keeps both in path). */
    const struct cg_http_span *tp = &req->path, *tq = &req->query;

    asgi = PyDict_New();
    if (asgi == NULL || PyDict_SetItem(asgi, k->version, k->v_3_0) < 0 ||
        PyDict_SetItem(asgi, k->spec_version, k->v_2_4) < 0) {
        goto done;
    }
    if (req->version_major == 1 && req->version_minor == 1) {
        hv = Py_NewRef(k->v_1_1);
    } else if (req->version_major == 1 && req->version_minor == 0) {
        hv = Py_NewRef(k->v_1_0);
    } else if (req->version_major == 2 && c->is_stream) {
        hv = Py_NewRef(k->v_2); /* an HTTP/2 stream (its head says HTTP/2.0) */
    } else {
        hv = PyUnicode_FromFormat("%d.%d", req->version_major, req->version_minor);
    }
    method = PyUnicode_DecodeLatin1(req->method.ptr, (Py_ssize_t)req->method.len, NULL);
    path = decode_path(tp->ptr, tp->len);
    raw_path = PyBytes_FromStringAndSize(tp->ptr, (Py_ssize_t)tp->len);
    qs = tq->len > 0 ? PyBytes_FromStringAndSize(tq->ptr, (Py_ssize_t)tq->len)
                     : Py_NewRef(k->empty_bytes);
    if (s->path_prefix != NULL && path != NULL && raw_path != NULL) {
        /* Uvicorn's rule, for its worker subclasses: path includes root_path */
        Py_SETREF(path, PyUnicode_Concat(s->path_prefix, path));
        Py_SETREF(raw_path, PyBytes_FromFormat("%s%s", PyBytes_AS_STRING(s->raw_path_prefix),
                                               PyBytes_AS_STRING(raw_path)));
    }
    headers = headers_list(req, ws ? &subprotocols : NULL);
    if (hv == NULL || method == NULL || path == NULL || raw_path == NULL || qs == NULL ||
        headers == NULL) {
        goto done;
    }
    bool https = strcmp(req->url_scheme, "https") == 0;
    PyObject *scheme = ws ? (https ? k->v_wss : k->v_ws) : (https ? k->v_https : k->v_http);
    scope = PyDict_New();
    if (scope == NULL) {
        goto done;
    }
    if (PyDict_SetItem(scope, k->type, ws ? k->v_websocket : k->v_http) < 0 ||
        PyDict_SetItem(scope, k->asgi, asgi) < 0 ||
        PyDict_SetItem(scope, k->http_version, hv) < 0 ||
        (!ws && PyDict_SetItem(scope, k->method, method) < 0) ||
        PyDict_SetItem(scope, k->scheme, scheme) < 0 || PyDict_SetItem(scope, k->path, path) < 0 ||
        PyDict_SetItem(scope, k->raw_path, raw_path) < 0 ||
        PyDict_SetItem(scope, k->query_string, qs) < 0 ||
        PyDict_SetItem(scope, k->root_path, s->root_path) < 0 ||
        PyDict_SetItem(scope, k->headers, headers) < 0 ||
        PyDict_SetItem(scope, k->server, c->server) < 0 ||
        PyDict_SetItem(scope, k->client, c->client) < 0) {
        Py_CLEAR(scope);
        goto done;
    }
    if (ws) {
        if (subprotocols == NULL) {
            subprotocols = PyList_New(0);
        }
        if (subprotocols == NULL || PyDict_SetItem(scope, k->subprotocols, subprotocols) < 0) {
            Py_CLEAR(scope);
            goto done;
        }
    }
    if (s->state != NULL) {
        /* Each request gets a shallow copy of the lifespan state. */
        state = PyDict_Copy(s->state);
        if (state == NULL || PyDict_SetItem(scope, k->state, state) < 0) {
            Py_CLEAR(scope);
        }
    }
done:
    Py_XDECREF(asgi);
    Py_XDECREF(hv);
    Py_XDECREF(method);
    Py_XDECREF(path);
    Py_XDECREF(raw_path);
    Py_XDECREF(qs);
    Py_XDECREF(headers);
    Py_XDECREF(subprotocols);
    Py_XDECREF(state);
    return scope;
}
