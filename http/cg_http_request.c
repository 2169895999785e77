/* Helpers over a parsed request: gunicorn's keep-alive decision, header
 * lookup, and the request-target split (urllib.parse.urlsplit semantics,
 * which gunicorn's util.split_request_uri() relies on). */
#include "cg_http_request.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* Trims SP/HTAB (Python's str.strip(" \t")). */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) {
        (*n)--;
    }
}

static bool span_ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

bool cg_http_request_should_close(const struct cg_http_request *req)
{
    if (req->must_close) {
        return true;
    }
    /* After CONNECT the connection carries tunnel data, never another request. */
    if (req->method.len == 7 && memcmp(req->method.ptr, "CONNECT", 7) == 0) {
        return true;
    }
    /* Only the first Connection header counts; its value is compared whole
     * ("close, foo" is neither close nor keep-alive), as gunicorn does. */
    const struct cg_http_span *conn = cg_http_request_header(req, "CONNECTION");
    if (conn != NULL) {
        const char *v = conn->ptr;
        size_t n = conn->len;
        trim(&v, &n);
        if (span_ieq(v, n, "close")) {
            return true;
        }
        if (span_ieq(v, n, "keep-alive")) {
            return false;
        }
    }
    return req->version_major < 1 || (req->version_major == 1 && req->version_minor <= 0);
}

bool cg_http_list_has(const struct cg_http_span *list, const char *tok)
{
    const char *s = list->ptr, *end = list->ptr + list->len;

    while (s < end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *item = s;
        size_t n = (size_t)((comma ? comma : end) - s);
        trim(&item, &n);
        if (span_ieq(item, n, tok)) {
            return true;
        }
        s = comma ? comma + 1 : end;
    }
    return false;
}

const struct cg_http_span *cg_http_request_header(const struct cg_http_request *req,
                                                  const char *upper_name)
{
    size_t n = strlen(upper_name);

    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (h->name.len == n && memcmp(h->name.ptr, upper_name, n) == 0) {
            return &h->value;
        }
    }
    return NULL;
}

/* ASCII-only classes: <ctype.h> would follow the locale the embedded
 * interpreter may set. */
static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_xdigit(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_scheme_char(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.';
}

/* urllib.parse._check_bracketed_host: an IPv6 address (with an optional
 * %scope) or an IPvFuture "v<hex>.<something>". */
static int check_bracketed_host(const char *h, size_t n)
{
    char buf[64];
    const char *pct;

    if (n > 0 && h[0] == 'v') {
        size_t i = 1;
        while (i < n && is_xdigit((unsigned char)h[i])) {
            i++;
        }
        /* \Av[a-fA-F0-9]+\..+\Z: at least one hex digit, a dot, one more char
         * (and "." in ".+" does not match a newline, which never gets here) */
        return (i > 1 && i + 1 < n && h[i] == '.') ? 0 : -1;
    }
    if (n >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, h, n);
    buf[n] = '\0';
    pct = memchr(buf, '%', n);
    if (pct != NULL) {
        /* ipaddress: a scope id must be non-empty and hold no further '%' */
        if (pct[1] == '\0' || strchr(pct + 1, '%') != NULL) {
            return -1;
        }
        buf[pct - buf] = '\0';
    }
    unsigned char a6[16];
    /* An IPv4 address in brackets is refused too: inet_pton(AF_INET6) does. */
    return inet_pton(AF_INET6, buf, a6) == 1 ? 0 : -1;
}

int cg_http_uri_split(const char *uri, size_t len, struct cg_http_uri_parts *out)
{
    const char *s = uri;
    size_t n = len;
    const char *colon;

    memset(out, 0, sizeof(*out));
    out->scheme.ptr = out->netloc.ptr = out->query.ptr = out->fragment.ptr = uri;
    /* gunicorn: "//x" is an absolute path, never a network location. */
    if (!(n >= 2 && s[0] == '/' && s[1] == '/')) {
        colon = memchr(s, ':', n);
        if (colon != NULL && colon > s && is_alpha((unsigned char)s[0])) {
            size_t i = 0, k = (size_t)(colon - s);
            while (i < k && is_scheme_char((unsigned char)s[i])) {
                i++;
            }
            if (i == k) {
                out->scheme.ptr = s;
                out->scheme.len = k;
                s += k + 1;
                n -= k + 1;
            }
        }
        if (n >= 2 && s[0] == '/' && s[1] == '/') {
            size_t e = 2;
            while (e < n && s[e] != '/' && s[e] != '?' && s[e] != '#') {
                e++;
            }
            out->netloc.ptr = s + 2;
            out->netloc.len = e - 2;
            s += e;
            n -= e;
            const char *nl = out->netloc.ptr;
            size_t nn = out->netloc.len;
            const char *lb = memchr(nl, '[', nn), *rb = memchr(nl, ']', nn);
            if ((lb == NULL) != (rb == NULL)) {
                return -1;  /* "Invalid IPv6 URL" */
            }
            if (lb != NULL) {
                /* netloc.partition('[')[2].partition(']')[0] */
                const char *h = lb + 1;
                const char *end = memchr(h, ']', (size_t)(nl + nn - h));
                size_t hn = end ? (size_t)(end - h) : (size_t)(nl + nn - h);
                if (check_bracketed_host(h, hn) < 0) {
                    return -1;
                }
            }
        }
    }
    const char *hash = memchr(s, '#', n);
    if (hash != NULL) {
        out->fragment.ptr = hash + 1;
        out->fragment.len = (size_t)(s + n - hash - 1);
        n = (size_t)(hash - s);
    }
    const char *q = memchr(s, '?', n);
    if (q != NULL) {
        out->query.ptr = q + 1;
        out->query.len = (size_t)(s + n - q - 1);
        n = (size_t)(q - s);
    }
    out->path.ptr = s;
    out->path.len = n;
    return 0;
}
