/* The response head of a WSGI/ASGI response, built as gunicorn's
 * http/wsgi.py Response does: status validated (3 digits, optional reason),
 * header names/values validated (never response splitting), hop-by-hop
 * headers dropped (Connection, Keep-Alive, Proxy-Authenticate,
 * Proxy-Authorization, TE, Trailers, Transfer-Encoding, Upgrade except
 * "Upgrade: websocket", and the app's own Server and Date), then
 *
 *   HTTP/<req version> <status>\r\n
 *   Server: <server>\r\n
 *   Date: <RFC 7231 date>\r\n
 *   Connection: upgrade | close | keep-alive\r\n
 *   [Transfer-Encoding: chunked\r\n]
 *   <application headers in order>\r\n
 *   \r\n
 *
 * Chunked is used when the app gave no Content-Length, the request is
 * HTTP/1.1+, and the response may have a body (not HEAD, 1xx, 204, 304).
 * Content-Length is removed on 1xx/204.
 *
 * No I/O: the caller writes cg_http_response_head() and then body pieces
 * framed with cg_http_response_body_take() and the chunk helpers.
 * Thread: any; one response is used by one thread at a time. No GIL. */
#ifndef CG_HTTP_RESPONSE_H
#define CG_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cg_http_error.h"
#include "cg_http_parser.h"

struct cg_http_response {
    /* set by cg_http_response_init() from the request */
    int version_major, version_minor;
    bool is_head;
    bool req_should_close;
    const char *server;        /* borrowed; "gunicorn" by default */

    /* derived */
    bool started;              /* status set */
    int status_code;           /* -1 when the status has no leading integer */
    bool must_close;           /* cg_http_response_force_close() */
    bool upgrade;              /* app sent "Connection: upgrade" */
    bool omits_body;           /* HEAD, 1xx, 204, 304 */
    bool forbids_length;       /* 1xx, 204: Content-Length dropped */
    bool has_length;
    int64_t length;            /* app's Content-Length (may be negative: nothing is sent) */
    bool chunked;              /* decided by cg_http_response_finish_headers() */
    uint64_t sent;             /* body bytes accounted by cg_http_response_body_take() */

    char *status;              /* owned copy of the status, NUL-terminated */
    size_t status_len;
    char *hdrs;                /* owned: app headers as "Name: value\r\n" lines */
    size_t hdrs_len, hdrs_cap;
    char *head;                /* owned: formatted head */
    size_t head_len, head_cap;
};

/* gunicorn's Server header value (gunicorn.SERVER). */
#define CG_HTTP_SERVER_DEFAULT "gunicorn"

/* Prepares a response to `req` (version, HEAD, should_close taken from it;
 * req may be NULL for HTTP/1.1 GET keep-alive). `server` is the Server
 * header value, borrowed until cg_http_response_deinit(); NULL means
 * CG_HTTP_SERVER_DEFAULT. Never fails. */
void cg_http_response_init(struct cg_http_response *r, const struct cg_http_request *req,
                           const char *server);

/* Frees the response's buffers. Safe to call twice. */
void cg_http_response_deinit(struct cg_http_response *r);

/* Forgets status and headers (for start_response with exc_info before the
 * head was sent); keeps version, method, server and must_close. */
void cg_http_response_reset(struct cg_http_response *r);

/* Sets the status ("200 OK"). Must match gunicorn's STATUS_RE:
 * 3 digits, then optionally one SP and SP/HTAB/VCHAR/obs-text. Returns 0, or
 * -1 with err kind CG_HTTP_ERR_VALUE "Invalid status '...'" (the glue raises
 * ValueError) or CG_HTTP_ERR_INTERNAL (out of memory). */
int cg_http_response_start(struct cg_http_response *r, const char *status, size_t len,
                           struct cg_http_error *err);

/* Adds one application header, in order (call after _start). The name must
 * be a token, the value SP/HTAB/VCHAR/obs-text only (bytes; the glue encodes
 * str to latin-1 and reports characters > U+00FF as an invalid value).
 * Returns 0, or -1 with err: INVALID_RESPONSE_HEADER_NAME "'Bad Name'",
 * INVALID_RESPONSE_HEADER "'X-Name'" (the name only: the value may be
 * secret), VALUE for a Content-Length that is not an integer, INTERNAL. */
int cg_http_response_add_header(struct cg_http_response *r, const char *name, size_t name_len,
                                const char *value, size_t value_len, struct cg_http_error *err);

/* The connection must close after this response (sync worker, max_requests,
 * shutdown). */
void cg_http_response_force_close(struct cg_http_response *r);

/* gunicorn's Response.should_close(). Valid after _start. */
bool cg_http_response_should_close(const struct cg_http_response *r);

/* Formats the head (decides chunked; Date from cg_http_date_now()). Returns
 * 0 with *out, *len pointing into r (valid until the next call on r), or -1
 * with err INTERNAL (out of memory). */
int cg_http_response_head(struct cg_http_response *r, const char **out, size_t *len,
                          struct cg_http_error *err);

/* How many of the next `n` application body bytes go on the wire: 0 when the
 * response omits the body or Content-Length bytes were already sent, else
 * n capped to the rest of Content-Length. Counts them as sent. A chunked
 * response must not write a 0-length chunk (it would end the body): skip
 * writing when this returns 0. */
size_t cg_http_response_body_take(struct cg_http_response *r, size_t n);

/* Chunk framing: "<HEX>\r\n" before n bytes of data (upper-case hex, as
 * gunicorn), "\r\n" after, and CG_HTTP_CHUNK_LAST once at the end. Writes
 * into buf (CG_HTTP_CHUNK_PREFIX_MAX bytes) and returns the length. */
#define CG_HTTP_CHUNK_PREFIX_MAX 20
#define CG_HTTP_CHUNK_SUFFIX "\r\n"
#define CG_HTTP_CHUNK_LAST "0\r\n\r\n"
size_t cg_http_chunk_prefix(char *buf, uint64_t n);

/* Interim response for Expect: 100-continue (gunicorn writes this exact
 * line whatever the request's minor version). */
#define CG_HTTP_CONTINUE_RESPONSE "HTTP/1.1 100 Continue\r\n\r\n"

/* RFC 9110 token check (gunicorn's TOKEN_RE). Exposed for the WSGI glue. */
bool cg_http_is_token(const char *s, size_t len);

/* Whether a header value has only SP/HTAB/VCHAR/obs-text (gunicorn's
 * HEADER_VALUE_RE). */
bool cg_http_is_field_value(const char *s, size_t len);

#endif
