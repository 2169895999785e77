/* The control socket's server half: the listening Unix socket, one slot per
 * client with bounded input and output buffers, gunicorn's framing (4-byte
 * big-endian length + JSON), the SO_PEERCRED check. It is polled by the
 * master's loop (cg_master.c) beside the self-pipe and never blocks: a
 * client that sends nothing holds a slot until its idle deadline, a client
 * that sends a byte at a time is served when its frame is complete, and a
 * client that does not read its replies is dropped once its output buffer
 * is full. The commands are in cg_control_cmd.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_conf.h"
#include "cg_control.h"
#include "cg_control_int.h"
#include "cg_log.h"
#include "cg_master_int.h"

/* A request is a short command; gunicorn's client never sends more. */
#define CTL_IN_MAX (64u * 1024u)
/* Replies ("show config", many workers) are a few KiB; a client that lets
 * this much pile up unread is not reading. */
#define CTL_OUT_MAX (1024u * 1024u)
/* gunicorn's idle timeout for a control client. */
#define CTL_IDLE_MS (300u * 1000u)

struct ctl_client {
    int fd;            /* -1: free slot */
    uint64_t last_ms;  /* last byte in or out */
    unsigned char in[CTL_IN_MAX];
    size_t nin;
    unsigned char *out; /* owned */
    size_t nout, outpos;
    bool closing;       /* close once `out` is flushed */
};

/* A bound listener: its path and the inode it has there, so that only our
 * own file is ever unlinked (after USR2 the other master may own the path). */
struct ctl_sock {
    int fd; /* -1 when closed */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
};

static struct {
    struct ctl_sock s;
    bool atfork_set;
    struct ctl_client *clients; /* owned, CG_CONTROL_MAX_CLIENTS */
} ctl = { .s = { .fd = -1 } };

static void client_drop(struct ctl_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c->out);
    c->fd = -1;
    c->out = NULL;
    c->nin = c->nout = c->outpos = 0;
    c->closing = false;
}

/* A forked child (worker, dirty arbiter, USR2 master) keeps none of these. */
static void close_in_child(void)
{
    if (ctl.s.fd >= 0) {
        close(ctl.s.fd);
        ctl.s.fd = -1;
    }
    for (int i = 0; ctl.clients != NULL && i < CG_CONTROL_MAX_CLIENTS; i++) {
        if (ctl.clients[i].fd >= 0) {
            close(ctl.clients[i].fd);
            ctl.clients[i].fd = -1;
        }
    }
}

static int make_parent(const char *path, struct cg_err *err)
{
    char dir[sizeof(ctl.s.path)];
    struct stat st;

    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir) {
        return 0;
    }
    *slash = '\0';
    if (stat(dir, &st) == 0) {
        return 0;
    }
    /* gunicorn: os.makedirs(dir, 0o700), parents included. */
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                cg_err_set(err, "cannot create %s: %s", dir, strerror(errno));
                return -1;
            }
            *p = '/';
        }
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        cg_err_set(err, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* control_socket as an absolute path (gunicorn: relative to the working
 * directory). Returns 0, or -1 with err when it does not fit. */
static int resolve(const char *conf_path, const char *cwd, char *out, size_t size,
                   struct cg_err *err)
{
    int n = conf_path[0] == '/' ? snprintf(out, size, "%s", conf_path)
                                : snprintf(out, size, "%s/%s", cwd, conf_path);

    if (n < 0 || (size_t)n >= size) {
        cg_err_set(err, "control_socket path too long: %s", conf_path);
        return -1;
    }
    return 0;
}

/* Binds a listener on `conf_path` into *out (its parent made, a stale file
 * replaced). Returns 0, or -1 with err. */
static int open_socket(const char *conf_path, const char *cwd, int mode, struct ctl_sock *out,
                       struct cg_err *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;

    out->fd = -1;
    if (resolve(conf_path, cwd, out->path, sizeof(out->path), err) < 0 ||
        make_parent(out->path, err) < 0) {
        return -1;
    }
    if (lstat(out->path, &st) == 0 && unlink(out->path) < 0) {
        cg_err_set(err, "cannot remove the old %s: %s", out->path, strerror(errno));
        return -1;
    }
    memcpy(sa.sun_path, out->path, strlen(out->path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
        chmod(out->path, (mode_t)mode) < 0 || stat(out->path, &st) < 0) {
        cg_err_set(err, "%s: %s", out->path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    out->fd = fd;
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    return 0;
}

/* True while `sk->path` is still the file `sk` bound. */
static bool still_ours(const struct ctl_sock *sk)
{
    struct stat st;
    return stat(sk->path, &st) == 0 && st.st_dev == sk->dev && st.st_ino == sk->ino;
}

/* Closes the listener; unlinks its path when `unlink_ours` and it is still ours. */
static void sock_close(struct ctl_sock *sk, bool unlink_ours)
{
    if (sk->fd < 0) {
        return;
    }
    close(sk->fd);
    sk->fd = -1;
    if (unlink_ours && still_ours(sk)) {
        unlink(sk->path);
    }
}

void cg_control_open(struct cg_master *m)
{
    struct cg_err err = { { 0 } };
    const struct cg_conf *conf = m->conf;

    if (conf->control_socket_disable || conf->control_socket == NULL || ctl.s.fd >= 0) {
        return;
    }
    if (ctl.clients == NULL) {
        ctl.clients = calloc(CG_CONTROL_MAX_CLIENTS, sizeof(*ctl.clients));
        if (ctl.clients == NULL) {
            cg_log(CG_LOG_WARNING, "Failed to start control socket: out of memory");
            return;
        }
        for (int i = 0; i < CG_CONTROL_MAX_CLIENTS; i++) {
            ctl.clients[i].fd = -1;
        }
    }
    if (!ctl.atfork_set) {
        pthread_atfork(NULL, NULL, close_in_child);
        ctl.atfork_set = true;
    }
    if (open_socket(conf->control_socket, m->cwd, conf->control_socket_mode, &ctl.s, &err) < 0) {
        cg_log(CG_LOG_WARNING, "Failed to start control socket: %s", err.msg);
        return;
    }
    cg_log(CG_LOG_INFO, "Control socket listening at %s", ctl.s.path);
}

void cg_control_close(void)
{
    for (int i = 0; ctl.clients != NULL && i < CG_CONTROL_MAX_CLIENTS; i++) {
        client_drop(&ctl.clients[i]);
    }
    free(ctl.clients);
    ctl.clients = NULL;
    sock_close(&ctl.s, true); /* after USR2 the new master may own the path */
}

int cg_control_reconfigure(struct cg_master *m)
{
    struct cg_err err = { { 0 } };
    const struct cg_conf *conf = m->conf;
    char path[sizeof(ctl.s.path)];
    struct ctl_sock next;
    struct stat st;

    if (conf->control_socket_disable || conf->control_socket == NULL) {
        if (ctl.s.fd >= 0) {
            cg_control_close();
            cg_log(CG_LOG_INFO, "Control socket closed (control_socket_disable)");
        }
        return 0;
    }
    if (ctl.s.fd < 0) {
        cg_control_open(m); /* a failure is logged, as at start-up */
        return 0;
    }
    if (resolve(conf->control_socket, m->cwd, path, sizeof(path), &err) == 0 &&
        strcmp(path, ctl.s.path) == 0) {
        if (stat(path, &st) == 0 && (st.st_mode & 07777) != (mode_t)conf->control_socket_mode &&
            chmod(path, (mode_t)conf->control_socket_mode) < 0) {
            cg_log(CG_LOG_ERROR, "control_socket_mode %#o: chmod %s: %s; keeping %#o",
                   (unsigned)conf->control_socket_mode, path, strerror(errno),
                   (unsigned)(st.st_mode & 07777));
            return -1;
        }
        return 0;
    }
    /* A new path: bound before the old one closes, so a failure keeps it. */
    if (err.msg[0] != '\0' ||
        open_socket(conf->control_socket, m->cwd, conf->control_socket_mode, &next, &err) < 0) {
        cg_log(CG_LOG_ERROR, "control_socket '%s': %s; keeping %s", conf->control_socket,
               err.msg, ctl.s.path);
        return -1;
    }
    sock_close(&ctl.s, true); /* its clients keep their connections */
    ctl.s = next;
    cg_log(CG_LOG_INFO, "Control socket listening at %s", ctl.s.path);
    return 0;
}

void cg_control_reclaim(struct cg_master *m)
{
    struct cg_err err = { { 0 } };
    struct ctl_sock next;

    if (ctl.s.fd < 0 || still_ours(&ctl.s)) {
        return;
    }
    if (open_socket(ctl.s.path, m->cwd, m->conf->control_socket_mode, &next, &err) < 0) {
        cg_log(CG_LOG_WARNING, "Failed to start control socket: %s", err.msg);
        return;
    }
    sock_close(&ctl.s, false); /* the path was the other master's */
    ctl.s = next;
    cg_log(CG_LOG_INFO, "Control socket listening at %s", ctl.s.path);
}

size_t cg_control_pollfds(struct pollfd *pfd)
{
    size_t n = 0;

    if (ctl.s.fd < 0) {
        return 0;
    }
    pfd[n++] = (struct pollfd){ .fd = ctl.s.fd, .events = POLLIN };
    for (int i = 0; i < CG_CONTROL_MAX_CLIENTS; i++) {
        struct ctl_client *c = &ctl.clients[i];
        if (c->fd >= 0) {
            short ev = c->nout > c->outpos ? POLLOUT : (c->closing ? 0 : POLLIN);
            pfd[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
        }
    }
    return n;
}

/* True when the peer runs as our effective uid. */
static bool peer_allowed(int fd)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        cg_log_errno(CG_LOG_WARNING, errno, "control socket: cannot read the peer's credentials");
        return false;
    }
    if (cr.uid != geteuid()) {
        cg_log(CG_LOG_WARNING,
               "control socket: refused a client running as uid %u (pid %d); only uid %u may "
               "connect", (unsigned)cr.uid, (int)cr.pid, (unsigned)geteuid());
        return false;
    }
    return true;
}

static void accept_clients(void)
{
    for (;;) {
        int fd = accept4(ctl.s.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return; /* EAGAIN, or a transient error the next poll retries */
        }
        if (!peer_allowed(fd)) {
            close(fd);
            continue;
        }
        struct ctl_client *c = NULL;
        for (int i = 0; i < CG_CONTROL_MAX_CLIENTS && c == NULL; i++) {
            if (ctl.clients[i].fd < 0) {
                c = &ctl.clients[i];
            }
        }
        if (c == NULL) {
            cg_log(CG_LOG_WARNING,
                   "control socket: %d clients already connected; closing a new one",
                   CG_CONTROL_MAX_CLIENTS);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->last_ms = cg_monotonic_ms();
    }
}

static void queue_frame(struct ctl_client *c, const char *json, size_t len)
{
    if (c->nout - c->outpos + 4 + len > CTL_OUT_MAX) {
        cg_log(CG_LOG_WARNING, "control socket: a client does not read its replies; closing it");
        client_drop(c);
        return;
    }
    if (c->outpos > 0) {
        memmove(c->out, c->out + c->outpos, c->nout - c->outpos);
        c->nout -= c->outpos;
        c->outpos = 0;
    }
    unsigned char *grown = realloc(c->out, c->nout + 4 + len);
    if (grown == NULL) {
        client_drop(c);
        return;
    }
    c->out = grown;
    uint32_t be = htonl((uint32_t)len);
    memcpy(c->out + c->nout, &be, 4);
    memcpy(c->out + c->nout + 4, json, len);
    c->nout += 4 + len;
}

/* gunicorn's make_response / make_error_response for one request. */
static void answer(struct cg_master *m, struct ctl_client *c, const unsigned char *payload,
                   size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb((const char *)payload, len, 0, &jerr);
    if (!json_is_object(req)) {
        /* gunicorn drops the connection on a frame it cannot decode. */
        json_decref(req);
        c->closing = true;
        return;
    }
    json_t *id = json_object_get(req, "id");
    const char *command = json_string_value(json_object_get(req, "command"));
    char err[512] = "";
    json_t *data = cg_control_run(m, command ? command : "", json_object_get(req, "args"), err,
                                  sizeof(err));
    json_t *idv = id != NULL ? json_incref(id) : json_integer(0); /* gunicorn: id or 0 */
    json_t *resp = data != NULL
                       ? json_pack("{s:o,s:s,s:o}", "id", idv, "status", "ok", "data", data)
                       : json_pack("{s:o,s:s,s:s}", "id", idv, "status", "error", "error", err);
    char *text = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
    if (text != NULL) {
        queue_frame(c, text, strlen(text));
    } else {
        c->closing = true;
    }
    free(text);
    json_decref(resp);
    json_decref(req);
}

/* Reads what is there; answers every complete frame. */
static void client_read(struct cg_master *m, struct ctl_client *c)
{
    ssize_t r = recv(c->fd, c->in + c->nin, sizeof(c->in) - c->nin, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        client_drop(c);
        return;
    }
    if (r < 0) {
        return;
    }
    c->nin += (size_t)r;
    c->last_ms = cg_monotonic_ms();
    while (c->fd >= 0 && !c->closing && c->nin >= 4) {
        uint32_t be;
        memcpy(&be, c->in, 4);
        size_t len = ntohl(be);
        if (len > sizeof(c->in) - 4) {
            cg_log(CG_LOG_WARNING, "control socket: a %zu-byte request is more than the %u "
                   "allowed; closing the client", len, CTL_IN_MAX - 4);
            client_drop(c);
            return;
        }
        if (c->nin < 4 + len) {
            return;
        }
        answer(m, c, c->in + 4, len);
        if (c->fd < 0) {
            return;
        }
        memmove(c->in, c->in + 4 + len, c->nin - 4 - len);
        c->nin -= 4 + len;
    }
}

static void client_write(struct ctl_client *c)
{
    while (c->outpos < c->nout) {
        ssize_t w = send(c->fd, c->out + c->outpos, c->nout - c->outpos,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                client_drop(c);
            }
            return;
        }
        c->outpos += (size_t)w;
        c->last_ms = cg_monotonic_ms();
    }
    c->outpos = c->nout = 0;
    if (c->closing) {
        client_drop(c);
    }
}

static struct ctl_client *client_of(int fd)
{
    for (int i = 0; i < CG_CONTROL_MAX_CLIENTS; i++) {
        if (ctl.clients[i].fd == fd) {
            return &ctl.clients[i];
        }
    }
    return NULL;
}

void cg_control_service(struct cg_master *m, const struct pollfd *pfd, size_t n)
{
    uint64_t now = cg_monotonic_ms();

    if (ctl.s.fd < 0) {
        return;
    }
    cg_control_cmd_tick(m);
    for (size_t i = 0; i < n; i++) {
        if (pfd[i].revents == 0) {
            continue;
        }
        if (pfd[i].fd == ctl.s.fd) {
            accept_clients();
            continue;
        }
        struct ctl_client *c = client_of(pfd[i].fd);
        if (c == NULL) {
            continue;
        }
        if (pfd[i].revents & (POLLERR | POLLNVAL)) {
            client_drop(c);
            continue;
        }
        if (pfd[i].revents & (POLLIN | POLLHUP)) {
            client_read(m, c);
        }
        if (c->fd >= 0 && (c->nout > c->outpos || c->closing)) {
            client_write(c); /* at once: most replies fit in the socket buffer */
        }
        if (ctl.s.fd < 0) {
            return; /* a command closed the socket */
        }
    }
    for (int i = 0; i < CG_CONTROL_MAX_CLIENTS; i++) {
        struct ctl_client *c = &ctl.clients[i];
        if (c->fd >= 0 && now - c->last_ms > CTL_IDLE_MS && c->last_ms < now) {
            client_drop(c);
        }
    }
}
