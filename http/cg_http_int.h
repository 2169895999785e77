/* Declarations shared inside http/ only: the growable buffer, the header
 * block rules shared by request heads and chunked trailers, and the
 * body-state codes. */
#ifndef CG_HTTP_INT_H
#define CG_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "cg_http_parser.h"

/* Makes room for `extra` more bytes. Returns 0 or -1 (out of memory). */
int cg_http_buf_reserve(struct cg_http_buf *b, size_t extra);
int cg_http_buf_append(struct cg_http_buf *b, const char *s, size_t n);
void cg_http_buf_free(struct cg_http_buf *b);

/* RFC 9110 tchar. */
bool cg_http_is_tchar(unsigned char c);

/* Parses a header block in place (gunicorn's Message.parse_headers): `block`
 * holds lines separated by CRLF (no final CRLF), already checked for bare
 * LF. Names are upper-cased and values trimmed/joined inside `block`; the
 * kept headers are appended to *arr (grown as needed, pointers into block).
 * from_trailer applies RFC 9110 6.5.1 and skips Expect and scheme headers.
 * Sets p->req.url_scheme / expect_continue for a head. Returns 0, or -1 with
 * p->error set. */
int cg_http_headers_parse(struct cg_http_parser *p, char *block, size_t len, bool from_trailer,
                          struct cg_http_header **arr, size_t *cap, size_t *n);

/* gunicorn's set_body_reader(): Content-Length / Transfer-Encoding rules.
 * Fills p->req body fields. Returns 0, or -1 with p->error set. */
int cg_http_headers_framing(struct cg_http_parser *p);

/* RFC 9112 3.2: one Host header, required in HTTP/1.1, with a host[:port]
 * value. Fails the request (400, InvalidHeader) otherwise. */
int cg_http_headers_host(struct cg_http_parser *p);

/* Body state machine entry points (cg_http_body.c). */
void cg_http_body_begin(struct cg_http_parser *p);
enum cg_http_status cg_http_body_eof(struct cg_http_parser *p);

#endif
