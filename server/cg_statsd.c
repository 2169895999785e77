/* StatsD datagrams, formatted as gunicorn's statsd logger formats them. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_statsd.h"

static int sock_fd = -1;
static char prefix_buf[256];
static char tags_buf[512];

/* gunicorn turns the prefix "app" (or "app...") into "app." but leaves a
 * prefix of one character (or one character and dots) as it is. */
static void set_prefix(const char *prefix)
{
    size_t n = prefix ? strlen(prefix) : 0;
    size_t core = n;

    while (core > 0 && prefix[core - 1] == '.') {
        core--;
    }
    if (core >= 2) {
        snprintf(prefix_buf, sizeof(prefix_buf), "%.*s.", (int)core, prefix);
    } else {
        snprintf(prefix_buf, sizeof(prefix_buf), "%s", prefix ? prefix : "");
    }
}

/* A connected datagram socket for host ("HOST:PORT", "[V6]:PORT", or a unix
 * socket path). Returns the fd, or -1 with err. */
static int connect_to(const char *host, struct cg_err *err)
{
    const char *colon = strrchr(host, ':');
    int fd;

    if (host[0] == '/' || colon == NULL) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        if (strlen(host) >= sizeof(sun.sun_path)) {
            cg_err_set(err, "statsd_host '%s': unix socket path too long", host);
            return -1;
        }
        memcpy(sun.sun_path, host, strlen(host) + 1);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            cg_err_set(err, "statsd_host '%s': cannot connect to the unix socket: %s", host,
                       strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
        return fd;
    }
    char name[256];
    size_t n = (size_t)(colon - host);
    bool v6 = host[0] == '[' && n >= 2 && host[n - 1] == ']';
    if (v6) {
        host++;
        n -= 2;
    }
    if (n >= sizeof(name)) {
        cg_err_set(err, "statsd_host '%s': host name too long", host);
        return -1;
    }
    memcpy(name, host, n);
    name[n] = '\0';
    struct addrinfo hints = { .ai_family = v6 ? AF_INET6 : AF_INET, .ai_socktype = SOCK_DGRAM };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(name, colon + 1, &hints, &res);
    if (rc != 0) {
        cg_err_set(err, "statsd_host '%s': cannot resolve '%s': %s", host, name,
                   gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        cg_err_set(err, "statsd_host '%s': %s", host, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The error log's counter (cg_log_set_counter): one per line at WARNING or
 * worse, sent only while metrics are on. */
static void count_log_line(const char *name)
{
    cg_statsd_counter(name, 1);
}

int cg_statsd_open(const char *host, const char *prefix, const char *tags, struct cg_err *err)
{
    int fd = -1;

    if (host != NULL && (fd = connect_to(host, err)) < 0) {
        return -1;
    }
    if (sock_fd >= 0) {
        close(sock_fd);
    }
    sock_fd = fd;
    cg_log_set_counter(fd >= 0 ? count_log_line : NULL);
    set_prefix(prefix);
    snprintf(tags_buf, sizeof(tags_buf), "%s", tags ? tags : "");
    return 0;
}

bool cg_statsd_on(void)
{
    return sock_fd >= 0;
}

void cg_statsd_metric(const char *name, const char *value, const char *kind)
{
    char msg[1024];
    int n;

    if (sock_fd < 0) {
        return;
    }
    n = snprintf(msg, sizeof(msg), "%s%s:%s|%s%s%s", prefix_buf, name, value, kind,
                 tags_buf[0] ? "|#" : "", tags_buf);
    if (n > 0 && (size_t)n < sizeof(msg)) {
        ssize_t w = send(sock_fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w; /* a lost datagram (no listener, full buffer) is not an error */
    }
}

static void send_long(const char *name, long value, const char *kind)
{
    char text[32];
    snprintf(text, sizeof(text), "%ld", value);
    cg_statsd_metric(name, text, kind);
}

void cg_statsd_counter(const char *name, long value)
{
    send_long(name, value, "c|@1.0");
}

void cg_statsd_gauge(const char *name, long value)
{
    send_long(name, value, "g");
}

void cg_statsd_histogram(const char *name, long value)
{
    send_long(name, value, "h");
}

void cg_statsd_request(int status, uint64_t duration_us)
{
    char ms[64], name[64];

    if (sock_fd < 0) {
        return;
    }
    /* Python's str() of the float milliseconds: "12.0", "1.5", "1.234" */
    int k = snprintf(ms, sizeof(ms), "%llu.%03u", (unsigned long long)(duration_us / 1000),
                     (unsigned)(duration_us % 1000));
    while (k > 2 && ms[k - 1] == '0' && ms[k - 2] != '.') {
        ms[--k] = '\0';
    }
    cg_statsd_metric("gunicorn.request.duration", ms, "ms");
    cg_statsd_counter("gunicorn.requests", 1);
    snprintf(name, sizeof(name), "gunicorn.request.status.%d", status);
    cg_statsd_counter(name, 1);
}
