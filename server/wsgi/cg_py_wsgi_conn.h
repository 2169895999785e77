/* One client connection of an HTTP worker: its socket, its read buffer and
 * its request parser. Used by the sync worker (blocking, one request) and
 * the gthread worker (head read in the event loop without the GIL, request
 * run on a pool thread, connection kept alive). Nothing here touches Python:
 * every function may run without the GIL. */
#ifndef CG_PY_WSGI_CONN_H
#define CG_PY_WSGI_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "cg_conn.h"
#include "cg_err.h"
#include "cg_http_parser.h"
#include "cg_listen.h"
#include "cg_transport.h"
#include "cg_transport_tls.h"

/* What a TLS connection told about itself once its handshake was done,
 * kept for the streams an HTTP/2 session runs on pool threads (they must
 * not use the loop's SSL object). */
struct cg_wsgi_tls {
    struct cg_transport_tls_info info;
    unsigned char *der; /* the peer's certificate (OPENSSL_free), or NULL */
    int der_len;
    bool verified;
};

struct cg_wsgi_conn {
    struct cg_transport t; /* owns the socket */
    const struct cg_listener *l;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    struct cg_http_parser parser;
    struct cg_conn_buf in; /* received bytes not yet taken */
    bool eof;
    int read_errno;
    int io_timeout_ms; /* how long a blocking wait for the peer may last; <= 0: forever */
    /* A malformed body found while the app read it (InvalidChunkSize, ...):
     * answered with its 4xx page instead of a 500, as gunicorn does; or
     * NoMoreData, a body the client cut short: never answered. */
    struct cg_http_error body_error;
    void *owner;       /* the worker's own bookkeeping (gthread) */
    /* The worker's "stopping" flag, or NULL: read as each response head is
     * written, so a response that starts after a stop began closes its
     * connection even when the request began before it (gthread). */
    const _Atomic bool *stopping;
    /* An HTTP/2 stream (server/cg_h2.c): the environ gets upstream's
     * HTTP/2 keys. */
    bool http2;
    /* The TLS facts environ["gunicorn.socket"] reports, borrowed, when they
     * are not the transport's own (an HTTP/2 stream over TLS); or NULL. */
    const struct cg_wsgi_tls *tls;
    /* An HTTP/2 stream's request trailers so far, as "name: value\r\n"
     * lines (a copy the caller frees, *len bytes), or NULL; set by
     * server/cg_h2.c. NULL for HTTP/1, whose trailers are the parser's. */
    char *(*trailers)(struct cg_wsgi_conn *c, size_t *len);
};

enum cg_wsgi_head {
    CG_WSGI_HEAD_READY, /* cg_http_parser_request(&c->parser) is ready */
    CG_WSGI_HEAD_MORE,  /* need more bytes (non-blocking read found none) */
    CG_WSGI_HEAD_CLOSE, /* connection over: clean EOF, read error, or bad request answered */
};

/* Takes ownership of fd. */
void cg_wsgi_conn_init(struct cg_wsgi_conn *c, int fd, const struct cg_listener *l,
                       const struct sockaddr *peer, socklen_t peer_len,
                       const struct cg_http_limits *limits, int io_timeout_ms);

/* Closes the socket and frees the buffers. */
void cg_wsgi_conn_deinit(struct cg_wsgi_conn *c);

/* Closes the socket only (the memory stays until cg_wsgi_conn_deinit). */
void cg_wsgi_conn_close(struct cg_wsgi_conn *c);

/* Lingering close (what a blocking worker does before closing): when the
 * client may still have bytes in flight (a body the app did not read,
 * bytes buffered or unread in the kernel), shut down writing so the client
 * sees the FIN after the whole response, then read and discard until its
 * EOF, at most CG_LINGER_MS and CG_LINGER_MAX bytes (cg_listen.h); a close
 * with unread input would send a reset that can destroy the response in
 * the client. */
bool cg_wsgi_conn_may_have_input(struct cg_wsgi_conn *c);
void cg_wsgi_conn_linger(struct cg_wsgi_conn *c);

/* Reads what is available (waits up to io_timeout_ms when `wait` and the
 * socket has nothing yet). Returns bytes read, 0 on EOF, -1 on error
 * (read_errno EAGAIN when !wait and the transport would block). */
ssize_t cg_wsgi_conn_fill(struct cg_wsgi_conn *c, bool wait);

/* Parses buffered bytes, reading more when `wait` (blocking worker) or
 * returning HEAD_MORE when not. A bad request is answered (error page) and
 * logged here, then HEAD_CLOSE. */
enum cg_wsgi_head cg_wsgi_conn_read_head(struct cg_wsgi_conn *c, bool wait);

/* Reads up to n decoded body bytes (blocking wait for the peer). Returns
 * the count, 0 at the end of the body (or when the client closed early, as
 * gunicorn's body readers do), -1 with err on a malformed body or I/O error.
 * The signature of struct cg_body_src. */
ssize_t cg_wsgi_conn_body_read(void *conn, char *out, size_t n, struct cg_err *err);

/* cg_wsgi_conn_body_read() limited to the bytes already buffered (no
 * I/O, so the caller may hold the GIL): the count, 0 at the end of the
 * body, or -2 (CG_BODY_AGAIN of cg_py_input.h) when the waiting read must
 * decide (more to receive, an error, the client's close). The signature of
 * struct cg_body_src's read_buffered. */
ssize_t cg_wsgi_conn_body_read_buffered(void *conn, char *out, size_t n, struct cg_err *err);

/* Discards the rest of the current body so the connection can carry another
 * request. Gives up (returns false) past `limit` bytes, on error or EOF. */
bool cg_wsgi_conn_drain(struct cg_wsgi_conn *c, size_t limit);

/* Answers a request error with gunicorn's page and logs it as gunicorn does. */
void cg_wsgi_conn_send_error(struct cg_wsgi_conn *c, const struct cg_http_error *e);

/* Sends all of buf, waiting for the socket when it is full (io_timeout_ms).
 * Returns 0 or -1 with errno. */
int cg_wsgi_conn_send(struct cg_wsgi_conn *c, const void *buf, size_t len);

/* writev variant; iov is modified. */
int cg_wsgi_conn_sendv(struct cg_wsgi_conn *c, struct iovec *iov, int n);

/* Sends len bytes of the file fd from *pos (advanced) with sendfile(2),
 * waiting for the socket as cg_wsgi_conn_send does. Stops early, returning
 * 0, when the file is shorter. Returns 0 or -1 with errno. */
int cg_wsgi_conn_sendfile(struct cg_wsgi_conn *c, int fd, off_t *pos, uint64_t len);

#endif
