/* PROXY protocol v1/v2 headers in front of a connection's first request,
 * with gunicorn's checks and messages (Request._handle_proxy_protocol and
 * friends in gunicorn/http/message.py). */
#include "cg_http_proxy.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Python's str.isspace() for a latin-1 character. */
static bool py_space(unsigned char c)
{
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 ||
           c == 0xa0;
}

/* Python's int(s) for a decimal string: surrounding whitespace, an optional
 * sign, digits with single underscores between them. Returns 0 and *out
 * (clamped to +-1e9), or -1 (ValueError). */
static int py_int(const char *s, size_t n, long *out)
{
    size_t i = 0;
    long v = 0;
    int neg = 0;
    bool digit_before = false;

    while (n > 0 && py_space((unsigned char)s[n - 1])) {
        n--;
    }
    while (i < n && py_space((unsigned char)s[i])) {
        i++;
    }
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    if (i == n) {
        return -1;
    }
    for (; i < n; i++) {
        if (s[i] == '_') {
            if (!digit_before || i + 1 >= n || s[i + 1] < '0' || s[i + 1] > '9') {
                return -1;
            }
            digit_before = false;
            continue;
        }
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        digit_before = true;
        if (v < 1000000000L) {
            v = v * 10 + (s[i] - '0');
        }
    }
    *out = neg ? -v : v;
    return 0;
}

static bool valid_addr(int family, const char *s, size_t n)
{
    char buf[64];
    unsigned char a[16];

    if (n >= sizeof(buf) || memchr(s, '\0', n) != NULL) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(family, buf, a) == 1;
}

static void set_line_error(struct cg_http_error *err, const char *prefix, const char *line,
                           size_t n)
{
    char r[CG_HTTP_ERROR_DETAIL_MAX];
    char msg[CG_HTTP_ERROR_DETAIL_MAX];

    /* InvalidProxyLine(x): str() is "Invalid PROXY line: %r" % x, where x is
     * the line, or a message that itself embeds the line with %s. */
    snprintf(msg, sizeof(msg), "%s%.*s", prefix, (int)(n > 256 ? 256 : n), line);
    r[0] = '\0';
    cg_http_error_repr(r, sizeof(r), msg, strlen(msg), 0);
    cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_LINE, "Invalid PROXY line: %s", r);
}

static enum cg_http_proxy_result parse_v1(const char *buf, size_t len,
                                          struct cg_http_proxy_info *info, size_t *consumed,
                                          struct cg_http_error *err)
{
    const char *crlf = memmem(buf, len, "\r\n", 2);
    const char *bits[6];
    size_t blen[6];
    size_t nbits = 0, line_len;
    long sport, dport;

    if (crlf == NULL) {
        if (len > CG_HTTP_PROXY_V1_MAX_LINE) {
            set_line_error(err, "", buf, len);
            return CG_HTTP_PROXY_ERROR;
        }
        return CG_HTTP_PROXY_NEED_MORE;
    }
    line_len = (size_t)(crlf - buf);
    /* line.split(" "): every space separates, so "a  b" has an empty field */
    for (size_t i = 0, start = 0; i <= line_len; i++) {
        if (i == line_len || buf[i] == ' ') {
            if (nbits == 6) {
                nbits++;
                break;
            }
            bits[nbits] = buf + start;
            blen[nbits] = i - start;
            nbits++;
            start = i + 1;
        }
    }
    if (nbits != 6) {
        set_line_error(err, "", buf, line_len);
        return CG_HTTP_PROXY_ERROR;
    }
    int family;
    if (blen[1] == 4 && memcmp(bits[1], "TCP4", 4) == 0) {
        family = AF_INET;
    } else if (blen[1] == 4 && memcmp(bits[1], "TCP6", 4) == 0) {
        family = AF_INET6;
    } else {
        char msg[300];
        snprintf(msg, sizeof(msg), "protocol '%.*s' not supported",
                 (int)(blen[1] > 256 ? 256 : blen[1]), bits[1]);
        set_line_error(err, "", msg, strlen(msg));
        return CG_HTTP_PROXY_ERROR;
    }
    if (!valid_addr(family, bits[2], blen[2]) || !valid_addr(family, bits[3], blen[3])) {
        set_line_error(err, "", buf, line_len);
        return CG_HTTP_PROXY_ERROR;
    }
    if (py_int(bits[4], blen[4], &sport) < 0 || py_int(bits[5], blen[5], &dport) < 0 ||
        sport < 0 || sport > 65535 || dport < 0 || dport > 65535) {
        set_line_error(err, "invalid port ", buf, line_len);
        return CG_HTTP_PROXY_ERROR;
    }
    memset(info, 0, sizeof(*info));
    info->present = true;
    info->has_addr = true;
    snprintf(info->protocol, sizeof(info->protocol), "%.*s", (int)blen[1], bits[1]);
    snprintf(info->client_addr, sizeof(info->client_addr), "%.*s", (int)blen[2], bits[2]);
    snprintf(info->proxy_addr, sizeof(info->proxy_addr), "%.*s", (int)blen[3], bits[3]);
    info->client_port = (int)sport;
    info->proxy_port = (int)dport;
    *consumed = line_len + 2;
    return CG_HTTP_PROXY_DONE;
}

static enum cg_http_proxy_result parse_v2(const unsigned char *buf, size_t len,
                                          struct cg_http_proxy_info *info, size_t *consumed,
                                          struct cg_http_error *err)
{
    unsigned version, command, family, proto;
    size_t length, total;
    const unsigned char *a;

    if (len < 16) {
        return CG_HTTP_PROXY_NEED_MORE;
    }
    version = buf[12] >> 4;
    command = buf[12] & 0x0f;
    length = ((size_t)buf[14] << 8) | buf[15];
    if (version != 2) {
        cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_HEADER,
                          "Invalid PROXY header: unsupported version %u", version);
        return CG_HTTP_PROXY_ERROR;
    }
    if (command > 1) {
        cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_HEADER,
                          "Invalid PROXY header: unsupported command %u", command);
        return CG_HTTP_PROXY_ERROR;
    }
    total = 16 + length;
    if (len < total) {
        return CG_HTTP_PROXY_NEED_MORE;
    }
    memset(info, 0, sizeof(*info));
    info->present = true;
    *consumed = total;
    if (command == 0) { /* LOCAL: health check from the proxy itself */
        snprintf(info->protocol, sizeof(info->protocol), "LOCAL");
        return CG_HTTP_PROXY_DONE;
    }
    family = buf[13] >> 4;
    proto = buf[13] & 0x0f;
    if (proto != 1) {
        cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_HEADER,
                          "Invalid PROXY header: only TCP protocol is supported");
        return CG_HTTP_PROXY_ERROR;
    }
    a = buf + 16;
    if (family == 1) {
        if (length < 12) {
            cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_HEADER,
                              "Invalid PROXY header: insufficient address data for IPv4");
            return CG_HTTP_PROXY_ERROR;
        }
        inet_ntop(AF_INET, a, info->client_addr, sizeof(info->client_addr));
        inet_ntop(AF_INET, a + 4, info->proxy_addr, sizeof(info->proxy_addr));
        info->client_port = (a[8] << 8) | a[9];
        info->proxy_port = (a[10] << 8) | a[11];
        snprintf(info->protocol, sizeof(info->protocol), "TCP4");
    } else if (family == 2) {
        if (length < 36) {
            cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_HEADER,
                              "Invalid PROXY header: insufficient address data for IPv6");
            return CG_HTTP_PROXY_ERROR;
        }
        inet_ntop(AF_INET6, a, info->client_addr, sizeof(info->client_addr));
        inet_ntop(AF_INET6, a + 16, info->proxy_addr, sizeof(info->proxy_addr));
        info->client_port = (a[32] << 8) | a[33];
        info->proxy_port = (a[34] << 8) | a[35];
        snprintf(info->protocol, sizeof(info->protocol), "TCP6");
    } else if (family == 0) {
        snprintf(info->protocol, sizeof(info->protocol), "UNSPEC");
        return CG_HTTP_PROXY_DONE;
    } else {
        cg_http_error_set(err, CG_HTTP_ERR_INVALID_PROXY_HEADER,
                          "Invalid PROXY header: unsupported address family %u", family);
        return CG_HTTP_PROXY_ERROR;
    }
    info->has_addr = true;
    return CG_HTTP_PROXY_DONE;
}

enum cg_http_proxy_result cg_http_proxy_parse(int mode, const char *buf, size_t len, bool allowed,
                                              const char *peer_ip, struct cg_http_proxy_info *info,
                                              size_t *consumed, struct cg_http_error *err)
{
    bool v1 = mode == 1 || mode == 3, v2 = mode == 2 || mode == 3;
    bool is_v2, is_v1;

    *consumed = 0;
    if (len < CG_HTTP_PROXY_V2_SIGNATURE_LEN) {
        return CG_HTTP_PROXY_NEED_MORE;
    }
    is_v2 = v2 && memcmp(buf, CG_HTTP_PROXY_V2_SIGNATURE, CG_HTTP_PROXY_V2_SIGNATURE_LEN) == 0;
    is_v1 = !is_v2 && v1 && memcmp(buf, "PROXY ", 6) == 0;
    if (!is_v1 && !is_v2) {
        return CG_HTTP_PROXY_NONE;
    }
    if (!allowed) {
        char r[128] = "";
        const char *ip = peer_ip ? peer_ip : "";
        cg_http_error_repr(r, sizeof(r), ip, strlen(ip), 0);
        cg_http_error_set(err, CG_HTTP_ERR_FORBIDDEN_PROXY_REQUEST,
                          "Proxy request from %s not allowed", r);
        return CG_HTTP_PROXY_ERROR;
    }
    if (is_v2) {
        return parse_v2((const unsigned char *)buf, len, info, consumed, err);
    }
    return parse_v1(buf, len, info, consumed, err);
}
