/* Builds the WSGI environ for a parsed request exactly as gunicorn's
 * http/wsgi.py create() does: base entries copied from a per-worker template
 * dict, then method/URI/protocol, headers (repeated ones joined with ","),
 * CONTENT_TYPE/CONTENT_LENGTH, SCRIPT_NAME/PATH_INFO (percent-decoded,
 * latin-1), SERVER_NAME/PORT from the listener (or Host for unix sockets),
 * REMOTE_ADDR/PORT, the scheme and PROXY protocol entries. Keys are interned
 * once per worker. */
#include <Python.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "cg_py_wsgi_int.h"

static PyObject *latin1(const char *p, size_t n)
{
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

/* Sets environ[key] = latin1(p, n); key is borrowed. */
static int set_span(PyObject *env, PyObject *key, const char *p, size_t n)
{
    PyObject *v = latin1(p, n);
    if (v == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(env, key, v);
    Py_DECREF(v);
    return rc;
}

static int set_cstr(PyObject *env, PyObject *key, const char *s)
{
    return set_span(env, key, s, strlen(s));
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* urllib.parse.unquote_to_bytes(path).decode('latin-1'): %XX with two hex
 * digits is decoded, anything else is kept as is. */
static PyObject *unquote_latin1(const char *p, size_t n)
{
    char small[512];
    char *buf = n <= sizeof(small) ? small : PyMem_Malloc(n);
    size_t o = 0;

    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 &&
            hexval(p[i + 2]) >= 0) {
            buf[o++] = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;
        } else {
            buf[o++] = p[i];
        }
    }
    PyObject *s = latin1(buf, o);
    if (buf != small) {
        PyMem_Free(buf);
    }
    return s;
}

/* "HTTP_" + name with '-' -> '_' (names are already upper-case). New ref. */
static PyObject *header_key(const struct cg_http_span *name)
{
    char small[256];
    size_t n = name->len + 5;
    char *buf = n <= sizeof(small) ? small : PyMem_Malloc(n);

    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(buf, "HTTP_", 5);
    for (size_t i = 0; i < name->len; i++) {
        buf[5 + i] = name->ptr[i] == '-' ? '_' : name->ptr[i];
    }
    PyObject *k = latin1(buf, n);
    if (buf != small) {
        PyMem_Free(buf);
    }
    if (k != NULL) {
        PyUnicode_InternInPlace(&k);
    }
    return k;
}

static bool span_is(const struct cg_http_span *s, const char *lit)
{
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/* Adds HTTP_* entries, joining repeated headers with "," as gunicorn does
 * (first value, then the others in order). */
static int add_headers(struct cg_wsgi *g, PyObject *env, const struct cg_http_request *req,
                       const struct cg_http_span **host, const struct cg_http_span **script)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (span_is(&h->name, "HOST")) {
            *host = &h->value;
        } else if (span_is(&h->name, "SCRIPT_NAME")) {
            *script = &h->value;
        } else if (span_is(&h->name, "CONTENT-TYPE")) {
            if (set_span(env, g->k.CONTENT_TYPE, h->value.ptr, h->value.len) < 0) {
                return -1;
            }
            continue;
        } else if (span_is(&h->name, "CONTENT-LENGTH")) {
            if (set_span(env, g->k.CONTENT_LENGTH, h->value.ptr, h->value.len) < 0) {
                return -1;
            }
            continue;
        }
        PyObject *key = header_key(&h->name);
        PyObject *val = key ? latin1(h->value.ptr, h->value.len) : NULL;
        int rc = -1;
        if (val != NULL) {
            PyObject *old = PyDict_GetItemWithError(env, key); /* borrowed */
            if (old != NULL) {
                PyObject *joined = PyUnicode_FromFormat("%U,%U", old, val);
                rc = joined ? PyDict_SetItem(env, key, joined) : -1;
                Py_XDECREF(joined);
            } else if (!PyErr_Occurred()) {
                rc = PyDict_SetItem(env, key, val);
            }
        }
        Py_XDECREF(key);
        Py_XDECREF(val);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* SERVER_PROTOCOL: "HTTP/1.1" and "HTTP/1.0" made once, others per request. */
static int add_protocol(struct cg_wsgi *g, PyObject *env, const struct cg_http_request *req)
{
    PyObject **cached = req->version_major != 1     ? NULL
                        : req->version_minor == 1 ? &g->proto_11
                        : req->version_minor == 0 ? &g->proto_10
                                                   : NULL;
    if (cached != NULL && *cached != NULL) {
        return PyDict_SetItem(env, g->k.SERVER_PROTOCOL, *cached);
    }
    PyObject *v = PyUnicode_FromFormat("HTTP/%d.%d", req->version_major, req->version_minor);
    if (v == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(env, g->k.SERVER_PROTOCOL, v);
    if (cached != NULL) {
        *cached = v; /* keeps the reference */
    } else {
        Py_DECREF(v);
    }
    return rc;
}

/* REMOTE_ADDR/REMOTE_PORT from the accepted peer (unix peers: "" only). */
static int add_remote(struct cg_wsgi *g, PyObject *env, const struct sockaddr *peer)
{
    char host[INET6_ADDRSTRLEN] = "";
    int port = -1;

    if (peer != NULL && peer->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
    } else if (peer != NULL && peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
    }
    if (set_cstr(env, g->k.REMOTE_ADDR, host) < 0) {
        return -1;
    }
    if (port >= 0) {
        char pbuf[16];
        snprintf(pbuf, sizeof(pbuf), "%d", port);
        return set_cstr(env, g->k.REMOTE_PORT, pbuf);
    }
    return 0;
}

/* SERVER_NAME/SERVER_PORT: the listener's bound address for TCP; for unix
 * sockets the Host header (port from it, else 80/443 by scheme), as gunicorn. */
static int add_server(struct cg_wsgi *g, PyObject *env, const struct cg_listener *l,
                      const struct cg_http_span *host, const char *scheme)
{
    if (l->family != AF_UNIX) {
        if (g->srv_l != l) { /* the same two strings for every request on l */
            Py_CLEAR(g->srv_name);
            Py_CLEAR(g->srv_port);
            g->srv_l = NULL;
            g->srv_name = PyUnicode_FromString(l->host);
            g->srv_port = g->srv_name ? PyUnicode_FromFormat("%d", l->port) : NULL;
            if (g->srv_port == NULL) {
                return -1;
            }
            g->srv_l = l;
        }
        return PyDict_SetItem(env, g->k.SERVER_NAME, g->srv_name) < 0
                   ? -1
                   : PyDict_SetItem(env, g->k.SERVER_PORT, g->srv_port);
    }
    if (host == NULL) {
        /* gunicorn splits the socket path on ":"; a path without ":" gives
         * SERVER_NAME = path and SERVER_PORT = "". */
        const char *colon = strchr(l->unix_path, ':');
        if (colon == NULL) {
            return set_cstr(env, g->k.SERVER_NAME, l->unix_path) < 0
                       ? -1
                       : set_cstr(env, g->k.SERVER_PORT, "");
        }
        const char *second = strchr(colon + 1, ':');
        size_t plen = second ? (size_t)(second - colon - 1) : strlen(colon + 1);
        return set_span(env, g->k.SERVER_NAME, l->unix_path, (size_t)(colon - l->unix_path)) < 0
                   ? -1
                   : set_span(env, g->k.SERVER_PORT, colon + 1, plen);
    }
    const char *c = memchr(host->ptr, ':', host->len);
    if (c == NULL) {
        const char *dflt = strcmp(scheme, "https") == 0 ? "443"
                           : strcmp(scheme, "http") == 0 ? "80"
                                                          : "";
        return set_span(env, g->k.SERVER_NAME, host->ptr, host->len) < 0
                   ? -1
                   : set_cstr(env, g->k.SERVER_PORT, dflt);
    }
    size_t nlen = (size_t)(c - host->ptr);
    const char *rest = c + 1;
    size_t rlen = host->len - nlen - 1;
    const char *c2 = memchr(rest, ':', rlen);
    if (c2 != NULL) {
        rlen = (size_t)(c2 - rest);
    }
    return set_span(env, g->k.SERVER_NAME, host->ptr, nlen) < 0
               ? -1
               : set_span(env, g->k.SERVER_PORT, rest, rlen);
}

static int add_proxy(struct cg_wsgi *g, PyObject *env, const struct cg_http_proxy_info *pi)
{
    char port[16];

    if (pi == NULL || !pi->present) {
        return 0;
    }
    if (set_cstr(env, g->k.PROXY_PROTOCOL, pi->protocol) < 0) {
        return -1;
    }
    if (!pi->has_addr) {
        /* gunicorn stores None for LOCAL/UNSPEC addresses. */
        if (PyDict_SetItem(env, g->k.REMOTE_ADDR, Py_None) < 0 ||
            PyDict_SetItem(env, g->k.PROXY_ADDR, Py_None) < 0) {
            return -1;
        }
        PyObject *none_str = PyUnicode_FromString("None");
        int rc = none_str ? PyDict_SetItem(env, g->k.REMOTE_PORT, none_str) |
                                PyDict_SetItem(env, g->k.PROXY_PORT, none_str)
                          : -1;
        Py_XDECREF(none_str);
        return rc;
    }
    if (set_cstr(env, g->k.REMOTE_ADDR, pi->client_addr) < 0) {
        return -1;
    }
    snprintf(port, sizeof(port), "%d", pi->client_port);
    if (set_cstr(env, g->k.REMOTE_PORT, port) < 0 ||
        set_cstr(env, g->k.PROXY_ADDR, pi->proxy_addr) < 0) {
        return -1;
    }
    snprintf(port, sizeof(port), "%d", pi->proxy_port);
    return set_cstr(env, g->k.PROXY_PORT, port);
}

PyObject *cg_py_wsgi_environ(struct cg_wsgi *g, const struct cg_http_request *req,
                             const struct cg_http_proxy_info *proxy, const struct cg_listener *l,
                             const struct sockaddr *peer, struct cg_http_error *herr)
{
    const struct cg_http_span *host = NULL, *script_hdr = NULL;
    PyObject *env = PyDict_Copy(g->base_environ); /* owned */

    if (env == NULL) {
        return NULL;
    }
    if (set_span(env, g->k.REQUEST_METHOD, req->method.ptr, req->method.len) < 0 ||
        set_span(env, g->k.QUERY_STRING, req->query.ptr, req->query.len) < 0 ||
        set_span(env, g->k.RAW_URI, req->uri.ptr, req->uri.len) < 0 ||
        add_protocol(g, env, req) < 0 ||
        add_headers(g, env, req, &host, &script_hdr) < 0 ||
        set_cstr(env, g->k.wsgi_url_scheme, req->url_scheme) < 0 ||
        add_remote(g, env, peer) < 0 || add_server(g, env, l, host, req->url_scheme) < 0) {
        goto fail;
    }
    const char *script = g->script_name;
    size_t slen = strlen(script);
    if (script_hdr != NULL) {
        script = script_hdr->ptr;
        slen = script_hdr->len;
    }
    const char *path = req->path.ptr;
    size_t plen = req->path.len;
    if (slen > 0) {
        if (plen < slen || memcmp(path, script, slen) != 0) {
            char pr[300] = "", sr[300] = "";
            cg_http_error_repr(pr, sizeof(pr), path, plen, 0);
            cg_http_error_repr(sr, sizeof(sr), script, slen, 0);
            cg_http_error_set(herr, CG_HTTP_ERR_CONFIGURATION_PROBLEM,
                              "Configuration problem: Request path %s does not start with "
                              "SCRIPT_NAME %s", pr, sr);
            Py_DECREF(env);
            return NULL;
        }
        path += slen;
        plen -= slen;
    }
    PyObject *pi = unquote_latin1(path, plen);
    if (pi == NULL || PyDict_SetItem(env, g->k.PATH_INFO, pi) < 0) {
        Py_XDECREF(pi);
        goto fail;
    }
    Py_DECREF(pi);
    if (set_span(env, g->k.SCRIPT_NAME, script, slen) < 0 || add_proxy(g, env, proxy) < 0) {
        goto fail;
    }
    return env;
fail:
    Py_DECREF(env);
    return NULL;
}
