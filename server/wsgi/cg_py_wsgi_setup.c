/* Per-worker WSGI state: interned environ keys, the environ template, the
 * reusable start_response object, parser limits from the settings, and the
 * access log. Built once per worker process after the app is loaded. */
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#include "cg_conf_worker_class.h"
#include "cg_log.h"
#include "cg_py_input.h"
#include "cg_py_logconfig.h"
#include "cg_py_wsgi_int.h"
#include "cg_syslog.h"
#include "cg_transport_tls.h"

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
        K(wsgi_early_hints, "wsgi.early_hints"), K(early_hints_attr, "early_hints"),
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

/* gunicorn.<name> as a config file or the app may have set it (to hide the
 * version, e.g. gunicorn.SERVER_SOFTWARE = "x"), copied into buf; fallback
 * when unset, not a str, or not fit for a header value. */
static void gunicorn_attr(const char *name, const char *fallback, char *buf, size_t n)
{
    PyObject *mod = PyImport_ImportModule("gunicorn");
    PyObject *v = mod != NULL ? PyObject_GetAttrString(mod, name) : NULL;
    const char *u = v != NULL && PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;

    if (u == NULL || strpbrk(u, "\r\n") != NULL || strlen(u) >= n) {
        if (u != NULL) {
            cg_log(CG_LOG_WARNING, "gunicorn.%s is not usable in a header (control "
                                   "characters, or %zu bytes or more); using %s",
                   name, n, fallback);
        }
        u = fallback;
    }
    snprintf(buf, n, "%s", u);
    PyErr_Clear();
    Py_XDECREF(v);
    Py_XDECREF(mod);
}

/* The environ entries that are the same for every request. */
static PyObject *make_base_environ(struct cg_wsgi *g, PyObject *wsgimod)
{
    const struct cg_conf *conf = g->conf;
    PyObject *errors = PyObject_CallMethod(wsgimod, "WSGIErrorsWrapper", "i", cg_log_fd());
    PyObject *base = NULL;
    char software[256];

    if (errors == NULL) {
        return NULL;
    }
    gunicorn_attr("SERVER_SOFTWARE", "gunicorn/" CG_CONF_GUNICORN_VERSION, software, sizeof(software));
    base = Py_BuildValue("{s:N,s:(ii),s:O,s:O,s:O,s:O,s:O,s:s}", "wsgi.errors", errors,
                         "wsgi.version", 1, 0, "wsgi.multithread",
                         conf->worker_class_row->multithread ? Py_True : Py_False,
                         "wsgi.multiprocess", conf->workers > 1 ? Py_True : Py_False,
                         "wsgi.run_once", Py_False, "wsgi.file_wrapper", g->file_wrapper,
                         "wsgi.input_terminated", Py_True, "SERVER_SOFTWARE", software);
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
    l->is_ssl = cg_transport_tls_wanted(conf); /* url_scheme https, ASGI https/wss */
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

/* secure_scheme_headers (a dict of header -> value, kept in the validated
 * values) into the parser's table. */
static int setup_scheme_headers(struct cg_wsgi *g, struct cg_err *err)
{
    PyObject *values = g->conf->values; /* borrowed */
    PyObject *d = values != NULL ? PyDict_GetItemString(values, "secure_scheme_headers")
                                 : NULL; /* borrowed */
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

    if (cg_py_logconfig_active()) { /* the "gunicorn.access" logger, as gunicorn */
        g->access_log = cg_py_logconfig_access_log(conf->access_log_format);
        return g->access_log ? 0 : -1;
    }
    /* gunicorn logs access lines to syslog even without an accesslog. */
    bool to_syslog = cg_syslog_access_on();
    if (conf->accesslog == NULL && !to_syslog) {
        return 0;
    }
    mod = PyImport_ImportModule("cgunicorn.accesslog");
    if (mod == NULL) {
        return -1;
    }
    g->access_log = PyObject_CallMethod(mod, "AccessLog", "szO", conf->access_log_format,
                                        conf->accesslog, to_syslog ? Py_True : Py_False);
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
    gunicorn_attr("SERVER", CG_HTTP_SERVER_DEFAULT, g->server_header, sizeof(g->server_header));
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
    g->tls_socket_type = PyObject_GetAttrString(wsgimod, "TLSSocket");
    if (g->file_wrapper == NULL || g->exc_header == NULL || g->exc_header_name == NULL ||
        g->socket_type == NULL || g->tls_socket_type == NULL) {
        goto pyfail;
    }
    g->base_environ = make_base_environ(g, wsgimod);
    if (g->base_environ == NULL || setup_access_log(g) < 0) {
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
    Py_CLEAR(g->file_wrapper);
    Py_CLEAR(g->exc_header);
    Py_CLEAR(g->exc_header_name);
    Py_CLEAR(g->socket_type);
    Py_CLEAR(g->tls_socket_type);
    Py_CLEAR(g->access_log);
    Py_CLEAR(g->proto_11);
    Py_CLEAR(g->proto_10);
    Py_CLEAR(g->srv_name);
    Py_CLEAR(g->srv_port);
    cg_http_iplist_free(g->forwarded_ips);
    cg_http_iplist_free(g->proxy_ips);
    for (size_t i = 0; g->scheme_headers != NULL && g->scheme_headers[i].name != NULL; i++) {
        free((char *)g->scheme_headers[i].name);
        free((char *)g->scheme_headers[i].value);
    }
    free(g->scheme_headers);
    free(g);
}
