/* Serving one WSGI request on a connection: read and parse the head, build
 * the environ, call the application, stream its result, log the access, and
 * answer errors as gunicorn does (4xx for bad requests, 500 when the app
 * fails before its response started; the worker always keeps serving). */
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_input.h"
#include "cg_py_wsgi_int.h"

#define READ_CHUNK 65536

/* A connection's read side: bytes received but not yet taken by the parser
 * live in buf[start, end). */
struct conn {
    int fd;
    struct cg_http_parser parser;
    char *buf; /* owned */
    size_t start, end, cap;
    bool eof;
    int read_errno;
};

/* Receives more bytes into c->buf. Returns bytes read, 0 on EOF, -1 on error.
 * Called without the GIL. */
static ssize_t conn_fill(struct conn *c)
{
    if (c->start == c->end) {
        c->start = c->end = 0;
    } else if (c->end == c->cap && c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : READ_CHUNK;
        char *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            c->read_errno = ENOMEM;
            return -1;
        }
        c->buf = nb;
        c->cap = cap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->end, c->cap - c->end, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            c->read_errno = errno;
            return -1;
        }
        if (n == 0) {
            c->eof = true;
        }
        c->end += (size_t)n;
        return n;
    }
}

/* Body source for wsgi.input: decoded body bytes, read on demand. gunicorn's
 * body readers return the short body, then b"", when the client closes
 * early; we do the same. */
static ssize_t body_read(void *ctx, char *out, size_t n, struct cg_err *err)
{
    struct conn *c = ctx;

    for (;;) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        enum cg_http_status st = cg_http_parser_body(&c->parser, c->buf + c->start,
                                                     c->end - c->start, &used, n, &data, &dlen);
        c->start += used;
        switch (st) {
        case CG_HTTP_BODY_DATA:
            memcpy(out, data, dlen);
            return (ssize_t)dlen;
        case CG_HTTP_BODY_DONE:
            return 0;
        case CG_HTTP_ERROR: {
            const struct cg_http_error *e = cg_http_parser_error(&c->parser);
            if (e->kind == CG_HTTP_ERR_NO_MORE_DATA) {
                return 0;
            }
            cg_err_set(err, "%s: %s", cg_http_error_name(e->kind), e->detail);
            return -1;
        }
        default:
            break;
        }
        if (c->eof) {
            st = cg_http_parser_eof(&c->parser);
            if (st == CG_HTTP_ERROR &&
                cg_http_parser_error(&c->parser)->kind != CG_HTTP_ERR_NO_MORE_DATA) {
                const struct cg_http_error *e = cg_http_parser_error(&c->parser);
                cg_err_set(err, "%s: %s", cg_http_error_name(e->kind), e->detail);
                return -1;
            }
            return 0;
        }
        if (conn_fill(c) < 0) {
            cg_err_set(err, "recv: %s", strerror(c->read_errno));
            return -1;
        }
    }
}

static void peer_ip(const struct sockaddr *peer, char *buf, size_t n)
{
    buf[0] = '\0';
    if (peer != NULL && peer->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, buf, (socklen_t)n);
    } else if (peer != NULL && peer->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, buf, (socklen_t)n);
    }
}

/* Answers a request error (bad request, limits, configuration problem). */
static void send_http_error(struct conn *c, const struct cg_http_error *e,
                            const struct sockaddr *peer)
{
    char page[CG_HTTP_ERROR_RESPONSE_MAX];
    char ip[64];
    size_t n = cg_http_error_format_response(e, page, sizeof(page));

    if (cg_http_error_status(e->kind) >= 500) {
        cg_log(CG_LOG_ERROR, "Error handling request: %s", e->detail);
    } else if (e->kind != CG_HTTP_ERR_NO_MORE_DATA) {
        peer_ip(peer, ip, sizeof(ip));
        cg_log(CG_LOG_WARNING, "Invalid request from ip=%s: %s", ip, e->detail);
    }
    if (n > 0) {
        cg_py_wsgi_send_all(c->fd, page, n);
    }
}

/* Reads until the head is parsed. Returns the request, or NULL when the
 * connection ends or the request is bad (answered here). */
static const struct cg_http_request *read_head(struct conn *c, const struct sockaddr *peer)
{
    for (;;) {
        size_t used = 0;
        enum cg_http_status st;
        if (c->end > c->start) {
            st = cg_http_parser_head(&c->parser, c->buf + c->start, c->end - c->start, &used);
            c->start += used;
            if (st == CG_HTTP_HEAD_DONE) {
                return cg_http_parser_request(&c->parser);
            }
            if (st == CG_HTTP_ERROR) {
                send_http_error(c, cg_http_parser_error(&c->parser), peer);
                return NULL;
            }
        }
        if (c->eof) {
            st = cg_http_parser_eof(&c->parser);
            if (st == CG_HTTP_ERROR) {
                send_http_error(c, cg_http_parser_error(&c->parser), peer);
            }
            return NULL;
        }
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = conn_fill(c);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (c->read_errno != ECONNRESET && c->read_errno != ETIMEDOUT) {
                cg_log_errno(CG_LOG_DEBUG, c->read_errno, "reading a request");
            }
            return NULL;
        }
    }
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Logs one access line (only when an access log is configured). */
static void log_access(struct cg_wsgi *g, PyObject *environ, struct cg_wsgi_resp *resp,
                       const struct cg_http_request *req, uint64_t t0)
{
    PyObject *hdrs = NULL, *req_hdrs = NULL, *r = NULL;

    if (g->access_log == NULL || environ == NULL) {
        return;
    }
    hdrs = cg_py_wsgi_resp_headers(resp);
    req_hdrs = PyList_New((Py_ssize_t)req->n_headers);
    for (size_t i = 0; req_hdrs != NULL && i < req->n_headers; i++) {
        PyObject *pair = Py_BuildValue(
            "(NN)", PyUnicode_DecodeLatin1(req->headers[i].name.ptr, req->headers[i].name.len, NULL),
            PyUnicode_DecodeLatin1(req->headers[i].value.ptr, req->headers[i].value.len, NULL));
        if (pair == NULL) {
            Py_CLEAR(req_hdrs);
            break;
        }
        PyList_SET_ITEM(req_hdrs, (Py_ssize_t)i, pair); /* steals */
    }
    if (hdrs != NULL && req_hdrs != NULL) {
        PyObject *sent = resp->r.started ? PyLong_FromUnsignedLongLong(resp->r.sent)
                                         : Py_NewRef(Py_None);
        r = PyObject_CallMethod(g->access_log, "log", "OOONOK", environ,
                                resp->status ? resp->status : Py_None, hdrs, sent, req_hdrs,
                                (unsigned long long)(now_us() - t0));
    }
    if (r == NULL) {
        cg_py_log_exception("access log failed");
    }
    Py_XDECREF(r);
    Py_XDECREF(hdrs);
    Py_XDECREF(req_hdrs);
}

/* Streams the app's result. Returns 0, or -1 with a Python exception. */
static int send_result(struct cg_wsgi *g, struct cg_wsgi_resp *resp, PyObject *result)
{
    int is_wrapper = PyObject_IsInstance(result, g->file_wrapper);
    if (is_wrapper < 0) {
        return -1;
    }
    if (is_wrapper) {
        int rc = cg_py_wsgi_resp_sendfile(g, resp, result);
        if (rc != 0) {
            return rc < 0 ? -1 : 0;
        }
    }
    if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) {
        PyObject *seq = result;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            if (cg_py_wsgi_resp_write(g, resp, PySequence_Fast_GET_ITEM(seq, i)) < 0) {
                return -1;
            }
            if (resp->write_errno != 0) {
                return 0;
            }
        }
        return 0;
    }
    PyObject *it = PyObject_GetIter(result);
    PyObject *item = NULL;
    if (it == NULL) {
        return -1;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = cg_py_wsgi_resp_write(g, resp, item);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
        if (resp->write_errno != 0) {
            break; /* client gone: stop producing */
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* Calls result.close() if it has one (PEP 3333). */
static void close_result(PyObject *result)
{
    PyObject *close = NULL;
    if (result == NULL) {
        return;
    }
    close = PyObject_GetAttrString(result, "close");
    if (close == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *r = PyObject_CallNoArgs(close);
    if (r == NULL) {
        cg_py_log_exception("Error closing the response iterable");
    }
    Py_XDECREF(r);
    Py_DECREF(close);
}

/* Runs the app for a parsed request and writes its response. */
static void handle_request(struct cg_wsgi *g, struct conn *c, const struct cg_http_request *req,
                           const struct cg_listener *l, const struct sockaddr *peer)
{
    struct cg_http_error herr = { CG_HTTP_ERR_NONE, "" };
    struct cg_wsgi_resp resp;
    PyObject *environ = NULL, *input = NULL, *sock = NULL, *result = NULL;
    uint64_t t0 = now_us();
    struct cg_body_src src = { body_read, c };

    cg_py_wsgi_resp_init(g, &resp, c->fd, req);
    cg_http_response_force_close(&resp.r); /* the sync worker closes, as gunicorn's */
    environ = cg_py_wsgi_environ(g, req, cg_http_parser_proxy_info(&c->parser), l, peer, &herr);
    if (environ == NULL) {
        if (herr.kind != CG_HTTP_ERR_NONE) {
            send_http_error(c, &herr, peer);
        } else {
            cg_py_log_exception("Error building the WSGI environ");
        }
        goto cleanup;
    }
    if (req->expect_continue) {
        cg_py_wsgi_send_all(c->fd, CG_HTTP_CONTINUE_RESPONSE, strlen(CG_HTTP_CONTINUE_RESPONSE));
    }
    input = cg_py_input_new(&src);
    sock = input ? PyObject_CallFunction(g->socket_type, "iiii", l->family, SOCK_STREAM, 0, c->fd)
                 : NULL;
    if (sock == NULL || PyDict_SetItem(environ, g->k.wsgi_input, input) < 0 ||
        PyDict_SetItem(environ, g->k.gunicorn_socket, sock) < 0) {
        cg_py_log_exception("Error building the WSGI environ");
        goto cleanup;
    }
    cg_py_wsgi_start_response_bind(g->start_response, &resp);
    result = PyObject_CallFunctionObjArgs(g->app, environ, g->start_response, NULL);
    if (result != NULL && send_result(g, &resp, result) == 0) {
        cg_py_wsgi_resp_close(g, &resp);
    } else if (resp.headers_sent) {
        /* Too late for a 500: log and close the connection. */
        cg_py_log_exception("Error handling request");
    } else {
        char what[600];
        snprintf(what, sizeof(what), "Error handling request %.*s %.*s", (int)req->method.len,
                 req->method.ptr, (int)req->uri.len, req->uri.ptr);
        cg_py_log_exception(what);
        cg_http_error_set(&herr, CG_HTTP_ERR_INTERNAL, "%s", "");
        char page[CG_HTTP_ERROR_RESPONSE_MAX];
        size_t n = cg_http_error_format_response(&herr, page, sizeof(page));
        cg_py_wsgi_send_all(c->fd, page, n);
    }
    log_access(g, environ, &resp, req, t0);
    close_result(result);
cleanup:
    cg_py_wsgi_start_response_bind(g->start_response, NULL);
    if (input != NULL) {
        cg_py_input_detach(input);
    }
    if (sock != NULL) {
        /* The fd is ours: detach so the Python object does not close it. */
        PyObject *r = PyObject_CallMethod(sock, "detach", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    Py_XDECREF(result);
    Py_XDECREF(sock);
    Py_XDECREF(input);
    Py_XDECREF(environ);
    cg_py_wsgi_resp_deinit(&resp);
}

void cg_py_wsgi_serve(struct cg_wsgi *g, int fd, const struct cg_listener *l,
                      const struct sockaddr *peer, socklen_t peer_len)
{
    struct conn c = { .fd = fd };

    (void)peer_len;
    cg_http_parser_init(&c.parser, &g->limits, peer);
    const struct cg_http_request *req = read_head(&c, peer);
    if (req != NULL) {
        handle_request(g, &c, req, l, peer);
    }
    cg_http_parser_deinit(&c.parser);
    free(c.buf);
    close(fd);
}

/* Interns every environ key (owned references in g->k). */
static int intern_keys(struct cg_wsgi *g)
{
    static const struct {
        size_t off;
        const char *name;
    } keys[] = {
#define K(field, text) { offsetof(struct cg_wsgi_keys, field), text }
        K(REQUEST_METHOD, "REQUEST_METHOD"), K(QUERY_STRING, "QUERY_STRING"),
        K(RAW_URI, "RAW_URI"),               K(SERVER_PROTOCOL, "SERVER_PROTOCOL"),
        K(CONTENT_TYPE, "CONTENT_TYPE"),     K(CONTENT_LENGTH, "CONTENT_LENGTH"),
        K(wsgi_url_scheme, "wsgi.url_scheme"), K(REMOTE_ADDR, "REMOTE_ADDR"),
        K(REMOTE_PORT, "REMOTE_PORT"),       K(SERVER_NAME, "SERVER_NAME"),
        K(SERVER_PORT, "SERVER_PORT"),       K(PATH_INFO, "PATH_INFO"),
        K(SCRIPT_NAME, "SCRIPT_NAME"),       K(PROXY_PROTOCOL, "PROXY_PROTOCOL"),
        K(PROXY_ADDR, "PROXY_ADDR"),         K(PROXY_PORT, "PROXY_PORT"),
        K(wsgi_input, "wsgi.input"),         K(gunicorn_socket, "gunicorn.socket"),
        K(wsgi_early_hints, "wsgi.early_hints"),
#undef K
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        PyObject *k = PyUnicode_InternFromString(keys[i].name);
        if (k == NULL) {
            return -1;
        }
        *(PyObject **)((char *)&g->k + keys[i].off) = k;
    }
    return 0;
}

static void release_keys(struct cg_wsgi *g)
{
    PyObject **p = (PyObject **)&g->k;
    for (size_t i = 0; i < sizeof(g->k) / sizeof(PyObject *); i++) {
        Py_CLEAR(p[i]);
    }
}

/* The environ entries that are the same for every request. */
static PyObject *make_base_environ(struct cg_wsgi *g, PyObject *wsgimod)
{
    const struct cg_conf *conf = g->conf;
    PyObject *errors = PyObject_CallMethod(wsgimod, "ErrorsWrapper", "i", cg_log_fd());
    PyObject *base = NULL;

    if (errors == NULL) {
        return NULL;
    }
    base = Py_BuildValue("{s:N,s:(ii),s:O,s:O,s:O,s:O,s:O,s:s}", "wsgi.errors", errors,
                         "wsgi.version", 1, 0, "wsgi.multithread",
                         strcmp(conf->worker_class, "sync") == 0 ? Py_False : Py_True,
                         "wsgi.multiprocess", conf->workers > 1 ? Py_True : Py_False,
                         "wsgi.run_once", Py_False, "wsgi.file_wrapper", g->file_wrapper,
                         "wsgi.input_terminated", Py_True, "SERVER_SOFTWARE",
                         "gunicorn/27.0.1");
    return base;
}

/* Fills the parser limits from the settings. */
static int setup_limits(struct cg_wsgi *g, struct cg_err *err)
{
    const struct cg_conf *conf = g->conf;
    struct cg_http_limits *l = &g->limits;
    char *joined = NULL;

    cg_http_limits_init(l);
    l->limit_request_line = conf->limit_request_line;
    l->limit_request_fields = conf->limit_request_fields;
    l->limit_request_field_size = conf->limit_request_field_size;
    l->permit_obsolete_folding = conf->permit_obsolete_folding;
    l->strip_header_spaces = conf->strip_header_spaces;
    l->casefold_http_method = conf->casefold_http_method;
    l->permit_unconventional_http_method = conf->permit_unconventional_http_method;
    l->permit_unconventional_http_version = conf->permit_unconventional_http_version;
    if (conf->header_map != NULL) {
        l->header_map = strcmp(conf->header_map, "refuse") == 0      ? CG_HTTP_HEADER_MAP_REFUSE
                        : strcmp(conf->header_map, "dangerous") == 0 ? CG_HTTP_HEADER_MAP_DANGEROUS
                                                                     : CG_HTTP_HEADER_MAP_DROP;
    }
    const char *pp = conf->proxy_protocol ? conf->proxy_protocol : "off";
    l->proxy_protocol = strcmp(pp, "v1") == 0     ? CG_HTTP_PROXY_V1
                        : strcmp(pp, "v2") == 0   ? CG_HTTP_PROXY_V2
                        : strcmp(pp, "auto") == 0 ? CG_HTTP_PROXY_AUTO
                                                  : CG_HTTP_PROXY_OFF;
    /* The lists arrive split; the iplist parser takes the comma form. */
    const struct cg_strlist *lists[2] = { &conf->forwarded_allow_ips, &conf->proxy_allow_ips };
    struct cg_http_iplist **outs[2] = { &g->forwarded_ips, &g->proxy_ips };
    const char *names[2] = { "forwarded_allow_ips", "proxy_allow_ips" };
    for (int i = 0; i < 2; i++) {
        size_t len = 1;
        for (size_t j = 0; j < lists[i]->n; j++) {
            len += strlen(lists[i]->v[j]) + 1;
        }
        joined = calloc(1, len);
        if (joined == NULL) {
            cg_err_set(err, "out of memory");
            return -1;
        }
        for (size_t j = 0; j < lists[i]->n; j++) {
            if (j > 0) {
                strcat(joined, ",");
            }
            strcat(joined, lists[i]->v[j]);
        }
        *outs[i] = cg_http_iplist_parse(joined, names[i], err);
        free(joined);
        if (*outs[i] == NULL) {
            return -1;
        }
    }
    l->forwarded_allow_ips = g->forwarded_ips;
    l->proxy_allow_ips = g->proxy_ips;
    l->forwarder_headers = (const char *const *)conf->forwarder_headers.v;
    l->n_forwarder_headers = conf->forwarder_headers.n;
    return 0;
}

/* secure_scheme_headers (a dict of header -> value) into the parser's table. */
static int setup_scheme_headers(struct cg_wsgi *g, struct cg_err *err)
{
    PyObject *d = g->conf->secure_scheme_headers; /* borrowed */
    PyObject *key = NULL, *value = NULL;
    Py_ssize_t pos = 0, i = 0;

    if (d == NULL || !PyDict_Check(d)) {
        return 0;
    }
    g->scheme_headers = calloc((size_t)PyDict_GET_SIZE(d) + 1, sizeof(*g->scheme_headers));
    if (g->scheme_headers == NULL) {
        cg_err_set(err, "out of memory");
        return -1;
    }
    while (PyDict_Next(d, &pos, &key, &value)) {
        PyObject *up = PyObject_CallMethod(key, "upper", NULL);
        const char *k = up ? PyUnicode_AsUTF8(up) : NULL;
        const char *v = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
        if (k == NULL || v == NULL) {
            Py_XDECREF(up);
            PyErr_Clear();
            cg_err_set(err, "secure_scheme_headers: keys and values must be strings");
            return -1;
        }
        g->scheme_headers[i].name = strdup(k);
        g->scheme_headers[i].value = strdup(v);
        Py_DECREF(up);
        i++;
    }
    g->limits.secure_scheme_headers = g->scheme_headers;
    g->limits.n_secure_scheme_headers = (size_t)i;
    return 0;
}

static int setup_access_log(struct cg_wsgi *g)
{
    const struct cg_conf *conf = g->conf;
    PyObject *mod = NULL;

    if (conf->accesslog == NULL) {
        return 0;
    }
    mod = PyImport_ImportModule("cgunicorn.accesslog");
    if (mod == NULL) {
        return -1;
    }
    g->access_log = PyObject_CallMethod(mod, "AccessLog", "ss", conf->access_log_format,
                                        conf->accesslog);
    Py_DECREF(mod);
    return g->access_log ? 0 : -1;
}

struct cg_wsgi *cg_py_wsgi_new(struct cg_worker *w, struct cg_err *err)
{
    struct cg_wsgi *g = calloc(1, sizeof(*g));
    PyObject *wsgimod = NULL, *sockmod = NULL; /* owned */
    const char *script = getenv("SCRIPT_NAME");

    if (g == NULL) {
        cg_err_set(err, "out of memory");
        return NULL;
    }
    g->w = w;
    g->conf = w->conf;
    g->app = w->app;
    snprintf(g->script_name, sizeof(g->script_name), "%s", script ? script : "");
    snprintf(g->server_header, sizeof(g->server_header), "%s", CG_HTTP_SERVER_DEFAULT);
    if (setup_limits(g, err) < 0 || setup_scheme_headers(g, err) < 0) {
        goto fail;
    }
    if (cg_py_input_ready() < 0 || cg_py_wsgi_resp_type_ready() < 0 || intern_keys(g) < 0) {
        goto pyfail;
    }
    wsgimod = PyImport_ImportModule("cgunicorn.wsgi");
    sockmod = wsgimod ? PyImport_ImportModule("socket") : NULL;
    if (sockmod == NULL) {
        goto pyfail;
    }
    g->file_wrapper = PyObject_GetAttrString(wsgimod, "FileWrapper");
    g->exc_header = PyObject_GetAttrString(wsgimod, "InvalidResponseHeader");
    g->exc_header_name = PyObject_GetAttrString(wsgimod, "InvalidResponseHeaderName");
    g->socket_type = PyObject_GetAttrString(sockmod, "socket");
    if (g->file_wrapper == NULL || g->exc_header == NULL || g->exc_header_name == NULL ||
        g->socket_type == NULL) {
        goto pyfail;
    }
    g->base_environ = make_base_environ(g, wsgimod);
    g->start_response = g->base_environ ? cg_py_wsgi_start_response_new(g) : NULL;
    if (g->start_response == NULL || setup_access_log(g) < 0) {
        goto pyfail;
    }
    Py_DECREF(wsgimod);
    Py_DECREF(sockmod);
    return g;
pyfail:
    cg_err_from_python(err);
fail:
    Py_XDECREF(wsgimod);
    Py_XDECREF(sockmod);
    cg_py_wsgi_free(g);
    return NULL;
}

void cg_py_wsgi_free(struct cg_wsgi *g)
{
    if (g == NULL) {
        return;
    }
    release_keys(g);
    Py_CLEAR(g->base_environ);
    Py_CLEAR(g->start_response);
    Py_CLEAR(g->file_wrapper);
    Py_CLEAR(g->exc_header);
    Py_CLEAR(g->exc_header_name);
    Py_CLEAR(g->socket_type);
    Py_CLEAR(g->access_log);
    cg_http_iplist_free(g->forwarded_ips);
    cg_http_iplist_free(g->proxy_ips);
    for (size_t i = 0; g->scheme_headers != NULL && g->scheme_headers[i].name != NULL; i++) {
        free((char *)g->scheme_headers[i].name);
        free((char *)g->scheme_headers[i].value);
    }
    free(g->scheme_headers);
    free(g);
}
