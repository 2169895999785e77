/* A parsed HTTP/1.x request head, as gunicorn's Request object holds it:
 * method, raw URI and its parts (split like gunicorn's
 * util.split_request_uri, i.e. urllib.parse.urlsplit), version, headers in
 * order as (UPPERCASED-NAME, value), and the body framing it announced.
 *
 * Ownership: a request is filled and owned by its struct cg_http_parser.
 * Every span points into the parser's per-request memory and is valid until
 * the parser starts the next request (cg_http_parser_next()) or is
 * deinitialized; copy what must live longer. Every span is NUL-terminated
 * (ptr[len] == '\0'), but may contain other NULs only where noted. Text is
 * the raw latin-1 bytes the client sent (WSGI decodes them as latin-1). */
#ifndef CG_HTTP_REQUEST_H
#define CG_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cg_http_span {
    const char *ptr;
    size_t len;
};

struct cg_http_header {
    struct cg_http_span name;   /* upper-cased RFC 9110 token */
    struct cg_http_span value;  /* SP/HTAB trimmed; folded lines joined with one SP */
};

enum cg_http_body_kind {
    CG_HTTP_BODY_NONE = 0,  /* no Content-Length, no Transfer-Encoding: empty body */
    CG_HTTP_BODY_LENGTH,    /* Content-Length: content_length bytes */
    CG_HTTP_BODY_CHUNKED,   /* Transfer-Encoding ending in chunked */
};

struct cg_http_request {
    struct cg_http_span method;     /* upper-cased when casefold_http_method */
    struct cg_http_span uri;        /* raw request-target, e.g. "/a/b?x=1#f" */
    struct cg_http_span uri_scheme; /* urlsplit scheme, lower-cased: "http" in absolute form, "" usually */
    struct cg_http_span uri_netloc; /* urlsplit netloc: "user@host:8080" in absolute form, "" usually */
    struct cg_http_span path;       /* "" when absent */
    struct cg_http_span query;      /* without "?" */
    struct cg_http_span fragment;   /* without "#" */
    int version_major;              /* 1 (other digits with permit_unconventional_http_version) */
    int version_minor;

    const struct cg_http_header *headers; /* n_headers, in arrival order */
    size_t n_headers;
    /* Trailer fields of a chunked body; set once the body ended
     * (CG_HTTP_BODY_DONE), empty before. */
    const struct cg_http_header *trailers;
    size_t n_trailers;

    enum cg_http_body_kind body_kind;
    uint64_t content_length;        /* CG_HTTP_BODY_LENGTH only */

    /* "http" or "https" (static strings): https when the listener is TLS or
     * a trusted peer sent a matching secure_scheme_headers header; or the
     * parser's scheme (cg_http_parser_set_scheme: an HTTP/2 :scheme). */
    const char *url_scheme;
    /* Transfer-Encoding had gzip/deflate/compress: the connection closes
     * after this request (gunicorn's force_close()). */
    bool must_close;
    /* "Expect: 100-continue" on HTTP/1.1+: send "HTTP/1.1 100 Continue\r\n\r\n"
     * before the first body read (gunicorn ignores it on HTTP/1.0). */
    bool expect_continue;
    /* An "Upgrade" header and "upgrade" among the first Connection
     * header's tokens (WebSocket handshake). */
    bool upgrade;
    /* 1 for the first request of the connection, then 2, 3, ... */
    unsigned req_number;
};

/* gunicorn's Message.should_close(): true when must_close, for CONNECT, when
 * the first Connection header is "close" (case-insensitive), or on HTTP/1.0
 * unless that header is "keep-alive". */
bool cg_http_request_should_close(const struct cg_http_request *req);

/* Whether a field (upper-case name) is one RFC 9110 6.5.1 forbids in
 * trailers: Host, Content-Length, Transfer-Encoding, Trailer,
 * Authorization, TE. */
bool cg_http_forbidden_in_trailer(const char *upper_name, size_t n);

/* Whether the comma-separated field value `list` (e.g. Connection) has
 * the token `tok`, compared without case, SP/HTAB around items ignored. */
bool cg_http_list_has(const struct cg_http_span *list, const char *tok);

/* The first header named `upper_name` (e.g. "CONTENT-TYPE"), or NULL. */
const struct cg_http_span *cg_http_request_header(const struct cg_http_request *req,
                                                  const char *upper_name);

/* Splits a request-target like gunicorn's util.split_request_uri() (Python
 * 3.11 urllib.parse.urlsplit, with "//x" kept as a path). Outputs are spans
 * into `uri` (not NUL-terminated). Returns 0, or -1 when urlsplit raises
 * ValueError (unbalanced "[" "]" in the netloc, or a bracketed host that is
 * not an IPv6 address / IPvFuture). */
struct cg_http_uri_parts {
    struct cg_http_span scheme, netloc, path, query, fragment;
};
int cg_http_uri_split(const char *uri, size_t len, struct cg_http_uri_parts *out);

#endif
