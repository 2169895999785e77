/* The HTTP/1.x request parser of one connection: incremental, no I/O.
 *
 * The caller reads bytes from the socket (blocking in the sync worker, from
 * a libevent callback in gthread/asgi) and feeds them; the parser never
 * reads, writes or blocks, so it works the same for both. It enforces
 * gunicorn 27's request rules (gunicorn/http/message.py, body.py) under the
 * settings in struct cg_http_limits; gunicorn's request corpus (mk/corpus.py
 * builds it from the pinned release) is its yardstick.
 *
 * Implementation note: the head is parsed by our own scanner, not llhttp.
 * gunicorn's rules differ from llhttp's on purpose in many places (any token
 * is a method, "Transfer-Encoding: gzip, chunked", obs-fold joining,
 * strip_header_spaces, its chunk-extension grammar, header_map), and
 * llhttp 8.1 cannot parse methods outside its fixed table at all.
 *
 * Life of a connection:
 *
 *   cg_http_parser_init(&p, &limits, peer_addr);
 *   for (;;) {
 *       st = cg_http_parser_head(&p, in, n, &used);    // until HEAD_DONE
 *       ... NEED_MORE: all n bytes were taken, read more and call again
 *       ... HEAD_DONE: req = cg_http_parser_request(&p); in+used is body/next request
 *       ... ERROR: cg_http_parser_error(&p); answer with
 *                  cg_http_error_format_response() and close
 *       st = cg_http_parser_body(&p, in, n, &used, max, &data, &dlen);  // until BODY_DONE
 *       ... BODY_DATA: dlen (>0, <= max) decoded bytes at data, which points
 *                      into `in`; `used` input bytes were taken
 *       ... NEED_MORE: all n bytes taken (n may be 0 on the first call)
 *       ... BODY_DONE: message complete; in+used is the next request
 *       if (cg_http_request_should_close(req)) close;
 *       cg_http_parser_next(&p);   // forget the request, expect the next one
 *   }
 *   on EOF from the peer: st = cg_http_parser_eof(&p):
 *       CG_HTTP_EOF (clean close between requests) or ERROR (NoMoreData,
 *       ChunkMissingTerminator: truncated message).
 *   cg_http_parser_deinit(&p);
 *
 * Bytes the parser did not take (after HEAD_DONE/BODY_DONE, or after
 * BODY_DATA) stay the caller's and must be fed again in the next call:
 * that is how pipelining works. The body is never buffered: decoded bytes
 * are spans into the caller's input (the parser only keeps an incomplete
 * chunk-size line or trailer section, bounded by the limits).
 *
 * Not thread-safe: one parser is used by one thread at a time. No GIL needed,
 * no Python. Errors are sticky: after ERROR every call returns ERROR. */
#ifndef CG_HTTP_PARSER_H
#define CG_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cg_http_error.h"
#include "cg_http_limits.h"
#include "cg_http_proxy.h"
#include "cg_http_request.h"

enum cg_http_status {
    CG_HTTP_NEED_MORE = 0, /* all input taken; feed more */
    CG_HTTP_HEAD_DONE,     /* cg_http_parser_request() is ready */
    CG_HTTP_BODY_DATA,     /* decoded body bytes returned */
    CG_HTTP_BODY_DONE,     /* end of this message's body (trailers parsed) */
    CG_HTTP_EOF,           /* peer closed cleanly before a new request */
    CG_HTTP_ERROR,         /* see cg_http_parser_error() */
};

/* Internal growable byte buffer (head copy, trailers, partial lines). */
struct cg_http_buf {
    char *data;
    size_t len;
    size_t cap;
};

enum cg_http_parser_state {
    CG_HTTP_PS_PROXY,   /* waiting for a PROXY header (first request only) */
    CG_HTTP_PS_HEAD,    /* reading request line and headers */
    CG_HTTP_PS_BODY,    /* request ready; body being decoded */
    CG_HTTP_PS_DONE,    /* body ended; waiting for cg_http_parser_next() */
    CG_HTTP_PS_ERROR,
};

/* Everything below is private to the parser; the struct is public only so a
 * caller can embed it (no allocation per connection). */
struct cg_http_parser {
    const struct cg_http_limits *limits;
    struct cg_http_limits_effective eff;
    struct sockaddr_storage peer;
    bool peer_is_ip;            /* AF_INET/AF_INET6: allow-lists apply */
    char peer_ip[46];
    bool proxy_allowed;
    bool forwarded_trusted;
    const char *scheme;         /* url_scheme each request starts with; NULL: from is_ssl */

    enum cg_http_parser_state state;
    struct cg_http_error error;
    bool error_has_request;     /* the error came after the head was read */
    struct cg_http_proxy_info proxy;
    unsigned req_count;

    /* head */
    struct cg_http_buf head;    /* copy of this request's head, then its derived strings */
    size_t line_start;          /* offset in head of the incomplete line */
    int head_phase;
    size_t reqline_off, reqline_len;
    size_t hdrs_off;            /* offset of the first header line */
    bool head_seen_bytes;       /* any byte of this request arrived */

    struct cg_http_request req;
    struct cg_http_header *hdrs;
    size_t hdrs_cap;

    /* body */
    int body_state;
    uint64_t remaining;         /* bytes left in the body or current chunk */
    struct cg_http_buf line;    /* incomplete chunk-size line / chunk CRLF */
    struct cg_http_buf trail;   /* trailer section */
    size_t trail_line_start;    /* offset in trail of the incomplete line */
    struct cg_http_header *trls;
    size_t trls_cap;
};

/* Prepares `p` for a new connection. `limits` must outlive the parser.
 * `peer` is the client address (AF_INET/AF_INET6), or NULL / AF_UNIX for a
 * Unix socket, which gunicorn trusts for PROXY and forwarded headers. Never
 * fails (allocation happens lazily). */
void cg_http_parser_init(struct cg_http_parser *p, const struct cg_http_limits *limits,
                         const struct sockaddr *peer);

/* Whether the peer is in forwarded_allow_ips (a Unix socket peer is). */
bool cg_http_parser_peer_trusted(const struct cg_http_parser *p);

/* Makes `scheme` the url_scheme requests start with, before the trusted
 * secure_scheme_headers apply (HTTP/2: a trusted proxy's :scheme, as
 * gunicorn's HTTP2Request). `scheme` is borrowed and must outlive the
 * parser. Call before the first head byte is fed. */
void cg_http_parser_set_scheme(struct cg_http_parser *p, const char *scheme);

/* Frees what the parser allocated; the request's spans die with it. */
void cg_http_parser_deinit(struct cg_http_parser *p);

/* Feeds head bytes (state HEAD or PROXY). Returns NEED_MORE (*consumed == len),
 * HEAD_DONE (*consumed <= len: the rest is body or the next request) or ERROR.
 * An allocation failure is ERROR with kind CG_HTTP_ERR_INTERNAL (a 500). */
enum cg_http_status cg_http_parser_head(struct cg_http_parser *p, const char *in, size_t len,
                                        size_t *consumed);

/* Decodes body bytes (state BODY). Returns BODY_DATA with at most `max`
 * (>0) bytes in *data, *data_len (pointing into `in`), NEED_MORE, BODY_DONE or
 * ERROR (InvalidChunkSize, InvalidChunkExtension, ChunkMissingTerminator,
 * InvalidHeader/InvalidHeaderName/LimitRequestHeaders in trailers). Call it
 * with len == 0 right after HEAD_DONE to learn that an empty body is done.
 * In every case *consumed input bytes were taken. */
enum cg_http_status cg_http_parser_body(struct cg_http_parser *p, const char *in, size_t len,
                                        size_t *consumed, size_t max, const char **data,
                                        size_t *data_len);

/* The peer closed its side. Returns CG_HTTP_EOF when no byte of a new request
 * had arrived (gunicorn's StopIteration), BODY_DONE if the body was already
 * complete, else ERROR: NoMoreData (truncated head, chunk or Content-Length
 * body — gunicorn's wsgi.input just returns the short body then b"" there),
 * ChunkMissingTerminator (truncated chunk CRLF or trailer section). */
enum cg_http_status cg_http_parser_eof(struct cg_http_parser *p);

/* After BODY_DONE: forgets the request (its spans become invalid) and waits
 * for the next one on the same connection. Returns 0, or -1 if the state is
 * not DONE (programmer error). */
int cg_http_parser_next(struct cg_http_parser *p);

/* The current request: valid from HEAD_DONE until cg_http_parser_next() /
 * deinit; NULL before HEAD_DONE. */
const struct cg_http_request *cg_http_parser_request(const struct cg_http_parser *p);

/* The error after ERROR (kind CG_HTTP_ERR_NONE otherwise). */
const struct cg_http_error *cg_http_parser_error(const struct cg_http_parser *p);

/* After ERROR: the request whose head was read when the error was found
 * (gunicorn raises those errors with req=self, and logs an access line for
 * them), or NULL when the head itself was malformed. */
const struct cg_http_request *cg_http_parser_error_request(const struct cg_http_parser *p);

/* The PROXY header of this connection, or NULL if none was received. Valid
 * for every request of the connection. */
const struct cg_http_proxy_info *cg_http_parser_proxy_info(const struct cg_http_parser *p);

/* Whether the body of the current request was entirely read (state DONE):
 * a keep-alive connection may only be reused then (drain it otherwise). */
/* Whether the current request still has body bytes to come from the client
 * (not yet decoded): false when it has no body or the body was all read. */
bool cg_http_parser_body_pending(const struct cg_http_parser *p);

bool cg_http_parser_body_done(const struct cg_http_parser *p);

#endif
