/* The request-parsing policy: gunicorn's HTTP settings as the parser needs
 * them. The worker fills one struct from the settings (cg_http_limits_init()
 * gives gunicorn's defaults) and hands a pointer to every parser; the struct
 * and everything it points to must outlive those parsers and are only read.
 *
 * Values are stored as configured; the parser applies gunicorn's rules for
 * out-of-range values itself (cg_http_limits_effective()). */
#ifndef CG_HTTP_LIMITS_H
#define CG_HTTP_LIMITS_H

#include <stdbool.h>
#include <stddef.h>

struct cg_http_iplist;

/* gunicorn's hard caps (gunicorn/http/message.py). */
#define CG_HTTP_MAX_REQUEST_LINE 8190     /* cap of limit_request_line */
#define CG_HTTP_MAX_HEADERS 32768         /* cap of limit_request_fields */
#define CG_HTTP_DEFAULT_FIELD_SIZE 8190   /* limit_request_field_size <= 0 */
/* cgunicorn's own cap when limit_request_line is 0 ("unlimited"), so a peer
 * cannot make a worker buffer a request line forever (gunicorn's fast parser
 * uses the same 1 MiB). */
#define CG_HTTP_UNLIMITED_REQUEST_LINE (1024 * 1024)

/* header_map: what to do with a header whose name contains "_". */
enum cg_http_header_map {
    CG_HTTP_HEADER_MAP_DROP = 0,   /* gunicorn default: silently drop it */
    CG_HTTP_HEADER_MAP_REFUSE,     /* 400 InvalidHeaderName */
    CG_HTTP_HEADER_MAP_DANGEROUS,  /* keep it */
};

/* proxy_protocol (gunicorn normalizes true/1 to auto, false/0/none to off). */
enum cg_http_proxy_mode {
    CG_HTTP_PROXY_OFF = 0,
    CG_HTTP_PROXY_V1,
    CG_HTTP_PROXY_V2,
    CG_HTTP_PROXY_AUTO,
};

/* One secure_scheme_headers entry: header NAME (upper case, as gunicorn
 * compares it with the upper-cased request header) and the exact,
 * case-sensitive value that means https. */
struct cg_http_scheme_header {
    const char *name;
    const char *value;
};

struct cg_http_limits {
    int limit_request_line;        /* 0 = unlimited; < 0 or > 8190 means 8190 */
    int limit_request_fields;      /* <= 0 or > 32768 means 32768 */
    int limit_request_field_size;  /* <= 0 means 8190 */
    bool permit_obsolete_folding;
    bool strip_header_spaces;
    bool casefold_http_method;
    bool permit_unconventional_http_method;
    bool permit_unconventional_http_version;
    enum cg_http_header_map header_map;
    enum cg_http_proxy_mode proxy_protocol;
    /* Peers allowed to send a PROXY header / forwarding and scheme headers.
     * Unix-socket peers are always allowed (as in gunicorn). NULL means no
     * TCP peer is allowed. cg_http_limits_init() points both at a built-in
     * list equal to gunicorn's default "127.0.0.1,::1". */
    const struct cg_http_iplist *proxy_allow_ips;
    const struct cg_http_iplist *forwarded_allow_ips;
    /* secure_scheme_headers; init points at gunicorn's default table. */
    const struct cg_http_scheme_header *secure_scheme_headers;
    size_t n_secure_scheme_headers;
    /* forwarder_headers (upper-case names with "_" that a trusted peer may
     * send, e.g. "SCRIPT_NAME"); "*" allows all. init: SCRIPT_NAME,PATH_INFO. */
    const char *const *forwarder_headers;
    size_t n_forwarder_headers;
    bool is_ssl;                   /* the listener is TLS: url_scheme starts as https */
};

/* Fills `l` with gunicorn 27's defaults. Never fails. */
void cg_http_limits_init(struct cg_http_limits *l);

/* The limits the parser enforces after gunicorn's normalization. */
struct cg_http_limits_effective {
    size_t request_line;       /* 0 never: unlimited becomes CG_HTTP_UNLIMITED_REQUEST_LINE */
    size_t fields;
    size_t field_size;
    size_t max_buffer_headers; /* fields * (field_size + 2) + 4, gunicorn's bound */
};

void cg_http_limits_effective(const struct cg_http_limits *l, struct cg_http_limits_effective *out);

#endif
