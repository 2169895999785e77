/* Address allow-lists: proxy_allow_ips and forwarded_allow_ips. A list is
 * gunicorn's comma-separated setting: IPv4/IPv6 addresses, CIDR networks
 * (strict: no host bits set, as Python's ipaddress.ip_network), or "*".
 * A peer matches a network of its own family only (an IPv4-mapped IPv6
 * peer does not match an IPv4 network, as in Python). */
#ifndef CG_HTTP_IPLIST_H
#define CG_HTTP_IPLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cg_err.h"

struct cg_http_ipnet {
    int family;                /* AF_INET or AF_INET6 */
    unsigned char addr[16];    /* network address, 4 or 16 bytes used */
    unsigned prefix;           /* prefix length */
};

struct cg_http_iplist {
    bool any;                  /* "*" was listed */
    size_t n;
    struct cg_http_ipnet *nets; /* owned; n entries */
};

/* Parses `spec` ("127.0.0.1,::1,10.0.0.0/8" or "*"; blanks around items are
 * ignored, empty items skipped). On success returns a list the caller frees
 * with cg_http_iplist_free(); on failure NULL with err naming the item, e.g.
 * "'10.0.0.1/8': host bits set; use 10.0.0.0/8". `what` names the setting in
 * the message ("forwarded_allow_ips"). */
struct cg_http_iplist *cg_http_iplist_parse(const char *spec, const char *what, struct cg_err *err);

void cg_http_iplist_free(struct cg_http_iplist *list);

/* Whether the peer is allowed: true when `list` has "*", or the address is
 * in one of its networks. A NULL peer or an AF_UNIX peer is always allowed
 * (gunicorn trusts connections without an IP). A NULL list allows only
 * those. */
bool cg_http_iplist_allows(const struct cg_http_iplist *list, const struct sockaddr *peer);

/* gunicorn's default for both lists, "127.0.0.1,::1"; static, never freed. */
extern const struct cg_http_iplist cg_http_iplist_localhost;

#endif
