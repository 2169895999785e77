/* Header-block rules shared by request heads and chunked trailers
 * (gunicorn's Message.parse_headers and HeaderPolicy), and the body-framing
 * decision (Message.set_body_reader). Works in place on the parser's copy of
 * the block. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_http_int.h"
#include "cg_http_response.h"

bool cg_http_is_tchar(unsigned char c)
{
    /* RFC 9110 5.6.2: ALPHA / DIGIT / "!#$%&'*+-.^_`|~" */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool name_is(const char *name, size_t n, const char *upper)
{
    return strlen(upper) == n && memcmp(name, upper, n) == 0;
}

/* Sets p->error to kind with detail "<prefix><repr(s)>". */
static int fail_repr(struct cg_http_parser *p, enum cg_http_error_kind kind, const char *prefix,
                     const char *s, size_t n)
{
    char r[CG_HTTP_ERROR_DETAIL_MAX] = "";

    cg_http_error_repr(r, sizeof(r), s, n, 0);
    cg_http_error_set(&p->error, kind, "%s%s", prefix, r);
    return -1;
}

static int fail_limit(struct cg_http_parser *p, const char *msg)
{
    cg_http_error_set(&p->error, CG_HTTP_ERR_LIMIT_REQUEST_HEADERS, "%s", msg);
    return -1;
}

/* Strips SP/HTAB around [*s, *s + *n). */
static void strip_ws(char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) {
        (*n)--;
    }
}

/* Length of the line starting at s (up to CRLF or end). */
static size_t line_len(const char *s, const char *end)
{
    const char *crlf = memmem(s, (size_t)(end - s), "\r\n", 2);
    return crlf ? (size_t)(crlf - s) : (size_t)(end - s);
}

static bool in_list(const char *const *list, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (name_is(name, len, list[i])) {
            return true;
        }
    }
    return false;
}

/* HeaderPolicy._apply_header_policy. Returns 1 to keep, 0 to drop, -1 on
 * error. `scheme_set` tracks whether a scheme header was already seen. */
static int apply_policy(struct cg_http_parser *p, const char *name, size_t nlen, const char *value,
                        size_t vlen, bool from_trailer, bool *scheme_set, bool *seen_host,
                        bool *seen_ctype)
{
    const struct cg_http_limits *l = p->limits;
    bool trusted = !from_trailer && p->forwarded_trusted;

    /* RFC 9110 5.3: a repeated singleton field is ambiguous. */
    bool *seen = name_is(name, nlen, "HOST")           ? seen_host
                 : name_is(name, nlen, "CONTENT-TYPE") ? seen_ctype
                                                       : NULL;
    if (seen != NULL) {
        if (*seen) {
            return fail_repr(p, CG_HTTP_ERR_INVALID_HEADER, "Invalid HTTP Header: ", name, nlen);
        }
        *seen = true;
    }
    if (!from_trailer && name_is(name, nlen, "EXPECT")) {
        if (vlen == 12 && strncasecmp(value, "100-continue", 12) == 0) {
            /* RFC 9110 10.1.1: ignored on HTTP/1.0 */
            if (p->req.version_major > 1 || (p->req.version_major == 1 && p->req.version_minor >= 1)) {
                p->req.expect_continue = true;
            }
        } else {
            return fail_repr(p, CG_HTTP_ERR_EXPECTATION_FAILED,
                             "Unable to comply with expectation: ", value, vlen);
        }
    }
    if (trusted) {
        for (size_t i = 0; i < l->n_secure_scheme_headers; i++) {
            const struct cg_http_scheme_header *sh = &l->secure_scheme_headers[i];
            if (!name_is(name, nlen, sh->name)) {
                continue;
            }
            bool secure = strlen(sh->value) == vlen && memcmp(sh->value, value, vlen) == 0;
            const char *scheme = secure ? "https" : "http";
            if (*scheme_set) {
                if (strcmp(scheme, p->req.url_scheme) != 0) {
                    cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_SCHEME_HEADERS,
                                      "Contradictory scheme headers");
                    return -1;
                }
            } else {
                *scheme_set = true;
                p->req.url_scheme = scheme;
            }
        }
    }
    /* A "_" name maps to the same WSGI key as its "-" twin: ambiguous. */
    if (memchr(name, '_', nlen) != NULL) {
        bool allowed = trusted && (in_list(l->forwarder_headers, l->n_forwarder_headers, name, nlen) ||
                                   in_list(l->forwarder_headers, l->n_forwarder_headers, "*", 1));
        if (allowed || l->header_map == CG_HTTP_HEADER_MAP_DANGEROUS) {
            return 1;
        }
        if (l->header_map == CG_HTTP_HEADER_MAP_DROP) {
            return 0;
        }
        return fail_repr(p, CG_HTTP_ERR_INVALID_HEADER_NAME, "Invalid HTTP header name: ", name,
                         nlen);
    }
    return 1;
}

bool cg_http_forbidden_in_trailer(const char *name, size_t n)
{
    static const char *const names[] = { "HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING",
                                         "TRAILER", "AUTHORIZATION", "TE" };
    return in_list(names, sizeof(names) / sizeof(names[0]), name, n);
}

static bool value_char_ok(unsigned char c)
{
    /* RFC 9110 5.5: no controls but HTAB, no DEL */
    return !((c < 0x20 && c != '\t') || c == 0x7f);
}

int cg_http_headers_parse(struct cg_http_parser *p, char *block, size_t len, bool from_trailer,
                          struct cg_http_header **arr, size_t *cap, size_t *n)
{
    char *end = block + len;
    char *cur = block;
    bool scheme_set = false, seen_host = false, seen_ctype = false;

    *n = 0;
    if (len == 0) {
        return 0;
    }
    for (;;) {
        size_t ll = line_len(cur, end);
        char *next = cur + ll + 2; /* past CRLF; > end for the last line */
        size_t header_length = ll + 2;

        if (*n >= p->eff.fields) {
            return fail_limit(p, "limit request headers fields");
        }
        char *colon = memchr(cur, ':', ll);
        if (colon == NULL || colon == cur) {
            return fail_repr(p, CG_HTTP_ERR_INVALID_HEADER, "Invalid HTTP Header: ", cur, ll);
        }
        char *name = cur;
        size_t nlen = (size_t)(colon - cur);
        if (p->limits->strip_header_spaces) {
            while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t')) {
                nlen--;
            }
        }
        if (!cg_http_is_token(name, nlen)) {
            return fail_repr(p, CG_HTTP_ERR_INVALID_HEADER_NAME, "Invalid HTTP header name: ",
                             name, nlen);
        }
        for (size_t i = 0; i < nlen; i++) {
            if (name[i] >= 'a' && name[i] <= 'z') {
                name[i] = (char)(name[i] - 'a' + 'A');
            }
        }
        if (from_trailer && cg_http_forbidden_in_trailer(name, nlen)) {
            return fail_repr(p, CG_HTTP_ERR_INVALID_HEADER_NAME, "Invalid HTTP header name: ",
                             name, nlen);
        }
        char *value = colon + 1;
        size_t vlen = (size_t)(cur + ll - value);
        strip_ws(&value, &vlen);
        char *w = value + vlen; /* folded lines are appended here, in place */

        /* obs-fold continuation lines: the joined value only ever shrinks */
        while (next < end && (*next == ' ' || *next == '\t')) {
            if (!p->limits->permit_obsolete_folding) {
                return fail_repr(p, CG_HTTP_ERR_OBSOLETE_FOLDING,
                                 "Obsolete line folding is unacceptable: ", name, nlen);
            }
            size_t cl = line_len(next, end);
            char *part = next;
            size_t plen = cl;
            header_length += cl + 2;
            if (header_length > p->eff.field_size) {
                return fail_limit(p, "limit request headers fields size");
            }
            strip_ws(&part, &plen);
            *w++ = ' ';
            memmove(w, part, plen);
            w += plen;
            next = next + cl + 2;
        }
        vlen = (size_t)(w - value);
        for (size_t i = 0; i < vlen; i++) {
            if (!value_char_ok((unsigned char)value[i])) {
                return fail_repr(p, CG_HTTP_ERR_INVALID_HEADER, "Invalid HTTP Header: ", name,
                                 nlen);
            }
        }
        if (header_length > p->eff.field_size) {
            return fail_limit(p, "limit request headers fields size");
        }
        int keep = apply_policy(p, name, nlen, value, vlen, from_trailer, &scheme_set, &seen_host,
                                &seen_ctype);
        if (keep < 0) {
            return -1;
        }
        /* NUL-terminate both: the byte after each is ':'/blank or CR/blank
         * (block[len] belongs to the caller's buffer and is writable). */
        name[nlen] = '\0';
        value[vlen] = '\0';
        if (keep) {
            if (*n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 16;
                struct cg_http_header *na = realloc(*arr, ncap * sizeof(*na));
                if (na == NULL) {
                    cg_http_error_set(&p->error, CG_HTTP_ERR_INTERNAL, "out of memory");
                    return -1;
                }
                *arr = na;
                *cap = ncap;
            }
            (*arr)[*n].name = (struct cg_http_span){ name, nlen };
            (*arr)[*n].value = (struct cg_http_span){ value, vlen };
            (*n)++;
        }
        if (next > end) {
            break;
        }
        cur = next;
    }
    return 0;
}

static int fail_header(struct cg_http_parser *p, const char *which)
{
    cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HEADER, "Invalid HTTP Header: '%s'", which);
    p->error_has_request = true;
    return -1;
}

static bool ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

int cg_http_headers_framing(struct cg_http_parser *p)
{
    struct cg_http_request *req = &p->req;
    bool chunked = false, te = false;
    const struct cg_http_span *cl = NULL;

    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (name_is(h->name.ptr, h->name.len, "CONTENT-LENGTH")) {
            if (cl != NULL) {
                return fail_header(p, "CONTENT-LENGTH");
            }
            cl = &h->value;
        } else if (name_is(h->name.ptr, h->name.len, "TRANSFER-ENCODING")) {
            /* a list: "gzip, chunked"; chunked must come last and once */
            const char *s = h->value.ptr, *end = s + h->value.len;
            for (;;) {
                const char *comma = memchr(s, ',', (size_t)(end - s));
                const char *e = comma ? comma : end;
                const char *a = s;
                while (a < e && (*a == ' ' || *a == '\t')) {
                    a++;
                }
                while (e > a && (e[-1] == ' ' || e[-1] == '\t')) {
                    e--;
                }
                size_t n = (size_t)(e - a);
                if (ieq(a, n, "chunked")) {
                    if (chunked) {
                        return fail_header(p, "TRANSFER-ENCODING");
                    }
                    chunked = true;
                    te = true;
                } else if (ieq(a, n, "identity")) {
                    /* As gunicorn 27's server: identity is a coding like the
                     * others, so without chunked last the length cannot be
                     * determined (the corpus's valid/009 disagrees; see
                     * docs/compatibility.md). */
                    if (chunked) {
                        return fail_header(p, "TRANSFER-ENCODING");
                    }
                    te = true;
                } else if (ieq(a, n, "compress") || ieq(a, n, "deflate") || ieq(a, n, "gzip")) {
                    if (chunked) {
                        return fail_header(p, "TRANSFER-ENCODING");
                    }
                    req->must_close = true;
                    te = true;
                } else {
                    return fail_repr(p, CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING,
                                     "Unsupported transfer coding: ", h->value.ptr, h->value.len);
                }
                if (comma == NULL) {
                    break;
                }
                s = comma + 1;
            }
        }
    }
    /* RFC 9112 6.3: a request whose Transfer-Encoding codings do not end in
     * chunked has no determinable length. */
    if (te && !chunked) {
        return fail_header(p, "TRANSFER-ENCODING");
    }
    if (chunked) {
        if (req->version_major < 1 || (req->version_major == 1 && req->version_minor < 1)) {
            return fail_header(p, "TRANSFER-ENCODING");
        }
        if (cl != NULL) {
            return fail_header(p, "CONTENT-LENGTH");
        }
        req->body_kind = CG_HTTP_BODY_CHUNKED;
        return 0;
    }
    if (cl != NULL) {
        /* str.isnumeric() and int(): ASCII digits only, no sign, no blank.
         * Beyond 2^63 we refuse (gunicorn would wait for an endless body). */
        uint64_t v = 0;
        if (cl->len == 0) {
            return fail_header(p, "CONTENT-LENGTH");
        }
        for (size_t i = 0; i < cl->len; i++) {
            unsigned char c = (unsigned char)cl->ptr[i];
            if (c < '0' || c > '9' || v > (UINT64_C(1) << 62) / 10 * 2) {
                return fail_header(p, "CONTENT-LENGTH");
            }
            v = v * 10 + (c - '0');
        }
        req->body_kind = CG_HTTP_BODY_LENGTH;
        req->content_length = v;
        return 0;
    }
    req->body_kind = CG_HTTP_BODY_NONE;
    return 0;
}

/* RFC 3986 host [":" port]: an IP-literal in brackets, or a reg-name of
 * unreserved, pct-encoded and sub-delims characters; empty is allowed (a
 * target without authority). */
static bool ascii_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool ascii_hex(unsigned char c)
{
    return ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool host_valid(const char *s, size_t n)
{
    size_t i = 0;

    if (n > 0 && s[0] == '[') {
        for (i = 1; i < n && s[i] != ']'; i++) {
            if (!ascii_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.' && s[i] != 'v' &&
                s[i] != 'V') {
                return false;
            }
        }
        if (i == n) {
            return false;
        }
        i++;
    } else {
        for (; i < n && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (i + 2 >= n || !ascii_hex((unsigned char)s[i + 1]) ||
                    !ascii_hex((unsigned char)s[i + 2])) {
                    return false;
                }
                i += 2;
            } else if (!ascii_hex(c) && !(c >= 'g' && c <= 'z') && !(c >= 'G' && c <= 'Z') &&
                       (c == '\0' || strchr("-._~!$&'()*+,;=", c) == NULL)) {
                return false;
            }
        }
    }
    if (i < n) {
        if (s[i] != ':') {
            return false;
        }
        for (i++; i < n; i++) {
            if (!ascii_digit((unsigned char)s[i])) {
                return false;
            }
        }
    }
    return true;
}

int cg_http_headers_host(struct cg_http_parser *p)
{
    struct cg_http_request *req = &p->req;
    const struct cg_http_span *host = NULL;
    char r[CG_HTTP_ERROR_DETAIL_MAX / 2] = "";

    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (!name_is(h->name.ptr, h->name.len, "HOST")) {
            continue;
        }
        if (host != NULL) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HEADER,
                              "Invalid HTTP Header: 'HOST' (sent more than once; a request "
                              "carries one Host header)");
            p->error_has_request = true;
            return -1;
        }
        host = &h->value;
    }
    if (host == NULL) {
        if (req->version_major > 1 || (req->version_major == 1 && req->version_minor >= 1)) {
            cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HEADER,
                              "Invalid HTTP Header: 'HOST' (missing; an HTTP/1.1 request "
                              "must carry a Host header)");
            p->error_has_request = true;
            return -1;
        }
        return 0;
    }
    if (!host_valid(host->ptr, host->len)) {
        cg_http_error_repr(r, sizeof(r), host->ptr, host->len, 0);
        cg_http_error_set(&p->error, CG_HTTP_ERR_INVALID_HEADER,
                          "Invalid HTTP Header: 'HOST' (not a host[:port]: %s)", r);
        p->error_has_request = true;
        return -1;
    }
    return 0;
}
