/* Request errors, one kind per gunicorn exception class
 * (gunicorn/http/errors.py), with the HTTP answer gunicorn's
 * Worker.handle_error() gives for it (status, reason, message) and the
 * exact error page util.write_error() sends.
 *
 * A struct cg_http_error is plain data (no pointers): copy it freely. */
#ifndef CG_HTTP_ERROR_H
#define CG_HTTP_ERROR_H

#include <stddef.h>

enum cg_http_error_kind {
    CG_HTTP_ERR_NONE = 0,
    /* The peer closed the connection in the middle of a request (NoMoreData).
     * No response: the worker just closes (gunicorn logs it at debug). */
    CG_HTTP_ERR_NO_MORE_DATA,
    CG_HTTP_ERR_INVALID_REQUEST_LINE,     /* 400 */
    CG_HTTP_ERR_INVALID_REQUEST_METHOD,   /* 400 */
    CG_HTTP_ERR_INVALID_HTTP_VERSION,     /* 400 */
    CG_HTTP_ERR_INVALID_HEADER,           /* 400 */
    CG_HTTP_ERR_INVALID_HEADER_NAME,      /* 400 */
    CG_HTTP_ERR_OBSOLETE_FOLDING,         /* 400 */
    CG_HTTP_ERR_LIMIT_REQUEST_LINE,       /* 414 URI Too Long */
    CG_HTTP_ERR_LIMIT_REQUEST_HEADERS,    /* 431 Request Header Fields Too Large */
    CG_HTTP_ERR_EXPECTATION_FAILED,       /* 417 */
    CG_HTTP_ERR_INVALID_CHUNK_SIZE,       /* 400 */
    CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR, /* 400 */
    CG_HTTP_ERR_INVALID_CHUNK_EXTENSION,  /* 400 */
    CG_HTTP_ERR_INVALID_PROXY_LINE,       /* 400 (PROXY v1) */
    /* PROXY v2 header error. gunicorn's handle_error() does not list this
     * class, so it answers 500 with an empty message; we do the same. */
    CG_HTTP_ERR_INVALID_PROXY_HEADER,
    CG_HTTP_ERR_FORBIDDEN_PROXY_REQUEST,  /* 403 */
    CG_HTTP_ERR_INVALID_SCHEME_HEADERS,   /* 400 */
    CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING, /* 501 (reason stays "Bad Request", as gunicorn) */
    CG_HTTP_ERR_CONFIGURATION_PROBLEM,    /* 500 */
    /* Response-side errors: the application's fault, answered with 500. */
    CG_HTTP_ERR_INVALID_RESPONSE_HEADER,      /* value with CR/LF/NUL/... */
    CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME, /* name not an RFC 9110 token */
    /* A value the application passed is malformed where gunicorn raises a
     * plain ValueError (bad status line, non-integer Content-Length): the
     * WSGI glue raises ValueError(detail) into the application. */
    CG_HTTP_ERR_VALUE,
    /* Out of memory and other server faults: 500, empty message (gunicorn's
     * answer to any unexpected exception). */
    CG_HTTP_ERR_INTERNAL,
    CG_HTTP_ERR__COUNT
};

/* detail holds str(exception) as gunicorn builds it, e.g.
 * "Invalid HTTP request line: 'GET HTTP/1.1'"; the offending input is quoted
 * the way Python's repr() quotes it, cut (with "...") when very long. Text is
 * latin-1: bytes >= 0x80 stand for the latin-1 characters, as in gunicorn. */
#define CG_HTTP_ERROR_DETAIL_MAX 1024

struct cg_http_error {
    enum cg_http_error_kind kind;
    char detail[CG_HTTP_ERROR_DETAIL_MAX];
};

/* gunicorn's class name, e.g. "InvalidRequestLine"; "NoError" for NONE. */
const char *cg_http_error_name(enum cg_http_error_kind kind);

/* Status code of the error page (400, 414, 431, ...); 0 for NONE and
 * NO_MORE_DATA, which get no response. */
int cg_http_error_status(enum cg_http_error_kind kind);

/* Reason phrase of the error page ("Bad Request", "URI Too Long", ...). */
const char *cg_http_error_reason(enum cg_http_error_kind kind);

/* The message gunicorn puts in the error page (before HTML escaping), e.g.
 * "Invalid Request Line 'Invalid HTTP request line: ''GET HTTP/1.1'''" or
 * "Error parsing headers: 'limit request headers fields'". Its length is what
 * gunicorn logs as the response length in the access log. Writes at most
 * cap bytes including the NUL; returns the full length. */
size_t cg_http_error_message(const struct cg_http_error *e, char *buf, size_t cap);

/* Upper bound of a formatted error response (head + HTML page). */
#define CG_HTTP_ERROR_RESPONSE_MAX 8192

/* Formats the complete response gunicorn's util.write_error() sends:
 *   HTTP/1.1 <status> <reason>\r\nConnection: close\r\nContent-Type: text/html\r\n
 *   Content-Length: N\r\n\r\n<html>...</html>\n
 * into buf (cap >= CG_HTTP_ERROR_RESPONSE_MAX always suffices). Returns its
 * length, or 0 when the kind gets no response (NONE, NO_MORE_DATA). */
size_t cg_http_error_format_response(const struct cg_http_error *e, char *buf, size_t cap);

/* Sets e->kind and e->detail (printf-style). */
void cg_http_error_set(struct cg_http_error *e, enum cg_http_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends Python's repr() of `s` (len bytes) to buf (of size cap, holding a
 * NUL-terminated string): as a str decoded from latin-1 when as_bytes is 0
 * ('abc'), as bytes when 1 (b'abc'). Inputs longer than 256 bytes are cut and
 * marked "...". Used to build details; exposed for tests. */
void cg_http_error_repr(char *buf, size_t cap, const char *s, size_t len, int as_bytes);

#endif
