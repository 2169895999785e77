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
#include <netinet/in.h>

#include "cg_http_date.h"
#include "cg_log.h"
#include "cg_metrics.h"
#include "cg_py_deadline.h"
#include "cg_py.h"
#include "cg_py_hooks.h"
#include "cg_py_input.h"
#include "cg_py_wsgi_conn.h"
#include "cg_py_wsgi_int.h"
#include "cg_statsd.h"
#include "cg_transport_tls.h"

uint64_t cg_py_wsgi_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

PyObject *cg_py_wsgi_request_headers(const struct cg_http_request *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->n_headers);
    for (size_t i = 0; list != NULL && i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        PyObject *pair = Py_BuildValue(
            "(NN)", PyUnicode_DecodeLatin1(h->name.ptr, (Py_ssize_t)h->name.len, NULL),
            PyUnicode_DecodeLatin1(h->value.ptr, (Py_ssize_t)h->value.len, NULL));
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair); /* steals */
    }
    return list;
}

/* Logs one access line (only when an access log is configured). */
static void log_access(struct cg_wsgi *g, PyObject *environ, struct cg_wsgi_resp *resp,
                       const struct cg_http_request *req, uint64_t t0)
{
    PyObject *hdrs = NULL, *req_hdrs = NULL, *r = NULL;

    if (resp->r.started && resp->r.status_code >= 0 && (cg_metrics_mine || cg_statsd_on())) {
        uint64_t dur = cg_py_wsgi_now_us() - t0;
        cg_metrics_request_done(cg_metrics_req_method(req), resp->r.status_code, dur);
        if (cg_statsd_on()) {
            cg_statsd_request(resp->r.status_code, dur);
        }
    }
    if (g->access_log == NULL || environ == NULL) {
        return;
    }
    hdrs = cg_py_wsgi_resp_headers(resp);
    req_hdrs = cg_py_wsgi_request_headers(req);
    if (hdrs != NULL && req_hdrs != NULL) {
        PyObject *sent = resp->r.started ? PyLong_FromUnsignedLongLong(resp->r.sent)
                                         : Py_NewRef(Py_None);
        r = PyObject_CallMethod(g->access_log, "log", "OOONOK", environ,
                                resp->status ? resp->status : Py_None, hdrs, sent, req_hdrs,
                                (unsigned long long)(cg_py_wsgi_now_us() - t0));
    }
    if (r == NULL) {
        cg_py_log_exception("access log failed");
    }
    Py_XDECREF(r);
    Py_XDECREF(hdrs);
    Py_XDECREF(req_hdrs);
}

/* The access line gunicorn's handle_error() logs for an error page when it
 * knew the request: a bare environ (no headers, no PATH_INFO), the error
 * status, nothing sent. */
static void log_error_access(struct cg_wsgi *g, struct cg_wsgi_conn *c,
                             const struct cg_http_request *req, int status, const char *reason,
                             uint64_t t0)
{
    char proto[32], ip[64], port[16] = "-1";
    PyObject *env = NULL, *st = NULL, *hdrs = NULL, *r = NULL;

    if (req != NULL && (cg_metrics_mine || cg_statsd_on())) {
        uint64_t dur = cg_py_wsgi_now_us() - t0;
        cg_metrics_request_done(cg_metrics_req_method(req), status, dur);
        if (cg_statsd_on()) {
            cg_statsd_request(status, dur);
        }
    }
    if (g->access_log == NULL || req == NULL) {
        return;
    }
    snprintf(proto, sizeof(proto), "HTTP/%d.%d", req->version_major, req->version_minor);
    cg_conn_peer_ip(&c->peer, ip, sizeof(ip));
    if (c->peer.ss_family == AF_INET || c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&c->peer;
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&c->peer;
        snprintf(port, sizeof(port), "%d",
                 ntohs(c->peer.ss_family == AF_INET ? s4->sin_port : s6->sin6_port));
    }
    env = PyDict_Copy(g->base_environ);
    if (env != NULL) {
        PyObject *vals = Py_BuildValue(
            "{s:N,s:N,s:N,s:s,s:s,s:s}", "REQUEST_METHOD",
            PyUnicode_DecodeLatin1(req->method.ptr, (Py_ssize_t)req->method.len, NULL),
            "QUERY_STRING", PyUnicode_DecodeLatin1(req->query.ptr, (Py_ssize_t)req->query.len, NULL),
            "RAW_URI", PyUnicode_DecodeLatin1(req->uri.ptr, (Py_ssize_t)req->uri.len, NULL),
            "SERVER_PROTOCOL", proto, "REMOTE_ADDR", ip, "REMOTE_PORT", port);
        if (vals == NULL || PyDict_Update(env, vals) < 0) {
            Py_CLEAR(env);
        }
        Py_XDECREF(vals);
    }
    st = PyUnicode_FromFormat("%d %s", status, reason);
    hdrs = PyList_New(0);
    if (env != NULL && st != NULL && hdrs != NULL) {
        PyObject *req_hdrs = cg_py_wsgi_request_headers(req);
        if (req_hdrs != NULL) {
            r = PyObject_CallMethod(g->access_log, "log", "OOOiOK", env, st, hdrs, 0, req_hdrs,
                                    (unsigned long long)(cg_py_wsgi_now_us() - t0));
            Py_DECREF(req_hdrs);
        }
    }
    if (r == NULL) {
        cg_py_log_exception("access log failed");
    }
    Py_XDECREF(r);
    Py_XDECREF(hdrs);
    Py_XDECREF(st);
    Py_XDECREF(env);
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
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (cg_py_wsgi_resp_write(g, resp, PySequence_Fast_GET_ITEM(seq, i), i + 1 < n) < 0) {
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
    /* Chunks the app yields back to back stay in the kernel until a segment
     * fills; if the next one takes longer than CG_WSGI_HOLD_US, the pause
     * flusher pushes what was held while the app is still producing it. */
    for (;;) {
        if (resp->held) {
            cg_wsgi_hold_wait(&resp->hold, cg_py_wsgi_now_us());
        }
        item = PyIter_Next(it);
        cg_wsgi_hold_back(&resp->hold);
        if (item == NULL) {
            break;
        }
        int rc = cg_py_wsgi_resp_write(g, resp, item, true);
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

/* Answers the app's failure before its response started: gunicorn's 500. */
static void send_500(struct cg_wsgi_conn *c, const struct cg_http_request *req)
{
    char what[600];
    struct cg_http_error herr;
    char page[CG_HTTP_ERROR_RESPONSE_MAX];

    snprintf(what, sizeof(what), "Error handling request %.*s %.*s", (int)req->method.len,
             req->method.ptr, (int)req->uri.len, req->uri.ptr);
    cg_py_log_exception(what);
    cg_http_error_set(&herr, CG_HTTP_ERR_INTERNAL, "%s", "");
    size_t n = cg_http_error_format_response(&herr, page, sizeof(page));
    Py_BEGIN_ALLOW_THREADS
    cg_wsgi_conn_send(c, page, n);
    Py_END_ALLOW_THREADS
}

/* Whether the pending exception is request_timeout's; if so it is logged
 * once, with where the request was (its traceback). */
static bool timed_out(const struct cg_http_request *req)
{
    PyObject *exc = cg_py_deadline_exc();
    char what[600];

    if (exc == NULL || !PyErr_ExceptionMatches(exc)) {
        return false;
    }
    snprintf(what, sizeof(what),
             "Request timed out after %d s (request_timeout): %.*s %.*s; where it was",
             cg_py_deadline_seconds(), (int)req->method.len, req->method.ptr,
             (int)req->uri.len, req->uri.ptr);
    cg_py_log_exception(what);
    return true;
}

/* Answers a request that ran past request_timeout before its response began. */
static void send_504(struct cg_wsgi_conn *c)
{
    static const char page[] = "<html>\n  <head>\n    <title>Gateway Timeout</title>\n  </head>\n"
                               "  <body>\n    <h1><p>Gateway Timeout</p></h1>\n    The request "
                               "ran longer than request_timeout.\n  </body>\n</html>\n";
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 504 Gateway Timeout\r\nDate: %s\r\nConnection: close\r\n"
                     "Content-Type: text/html\r\nContent-Length: %zu\r\n\r\n",
                     cg_http_date_now(), sizeof(page) - 1);
    Py_BEGIN_ALLOW_THREADS
    cg_wsgi_conn_send(c, head, (size_t)n);
    cg_wsgi_conn_send(c, page, sizeof(page) - 1);
    Py_END_ALLOW_THREADS
}

/* The request body was malformed or cut short while the app read it (the
 * read raised). Whatever the app made of it — it may have caught the error —
 * is not answered as a success: a malformed body gets its 4xx page
 * (gunicorn's parser exception reaches its handle_error); a body the client
 * closed on gets no answer, as in gunicorn, which logs "Ignored premature
 * client disconnection" at debug. The connection closes either way. */
static void answer_body_error(struct cg_wsgi *g, struct cg_wsgi_conn *c,
                              const struct cg_http_request *req, struct cg_wsgi_resp *resp,
                              uint64_t t0)
{
    PyErr_Clear();
    if (c->body_error.kind == CG_HTTP_ERR_NO_MORE_DATA || resp->headers_sent) {
        cg_log(CG_LOG_DEBUG, "Ignored premature client disconnection. %.*s %.*s: the request "
               "body was cut short (%s)", (int)req->method.len, req->method.ptr,
               (int)req->path.len, req->path.ptr, c->body_error.detail);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    cg_wsgi_conn_send_error(c, &c->body_error);
    Py_END_ALLOW_THREADS
    log_error_access(g, c, req, cg_http_error_status(c->body_error.kind),
                     cg_http_error_reason(c->body_error.kind), t0);
}

/* environ["gunicorn.socket"]: a socket.socket over the connection's fd, or
 * for HTTPS a cgunicorn.wsgi.TLSSocket that also answers getpeercert(),
 * cipher() and version() from the TLS transport. New reference, or NULL
 * with an exception. */
PyObject *cg_py_wsgi_socket_new(struct cg_wsgi *g, struct cg_wsgi_conn *c)
{
    struct cg_transport_tls_info ti;
    unsigned char *der = NULL;
    bool verified = false;
    int dlen;
    PyObject *peer;

    if (c->tls != NULL) { /* an HTTP/2 stream: its connection's facts */
        ti = c->tls->info;
        verified = c->tls->verified;
        peer = c->tls->der_len > 0 ? PyBytes_FromStringAndSize((const char *)c->tls->der,
                                                                c->tls->der_len)
                                   : Py_NewRef(Py_None);
    } else if (!cg_transport_tls_info(&c->t, &ti)) {
        return PyObject_CallFunction(g->socket_type, "iiii", c->l->family, SOCK_STREAM, 0,
                                     c->t.fd);
    } else {
        dlen = cg_transport_tls_peer_der(&c->t, &der, &verified);
        peer = dlen > 0 ? PyBytes_FromStringAndSize((const char *)der, dlen)
                        : Py_NewRef(Py_None);
        OPENSSL_free(der);
    }
    PyObject *tls = peer != NULL ? Py_BuildValue("(s(ssi)NOs)", ti.version, ti.cipher,
                                                 ti.cipher_protocol, ti.bits, peer,
                                                 verified ? Py_True : Py_False, ti.alpn)
                                 : NULL;
    if (tls == NULL) {
        return NULL;
    }
    PyObject *sock = PyObject_CallFunction(g->tls_socket_type, "iiiiN", c->l->family,
                                           SOCK_STREAM, 0, c->t.fd, tls);
    return sock;
}

void cg_py_wsgi_socket_release(PyObject *sock)
{
    if (sock != NULL) {
        /* The fd is ours: detach so the Python object does not close it. */
        PyObject *r = PyObject_CallMethod(sock, "detach", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        Py_DECREF(sock);
    }
}

/* What gunicorn's gthread worker adds for an HTTP/2 stream: HTTP_VERSION
 * "2" and the stream's priority (RFC 7540 defaults: nghttp2 keeps the
 * deprecated priority scheme to itself). */
static int http2_environ(PyObject *environ)
{
    PyObject *v = PyUnicode_FromString("2"), *w = PyLong_FromLong(16), *d = PyLong_FromLong(0);
    int rc = v && w && d && PyDict_SetItemString(environ, "HTTP_VERSION", v) == 0 &&
                     PyDict_SetItemString(environ, "gunicorn.http2.priority_weight", w) == 0 &&
                     PyDict_SetItemString(environ, "gunicorn.http2.priority_depends_on", d) == 0
                 ? 0 : -1;
    Py_XDECREF(v);
    Py_XDECREF(w);
    Py_XDECREF(d);
    return rc;
}

bool cg_py_wsgi_handle(struct cg_wsgi *g, struct cg_wsgi_conn *c, bool keepalive)
{
    return cg_py_wsgi_handle_sock(g, c, keepalive, NULL);
}

bool cg_py_wsgi_handle_sock(struct cg_wsgi *g, struct cg_wsgi_conn *c, bool keepalive,
                            PyObject *conn_sock)
{
    const struct cg_http_request *req = cg_http_parser_request(&c->parser);
    const struct sockaddr *peer = (const struct sockaddr *)&c->peer;
    struct cg_http_error herr = { CG_HTTP_ERR_NONE, "" };
    struct cg_wsgi_resp resp;
    PyObject *environ = NULL, *input = NULL, *sock = NULL, *result = NULL, *hreq = NULL;
    uint64_t t0 = cg_py_wsgi_now_us();
    struct cg_body_src src = { cg_wsgi_conn_body_read, c, cg_wsgi_conn_body_read_buffered };
    bool reuse = false;

    cg_metrics_request_start(req);
    cg_py_wsgi_resp_init(g, &resp, c, req);
    if (!keepalive) {
        cg_http_response_force_close(&resp.r); /* the sync worker closes, as gunicorn's */
    }
    environ = cg_py_wsgi_environ(g, req, cg_http_parser_proxy_info(&c->parser), c->l, peer, &herr);
    if (environ == NULL) {
        if (herr.kind != CG_HTTP_ERR_NONE) {
            Py_BEGIN_ALLOW_THREADS
            cg_wsgi_conn_send_error(c, &herr);
            Py_END_ALLOW_THREADS
        } else {
            cg_py_log_exception("Error building the WSGI environ");
        }
        goto cleanup;
    }
    if (c->http2 && http2_environ(environ) < 0) {
        cg_py_log_exception("Error building the WSGI environ");
        goto cleanup;
    }
    if (req->expect_continue) {
        Py_BEGIN_ALLOW_THREADS
        cg_wsgi_conn_send(c, CG_HTTP_CONTINUE_RESPONSE, strlen(CG_HTTP_CONTINUE_RESPONSE));
        Py_END_ALLOW_THREADS
    }
    input = cg_py_input_new(&src);
    if (input != NULL) {
        sock = conn_sock != NULL ? Py_NewRef(conn_sock) : cg_py_wsgi_socket_new(g, c);
    }
    if (sock == NULL || PyDict_SetItem(environ, g->k.wsgi_input, input) < 0 ||
        PyDict_SetItem(environ, g->k.gunicorn_socket, sock) < 0) {
        cg_py_log_exception("Error building the WSGI environ");
        goto cleanup;
    }
    PyObject *sr = cg_py_wsgi_start_response_new(g, &resp);
    if (sr == NULL) {
        cg_py_log_exception("Error building the WSGI environ");
        goto cleanup;
    }
    PyObject *hints = PyObject_GetAttr(sr, g->k.early_hints_attr);
    if (hints == NULL || PyDict_SetItem(environ, g->k.wsgi_early_hints, hints) < 0) {
        Py_XDECREF(hints);
        Py_DECREF(sr);
        cg_py_log_exception("Error building the WSGI environ");
        goto cleanup;
    }
    Py_DECREF(hints);
    cg_py_deadline_start();
    if (cg_py_hooks_pre_request(g->w, req, environ, &hreq) == 0) {
        result = PyObject_CallFunctionObjArgs(g->app, environ, sr, NULL);
    }
    /* A body error found while the app ran (it read the body and the read
     * raised) skips the response; one found while the response iterated
     * (a generator reading lazily) ends it. Either way answer_body_error. */
    if (c->body_error.kind == CG_HTTP_ERR_NONE && result != NULL &&
        send_result(g, &resp, result) == 0) {
        cg_py_wsgi_resp_close(g, &resp);
        reuse = keepalive && resp.write_errno == 0 && !cg_http_response_should_close(&resp.r);
        log_access(g, environ, &resp, req, t0);
    } else if (c->body_error.kind != CG_HTTP_ERR_NONE) {
        answer_body_error(g, c, req, &resp, t0);
    } else if (timed_out(req)) {
        if (!resp.headers_sent) {
            send_504(c);
            log_error_access(g, c, req, 504, "Gateway Timeout", t0);
        } else {
            log_access(g, environ, &resp, req, t0); /* the response is cut: closed */
        }
    } else if (resp.headers_sent) {
        /* Too late for a 500: log and close the connection. */
        cg_py_log_exception("Error handling request");
        log_access(g, environ, &resp, req, t0);
    } else {
        send_500(c, req);
        log_error_access(g, c, req, 500, "Internal Server Error", t0);
    }
    close_result(result);
    cg_py_deadline_end();
    cg_py_hooks_post_request(g->w, &hreq, environ, &resp);
    cg_py_wsgi_start_response_unbind(sr);
    Py_DECREF(sr);
cleanup:
    cg_metrics_request_end();
    if (input != NULL) {
        cg_py_input_detach(input);
    }
    if (conn_sock == NULL) {
        cg_py_wsgi_socket_release(sock);
    } else {
        Py_XDECREF(sock);
    }
    Py_XDECREF(result);
    Py_XDECREF(input);
    Py_XDECREF(environ);
    cg_py_wsgi_resp_deinit(&resp);
    if (reuse) {
        /* Keep-alive needs the whole body read; drain a small rest. */
        bool drained = true;
        if (!cg_http_parser_body_done(&c->parser)) { /* no GIL hand-off when read */
            Py_BEGIN_ALLOW_THREADS
            drained = cg_wsgi_conn_drain(c, 1024 * 1024);
            Py_END_ALLOW_THREADS
        }
        reuse = drained && cg_http_parser_next(&c->parser) == 0;
    }
    return reuse;
}

void cg_py_wsgi_log_head_error(struct cg_wsgi *g, struct cg_wsgi_conn *c, uint64_t t0)
{
    const struct cg_http_request *req = cg_http_parser_error_request(&c->parser);
    if (req != NULL) {
        const struct cg_http_error *e = cg_http_parser_error(&c->parser);
        log_error_access(g, c, req, cg_http_error_status(e->kind), cg_http_error_reason(e->kind),
                         t0);
    }
}

void cg_py_wsgi_serve(struct cg_wsgi *g, int fd, const struct cg_listener *l,
                      const struct sockaddr *peer, socklen_t peer_len)
{
    struct cg_wsgi_conn c;
    enum cg_wsgi_head st;

    uint64_t t0 = cg_py_wsgi_now_us();
    cg_wsgi_conn_init(&c, fd, l, peer, peer_len, &g->limits, -1);
    Py_BEGIN_ALLOW_THREADS
    st = cg_wsgi_conn_read_head(&c, true);
    Py_END_ALLOW_THREADS
    if (st == CG_WSGI_HEAD_READY) {
        cg_py_wsgi_handle(g, &c, false);
    } else {
        cg_py_wsgi_log_head_error(g, &c, t0);
    }
    Py_BEGIN_ALLOW_THREADS
    cg_wsgi_conn_linger(&c);
    Py_END_ALLOW_THREADS
    cg_wsgi_conn_deinit(&c);
}
