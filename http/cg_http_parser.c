/* The request-head half of the connection parser: PROXY header, request
 * line and header lines, read line by line as they arrive, with gunicorn's
 * checks in gunicorn's order (Request._parse_python, read_line,
 * parse_request_line). The body half is cg_http_body.c.
 *
 * The head is copied into p->head as it arrives (only up to its final
 * CRLF); once complete it is parsed in place and the derived strings (URI
 * parts) are appended behind it, so every span of the request points into
 * p->head. */
#include "cg_http_parser.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "cg_http_int.h"
#include "cg_http_response.h"
#include "cg_http_iplist.h"

enum head_phase {
    PH_START,   /* one empty line may precede the request line (RFC 9112 2.2) */
    PH_LINE,    /* request line */
    PH_HEADERS, /* header lines until the empty line */
};

/* ---- growable buffer ---------------------------------------------------- */

int cg_http_buf_reserve(struct cg_http_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra) {
        return 0;
    }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap - b->len < extra) {
        ncap *= 2;
    }
    char *nd = realloc(b->data, ncap);
    if (nd == NULL) {
        return -1;
    }
    b->data = nd;
    b->cap = ncap;
    return 0;
}

int cg_http_buf_append(struct cg_http_buf *b, const char *s, size_t n)
{
    if (cg_http_buf_reserve(b, n + 1) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0'; /* keeps one writable byte past the data */
    return 0;
}

void cg_http_buf_free(struct cg_http_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- life cycle ---------------------------------------------------------- */

static void start_request(struct cg_http_parser *p)
{
    p->head.len = 0;
    p->line_start = 0;
    p->head_phase = PH_START;
    p->head_seen_bytes = false;
    memset(&p->req, 0, sizeof(p->req));
    p->req.url_scheme = p->scheme != NULL ? p->scheme : p->limits->is_ssl ? "https" : "http";
    p->req_count++;
    p->req.req_number = p->req_count;
    p->state = (p->req_count == 1 && p->limits->proxy_protocol != CG_HTTP_PROXY_OFF)
                   ? CG_HTTP_PS_PROXY
                   : CG_HTTP_PS_HEAD;
}

void cg_http_parser_init(struct cg_http_parser *p, const struct cg_http_limits *limits,
                         const struct sockaddr *peer)
{
    memset(p, 0, sizeof(*p));
    p->limits = limits;
    cg_http_limits_effective(limits, &p->eff);
    if (peer != NULL && peer->sa_family == AF_INET) {
        memcpy(&p->peer, peer, sizeof(struct sockaddr_in));
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)peer)->sin_addr, p->peer_ip,
                  sizeof(p->peer_ip));
        p->peer_is_ip = true;
    } else if (peer != NULL && peer->sa_family == AF_INET6) {
        memcpy(&p->peer, peer, sizeof(struct sockaddr_in6));
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr,
                  p->peer_ip, sizeof(p->peer_ip));
        p->peer_is_ip = true;
    } else {
        p->peer.ss_family = AF_UNIX;
    }
    const struct sockaddr *sa = p->peer_is_ip ? (const struct sockaddr *)&p->peer : NULL;
    p->proxy_allowed = cg_http_iplist_allows(limits->proxy_allow_ips, sa);
    p->forwarded_trusted = cg_http_iplist_allows(limits->forwarded_allow_ips, sa);
    start_request(p);
}

bool cg_http_parser_peer_trusted(const struct cg_http_parser *p)
{
    return p->forwarded_trusted;
}

void cg_http_parser_set_scheme(struct cg_http_parser *p, const char *scheme)
{
    p->scheme = scheme;
    p->req.url_scheme = scheme != NULL ? scheme : p->limits->is_ssl ? "https" : "http";
}

void cg_http_parser_deinit(struct cg_http_parser *p)
{
    cg_http_buf_free(&p->head);
    cg_http_buf_free(&p->line);
    cg_http_buf_free(&p->trail);
    free(p->hdrs);
    free(p->trls);
    p->hdrs = p->trls = NULL;
    p->hdrs_cap = p->trls_cap = 0;
    memset(&p->req, 0, sizeof(p->req));
}

int cg_http_parser_next(struct cg_http_parser *p)
{
    if (p->state != CG_HTTP_PS_DONE) {
        return -1;
    }
    start_request(p);
    return 0;
}

const struct cg_http_request *cg_http_parser_request(const struct cg_http_parser *p)
{
    return (p->state == CG_HTTP_PS_BODY || p->state == CG_HTTP_PS_DONE) ? &p->req : NULL;
}

const struct cg_http_request *cg_http_parser_error_request(const struct cg_http_parser *p)
{
    return p->state == CG_HTTP_PS_ERROR && p->error_has_request ? &p->req : NULL;
}

const struct cg_http_error *cg_http_parser_error(const struct cg_http_parser *p)
{
    return &p->error;
}

const struct cg_http_proxy_info *cg_http_parser_proxy_info(const struct cg_http_parser *p)
{
    return p->proxy.present ? &p->proxy : NULL;
}

bool cg_http_parser_body_done(const struct cg_http_parser *p)
{
    return p->state == CG_HTTP_PS_DONE;
}

bool cg_http_parser_body_pending(const struct cg_http_parser *p)
{
    return p->state == CG_HTTP_PS_BODY &&
           (p->req.body_kind == CG_HTTP_BODY_CHUNKED ||
            (p->req.body_kind == CG_HTTP_BODY_LENGTH && p->remaining > 0));
}

static enum cg_http_status fail(struct cg_http_parser *p)
{
    p->state = CG_HTTP_PS_ERROR;
    return CG_HTTP_ERROR;
}

static enum cg_http_status fail_oom(struct cg_http_parser *p)
{
    cg_http_error_set(&p->error, CG_HTTP_ERR_INTERNAL, "out of memory");
    return fail(p);
}

static enum cg_http_status fail_repr(struct cg_http_parser *p, enum cg_http_error_kind kind,
                                     const char *prefix, const char *s, size_t n)
{
    char r[CG_HTTP_ERROR_DETAIL_MAX] = "";

    cg_http_error_repr(r, sizeof(r), s, n, 0);
    cg_http_error_set(&p->error, kind, "%s%s", prefix, r);
    return fail(p);
}

/* ---- request line -------------------------------------------------------- */

/* gunicorn's parse_request_line() on line (len bytes, no CRLF) at offset
 * `off` of p->head. Records the spans as offsets; returns 0 or -1. */
static int parse_request_line(struct cg_http_parser *p, size_t off, size_t len)
{
    char *line = p->head.data + off;
    const struct cg_http_limits *l = p->limits;
    char *sp1 = memchr(line, ' ', len);
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line + len - sp1 - 1)) : NULL;

    /* line.split(b" ", 2) must give three parts */
    if (sp2 == NULL) {
        fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_LINE, "Invalid HTTP request line: ", line, len);
        return -1;
    }
    char *method = line, *uri = sp1 + 1, *version = sp2 + 1;
    size_t mlen = (size_t)(sp1 - line), ulen = (size_t)(sp2 - uri);
    size_t vlen = (size_t)(line + len - version);

    if (!l->permit_unconventional_http_method) {
        /* gunicorn's conventional methods: no lower case or '#', 3..20 chars */
        for (size_t i = 0; i < mlen; i++) {
            if ((method[i] >= 'a' && method[i] <= 'z') || method[i] == '#') {
                fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_METHOD, "Invalid HTTP method: ", method,
                          mlen);
                return -1;
            }
        }
        if (mlen < 3 || mlen > 20) {
            fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_METHOD, "Invalid HTTP method: ", method, mlen);
            return -1;
        }
    }
    if (!cg_http_is_token(method, mlen)) {
        fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_METHOD, "Invalid HTTP method: ", method, mlen);
        return -1;
    }
    if (l->casefold_http_method) {
        for (size_t i = 0; i < mlen; i++) {
            if (method[i] >= 'a' && method[i] <= 'z') {
                method[i] = (char)(method[i] - 'a' + 'A');
            }
        }
    }
    /* RFC 9112 3.2: the target is visible ASCII; controls, SP, DEL and raw
     * bytes >= 0x80 are refused, as gunicorn 27's server does (the corpus's
     * valid/027 disagrees; see docs/compatibility.md). */
    for (size_t i = 0; i < ulen; i++) {
        unsigned char c = (unsigned char)uri[i];
        if (c < 0x21 || c >= 0x7f) {
            fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_LINE, "Invalid HTTP request line: ", line, len);
            return -1;
        }
    }
    bool is_connect = mlen == 7 && memcmp(method, "CONNECT", 7) == 0;
    bool is_options = mlen == 7 && memcmp(method, "OPTIONS", 7) == 0;
    bool asterisk = ulen == 1 && uri[0] == '*';
    if (ulen == 0 || (asterisk && !is_options) ||
        (!is_connect && !asterisk && uri[0] != '/' && memmem(uri, ulen, "://", 3) == NULL)) {
        /* empty; "*" outside OPTIONS; authority-form outside CONNECT */
        fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_LINE, "Invalid HTTP request line: ", line, len);
        return -1;
    }
    struct cg_http_uri_parts parts;
    if (cg_http_uri_split(uri, ulen, &parts) < 0) {
        fail_repr(p, CG_HTTP_ERR_INVALID_REQUEST_LINE, "Invalid HTTP request line: ", line, len);
        return -1;
    }
    /* HTTP/<digit>.<digit>, then 1.0 <= version < 2.0 unless permitted */
    if (vlen != 8 || memcmp(version, "HTTP/", 5) != 0 || version[5] < '0' || version[5] > '9' ||
        version[6] != '.' || version[7] < '0' || version[7] > '9') {
        fail_repr(p, CG_HTTP_ERR_INVALID_HTTP_VERSION, "Invalid HTTP Version: ", version, vlen);
        return -1;
    }
    int major = version[5] - '0', minor = version[7] - '0';
    if (major != 1 && !l->permit_unconventional_http_version) {
        cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HTTP_VERSION,
                          "Invalid HTTP Version: (%d, %d)", major, minor);
        fail(p);
        return -1;
    }
    p->req.version_major = major;
    p->req.version_minor = minor;
    /* offsets, turned into pointers when the head is complete */
    p->req.method = (struct cg_http_span){ (const char *)(uintptr_t)(size_t)(method - p->head.data),
                                           mlen };
    p->req.uri = (struct cg_http_span){ (const char *)(uintptr_t)(size_t)(uri - p->head.data),
                                        ulen };
    return 0;
}

/* ---- head completion ----------------------------------------------------- */

/* Appends a NUL-terminated copy of s to p->head (room reserved by the
 * caller) and returns its span. */
static struct cg_http_span put_copy(struct cg_http_parser *p, const char *s, size_t n, bool lower)
{
    char *d = p->head.data + p->head.len;

    memmove(d, s, n);
    if (lower) {
        for (size_t i = 0; i < n; i++) {
            if (d[i] >= 'A' && d[i] <= 'Z') {
                d[i] = (char)(d[i] - 'A' + 'a');
            }
        }
    }
    d[n] = '\0';
    p->head.len += n + 1;
    return (struct cg_http_span){ d, n };
}

static enum cg_http_status finish_head(struct cg_http_parser *p, size_t block_off, size_t block_len)
{
    struct cg_http_request *req = &p->req;
    size_t moff = (size_t)(uintptr_t)req->method.ptr, uoff = (size_t)(uintptr_t)req->uri.ptr;
    size_t ulen = req->uri.len;

    /* Room for the URI parts (5 copies of at most the URI, + NULs) so that
     * p->head does not move while pointers into it are taken. */
    if (cg_http_buf_reserve(&p->head, ulen * 2 + 8) < 0) {
        return fail_oom(p);
    }
    char *base = p->head.data;
    req->method.ptr = base + moff;
    req->uri.ptr = base + uoff;

    struct cg_http_uri_parts parts;
    cg_http_uri_split(req->uri.ptr, ulen, &parts); /* validated on the request line */
    req->uri_scheme = put_copy(p, parts.scheme.ptr, parts.scheme.len, true);
    req->uri_netloc = put_copy(p, parts.netloc.ptr, parts.netloc.len, false);
    req->path = put_copy(p, parts.path.ptr, parts.path.len, false);
    req->query = put_copy(p, parts.query.ptr, parts.query.len, false);
    req->fragment = put_copy(p, parts.fragment.ptr, parts.fragment.len, false);
    base[moff + req->method.len] = '\0'; /* was the SP after the method */
    base[uoff + ulen] = '\0';            /* was the SP before the version */

    /* The header block is followed by CRLF CRLF in p->head, so the byte at
     * block[block_len] is writable as the parser NUL-terminates in place. */
    size_t n = 0;
    if (cg_http_headers_parse(p, base + block_off, block_len, false, &p->hdrs, &p->hdrs_cap, &n) <
        0) {
        return fail(p);
    }
    req->headers = p->hdrs;
    req->n_headers = n;
    if (cg_http_headers_framing(p) < 0 || cg_http_headers_host(p) < 0) {
        return fail(p);
    }
    /* Upgrade: an Upgrade header and "upgrade" in the Connection tokens */
    const struct cg_http_span *conn = cg_http_request_header(req, "CONNECTION");
    if (conn != NULL && cg_http_request_header(req, "UPGRADE") != NULL) {
        req->upgrade = cg_http_list_has(conn, "upgrade");
    }
    p->state = CG_HTTP_PS_BODY;
    cg_http_body_begin(p);
    return CG_HTTP_HEAD_DONE;
}

/* ---- line scanner -------------------------------------------------------- */

/* Handles the complete line [p->line_start, p->head.len) (it ends with LF).
 * Returns NEED_MORE to go on, HEAD_DONE, or ERROR. */
static enum cg_http_status on_line(struct cg_http_parser *p)
{
    char *line = p->head.data + p->line_start;
    size_t n = p->head.len - p->line_start;
    bool crlf = n >= 2 && line[n - 2] == '\r';

    if (p->head_phase == PH_START) {
        p->head_phase = PH_LINE;
        if (n == 2 && crlf) {
            p->line_start = p->head.len;
            return CG_HTTP_NEED_MORE;
        }
    }
    if (p->head_phase == PH_LINE) {
        if (!crlf) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_REQUEST_LINE,
                              "Invalid HTTP request line: 'bare LF as line terminator'");
            return fail(p);
        }
        if (n - 2 > p->eff.request_line) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_LIMIT_REQUEST_LINE,
                              "Request Line is too large (%zu > %zu)", n - 2, p->eff.request_line);
            return fail(p);
        }
        if (parse_request_line(p, p->line_start, n - 2) < 0) {
            return CG_HTTP_ERROR;
        }
        p->head_phase = PH_HEADERS;
        p->hdrs_off = p->head.len;
        p->line_start = p->head.len;
        return CG_HTTP_NEED_MORE;
    }
    /* PH_HEADERS */
    if (!crlf) {
        cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HEADER,
                          "Invalid HTTP Header: 'bare LF as line terminator'");
        return fail(p);
    }
    if (n == 2) {
        size_t block_len = p->line_start > p->hdrs_off ? p->line_start - 2 - p->hdrs_off : 0;
        return finish_head(p, p->hdrs_off, block_len);
    }
    if (p->head.len - p->hdrs_off > p->eff.max_buffer_headers) {
        cg_http_error_set(&p->error, CG_HTTP_ERR_LIMIT_REQUEST_HEADERS, "max buffer headers");
        return fail(p);
    }
    p->line_start = p->head.len;
    return CG_HTTP_NEED_MORE;
}

/* Checks an incomplete line of `n` bytes (no LF yet) against the limits,
 * before it is buffered. A lone CR after the header lines may be the start
 * of the blank line that ends the head: it does not count, or the same
 * head would be refused or not depending on where TCP split it. */
static enum cg_http_status check_partial(struct cg_http_parser *p, size_t n, bool lone_cr)
{
    if (p->head_phase != PH_HEADERS) {
        /* read_line(): len(data) - 2 > limit */
        if (n > p->eff.request_line + 2) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_LIMIT_REQUEST_LINE,
                              "Request Line is too large (%zu > %zu)", n, p->eff.request_line);
            return fail(p);
        }
    } else if (!lone_cr && p->line_start + n - p->hdrs_off > p->eff.max_buffer_headers) {
        cg_http_error_set(&p->error, CG_HTTP_ERR_LIMIT_REQUEST_HEADERS, "max buffer headers");
        return fail(p);
    }
    return CG_HTTP_NEED_MORE;
}

static enum cg_http_status scan(struct cg_http_parser *p, const char *in, size_t len,
                                size_t *consumed)
{
    size_t pos = 0;

    while (pos < len) {
        const char *lf = memchr(in + pos, '\n', len - pos);
        size_t take = lf ? (size_t)(lf - (in + pos)) + 1 : len - pos;
        size_t have = p->head.len - p->line_start;

        bool lone_cr = have + take == 1 && in[pos] == '\r';
        if (lf == NULL && check_partial(p, have + take, lone_cr) == CG_HTTP_ERROR) {
            *consumed = pos;
            return CG_HTTP_ERROR;
        }
        if (cg_http_buf_append(&p->head, in + pos, take) < 0) {
            *consumed = pos;
            return fail_oom(p);
        }
        p->head_seen_bytes = true;
        pos += take;
        if (lf != NULL) {
            enum cg_http_status st = on_line(p);
            if (st != CG_HTTP_NEED_MORE) {
                *consumed = pos;
                return st;
            }
        }
    }
    *consumed = pos;
    return CG_HTTP_NEED_MORE;
}

/* PROXY state: takes only the bytes the PROXY header needs (at most 12 to
 * decide, one v1 line, or the v2 header's announced length). */
static enum cg_http_status proxy_step(struct cg_http_parser *p, const char *in, size_t len,
                                      size_t *consumed)
{
    size_t pos = 0;

    for (;;) {
        size_t used = 0, want;
        enum cg_http_proxy_result r =
            cg_http_proxy_parse((int)p->limits->proxy_protocol, p->head.data ? p->head.data : "",
                                p->head.len, p->proxy_allowed, p->peer_ip, &p->proxy, &used,
                                &p->error);
        if (r == CG_HTTP_PROXY_ERROR) {
            *consumed = pos;
            return fail(p);
        }
        if (r == CG_HTTP_PROXY_DONE) {
            p->head.len = 0;
            p->state = CG_HTTP_PS_HEAD;
            *consumed = pos;
            return CG_HTTP_NEED_MORE;
        }
        if (r == CG_HTTP_PROXY_NONE) {
            /* The bytes held are the start of the request: run them through
             * the head scanner as if they arrived now. */
            char saved[CG_HTTP_PROXY_V2_SIGNATURE_LEN];
            size_t n = p->head.len, ignored;
            memcpy(saved, p->head.data, n);
            p->head.len = 0;
            p->state = CG_HTTP_PS_HEAD;
            *consumed = pos;
            return scan(p, saved, n, &ignored);
        }
        if (pos == len) {
            *consumed = pos;
            return CG_HTTP_NEED_MORE;
        }
        /* how much more to take */
        if (p->head.len < CG_HTTP_PROXY_V2_SIGNATURE_LEN) {
            want = CG_HTTP_PROXY_V2_SIGNATURE_LEN - p->head.len;
        } else if (p->head.data[0] == 'P') {
            const char *lf = memchr(in + pos, '\n', len - pos);
            want = lf ? (size_t)(lf - (in + pos)) + 1 : len - pos;
        } else if (p->head.len < 16) {
            want = 16 - p->head.len;
        } else {
            size_t total = 16 + (((size_t)(unsigned char)p->head.data[14] << 8) |
                                 (unsigned char)p->head.data[15]);
            want = total - p->head.len;
        }
        if (want > len - pos) {
            want = len - pos;
        }
        if (cg_http_buf_append(&p->head, in + pos, want) < 0) {
            *consumed = pos;
            return fail_oom(p);
        }
        p->head_seen_bytes = true;
        pos += want;
    }
}

enum cg_http_status cg_http_parser_head(struct cg_http_parser *p, const char *in, size_t len,
                                        size_t *consumed)
{
    size_t used = 0;
    enum cg_http_status st;

    *consumed = 0;
    switch (p->state) {
    case CG_HTTP_PS_ERROR:
        return CG_HTTP_ERROR;
    case CG_HTTP_PS_BODY:
    case CG_HTTP_PS_DONE:
        return CG_HTTP_HEAD_DONE;
    case CG_HTTP_PS_PROXY:
        st = proxy_step(p, in, len, &used);
        *consumed = used;
        if (st != CG_HTTP_NEED_MORE || p->state == CG_HTTP_PS_PROXY) {
            return st;
        }
        in += used;
        len -= used;
        break;
    case CG_HTTP_PS_HEAD:
        break;
    }
    st = scan(p, in, len, &used);
    *consumed += used;
    return st;
}

enum cg_http_status cg_http_parser_eof(struct cg_http_parser *p)
{
    switch (p->state) {
    case CG_HTTP_PS_ERROR:
        return CG_HTTP_ERROR;
    case CG_HTTP_PS_DONE:
        return CG_HTTP_BODY_DONE;
    case CG_HTTP_PS_BODY:
        return cg_http_body_eof(p);
    case CG_HTTP_PS_PROXY:
    case CG_HTTP_PS_HEAD:
        break;
    }
    if (!p->head_seen_bytes) {
        return CG_HTTP_EOF;
    }
    char r[CG_HTTP_ERROR_DETAIL_MAX] = "";
    cg_http_error_repr(r, sizeof(r), p->head.data, p->head.len, 1);
    cg_http_error_set(&p->error, CG_HTTP_ERR_NO_MORE_DATA, "No more data after: %s", r);
    return fail(p);
}
