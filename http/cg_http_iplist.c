/* Allow-lists of addresses and networks (proxy_allow_ips,
 * forwarded_allow_ips), matched against a connection's peer address. */
#include "cg_http_iplist.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static const struct cg_http_ipnet localhost_nets[] = {
    { .family = AF_INET, .addr = { 127, 0, 0, 1 }, .prefix = 32 },
    { .family = AF_INET6, .addr = { [15] = 1 }, .prefix = 128 },
};

const struct cg_http_iplist cg_http_iplist_localhost = {
    .any = false,
    .n = 2,
    .nets = (struct cg_http_ipnet *)localhost_nets,
};

/* Whether bits past `prefix` are zero (Python's strict ip_network). */
static bool host_bits_clear(const unsigned char *addr, size_t nbytes, unsigned prefix)
{
    for (size_t i = 0; i < nbytes; i++) {
        unsigned bit0 = (unsigned)i * 8;
        unsigned char mask;
        if (bit0 + 8 <= prefix) {
            continue;
        }
        mask = bit0 >= prefix ? 0xff : (unsigned char)(0xff >> (prefix - bit0));
        if (addr[i] & mask) {
            return false;
        }
    }
    return true;
}

static int parse_item(const char *item, struct cg_http_ipnet *net, const char *what,
                      struct cg_err *err)
{
    char addr[64];
    const char *slash = strchr(item, '/');
    size_t alen = slash ? (size_t)(slash - item) : strlen(item);
    size_t nbytes;

    if (alen == 0 || alen >= sizeof(addr)) {
        cg_err_set(err, "%s: '%s' is not an IP address or network; use e.g. 127.0.0.1, ::1, "
                   "10.0.0.0/8 or *", what, item);
        return -1;
    }
    memcpy(addr, item, alen);
    addr[alen] = '\0';
    memset(net, 0, sizeof(*net));
    if (inet_pton(AF_INET, addr, net->addr) == 1) {
        net->family = AF_INET;
        nbytes = 4;
    } else if (inet_pton(AF_INET6, addr, net->addr) == 1) {
        net->family = AF_INET6;
        nbytes = 16;
    } else {
        cg_err_set(err, "%s: '%s' is not an IP address or network; use e.g. 127.0.0.1, ::1, "
                   "10.0.0.0/8 or *", what, item);
        return -1;
    }
    net->prefix = (unsigned)nbytes * 8;
    if (slash != NULL) {
        char *end = NULL;
        long pfx;
        if (slash[1] < '0' || slash[1] > '9') {
            cg_err_set(err, "%s: '%s': the prefix length after '/' must be a number", what, item);
            return -1;
        }
        pfx = strtol(slash + 1, &end, 10);
        if (*end != '\0' || pfx < 0 || pfx > (long)nbytes * 8) {
            cg_err_set(err, "%s: '%s': prefix length must be 0..%zu", what, item, nbytes * 8);
            return -1;
        }
        net->prefix = (unsigned)pfx;
    }
    if (!host_bits_clear(net->addr, nbytes, net->prefix)) {
        cg_err_set(err, "%s: '%s' has host bits set; give the network address (e.g. "
                   "192.168.1.0/24 rather than 192.168.1.1/24)", what, item);
        return -1;
    }
    return 0;
}

struct cg_http_iplist *cg_http_iplist_parse(const char *spec, const char *what, struct cg_err *err)
{
    struct cg_http_iplist *list = calloc(1, sizeof(*list));
    size_t cap = 0;
    const char *p = spec ? spec : "";

    if (list == NULL) {
        cg_err_set(err, "%s: out of memory", what);
        return NULL;
    }
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char item[128];
        const char *s = p, *e = p + n;

        p = comma ? comma + 1 : p + n;
        while (s < e && (*s == ' ' || *s == '\t')) {
            s++;
        }
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }
        if (s == e) {
            continue;
        }
        if ((size_t)(e - s) >= sizeof(item)) {
            cg_err_set(err, "%s: '%.*s' is too long for an IP address or network", what,
                       (int)(e - s), s);
            goto fail;
        }
        memcpy(item, s, (size_t)(e - s));
        item[e - s] = '\0';
        if (strcmp(item, "*") == 0) {
            list->any = true;
            continue;
        }
        if (list->n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct cg_http_ipnet *nn = realloc(list->nets, ncap * sizeof(*nn));
            if (nn == NULL) {
                cg_err_set(err, "%s: out of memory", what);
                goto fail;
            }
            list->nets = nn;
            cap = ncap;
        }
        if (parse_item(item, &list->nets[list->n], what, err) < 0) {
            goto fail;
        }
        list->n++;
    }
    return list;
fail:
    cg_http_iplist_free(list);
    return NULL;
}

void cg_http_iplist_free(struct cg_http_iplist *list)
{
    if (list == NULL || list == &cg_http_iplist_localhost) {
        return;
    }
    free(list->nets);
    free(list);
}

static bool net_contains(const struct cg_http_ipnet *net, const unsigned char *addr)
{
    unsigned full = net->prefix / 8, rest = net->prefix % 8;

    if (memcmp(net->addr, addr, full) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (net->addr[full] & mask) == (addr[full] & mask);
}

bool cg_http_iplist_allows(const struct cg_http_iplist *list, const struct sockaddr *peer)
{
    const unsigned char *addr;
    int family;

    if (peer == NULL || (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)) {
        return true;
    }
    if (list == NULL) {
        return false;
    }
    if (list->any) {
        return true;
    }
    family = peer->sa_family;
    if (family == AF_INET) {
        addr = (const unsigned char *)&((const struct sockaddr_in *)(const void *)peer)->sin_addr;
    } else {
        addr = (const unsigned char *)&((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr;
    }
    for (size_t i = 0; i < list->n; i++) {
        if (list->nets[i].family == family && net_contains(&list->nets[i], addr)) {
            return true;
        }
    }
    return false;
}
