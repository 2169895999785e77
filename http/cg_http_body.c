/* The body half of the connection parser: Content-Length and chunked
 * decoding as a state machine over the caller's bytes (gunicorn's
 * LengthReader, ChunkedReader and parse_trailers in gunicorn/http/body.py).
 * Decoded data is returned as spans of the input, never copied; only an
 * incomplete chunk-size line, chunk CRLF or trailer section is kept. */
#include <stdio.h>
#include <string.h>

#include "cg_http_int.h"

enum body_state {
    B_LENGTH,   /* Content-Length bytes left in p->remaining */
    B_SIZE,     /* chunk-size line, partial in p->line */
    B_DATA,     /* chunk data, p->remaining left */
    B_DATA_END, /* the CRLF after chunk data, partial in p->line */
    B_TRAILER,  /* trailer section, partial in p->trail */
    B_DONE,
};

void cg_http_body_begin(struct cg_http_parser *p)
{
    p->line.len = 0;
    p->trail.len = 0;
    p->remaining = 0;
    switch (p->req.body_kind) {
    case CG_HTTP_BODY_CHUNKED:
        p->body_state = B_SIZE;
        break;
    case CG_HTTP_BODY_LENGTH:
        p->body_state = B_LENGTH;
        p->remaining = p->req.content_length;
        break;
    case CG_HTTP_BODY_NONE:
        p->body_state = B_LENGTH;
        break;
    }
}

static enum cg_http_status fail(struct cg_http_parser *p)
{
    p->state = CG_HTTP_PS_ERROR;
    return CG_HTTP_ERROR;
}

static enum cg_http_status fail_bytes(struct cg_http_parser *p, enum cg_http_error_kind kind,
                                      const char *prefix, const char *s, size_t n)
{
    char r[CG_HTTP_ERROR_DETAIL_MAX] = "";

    cg_http_error_repr(r, sizeof(r), s, n, 1);
    cg_http_error_set(&p->error, kind, "%s%s", prefix, r);
    return fail(p);
}

static enum cg_http_status fail_oom(struct cg_http_parser *p)
{
    cg_http_error_set(&p->error, CG_HTTP_ERR_INTERNAL, "out of memory");
    return fail(p);
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool skip_token(const char *s, size_t n, size_t *i)
{
    size_t start = *i;
    while (*i < n && cg_http_is_tchar((unsigned char)s[*i])) {
        (*i)++;
    }
    return *i > start;
}

static void skip_ws(const char *s, size_t n, size_t *i)
{
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t')) {
        (*i)++;
    }
}

/* RFC 9110 5.6.4 quoted-string, as gunicorn's _QUOTED_STRING. */
static bool skip_quoted(const char *s, size_t n, size_t *i)
{
    size_t k = *i;
    if (k >= n || s[k] != '"') {
        return false;
    }
    for (k++; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"') {
            *i = k + 1;
            return true;
        }
        if (c == '\\') {
            k++;
            if (k >= n) {
                return false;
            }
            c = (unsigned char)s[k];
            if (!(c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80)) {
                return false;
            }
            continue;
        }
        if (!(c == '\t' || c == ' ' || c == '!' || (c >= 0x23 && c <= 0x5b) ||
              (c >= 0x5d && c <= 0x7e) || c >= 0x80)) {
            return false;
        }
    }
    return false;
}

/* Whether s (starting with ';') fully matches gunicorn's CHUNK_EXT_RE:
 * *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ). The
 * grammar is deterministic: after a name, only BWS "=" continues it. */
static bool chunk_ext_ok(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        skip_ws(s, n, &i);
        if (i >= n || s[i] != ';') {
            return false;
        }
        i++;
        skip_ws(s, n, &i);
        if (!skip_token(s, n, &i)) {
            return false;
        }
        size_t j = i;
        skip_ws(s, n, &j);
        if (j < n && s[j] == '=') {
            i = j + 1;
            skip_ws(s, n, &i);
            if (!skip_quoted(s, n, &i) && !skip_token(s, n, &i)) {
                return false;
            }
        }
    }
    return true;
}

/* parse_chunk_size() on a complete line (no CRLF). */
static enum cg_http_status on_size_line(struct cg_http_parser *p, const char *line, size_t n)
{
    const char *semi = memchr(line, ';', n);
    size_t slen = semi ? (size_t)(semi - line) : n;
    uint64_t size = 0;
    int digits = 0;

    if (semi != NULL) {
        /* RFC 9112 7.1.1: BWS only before an extension */
        if (memchr(semi, '\r', (size_t)(line + n - semi)) != NULL) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_CHUNK_EXTENSION,
                              "Invalid chunk extension: bare CR not allowed");
            return fail(p);
        }
        while (slen > 0 && (line[slen - 1] == ' ' || line[slen - 1] == '\t')) {
            slen--;
        }
    }
    if (slen == 0) {
        return fail_bytes(p, CG_HTTP_ERR_INVALID_CHUNK_SIZE, "Invalid chunk size: ", line, slen);
    }
    for (size_t i = 0; i < slen; i++) {
        unsigned char c = (unsigned char)line[i];
        if (!is_hex(c)) {
            return fail_bytes(p, CG_HTTP_ERR_INVALID_CHUNK_SIZE, "Invalid chunk size: ", line,
                              slen);
        }
    }
    if (semi != NULL && !chunk_ext_ok(semi, (size_t)(line + n - semi))) {
        cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_CHUNK_EXTENSION,
                          "Invalid chunk extension: invalid chunk extension");
        return fail(p);
    }
    for (size_t i = 0; i < slen; i++) {
        unsigned char c = (unsigned char)line[i];
        unsigned v = c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        if (digits > 0 || v != 0) {
            digits++;
        }
        /* Python ints are unbounded; past 2^60 no client could send it */
        if (digits > 15) {
            return fail_bytes(p, CG_HTTP_ERR_INVALID_CHUNK_SIZE, "Invalid chunk size: ", line,
                              slen);
        }
        size = size * 16 + v;
    }
    if (size == 0) {
        p->body_state = B_TRAILER;
        p->trail.len = 0;
        p->trail_line_start = 0;
    } else {
        p->body_state = B_DATA;
        p->remaining = size;
    }
    return CG_HTTP_NEED_MORE;
}

/* Takes bytes of a CRLF-terminated line into `buf` (capped at `limit`
 * bytes before the terminator). Returns 1 when the line is complete (buf
 * holds it with its CRLF), 0 when all input went in, -1 out of memory,
 * -2 over the limit. Only CR LF ends the line: a bare LF is line content. */
static int take_crlf_line(struct cg_http_buf *buf, const char *in, size_t len, size_t *pos,
                          size_t limit)
{
    size_t start = *pos, i = *pos;

    for (;;) {
        const char *lf = memchr(in + i, '\n', len - i);
        if (lf == NULL) {
            break;
        }
        size_t k = (size_t)(lf - in);
        bool cr = k > start ? in[k - 1] == '\r' : (buf->len > 0 && buf->data[buf->len - 1] == '\r');
        if (cr) {
            if (buf->len + (k - start) - 1 > limit) {
                return -2;
            }
            if (cg_http_buf_append(buf, in + start, k + 1 - start) < 0) {
                return -1;
            }
            *pos = k + 1;
            return 1;
        }
        i = k + 1;
    }
    if (buf->len + (len - start) > limit + 1) {
        return -2;
    }
    if (cg_http_buf_append(buf, in + start, len - start) < 0) {
        return -1;
    }
    *pos = len;
    return 0;
}

/* parse_trailers(): lines until an empty one; the trailer fields are parsed
 * with the head's rules plus RFC 9110 6.5.1. */
static enum cg_http_status trailer_step(struct cg_http_parser *p, const char *in, size_t len,
                                        size_t *pos)
{
    size_t limit = p->eff.max_buffer_headers;

    while (*pos < len) {
        const char *lf = memchr(in + *pos, '\n', len - *pos);
        size_t take = lf ? (size_t)(lf - (in + *pos)) + 1 : len - *pos;
        size_t line_start = p->trail_line_start;
        bool ends = lf != NULL && p->trail.len + take - line_start == 2;

        /* gunicorn checks the size while the section is still incomplete */
        if (!ends && p->trail.len + take > limit) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_LIMIT_REQUEST_HEADERS,
                              "limit request trailer section size");
            return fail(p);
        }
        if (cg_http_buf_append(&p->trail, in + *pos, take) < 0) {
            return fail_oom(p);
        }
        *pos += take;
        if (lf == NULL) {
            break;
        }
        size_t n = p->trail.len - line_start;
        if (n < 2 || p->trail.data[p->trail.len - 2] != '\r') {
            cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HEADER,
                              "Invalid HTTP Header: 'bare LF as line terminator'");
            return fail(p);
        }
        if (n == 2) {
            size_t block_len = line_start > 0 ? line_start - 2 : 0;
            size_t cnt = 0;
            if (cg_http_headers_parse(p, p->trail.data, block_len, true, &p->trls, &p->trls_cap,
                                      &cnt) < 0) {
                return fail(p);
            }
            p->req.trailers = p->trls;
            p->req.n_trailers = cnt;
            p->body_state = B_DONE;
            p->state = CG_HTTP_PS_DONE;
            return CG_HTTP_BODY_DONE;
        }
        p->trail_line_start = p->trail.len;
    }
    return CG_HTTP_NEED_MORE;
}

enum cg_http_status cg_http_parser_body(struct cg_http_parser *p, const char *in, size_t len,
                                        size_t *consumed, size_t max, const char **data,
                                        size_t *data_len)
{
    size_t pos = 0;
    enum cg_http_status st = CG_HTTP_NEED_MORE;

    *consumed = 0;
    *data = NULL;
    *data_len = 0;
    if (max == 0) {
        max = SIZE_MAX;
    }
    if (p->state == CG_HTTP_PS_DONE) {
        return CG_HTTP_BODY_DONE;
    }
    if (p->state != CG_HTTP_PS_BODY) {
        if (p->state != CG_HTTP_PS_ERROR) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_INTERNAL,
                              "cg_http_parser_body() called before the head was parsed");
            p->state = CG_HTTP_PS_ERROR;
        }
        return CG_HTTP_ERROR;
    }
    for (;;) {
        switch (p->body_state) {
        case B_LENGTH:
        case B_DATA: {
            if (p->remaining == 0) {
                if (p->body_state == B_LENGTH) {
                    p->body_state = B_DONE;
                    p->state = CG_HTTP_PS_DONE;
                    st = CG_HTTP_BODY_DONE;
                    goto out;
                }
                p->body_state = B_DATA_END;
                p->line.len = 0;
                continue;
            }
            if (pos == len) {
                goto out;
            }
            size_t take = len - pos;
            if (take > p->remaining) {
                take = (size_t)p->remaining;
            }
            if (take > max) {
                take = max;
            }
            *data = in + pos;
            *data_len = take;
            pos += take;
            p->remaining -= take;
            if (p->remaining == 0 && p->body_state == B_DATA) {
                p->body_state = B_DATA_END;
                p->line.len = 0;
            }
            st = CG_HTTP_BODY_DATA;
            goto out;
        }
        case B_SIZE: {
            int r = take_crlf_line(&p->line, in, len, &pos, p->eff.field_size);
            if (r == -1) {
                st = fail_oom(p);
                goto out;
            }
            if (r == -2) {
                char msg[64];
                snprintf(msg, sizeof(msg), "line over %zu bytes with no terminator",
                         p->eff.field_size);
                st = fail_bytes(p, CG_HTTP_ERR_INVALID_CHUNK_SIZE, "Invalid chunk size: ", msg,
                                strlen(msg));
                goto out;
            }
            if (r == 0) {
                goto out;
            }
            st = on_size_line(p, p->line.data, p->line.len - 2);
            p->line.len = 0;
            if (st == CG_HTTP_ERROR) {
                goto out;
            }
            continue;
        }
        case B_DATA_END: {
            while (p->line.len < 2 && pos < len) {
                if (cg_http_buf_append(&p->line, in + pos, 1) < 0) {
                    st = fail_oom(p);
                    goto out;
                }
                pos++;
            }
            if (p->line.len < 2) {
                goto out;
            }
            if (memcmp(p->line.data, "\r\n", 2) != 0) {
                st = fail_bytes(p, CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR,
                                "Invalid chunk terminator is not '\\r\\n': ", p->line.data, 2);
                goto out;
            }
            p->line.len = 0;
            p->body_state = B_SIZE;
            continue;
        }
        case B_TRAILER:
            st = trailer_step(p, in, len, &pos);
            goto out;
        case B_DONE:
        default:
            st = CG_HTTP_BODY_DONE;
            goto out;
        }
    }
out:
    *consumed = pos;
    return st;
}

enum cg_http_status cg_http_body_eof(struct cg_http_parser *p)
{
    switch (p->body_state) {
    case B_LENGTH:
        if (p->remaining == 0) {
            p->body_state = B_DONE;
            p->state = CG_HTTP_PS_DONE;
            return CG_HTTP_BODY_DONE;
        }
        break;
    case B_DATA_END:
        return fail_bytes(p, CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR,
                          "Invalid chunk terminator is not '\\r\\n': ", p->line.data ? p->line.data : "",
                          p->line.len);
    case B_TRAILER:
        return fail_bytes(p, CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR,
                          "Invalid chunk terminator is not '\\r\\n': ", "", 0);
    case B_DONE:
        return CG_HTTP_BODY_DONE;
    default:
        break;
    }
    cg_http_error_set(&p->error, CG_HTTP_ERR_NO_MORE_DATA, "No more data after: None");
    return fail(p);
}
