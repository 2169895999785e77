/* PROXY protocol v1 (text) and v2 (binary) headers, as gunicorn parses
 * them in front of the first request of a connection (proxy_protocol
 * setting). The parser (cg_http_parser) drives these; they are exposed for
 * tests and for workers that want the info. */
#ifndef CG_HTTP_PROXY_H
#define CG_HTTP_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "cg_http_error.h"

#define CG_HTTP_PROXY_V2_SIGNATURE "\r\n\r\n\0\r\nQUIT\n"
#define CG_HTTP_PROXY_V2_SIGNATURE_LEN 12
/* Longest v1 line we wait for (the spec's maximum is 107 bytes with CRLF;
 * gunicorn has no bound, we refuse longer lines as InvalidProxyLine). */
#define CG_HTTP_PROXY_V1_MAX_LINE 512

/* What gunicorn stores in Request.proxy_protocol_info. */
struct cg_http_proxy_info {
    bool present;            /* a PROXY header was received on this connection */
    char protocol[8];        /* "TCP4", "TCP6", "LOCAL" or "UNSPEC" */
    bool has_addr;           /* false for LOCAL and UNSPEC (gunicorn's None values) */
    char client_addr[46];    /* as sent (v1) / inet_ntop (v2) */
    int client_port;
    char proxy_addr[46];
    int proxy_port;
};

enum cg_http_proxy_result {
    CG_HTTP_PROXY_NEED_MORE = 0, /* not enough bytes yet to decide or finish */
    CG_HTTP_PROXY_NONE,          /* no PROXY header here: bytes are the request */
    CG_HTTP_PROXY_DONE,          /* header parsed: *consumed bytes belong to it */
    CG_HTTP_PROXY_ERROR,         /* err set */
};

/* Looks at the first bytes of a connection (buf, len: everything received so
 * far, from the first byte) in mode v1/v2/auto (1, 2, 3 as in enum
 * cg_http_proxy_mode). Like gunicorn, waits for 12 bytes before deciding.
 * `allowed` is whether the peer may send a PROXY header (proxy_allow_ips);
 * `peer_ip` names it in the ForbiddenProxyRequest error. On DONE fills info
 * and *consumed. */
enum cg_http_proxy_result cg_http_proxy_parse(int mode, const char *buf, size_t len, bool allowed,
                                              const char *peer_ip, struct cg_http_proxy_info *info,
                                              size_t *consumed, struct cg_http_error *err);

#endif
