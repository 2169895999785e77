/* gunicorn's defaults for the request-parsing settings, and its
 * normalization of out-of-range limits (gunicorn/http/message.py). */
#include "cg_http_limits.h"

#include <string.h>

#include "cg_http_iplist.h"

static const struct cg_http_scheme_header default_scheme_headers[] = {
    { "X-FORWARDED-PROTOCOL", "ssl" },
    { "X-FORWARDED-PROTO", "https" },
    { "X-FORWARDED-SSL", "on" },
};

static const char *const default_forwarder_headers[] = { "SCRIPT_NAME", "PATH_INFO" };

void cg_http_limits_init(struct cg_http_limits *l)
{
    memset(l, 0, sizeof(*l));
    l->limit_request_line = 4094;
    l->limit_request_fields = 100;
    l->limit_request_field_size = 8190;
    l->header_map = CG_HTTP_HEADER_MAP_DROP;
    l->proxy_protocol = CG_HTTP_PROXY_OFF;
    l->proxy_allow_ips = &cg_http_iplist_localhost;
    l->forwarded_allow_ips = &cg_http_iplist_localhost;
    l->secure_scheme_headers = default_scheme_headers;
    l->n_secure_scheme_headers = sizeof(default_scheme_headers) / sizeof(default_scheme_headers[0]);
    l->forwarder_headers = default_forwarder_headers;
    l->n_forwarder_headers = sizeof(default_forwarder_headers) / sizeof(default_forwarder_headers[0]);
}

void cg_http_limits_effective(const struct cg_http_limits *l, struct cg_http_limits_effective *out)
{
    /* Request.__init__: < 0 or >= 8190 means 8190; 0 means unlimited. */
    if (l->limit_request_line < 0 || l->limit_request_line >= CG_HTTP_MAX_REQUEST_LINE) {
        out->request_line = CG_HTTP_MAX_REQUEST_LINE;
    } else if (l->limit_request_line == 0) {
        out->request_line = CG_HTTP_UNLIMITED_REQUEST_LINE;
    } else {
        out->request_line = (size_t)l->limit_request_line;
    }
    /* Message.__init__ */
    if (l->limit_request_fields <= 0 || l->limit_request_fields > CG_HTTP_MAX_HEADERS) {
        out->fields = CG_HTTP_MAX_HEADERS;
    } else {
        out->fields = (size_t)l->limit_request_fields;
    }
    if (l->limit_request_field_size <= 0) {
        out->field_size = CG_HTTP_DEFAULT_FIELD_SIZE;
    } else {
        out->field_size = (size_t)l->limit_request_field_size;
    }
    out->max_buffer_headers = out->fields * (out->field_size + 2) + 4;
}
