/* Response head formatting and validation, after gunicorn's http/wsgi.py
 * Response (start_response, process_headers, is_chunked, should_close,
 * default_headers, write). */
#include "cg_http_response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_http_date.h"
#include "cg_http_int.h"

bool cg_http_is_token(const char *s, size_t len)
{
    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!cg_http_is_tchar((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

void cg_http_response_init(struct cg_http_response *r, const struct cg_http_request *req,
                           const char *server)
{
    memset(r, 0, sizeof(*r));
    r->version_major = req ? req->version_major : 1;
    r->version_minor = req ? req->version_minor : 1;
    r->is_head = req && req->method.len == 4 && memcmp(req->method.ptr, "HEAD", 4) == 0;
    r->req_should_close = req ? cg_http_request_should_close(req) : false;
    r->server = server ? server : CG_HTTP_SERVER_DEFAULT;
    r->status_code = -1;
}

void cg_http_response_deinit(struct cg_http_response *r)
{
    free(r->status);
    free(r->hdrs);
    free(r->head);
    r->status = r->hdrs = r->head = NULL;
    r->status_len = r->hdrs_len = r->hdrs_cap = r->head_len = r->head_cap = 0;
}

void cg_http_response_reset(struct cg_http_response *r)
{
    r->started = false;
    r->status_code = -1;
    r->upgrade = false;
    r->omits_body = false;
    r->forbids_length = false;
    r->has_length = false;
    r->length = 0;
    r->chunked = false;
    r->sent = 0;
    r->status_len = 0;
    r->hdrs_len = 0;
    r->head_len = 0;
}

void cg_http_response_force_close(struct cg_http_response *r)
{
    r->must_close = true;
}

static int oom(struct cg_http_error *err)
{
    cg_http_error_set(err, CG_HTTP_ERR_INTERNAL, "out of memory");
    return -1;
}

static bool field_char_ok(unsigned char c)
{
    /* SP / HTAB / VCHAR / obs-text (HEADER_VALUE_RE, STATUS_RE) */
    return c == ' ' || c == '\t' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

bool cg_http_is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!field_char_ok((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

int cg_http_response_start(struct cg_http_response *r, const char *status, size_t len,
                           struct cg_http_error *err)
{
    bool ok = len >= 3;

    for (size_t i = 0; ok && i < 3; i++) {
        ok = status[i] >= '0' && status[i] <= '9';
    }
    if (ok && len > 3) {
        ok = status[3] == ' ';
        for (size_t i = 4; ok && i < len; i++) {
            ok = field_char_ok((unsigned char)status[i]);
        }
    }
    if (!ok) {
        char rep[CG_HTTP_ERROR_DETAIL_MAX] = "";
        cg_http_error_repr(rep, sizeof(rep), status, len, 0);
        cg_http_error_set(err, CG_HTTP_ERR_VALUE, "Invalid status %s", rep);
        return -1;
    }
    char *copy = realloc(r->status, len + 1);
    if (copy == NULL) {
        return oom(err);
    }
    memcpy(copy, status, len);
    copy[len] = '\0';
    r->status = copy;
    r->status_len = len;
    r->started = true;
    /* int(status.split()[0]): the three digits (a reason follows a SP) */
    r->status_code = (status[0] - '0') * 100 + (status[1] - '0') * 10 + (status[2] - '0');
    int c = r->status_code;
    /* RFC 9110: HEAD, 1xx, 204 and 304 carry no body; 1xx and 204 no
     * Content-Length either (HEAD and 304 may send the GET's). */
    r->omits_body = r->is_head || c == 204 || c == 304 || (c >= 100 && c < 200);
    r->forbids_length = c == 204 || (c >= 100 && c < 200);
    r->hdrs_len = 0;
    r->has_length = false;
    r->length = 0;
    r->upgrade = false;
    return 0;
}

static bool is_hop_by_hop(const char *name, size_t n)
{
    static const char *const hop[] = { "connection", "keep-alive", "proxy-authenticate",
                                       "proxy-authorization", "te", "trailers",
                                       "transfer-encoding", "upgrade", "server", "date" };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (strlen(hop[i]) == n && strncasecmp(hop[i], name, n) == 0) {
            return true;
        }
    }
    return false;
}

static bool ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Python's int() for the Content-Length value (already SP/HTAB-stripped):
 * optional sign, digits with single underscores between them. */
static int parse_length(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int64_t v = 0;
    bool neg = false, digit_before = false;

    if (i < n && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    if (i == n) {
        return -1;
    }
    for (; i < n; i++) {
        if (s[i] == '_' && digit_before && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9') {
            digit_before = false;
            continue;
        }
        if (s[i] < '0' || s[i] > '9' || v > (INT64_MAX - 9) / 10) {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
        digit_before = true;
    }
    *out = neg ? -v : v;
    return 0;
}

static int hdrs_append(struct cg_http_response *r, const char *s, size_t n)
{
    if (r->hdrs_cap - r->hdrs_len < n) {
        size_t ncap = r->hdrs_cap ? r->hdrs_cap : 256;
        while (ncap - r->hdrs_len < n) {
            ncap *= 2;
        }
        char *nh = realloc(r->hdrs, ncap);
        if (nh == NULL) {
            return -1;
        }
        r->hdrs = nh;
        r->hdrs_cap = ncap;
    }
    memcpy(r->hdrs + r->hdrs_len, s, n);
    r->hdrs_len += n;
    return 0;
}

int cg_http_response_add_header(struct cg_http_response *r, const char *name, size_t name_len,
                                const char *value, size_t value_len, struct cg_http_error *err)
{
    char rep[CG_HTTP_ERROR_DETAIL_MAX] = "";

    if (!cg_http_is_token(name, name_len)) {
        cg_http_error_repr(rep, sizeof(rep), name, name_len, 0);
        cg_http_error_set(err, CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME,
                          "Invalid response header name from the application: %s", rep);
        return -1;
    }
    for (size_t i = 0; i < value_len; i++) {
        if (!field_char_ok((unsigned char)value[i])) {
            /* the name only: the value may be a secret */
            cg_http_error_repr(rep, sizeof(rep), name, name_len, 0);
            cg_http_error_set(err, CG_HTTP_ERR_INVALID_RESPONSE_HEADER,
                              "Invalid response header from the application: %s", rep);
            return -1;
        }
    }
    /* RFC 9110 5.5: no leading or trailing whitespace */
    while (value_len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        value_len--;
    }
    while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t')) {
        value_len--;
    }
    if (ieq(name, name_len, "content-length")) {
        int64_t v;
        if (parse_length(value, value_len, &v) < 0) {
            cg_http_error_repr(rep, sizeof(rep), value, value_len, 0);
            cg_http_error_set(err, CG_HTTP_ERR_VALUE,
                              "invalid literal for int() with base 10: %s", rep);
            return -1;
        }
        if (r->forbids_length) {
            return 0; /* dropped on 1xx/204 */
        }
        r->has_length = true;
        r->length = v;
    } else if (is_hop_by_hop(name, name_len)) {
        if (ieq(name, name_len, "connection")) {
            if (ieq(value, value_len, "upgrade")) {
                r->upgrade = true;
            }
            return 0;
        }
        if (!(ieq(name, name_len, "upgrade") && ieq(value, value_len, "websocket"))) {
            return 0;
        }
    }
    if (hdrs_append(r, name, name_len) < 0 || hdrs_append(r, ": ", 2) < 0 ||
        hdrs_append(r, value, value_len) < 0 || hdrs_append(r, "\r\n", 2) < 0) {
        return oom(err);
    }
    return 0;
}

bool cg_http_response_should_close(const struct cg_http_response *r)
{
    if (r->must_close || r->req_should_close) {
        return true;
    }
    if (r->has_length || r->chunked) {
        return false;
    }
    if (r->is_head) {
        return false;
    }
    if (r->status_code < 200 || r->status_code == 204 || r->status_code == 304) {
        return false;
    }
    return true;
}

static bool is_chunked(const struct cg_http_response *r)
{
    if (r->has_length) {
        return false;
    }
    if (r->version_major < 1 || (r->version_major == 1 && r->version_minor == 0)) {
        return false;
    }
    return !r->omits_body;
}

int cg_http_response_head(struct cg_http_response *r, const char **out, size_t *len,
                          struct cg_http_error *err)
{
    const char *conn;
    size_t need;
    int n;

    r->chunked = is_chunked(r);
    conn = r->upgrade ? "upgrade" : cg_http_response_should_close(r) ? "close" : "keep-alive";
    need = 128 + r->status_len + strlen(r->server) + r->hdrs_len;
    if (r->head_cap < need) {
        char *nh = realloc(r->head, need);
        if (nh == NULL) {
            return oom(err);
        }
        r->head = nh;
        r->head_cap = need;
    }
    n = snprintf(r->head, r->head_cap, "HTTP/%d.%d %s\r\nServer: %s\r\nDate: %s\r\nConnection: %s\r\n%s",
                 r->version_major, r->version_minor, r->status ? r->status : "", r->server,
                 cg_http_date_now(), conn, r->chunked ? "Transfer-Encoding: chunked\r\n" : "");
    if (n < 0 || (size_t)n + r->hdrs_len + 2 >= r->head_cap) {
        return oom(err);
    }
    if (r->hdrs_len > 0) {
        memcpy(r->head + n, r->hdrs, r->hdrs_len);
    }
    memcpy(r->head + n + r->hdrs_len, "\r\n", 2);
    r->head_len = (size_t)n + r->hdrs_len + 2;
    *out = r->head;
    *len = r->head_len;
    return 0;
}

size_t cg_http_response_body_take(struct cg_http_response *r, size_t n)
{
    if (r->omits_body) {
        return 0;
    }
    if (r->has_length) {
        if (r->length <= 0 || r->sent >= (uint64_t)r->length) {
            return 0;
        }
        uint64_t left = (uint64_t)r->length - r->sent;
        if (n > left) {
            n = (size_t)left;
        }
    }
    r->sent += n;
    return n;
}

size_t cg_http_chunk_prefix(char *buf, uint64_t n)
{
    int len = snprintf(buf, CG_HTTP_CHUNK_PREFIX_MAX, "%llX\r\n", (unsigned long long)n);
    return len > 0 ? (size_t)len : 0;
}
