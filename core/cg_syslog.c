/* Syslog output in gunicorn's format (see cg_syslog.h): address parsing as
 * glogging.parse_syslog_address, the facility table of glogging.py, and
 * the message as logging.handlers.SysLogHandler frames it (priority, the
 * "gunicorn.PREFIX.NAME: " ident, "[PID] ", the message, a NUL). */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_syslog.h"

static const struct {
    const char *name;
    int code;
} facilities[] = {
    { "auth", 4 },    { "authpriv", 10 }, { "cron", 9 },    { "daemon", 3 },  { "ftp", 11 },
    { "kern", 0 },    { "lpr", 6 },       { "mail", 2 },    { "news", 7 },    { "security", 4 },
    { "syslog", 5 },  { "user", 1 },      { "uucp", 8 },    { "local0", 16 }, { "local1", 17 },
    { "local2", 18 }, { "local3", 19 },   { "local4", 20 }, { "local5", 21 }, { "local6", 22 },
    { "local7", 23 },
};

/* SysLogHandler's priority per logging level: debug, info, warning, error, critical. */
static const int priorities[] = { 7, 6, 4, 3, 2 };

static struct {
    int fd;                   /* -1: off */
    int type;                 /* SOCK_DGRAM or SOCK_STREAM */
    bool unix_sock;
    bool unix_any_type;       /* unix:// without #dgram: datagram, else stream */
    struct sockaddr_storage sa;
    socklen_t salen;
    int facility;
    bool access;
    char ident[2][320];       /* "gunicorn.PREFIX.error: ", "...access: " */
} sl = { .fd = -1 };

static int find_facility(const char *name)
{
    for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++) {
        if (strcasecmp(name, facilities[i].name) == 0) {
            return facilities[i].code;
        }
    }
    return -1;
}

static int unix_connect(void)
{
    int types[2] = { SOCK_DGRAM, SOCK_STREAM };
    int ntypes = sl.unix_any_type ? 2 : 1;

    if (!sl.unix_any_type) {
        types[0] = sl.type;
    }
    for (int i = 0; i < ntypes; i++) {
        int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sl.sa, sl.salen) == 0) {
            if (sl.fd >= 0) {
                close(sl.fd);
            }
            sl.fd = fd;
            sl.type = types[i];
            return 0;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    return -1;
}

/* glogging.parse_syslog_address for udp:// and tcp://: "[V6]:PORT",
 * "HOST:PORT", "HOST" (port 514), "" (localhost). */
static int open_inet(const char *rest, int type, struct cg_err *err)
{
    char host[256] = "localhost";
    const char *port = "514";
    const char *after = rest;

    if (rest[0] == '[' && strchr(rest, ']') != NULL) {
        const char *close_br = strchr(rest, ']');
        snprintf(host, sizeof(host), "%.*s", (int)(close_br - rest - 1), rest + 1);
        after = close_br + 1;
    } else if (strchr(rest, ':') != NULL) {
        snprintf(host, sizeof(host), "%.*s", (int)(strchr(rest, ':') - rest), rest);
        after = strchr(rest, ':');
    } else if (rest[0] != '\0') {
        snprintf(host, sizeof(host), "%s", rest);
        after = "";
    }
    if (after[0] == ':') {
        port = after + 1;
        if (port[0] == '\0' || strspn(port, "0123456789") != strlen(port)) {
            cg_err_set(err, "syslog_addr: '%s' is not a valid port number", port);
            return -1;
        }
    }
    struct addrinfo hints = { .ai_socktype = type }, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        cg_err_set(err, "syslog_addr: cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0 || (type == SOCK_STREAM && connect(fd, res->ai_addr, res->ai_addrlen) < 0)) {
        cg_err_set(err, "syslog_addr: cannot reach %s:%s: %s", host, port, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(res);
        return -1;
    }
    memcpy(&sl.sa, res->ai_addr, res->ai_addrlen);
    sl.salen = res->ai_addrlen;
    freeaddrinfo(res);
    sl.fd = fd;
    sl.type = type;
    return 0;
}

int cg_syslog_open(const char *addr, const char *prefix, const char *facility, bool access,
                   struct cg_err *err)
{
    int fac = find_facility(facility ? facility : "user");

    if (fac < 0) {
        cg_err_set(err, "syslog_facility '%s': unknown facility name (user, daemon, local0..7, "
                   "...)", facility);
        return -1;
    }
    if (addr == NULL) {
        addr = "udp://localhost:514";
    }
    if (strncmp(addr, "unix://", 7) == 0) {
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        const char *hash = strchr(addr + 7, '#');
        size_t len = hash ? (size_t)(hash - addr - 7) : strlen(addr + 7);
        if (len >= sizeof(path)) {
            cg_err_set(err, "syslog_addr '%s': the path is too long", addr);
            return -1;
        }
        memcpy(path, addr + 7, len);
        path[len] = '\0';
        struct sockaddr_un *un = (struct sockaddr_un *)&sl.sa;
        memset(un, 0, sizeof(*un));
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, len + 1);
        sl.salen = sizeof(*un);
        sl.unix_sock = true;
        sl.unix_any_type = !(hash != NULL && strcmp(hash + 1, "dgram") == 0);
        sl.type = SOCK_DGRAM;
        /* As SysLogHandler: a socket not there yet is retried on each line. */
        (void)unix_connect();
    } else if (strncmp(addr, "udp://", 6) == 0 || strncmp(addr, "tcp://", 6) == 0) {
        if (open_inet(addr + 6, addr[0] == 'u' ? SOCK_DGRAM : SOCK_STREAM, err) < 0) {
            return -1;
        }
    } else {
        cg_err_set(err, "syslog_addr '%s': invalid syslog address (udp://HOST:PORT, "
                   "tcp://HOST:PORT or unix://PATH)", addr);
        return -1;
    }
    sl.facility = fac;
    sl.access = access;
    snprintf(sl.ident[CG_SYSLOG_ERROR], sizeof(sl.ident[0]), "gunicorn.%s.error: ", prefix);
    snprintf(sl.ident[CG_SYSLOG_ACCESS], sizeof(sl.ident[0]), "gunicorn.%s.access: ", prefix);
    if (sl.fd < 0 && !sl.unix_sock) {
        return -1;
    }
    if (sl.fd < 0) {
        sl.fd = -2; /* on, not connected yet */
    }
    return 0;
}

bool cg_syslog_on(void)
{
    return sl.fd != -1;
}

bool cg_syslog_access_on(void)
{
    return sl.fd != -1 && sl.access;
}

static ssize_t send_once(const char *buf, size_t n)
{
    if (sl.fd < 0) {
        return -1;
    }
    if (sl.unix_sock || sl.type == SOCK_STREAM) {
        return send(sl.fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    return sendto(sl.fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sl.sa,
                  sl.salen);
}

void cg_syslog_send(enum cg_syslog_log which, enum cg_log_level level, const char *text,
                    size_t n)
{
    char buf[8704];
    int saved = errno;

    if (sl.fd == -1 || (which == CG_SYSLOG_ACCESS && !sl.access)) {
        return;
    }
    int pri = sl.facility * 8 + priorities[level <= CG_LOG_CRITICAL ? level : CG_LOG_ERROR];
    int k = snprintf(buf, sizeof(buf), "<%d>%s[%d] ", pri, sl.ident[which], (int)getpid());
    size_t len = k < 0 ? 0 : (size_t)k;
    if (len + n + 1 > sizeof(buf)) {
        n = sizeof(buf) - len - 1;
    }
    memcpy(buf + len, text, n);
    len += n;
    buf[len++] = '\0'; /* SysLogHandler.append_nul */
    if (send_once(buf, len) < 0 && sl.unix_sock && errno != EAGAIN) {
        /* SysLogHandler reconnects once: the daemon may have restarted. */
        if (unix_connect() == 0) {
            (void)send_once(buf, len);
        }
    }
    errno = saved;
}
