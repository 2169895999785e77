/* Listening sockets, as gunicorn's sock.py creates them: SO_REUSEADDR,
 * optional SO_REUSEPORT, TCP_NODELAY on TCP, umask around unix binds, stale
 * unix socket files removed, non-blocking, inherited by workers. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_listen.h"
#include "cg_log.h"

/* Every listening fd this process holds, so that a forked child that is not
 * an HTTP worker (the dirty arbiter and its workers) can close them: a
 * listener held by a process that never accepts would queue connections
 * nobody serves and keep the port bound after the master is gone. */
#define MAX_REGISTERED 256
static int registered[MAX_REGISTERED];
static size_t nregistered;

static void register_fd(int fd)
{
    if (nregistered < MAX_REGISTERED) {
        registered[nregistered++] = fd;
    }
}

static void unregister_fd(int fd)
{
    for (size_t i = 0; i < nregistered; i++) {
        if (registered[i] == fd) {
            registered[i] = registered[--nregistered];
            return;
        }
    }
}

void cg_listen_close_inherited(void)
{
    for (size_t i = 0; i < nregistered; i++) {
        close(registered[i]);
    }
    nregistered = 0;
}

static int parse_port(const char *s, const char *spec, int *port, struct cg_err *err)
{
    char *end = NULL;
    long v = 0;

    errno = 0;
    v = strtol(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || v < 0 || v > 65535) {
        cg_err_set(err, "bind '%s': '%s' is not a valid port number; use HOST:PORT, "
                        "unix:PATH or fd://N", spec, s);
        return -1;
    }
    *port = (int)v;
    return 0;
}

int cg_listen_parse(const char *spec, struct cg_listen_addr *out, struct cg_err *err)
{
    const char *net = spec;
    char hostbuf[256];
    const char *port = "8000";

    memset(out, 0, sizeof(*out));
    if (strncmp(spec, "unix:", 5) == 0) {
        const char *p = spec + 5;
        if (strncmp(p, "//", 2) == 0) {
            p += 2;
        }
        if (p[0] == '\0' || strlen(p) >= sizeof(out->path)) {
            cg_err_set(err, "bind '%s': unix socket path is empty or longer than %zu bytes",
                       spec, sizeof(out->path) - 1);
            return -1;
        }
        out->kind = CG_LISTEN_UNIX;
        snprintf(out->path, sizeof(out->path), "%s", p);
        return 0;
    }
    if (strncmp(spec, "fd://", 5) == 0) {
        char *end = NULL;
        long fd = strtol(spec + 5, &end, 10);
        if (spec[5] == '\0' || *end != '\0' || fd < 0 || fd > 65535) {
            cg_err_set(err, "bind '%s': '%s' is not a valid file descriptor", spec, spec + 5);
            return -1;
        }
        out->kind = CG_LISTEN_FD;
        out->fd = (int)fd;
        return 0;
    }
    if (strncmp(net, "tcp://", 6) == 0) {
        net += 6;
    }
    if (strchr(net, '[') != NULL && strchr(net, ']') != NULL) {
        const char *close = strchr(net, ']');
        size_t hl = (size_t)(close - net - 1);
        if (net[0] != '[' || hl >= sizeof(hostbuf)) {
            cg_err_set(err, "bind '%s': malformed IPv6 address; use [ADDR]:PORT", spec);
            return -1;
        }
        memcpy(hostbuf, net + 1, hl);
        hostbuf[hl] = '\0';
        if (strncmp(close, "]:", 2) == 0) {
            port = close + 2;
        }
        out->kind = CG_LISTEN_TCP6;
    } else {
        const char *colon = strchr(net, ':');
        size_t hl = colon ? (size_t)(colon - net) : strlen(net);
        if (hl >= sizeof(hostbuf)) {
            cg_err_set(err, "bind '%s': host name too long", spec);
            return -1;
        }
        memcpy(hostbuf, net, hl);
        hostbuf[hl] = '\0';
        if (colon != NULL) {
            const char *second = strchr(colon + 1, ':');
            port = colon + 1;
            if (second != NULL) {
                cg_err_set(err, "bind '%s': too many ':' (IPv6 addresses go in brackets: "
                                "[::1]:8000)", spec);
                return -1;
            }
        }
        if (net[0] == '\0') {
            snprintf(hostbuf, sizeof(hostbuf), "0.0.0.0");
        }
        out->kind = CG_LISTEN_TCP;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, hostbuf, &a6) == 1) {
            out->kind = CG_LISTEN_TCP6;
        }
    }
    for (char *c = hostbuf; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    snprintf(out->host, sizeof(out->host), "%s", hostbuf);
    return parse_port(port, spec, &out->port, err);
}

bool cg_listen_https;

static void describe_bound(struct cg_listener *l)
{
    const char *scheme = cg_listen_https ? "https" : "http";

    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "";

    if (l->family == AF_UNIX) {
        snprintf(l->name, sizeof(l->name), "unix:%s", l->unix_path);
        return;
    }
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(l->name, sizeof(l->name), "<socket %d>", l->fd);
        return;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        l->port = ntohs(s6->sin6_port);
        snprintf(l->name, sizeof(l->name), "%s://[%s]:%d", scheme, host, l->port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        l->port = ntohs(s4->sin_port);
        snprintf(l->name, sizeof(l->name), "%s://%s:%d", scheme, host, l->port);
    }
    snprintf(l->host, sizeof(l->host), "%s", host);
}

static int set_common_options(int fd, int family, bool reuse_port)
{
    int one = 1;

    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        return -1;
    }
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 &&
        errno != ENOPROTOOPT && errno != EINVAL) {
        return -1;
    }
    if (family != AF_UNIX) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return 0;
}

/* One bind attempt. Returns fd, or -1 with errno and err. */
static int bind_one(const struct cg_listen_addr *a, const char *spec, int backlog,
                    bool reuse_port, int umask_value, struct cg_listener *l, struct cg_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    int family = AF_INET;
    int fd = -1;

    memset(&ss, 0, sizeof(ss));
    if (a->kind == CG_LISTEN_UNIX) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        struct stat st;
        family = AF_UNIX;
        su->sun_family = AF_UNIX;
        memcpy(su->sun_path, a->path, strlen(a->path));
        sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a->path) + 1);
        if (stat(a->path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                cg_err_set(err, "bind '%s': '%s' exists and is not a socket", spec, a->path);
                errno = EEXIST;
                return -1;
            }
            unlink(a->path);
        }
    } else {
        struct addrinfo hints, *res = NULL;
        char port[16];
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = a->kind == CG_LISTEN_TCP6 ? AF_INET6 : AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        snprintf(port, sizeof(port), "%d", a->port);
        int rc = getaddrinfo(a->host, port, &hints, &res);
        if (rc != 0 || res == NULL) {
            cg_err_set(err, "bind '%s': cannot resolve host '%s': %s", spec, a->host,
                       gai_strerror(rc));
            errno = EINVAL;
            return -1;
        }
        family = res->ai_family;
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sslen = res->ai_addrlen;
        freeaddrinfo(res);
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || set_common_options(fd, family, reuse_port) < 0) {
        int saved = errno;
        cg_err_set(err, "bind '%s': socket: %s", spec, strerror(saved));
        if (fd >= 0) {
            close(fd);
        }
        errno = saved;
        return -1;
    }
    mode_t old = 0;
    if (family == AF_UNIX) {
        old = umask((mode_t)umask_value);
    }
    int rc = bind(fd, (struct sockaddr *)&ss, sslen);
    int saved = errno;
    if (family == AF_UNIX) {
        umask(old);
    }
    if (rc < 0 || listen(fd, backlog) < 0) {
        saved = errno;
        cg_err_set(err, "bind '%s': %s", spec, strerror(saved));
        close(fd);
        errno = saved;
        return -1;
    }
    l->fd = fd;
    l->family = family;
    register_fd(fd);
    if (family == AF_UNIX) {
        snprintf(l->unix_path, sizeof(l->unix_path), "%s", a->path);
    }
    describe_bound(l);
    return fd;
}

int cg_listen_adopt_fd(int fd, struct cg_listener *out, struct cg_err *err)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    memset(out, 0, sizeof(*out));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        cg_err_set(err, "fd://%d: not a socket: %s", fd, strerror(errno));
        return -1;
    }
    out->fd = fd;
    out->family = ss.ss_family;
    register_fd(fd);
    if (ss.ss_family == AF_UNIX) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        snprintf(out->unix_path, sizeof(out->unix_path), "%s", su->sun_path);
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    describe_bound(out);
    out->unix_path[0] = '\0'; /* not ours to unlink */
    return 0;
}

int cg_listen_open_one(const char *spec, int backlog, bool reuse_port, int umask_value,
                       struct cg_listener *out, struct cg_err *err)
{
    struct cg_listen_addr a;

    memset(out, 0, sizeof(*out));
    out->fd = -1;
    if (cg_listen_parse(spec, &a, err) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (a.kind == CG_LISTEN_FD) {
        return cg_listen_adopt_fd(a.fd, out, err);
    }
    return bind_one(&a, spec, backlog, reuse_port, umask_value, out, err) < 0 ? -1 : 0;
}

int cg_listen_open_all(const char *const *specs, size_t nspecs, int backlog, bool reuse_port,
                       int umask_value, struct cg_listener **out, size_t *n,
                       struct cg_err *err)
{
    struct cg_listener *ls = calloc(nspecs ? nspecs : 1, sizeof(*ls));
    size_t done = 0;

    if (ls == NULL) {
        cg_err_set(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < nspecs; i++) {
        int tries = 0;
        for (;;) {
            if (cg_listen_open_one(specs[i], backlog, reuse_port, umask_value, &ls[done],
                                   err) == 0) {
                done++;
                break;
            }
            if (errno != EADDRINUSE || ++tries >= 5) {
                goto fail;
            }
            cg_log(CG_LOG_ERROR, "Connection in use: %s", specs[i]);
            cg_log(CG_LOG_ERROR, "Retrying in 1 second.");
            sleep(1);
        }
    }
    *out = ls;
    *n = done;
    return 0;
fail:
    cg_listen_close_all(ls, done, true);
    return -1;
}

void cg_listen_close_all(struct cg_listener *ls, size_t n, bool unlink_unix)
{
    if (ls == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (ls[i].fd >= 0) {
            unregister_fd(ls[i].fd);
            close(ls[i].fd);
        }
        if (unlink_unix && ls[i].unix_path[0] != '\0') {
            unlink(ls[i].unix_path);
        }
    }
    free(ls);
}

void cg_listen_stop_queueing(const struct cg_listener *ls, size_t n)
{
    for (size_t i = 0; ls != NULL && i < n; i++) {
        if (ls[i].fd >= 0 && listen(ls[i].fd, 0) < 0) {
            cg_log_errno(CG_LOG_WARNING, errno, "stopping new connections on %s", ls[i].name);
        }
    }
}

void cg_listen_describe(const struct cg_listener *ls, size_t n, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++) {
        int k = snprintf(buf + used, size - used, "%s%s", i ? "," : "", ls[i].name);
        if (k < 0) {
            break;
        }
        used += (size_t)k;
    }
}
