/* What every client connection shares, whatever its worker class (sync and
 * gthread: cg_py_wsgi_conn.c; asgi: cg_py_asgi_conn.c), on top of the
 * transport (cg_transport.h): the input buffer and its compaction, the
 * discard of an unread request body, the protocol-error page and its one
 * log line, the peer's address as text, and the deferred-release list of
 * event-driven connections. Nothing here touches Python or waits. */
#ifndef CG_CONN_H
#define CG_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "cg_http_parser.h"
#include "cg_transport.h"

#define CG_CONN_READ_CHUNK 65536

/* Received bytes not yet taken by the parser: p[start, end). */
struct cg_conn_buf {
    char *p; /* owned */
    size_t start, end, cap;
};

/* Makes room for at least min_free bytes after `end`: forgets an empty
 * buffer's offsets, moves the unread bytes to the front when that frees
 * enough, grows (doubling, at least CG_CONN_READ_CHUNK) otherwise. Parser
 * spans into the buffer stay valid only while it is not compacted. Returns
 * 0, or -1 with errno ENOMEM. */
int cg_conn_buf_reserve(struct cg_conn_buf *b, size_t min_free);

/* Appends n bytes (puts back what a direct body read did not take). */
int cg_conn_buf_append(struct cg_conn_buf *b, const char *p, size_t n);

void cg_conn_buf_free(struct cg_conn_buf *b);

/* One receive into the buffer after reserving min_free bytes. Returns the
 * transport's answer (bytes, 0 at EOF, CG_TRANSPORT_AGAIN, -1 with errno;
 * ENOMEM when the buffer could not grow). */
ssize_t cg_conn_buf_fill(struct cg_conn_buf *b, struct cg_transport *t, size_t min_free);

enum cg_conn_skip {
    CG_CONN_SKIP_DONE,  /* the body ended */
    CG_CONN_SKIP_MORE,  /* every buffered byte was taken; the body goes on */
    CG_CONN_SKIP_ERROR, /* a malformed body (cg_http_parser_error) */
};

/* The next piece of the current request body from the buffer (b->start
 * moves past what the parser used): CG_HTTP_BODY_DATA with its bytes in
 * (*data, *dlen), CG_HTTP_BODY_DONE, CG_HTTP_NEED_MORE or CG_HTTP_ERROR. */
enum cg_http_status cg_conn_body_next(struct cg_http_parser *p, struct cg_conn_buf *b,
                                      const char **data, size_t *dlen);

/* Discards the buffered part of the current request body (keep-alive after
 * a response that did not read it); adds the decoded bytes to *skipped. */
enum cg_conn_skip cg_conn_body_skip(struct cg_http_parser *p, struct cg_conn_buf *b,
                                    size_t *skipped);

/* The one log line of a request the parser refused, as gunicorn's worker
 * handle_error writes it: WARNING "Invalid request from ip=IP: DETAIL" (an
 * unsupported transfer coding, 501, included), ERROR for the server's own
 * 5xx, nothing for a client that closed (NoMoreData). */
void cg_conn_log_request_error(const struct cg_http_error *e, const struct sockaddr_storage *peer);

/* Error page styles: gunicorn's WSGI workers answer with util.write_error's
 * HTML page, its ASGI worker with a text/plain message. */
enum cg_conn_page { CG_CONN_PAGE_HTML, CG_CONN_PAGE_PLAIN };

/* The head of a text/plain error response with a body of mlen bytes and
 * `extra` header lines ("Name: value\r\n"..., or NULL). Returns its length
 * (< cap) or 0 when it does not fit. */
size_t cg_conn_plain_head(char *buf, size_t cap, int status, const char *reason, size_t mlen,
                          const char *extra);

/* The complete answer to a refused request in `style` into buf (cap >=
 * CG_HTTP_ERROR_RESPONSE_MAX); 0 when the error gets no answer. */
size_t cg_conn_error_page(const struct cg_http_error *e, enum cg_conn_page style, char *buf,
                          size_t cap);

/* The peer's address as text ("" for unix sockets). */
void cg_conn_peer_ip(const struct sockaddr_storage *peer, char *buf, size_t n);

/* ---- deferred release (event-driven connections) ----
 *
 * A callback that finds its connection dead closes it (fd, events,
 * bookkeeping) but never frees it: the connection is pushed here and the
 * loop releases the list once the callback returned (a zero-timeout event
 * in gthread, a call_soon in asgi), as redis's freeClientAsync does. So
 * nothing that still runs on the connection, in this callback or in one
 * that called it, reads freed memory. */
struct cg_conn_release_node {
    struct cg_conn_release_node *next;
};

struct cg_conn_release {
    struct cg_conn_release_node *head;
    size_t n;
};

/* Queues a node. Returns true when the list was empty: the caller
 * schedules one release of the loop. */
bool cg_conn_release_push(struct cg_conn_release *r, struct cg_conn_release_node *node);

/* Calls fn on every queued node (nodes queued meanwhile too) and empties
 * the list. Returns how many were released. */
size_t cg_conn_release_run(struct cg_conn_release *r,
                           void (*fn)(struct cg_conn_release_node *, void *), void *arg);

#endif
