/* Listening sockets: parse gunicorn bind addresses, bind them in the master,
 * describe them for logs and environ. Workers inherit the fds. */
#ifndef CG_LISTEN_H
#define CG_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cg_err.h"

enum cg_listen_kind { CG_LISTEN_TCP, CG_LISTEN_TCP6, CG_LISTEN_UNIX, CG_LISTEN_FD };

struct cg_listen_addr {
    enum cg_listen_kind kind;
    char host[256]; /* TCP: host as written (lower-cased), without brackets */
    int port;
    char path[108]; /* UNIX: socket path */
    int fd;         /* FD: inherited descriptor */
};

struct cg_listener {
    int fd;
    int family;          /* AF_INET, AF_INET6, AF_UNIX */
    char name[300];      /* "http://127.0.0.1:8000", "unix:/tmp/x.sock" as gunicorn logs it */
    char host[256];      /* bound host (numeric), for SERVER_NAME */
    int port;            /* bound port (0 for unix) */
    char unix_path[108]; /* unlinked at shutdown by the master that created it */
};

/* Listeners are named https://HOST:PORT instead of http:// (gunicorn's
 * TCPSocket name when TLS is on). Set by the master before it binds. */
extern bool cg_listen_https;

/* Parses one bind string as gunicorn's util.parse_address does:
 * "HOST:PORT", "[V6]:PORT", "HOST" (port 8000), "unix:PATH", "unix://PATH",
 * "fd://N", "tcp://HOST:PORT". Returns 0, or -1 with err naming the value. */
int cg_listen_parse(const char *spec, struct cg_listen_addr *out, struct cg_err *err);

/* Binds and listens for every address. `umask_value` applies to unix sockets.
 * On EADDRINUSE retries like gunicorn (5 tries, 1 s apart, logging
 * "Connection in use"). On success returns 0 and an array (caller frees with
 * cg_listen_close_all) in *out and *n. */
int cg_listen_open_all(const char *const *specs, size_t nspecs, int backlog, bool reuse_port,
                       int umask_value, struct cg_listener **out, size_t *n,
                       struct cg_err *err);

/* One address, one attempt: cg_listen_open_all without its "Connection in
 * use" retries, for a loop that must not sleep (a HUP moving metrics_bind).
 * Fills *out as open_all fills an entry of its array (closed with
 * cg_listen_close_all). Returns 0, or -1 with errno and err naming spec. */
int cg_listen_open_one(const char *spec, int backlog, bool reuse_port, int umask_value,
                       struct cg_listener *out, struct cg_err *err);

/* Adopts already-listening fds (systemd LISTEN_FDS, USR2 re-exec). */
int cg_listen_adopt_fd(int fd, struct cg_listener *out, struct cg_err *err);

/* Closes every listener; `unlink_unix` removes unix socket files (master at
 * final shutdown). Frees the array. */
void cg_listen_close_all(struct cg_listener *ls, size_t n, bool unlink_unix);

/* A graceful stop: no new connection may queue on the listeners any more
 * (listen() again with a backlog of 0; the kernel keeps the connections
 * already queued, which the workers then serve). Only for listeners no one
 * else shares: a USR2 partner or systemd keeps serving on them. */
void cg_listen_stop_queueing(const struct cg_listener *ls, size_t n);

/* In a forked child that serves no HTTP (dirty arbiter, dirty worker):
 * closes every listener inherited from the master. */
void cg_listen_close_inherited(void);

/* Lingering close of a client connection, in every worker class: after
 * shutdown(SHUT_WR), what the client still sends is read and discarded
 * until its FIN, for at most CG_LINGER_MS and CG_LINGER_MAX bytes. */
#define CG_LINGER_MS 2000
#define CG_LINGER_MAX 65536

/* "http://127.0.0.1:8000,unix:/x" style joined names for the log line. */
void cg_listen_describe(const struct cg_listener *ls, size_t n, char *buf, size_t size);

#endif
