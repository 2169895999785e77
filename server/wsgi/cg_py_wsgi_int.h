/* Declarations shared by the WSGI files (cg_py_wsgi*.c). */
#ifndef CG_PY_WSGI_INT_H
#define CG_PY_WSGI_INT_H

#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cg_http_error.h"
#include "cg_http_iplist.h"
#include "cg_http_limits.h"
#include "cg_http_parser.h"
#include "cg_http_request.h"
#include "cg_http_response.h"
#include "cg_py_wsgi_hold.h"
#include "cg_listen.h"
#include "cg_py_wsgi_conn.h"
#include "cg_py_wsgi.h"
#include "cg_worker.h"

/* environ keys, interned once per worker (owned). */
struct cg_wsgi_keys {
    PyObject *REQUEST_METHOD, *QUERY_STRING, *RAW_URI, *SERVER_PROTOCOL, *CONTENT_TYPE,
        *CONTENT_LENGTH, *wsgi_url_scheme, *REMOTE_ADDR, *REMOTE_PORT, *SERVER_NAME,
        *SERVER_PORT, *PATH_INFO, *SCRIPT_NAME, *PROXY_PROTOCOL, *PROXY_ADDR, *PROXY_PORT,
        *wsgi_input, *gunicorn_socket, *wsgi_early_hints, *early_hints_attr;
};

/* One HTTP response in progress: the protocol side (struct cg_http_response)
 * plus what the glue keeps for Python (the status object for the access log). */
struct cg_wsgi_resp {
    struct cg_wsgi_conn *conn;
    const struct cg_http_request *req;
    struct cg_http_response r;
    PyObject *status; /* the str the app passed; owned; NULL until start_response */
    bool headers_sent;
    bool omits_body_warned;
    int write_errno; /* first send error; the connection is dead after it */
    bool may_hold;   /* the transport can hold back-to-back chunks (plain TCP) */
    bool held;       /* the last send left bytes in the kernel (CG_TRANSPORT_MORE) */
    struct cg_wsgi_hold hold; /* registered with the pause flusher while streaming */
};

struct cg_wsgi {
    struct cg_worker *w;
    const struct cg_conf *conf;
    PyObject *app;           /* borrowed from the worker */
    PyObject *base_environ;  /* template copied per request; owned */
    struct cg_wsgi_keys k;
    PyObject *file_wrapper;   /* cgunicorn.wsgi.FileWrapper; owned */
    PyObject *exc_header;     /* cgunicorn.wsgi.InvalidResponseHeader; owned */
    PyObject *exc_header_name; /* cgunicorn.wsgi.InvalidResponseHeaderName; owned */
    PyObject *socket_type;    /* socket.socket; owned */
    PyObject *tls_socket_type; /* cgunicorn.wsgi.TLSSocket (HTTPS); owned */
    PyObject *access_log;     /* cgunicorn.accesslog.AccessLog or NULL; owned */
    struct cg_http_limits limits;
    struct cg_http_iplist *forwarded_ips; /* owned */
    struct cg_http_iplist *proxy_ips;     /* owned */
    struct cg_http_scheme_header *scheme_headers; /* owned array (strings owned) */
    char script_name[1024]; /* SCRIPT_NAME from the process environment */
    char server_header[64];
    /* Environ values that repeat, made once (cg_py_wsgi_environ.c): the
     * protocol of HTTP/1.1 and 1.0 requests, SERVER_NAME and SERVER_PORT of
     * the last TCP listener seen. All owned, NULL until first needed. */
    PyObject *proto_11, *proto_10;
    const struct cg_listener *srv_l;
    PyObject *srv_name, *srv_port;
};

/* Builds the environ of one request (new reference), or NULL: with a Python
 * exception set, or (no exception) with herr set for a request error such as
 * ConfigurationProblem. Needs the GIL. */
PyObject *cg_py_wsgi_environ(struct cg_wsgi *g, const struct cg_http_request *req,
                             const struct cg_http_proxy_info *proxy, const struct cg_listener *l,
                             const struct sockaddr *peer, struct cg_http_error *herr);

/* The start_response type (cg_py_wsgi_resp.c): one object per request,
 * bound to its response; unbind it when the request ends (an app that kept a
 * reference then gets an error instead of touching freed memory). */
int cg_py_wsgi_resp_type_ready(void);
PyObject *cg_py_wsgi_start_response_new(struct cg_wsgi *g, struct cg_wsgi_resp *resp);
void cg_py_wsgi_start_response_unbind(PyObject *sr);

/* Writes body bytes (sending the head first if needed). Returns 0, or -1 with
 * a Python exception set (the app passed a non-bytes value) — a send error
 * is recorded in resp->write_errno and is not an exception. `more`: the
 * caller goes on with the next part at once (a list's items) or waits for
 * the app with the pause flusher armed (resp->hold, an iterable's chunks),
 * so the bytes may stay in the kernel until then. Needs the GIL. */
int cg_py_wsgi_resp_write(struct cg_wsgi *g, struct cg_wsgi_resp *resp, PyObject *data,
                          bool more);

/* Sends the head if not yet sent and the final empty chunk if chunked, and
 * pushes what held sends left (cg_py_wsgi_resp_unhold). */
void cg_py_wsgi_resp_close(struct cg_wsgi *g, struct cg_wsgi_resp *resp);

/* Pushes what the last held send left in the kernel and leaves the pause
 * flusher (idempotent; also done by cg_py_wsgi_resp_deinit). */
void cg_py_wsgi_resp_unhold(struct cg_wsgi_resp *resp);

/* Sends a wsgi.file_wrapper result with sendfile(2) when possible. Returns 1
 * if it was sent, 0 if the caller must iterate it instead, -1 with an
 * exception. */
int cg_py_wsgi_resp_sendfile(struct cg_wsgi *g, struct cg_wsgi_resp *resp, PyObject *wrapper);

/* Prepares resp for `req` on fd / releases what it holds. */
void cg_py_wsgi_resp_init(struct cg_wsgi *g, struct cg_wsgi_resp *resp, struct cg_wsgi_conn *c,
                          const struct cg_http_request *req);
void cg_py_wsgi_resp_deinit(struct cg_wsgi_resp *resp);

/* The response headers as sent, a list of (name, value) (new reference). */
PyObject *cg_py_wsgi_resp_headers(const struct cg_wsgi_resp *resp);

/* Runs the application for the request parsed on `c` and writes its
 * response. `keepalive`: the worker may reuse the connection (gthread);
 * false forces "Connection: close" (sync). Returns true when the connection
 * can carry the next request (the parser is then ready for it). Needs the
 * GIL. */
bool cg_py_wsgi_handle(struct cg_wsgi *g, struct cg_wsgi_conn *c, bool keepalive);

/* cg_py_wsgi_handle() with environ["gunicorn.socket"] = `sock` (borrowed;
 * the connection's socket object, kept by the caller for the connection's
 * life, as gunicorn's async workers do) instead of one made and detached
 * per request. */
bool cg_py_wsgi_handle_sock(struct cg_wsgi *g, struct cg_wsgi_conn *c, bool keepalive,
                            PyObject *sock);

/* A socket object of the worker's socket type (socket.socket as patched,
 * if it is) on c's fd: new reference, or NULL with an exception. Release
 * it with cg_py_wsgi_socket_release(), which detaches it (the fd stays the
 * connection's). */
PyObject *cg_py_wsgi_socket_new(struct cg_wsgi *g, struct cg_wsgi_conn *c);
void cg_py_wsgi_socket_release(PyObject *sock);

/* After cg_wsgi_conn_read_head() gave HEAD_CLOSE: logs the access line
 * gunicorn logs for a refused request whose head it had read (needs the
 * GIL; `t0` from cg_py_wsgi_now_us() when reading started). */
void cg_py_wsgi_log_head_error(struct cg_wsgi *g, struct cg_wsgi_conn *c, uint64_t t0);

/* Monotonic microseconds, for request durations. */
uint64_t cg_py_wsgi_now_us(void);

/* The request's headers as a list of (NAME, value) str pairs, decoded as
 * latin-1 (new reference), or NULL with an exception. Needs the GIL. */
PyObject *cg_py_wsgi_request_headers(const struct cg_http_request *req);

#endif
