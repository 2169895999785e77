/* The h2c upgrade (RFC 7540 3.2) as gunicorn 27 honours it (see cg_h2.h):
 * the rules an HTTP/1.1 request must meet, the head kept for stream 1, and
 * the session started from it. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_h2_int.h"
#include "cg_http_iplist.h"

/* ---- h2c upgrade (RFC 7540 3.2) ------------------------------------------ */

const char CG_H2_UPGRADE_101[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Upgrade: h2c\r\n"
                                 "\r\n";

struct cg_h2_upgrade {
    uint8_t *settings; /* the decoded HTTP2-Settings payload */
    size_t settings_len;
    bool head_request;
    char *method, *path, *authority, *scheme;
    struct buf hdrs;   /* "name: value\r\n", less the upgrade's own fields */
    bool chunked;      /* the body came chunked: stream 1 relays it chunked too */
    struct buf body;
    struct buf pending;
};

static int b64url_value(char c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26
         : c >= '0' && c <= '9' ? c - '0' + 52 : c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decodes HTTP2-Settings (base64url, padding optional) into `out` and
 * checks it as gunicorn does: whole 6-byte entries, ENABLE_PUSH 0 or 1,
 * INITIAL_WINDOW_SIZE at most 2^31-1, MAX_FRAME_SIZE within 2^14..2^24-1.
 * Returns the payload length, or -1. `out` holds at least n bytes. */
static ssize_t settings_decode(const char *v, size_t n, uint8_t *out)
{
    size_t len = 0, bits = 0;
    uint32_t acc = 0;

    while (n > 0 && v[n - 1] == '=') {
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        int d = b64url_value(v[i]);
        if (d < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (uint8_t)(acc >> bits);
        }
    }
    if (n % 4 == 1 || len % 6 != 0) {
        return -1;
    }
    for (size_t i = 0; i < len; i += 6) {
        uint32_t code = (uint32_t)out[i] << 8 | out[i + 1];
        uint32_t val = (uint32_t)out[i + 2] << 24 | (uint32_t)out[i + 3] << 16 |
                       (uint32_t)out[i + 4] << 8 | out[i + 5];
        if ((code == NGHTTP2_SETTINGS_ENABLE_PUSH && val > 1) ||
            (code == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE && val > 0x7fffffffu) ||
            (code == NGHTTP2_SETTINGS_MAX_FRAME_SIZE && (val < 16384 || val > 16777215))) {
            return -1;
        }
    }
    return (ssize_t)len;
}

static bool span_is(const struct cg_http_span *s, const char *lit)
{
    return s->len == strlen(lit) && strncasecmp(s->ptr, lit, s->len) == 0;
}

/* Copies the request head into `up`: the pseudo-fields gunicorn gives
 * stream 1 (method, target, Host as :authority, the request's scheme) and
 * every other field but Connection, Upgrade and HTTP2-Settings, in their
 * order (Transfer-Encoding too: a chunked body stays chunked, and an ASGI
 * scope lists it where gunicorn's does, before host). Returns 0 or -1. */
static int upgrade_copy_head(struct cg_h2_upgrade *up, const struct cg_http_request *req)
{
    const struct cg_http_span *host = cg_http_request_header(req, "HOST");

    up->head_request = span_is(&req->method, "HEAD");
    up->chunked = req->body_kind == CG_HTTP_BODY_CHUNKED;
    up->method = cg_h2_dup((const uint8_t *)req->method.ptr, req->method.len);
    up->path = cg_h2_dup((const uint8_t *)req->uri.ptr, req->uri.len);
    up->scheme = strdup(req->url_scheme);
    up->authority = host != NULL ? cg_h2_dup((const uint8_t *)host->ptr, host->len) : NULL;
    if (up->method == NULL || up->path == NULL || up->scheme == NULL ||
        (host != NULL && up->authority == NULL)) {
        return -1;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (span_is(&h->name, "CONNECTION") || span_is(&h->name, "UPGRADE") ||
            span_is(&h->name, "HTTP2-SETTINGS") || span_is(&h->name, "HOST")) {
            continue;
        }
        size_t at = up->hdrs.len;
        if (cg_h2_buf_add(&up->hdrs, h->name.ptr, h->name.len) < 0 ||
            cg_h2_buf_add(&up->hdrs, ": ", 2) < 0 ||
            cg_h2_buf_add(&up->hdrs, h->value.ptr, h->value.len) < 0 ||
            cg_h2_buf_add(&up->hdrs, "\r\n", 2) < 0) {
            return -1;
        }
        for (size_t j = at; j < at + h->name.len; j++) {
            up->hdrs.p[j] = (char)(up->hdrs.p[j] >= 'A' && up->hdrs.p[j] <= 'Z'
                                       ? up->hdrs.p[j] + 32 : up->hdrs.p[j]);
        }
    }
    return 0;
}

struct cg_h2_upgrade *cg_h2_upgrade_new(const struct cg_h2_hub *hub,
                                        const struct cg_http_request *req,
                                        const struct sockaddr *peer)
{
    const struct cg_http_span *upgrade = NULL, *connection = NULL, *settings = NULL;
    size_t nsettings = 0;

    if (!hub->upgrade || (peer->sa_family != AF_UNIX &&
                          !cg_http_iplist_allows(hub->trusted, peer))) {
        return NULL;
    }
    /* gunicorn reads the last Upgrade and Connection fields */
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (span_is(&h->name, "UPGRADE")) {
            upgrade = &h->value;
        } else if (span_is(&h->name, "CONNECTION")) {
            connection = &h->value;
        } else if (span_is(&h->name, "HTTP2-SETTINGS")) {
            settings = &h->value;
            nsettings++;
        }
    }
    if (upgrade == NULL || !span_is(upgrade, "h2c") || nsettings != 1 || connection == NULL ||
        !cg_http_list_has(connection, "http2-settings") ||
        !cg_http_list_has(connection, "upgrade") ||
        req->version_major < 1 || (req->version_major == 1 && req->version_minor < 1) ||
        (req->body_kind == CG_HTTP_BODY_LENGTH && req->content_length > CG_H2_UPGRADE_BODY_MAX)) {
        return NULL;
    }
    struct cg_h2_upgrade *up = calloc(1, sizeof(*up));
    if (up == NULL || (up->settings = malloc(settings->len + 1)) == NULL) {
        cg_h2_upgrade_free(up);
        return NULL;
    }
    ssize_t n = settings_decode(settings->ptr, settings->len, up->settings);
    if (n < 0 || upgrade_copy_head(up, req) < 0) {
        /* gunicorn: settings it cannot use mean no upgrade (and no 101) */
        cg_h2_upgrade_free(up);
        return NULL;
    }
    up->settings_len = (size_t)n;
    return up;
}

int cg_h2_upgrade_add_body(struct cg_h2_upgrade *up, const char *p, size_t n)
{
    if (up->body.len + n > CG_H2_UPGRADE_BODY_MAX) {
        return -1;
    }
    return cg_h2_buf_add(&up->body, p, n);
}

int cg_h2_upgrade_set_pending(struct cg_h2_upgrade *up, const char *p, size_t n)
{
    return n > 0 ? cg_h2_buf_add(&up->pending, p, n) : 0;
}

void cg_h2_upgrade_free(struct cg_h2_upgrade *up)
{
    if (up == NULL) {
        return;
    }
    free(up->settings);
    free(up->method);
    free(up->path);
    free(up->authority);
    free(up->scheme);
    buf_free(&up->hdrs);
    buf_free(&up->body);
    buf_free(&up->pending);
    free(up);
}

int cg_h2_conn_upgrade(struct cg_h2_conn *hc, struct cg_h2_upgrade *up, struct cg_err *err)
{
    int rc = -1;
    struct stream *s = cg_h2_stream_new(hc, 1);

    if (s == NULL) {
        cg_err_set(err, "HTTP/2 upgrade: out of memory");
        goto cleanup;
    }
    /* stream 1 is the upgrading request (RFC 7540 3.2): the fields move
     * over; a chunked body stays chunked (no content-length, as gunicorn's
     * stream, which keeps Transfer-Encoding) */
    s->method = up->method;
    s->path = up->path;
    s->authority = up->authority;
    s->scheme = up->scheme;
    s->hdrs = up->hdrs;
    s->has_length = !up->chunked;
    up->method = up->path = up->authority = up->scheme = NULL;
    memset(&up->hdrs, 0, sizeof(up->hdrs));
    int e = nghttp2_session_upgrade2(hc->ses, up->settings, up->settings_len, up->head_request,
                                     s);
    if (e != 0) {
        cg_err_set(err, "HTTP/2 upgrade: %s", nghttp2_strerror(e));
        goto cleanup;
    }
    if (cg_h2_build_head(s, true) < 0) { /* the fields as they came: no more DATA */
        cg_err_set(err, "HTTP/2 upgrade: out of memory");
        goto cleanup;
    }
    /* The body came over HTTP/1: in hand, no window is owed for it. */
    if (up->chunked) {
        char size[24];
        int k = snprintf(size, sizeof(size), "%zx\r\n", up->body.len);
        if ((up->body.len > 0 && (cg_h2_buf_add(&s->in, size, (size_t)k) < 0 ||
                                  cg_h2_buf_add(&s->in, up->body.p, up->body.len) < 0 ||
                                  cg_h2_buf_add(&s->in, "\r\n", 2) < 0)) ||
            cg_h2_buf_add(&s->in, "0\r\n\r\n", 5) < 0) {
            cg_err_set(err, "HTTP/2 upgrade: out of memory");
            goto cleanup;
        }
    } else {
        s->in = up->body;
        memset(&up->body, 0, sizeof(up->body));
    }
    cg_h2_queue_stream(hc, s, true);
    s = NULL;
    rc = 0;
    if (buf_avail(&up->pending) > 0 &&
        nghttp2_session_mem_recv(hc->ses, (const uint8_t *)up->pending.p + up->pending.off,
                                 buf_avail(&up->pending)) < 0) {
        hc->dead = true;
    }
cleanup:
    if (s != NULL) {
        nghttp2_session_set_stream_user_data(hc->ses, 1, NULL);
        cg_h2_stream_free(s);
    }
    cg_h2_upgrade_free(up);
    return rc;
}
