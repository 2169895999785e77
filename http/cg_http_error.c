/* Request error kinds: names, statuses and the error page, following
 * gunicorn's errors.py (str() of each exception), Worker.handle_error()
 * (status, reason, message) and util.write_error() (the page). */
#include "cg_http_date.h"
#include "cg_http_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct kind_info {
    const char *name;
    int status;
    const char *reason;
};

static const struct kind_info kinds[CG_HTTP_ERR__COUNT] = {
    [CG_HTTP_ERR_NONE] = { "NoError", 0, "" },
    [CG_HTTP_ERR_NO_MORE_DATA] = { "NoMoreData", 0, "" },
    [CG_HTTP_ERR_INVALID_REQUEST_LINE] = { "InvalidRequestLine", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_REQUEST_METHOD] = { "InvalidRequestMethod", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_HTTP_VERSION] = { "InvalidHTTPVersion", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_HEADER] = { "InvalidHeader", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_HEADER_NAME] = { "InvalidHeaderName", 400, "Bad Request" },
    [CG_HTTP_ERR_OBSOLETE_FOLDING] = { "ObsoleteFolding", 400, "Bad Request" },
    [CG_HTTP_ERR_LIMIT_REQUEST_LINE] = { "LimitRequestLine", 414, "URI Too Long" },
    [CG_HTTP_ERR_LIMIT_REQUEST_HEADERS] = { "LimitRequestHeaders", 431,
                                            "Request Header Fields Too Large" },
    [CG_HTTP_ERR_EXPECTATION_FAILED] = { "ExpectationFailed", 417, "Expectation Failed" },
    [CG_HTTP_ERR_INVALID_CHUNK_SIZE] = { "InvalidChunkSize", 400, "Bad Request" },
    [CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR] = { "ChunkMissingTerminator", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_CHUNK_EXTENSION] = { "InvalidChunkExtension", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_PROXY_LINE] = { "InvalidProxyLine", 400, "Bad Request" },
    [CG_HTTP_ERR_INVALID_PROXY_HEADER] = { "InvalidProxyHeader", 500, "Internal Server Error" },
    [CG_HTTP_ERR_FORBIDDEN_PROXY_REQUEST] = { "ForbiddenProxyRequest", 403, "Forbidden" },
    [CG_HTTP_ERR_INVALID_SCHEME_HEADERS] = { "InvalidSchemeHeaders", 400, "Bad Request" },
    /* gunicorn sets 501 but leaves the reason at "Bad Request". */
    [CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING] = { "UnsupportedTransferCoding", 501,
                                                  "Bad Request" },
    [CG_HTTP_ERR_CONFIGURATION_PROBLEM] = { "ConfigurationProblem", 500, "Bad Request" },
    [CG_HTTP_ERR_INVALID_RESPONSE_HEADER] = { "InvalidResponseHeader", 500,
                                              "Internal Server Error" },
    [CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME] = { "InvalidResponseHeaderName", 500,
                                                   "Internal Server Error" },
    [CG_HTTP_ERR_VALUE] = { "ValueError", 500, "Internal Server Error" },
    [CG_HTTP_ERR_INTERNAL] = { "InternalError", 500, "Internal Server Error" },
};

static const struct kind_info *info(enum cg_http_error_kind kind)
{
    if ((int)kind < 0 || kind >= CG_HTTP_ERR__COUNT) {
        return &kinds[CG_HTTP_ERR_INTERNAL];
    }
    return &kinds[kind];
}

const char *cg_http_error_name(enum cg_http_error_kind kind)
{
    return info(kind)->name;
}

int cg_http_error_status(enum cg_http_error_kind kind)
{
    return info(kind)->status;
}

const char *cg_http_error_reason(enum cg_http_error_kind kind)
{
    return info(kind)->reason;
}

void cg_http_error_set(struct cg_http_error *e, enum cg_http_error_kind kind, const char *fmt, ...)
{
    va_list ap;

    e->kind = kind;
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
    va_end(ap);
}

/* Whether latin-1 character c is printable for Python's str.isprintable():
 * not C0/C1 controls, DEL, NBSP (Zs) or SOFT HYPHEN (Cf). */
static int latin1_printable(unsigned char c)
{
    return (c >= 0x20 && c < 0x7f) || (c > 0xa0 && c != 0xad);
}

void cg_http_error_repr(char *buf, size_t cap, const char *s, size_t len, int as_bytes)
{
    size_t n = strlen(buf);
    int cut = len > 256;
    char quote = '\'';

    if (cut) {
        len = 256;
    }
    if (memchr(s, '\'', len) != NULL && memchr(s, '"', len) == NULL) {
        quote = '"';
    }
#define PUT(str)                                                                           \
    do {                                                                                   \
        const char *p_ = (str);                                                            \
        while (*p_ != '\0' && n + 1 < cap) {                                               \
            buf[n++] = *p_++;                                                              \
        }                                                                                  \
    } while (0)
    if (as_bytes) {
        PUT("b");
    }
    char q[2] = { quote, '\0' };
    PUT(q);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '\\') {
            PUT("\\\\");
        } else if (c == (unsigned char)quote) {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tmp[2] = '\0';
            PUT(tmp);
        } else if (c == '\t') {
            PUT("\\t");
        } else if (c == '\n') {
            PUT("\\n");
        } else if (c == '\r') {
            PUT("\\r");
        } else if (as_bytes ? (c >= 0x20 && c < 0x7f) : latin1_printable(c)) {
            tmp[0] = (char)c;
            tmp[1] = '\0';
            PUT(tmp);
        } else {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
            PUT(tmp);
        }
    }
    if (cut) {
        PUT("...");
    }
    PUT(q);
#undef PUT
    buf[n < cap ? n : cap - 1] = '\0';
}

size_t cg_http_error_message(const struct cg_http_error *e, char *buf, size_t cap)
{
    const char *d = e->detail;

    switch (e->kind) {
    case CG_HTTP_ERR_INVALID_REQUEST_LINE:
        return (size_t)snprintf(buf, cap, "Invalid Request Line '%s'", d);
    case CG_HTTP_ERR_INVALID_REQUEST_METHOD:
        return (size_t)snprintf(buf, cap, "Invalid Method '%s'", d);
    case CG_HTTP_ERR_INVALID_HTTP_VERSION:
        return (size_t)snprintf(buf, cap, "Invalid HTTP Version '%s'", d);
    case CG_HTTP_ERR_LIMIT_REQUEST_HEADERS:
        return (size_t)snprintf(buf, cap, "Error parsing headers: '%s'", d);
    case CG_HTTP_ERR_INVALID_PROXY_LINE:
        return (size_t)snprintf(buf, cap, "'%s'", d);
    case CG_HTTP_ERR_FORBIDDEN_PROXY_REQUEST:
        return (size_t)snprintf(buf, cap, "Request forbidden");
    case CG_HTTP_ERR_NONE:
    case CG_HTTP_ERR_NO_MORE_DATA:
    case CG_HTTP_ERR_INVALID_PROXY_HEADER:
    case CG_HTTP_ERR_INVALID_RESPONSE_HEADER:
    case CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME:
    case CG_HTTP_ERR_VALUE:
    case CG_HTTP_ERR_INTERNAL:
    case CG_HTTP_ERR__COUNT:
        /* gunicorn's generic 500 path: empty message */
        if (cap > 0) {
            buf[0] = '\0';
        }
        return 0;
    default:
        return (size_t)snprintf(buf, cap, "%s", d);
    }
}

/* Appends s with html.escape(quote=True) applied. */
static size_t html_escape(char *out, size_t cap, size_t n, const char *s)
{
    for (; *s != '\0'; s++) {
        const char *rep = NULL;
        char one[2] = { *s, '\0' };
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#x27;"; break;
        default: rep = one; break;
        }
        for (; *rep != '\0'; rep++) {
            if (n + 1 < cap) {
                out[n] = *rep;
            }
            n++;
        }
    }
    return n;
}

size_t cg_http_error_format_response(const struct cg_http_error *e, char *buf, size_t cap)
{
    char mesg[CG_HTTP_ERROR_DETAIL_MAX + 64];
    char page[CG_HTTP_ERROR_RESPONSE_MAX];
    int status = cg_http_error_status(e->kind);
    const char *reason = cg_http_error_reason(e->kind);
    size_t n;
    int len;

    if (status == 0 || cap == 0) {
        return 0;
    }
    cg_http_error_message(e, mesg, sizeof(mesg));
    n = (size_t)snprintf(page, sizeof(page),
                         "<html>\n  <head>\n    <title>%s</title>\n  </head>\n  <body>\n"
                         "    <h1><p>%s</p></h1>\n    ",
                         reason, reason);
    n = html_escape(page, sizeof(page), n, mesg);
    if (n < sizeof(page)) {
        n += (size_t)snprintf(page + n, sizeof(page) - n, "\n  </body>\n</html>\n");
    }
    if (n >= sizeof(page)) {
        n = sizeof(page) - 1;
    }
    len = snprintf(buf, cap,
                   "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
                   "Content-Type: text/html\r\nContent-Length: %zu\r\n\r\n%.*s",
                   status, reason, cg_http_date_now(), n, (int)n, page);
    if (len < 0) {
        return 0;
    }
    return (size_t)len < cap ? (size_t)len : cap - 1;
}
