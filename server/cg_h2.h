/* HTTP/2 (RFC 9113) over nghttp2 for the gthread and asgi workers: one
 * nghttp2 session per connection, driven by the worker's event loop
 * through the connection's transport (TLS with ALPN "h2", or cleartext
 * with prior knowledge from a peer in forwarded_allow_ips, or an HTTP/1.1
 * "Upgrade: h2c" whose request becomes stream 1), and each
 * stream served as one request by the worker's runner: gthread queues it
 * as one WSGI request on the thread pool (cg_h2_job_run), asgi serves it
 * as an ASGI http scope on its event loop (server/asgi/cg_py_asgi_h2.c).
 *
 * What runs a stream (the runner) sees four things: the hub's `submit`
 * (a stream's head is complete: run it), the stream's transport
 * (cg_h2_job_transport: the request and the response, below), the hub's
 * `wake` for an event-driven runner (the stream has news), and
 * cg_h2_job_done (the runner is finished with it). Everything else -- the
 * session, settings, the flood defences, flow control, the socket's I/O --
 * is shared.
 *
 * A stream reaches the WSGI code as a connection of its own: a transport
 * (cg_transport.h) whose recv hands out the request as an HTTP/1 message
 * (the head built from the HEADERS, so gunicorn's header policy and limits
 * of http/ apply unchanged; the DATA frames as the body) and whose sendv
 * takes the HTTP/1 response cg_py_wsgi_handle() writes and turns it into
 * an HTTP/2 response (status and headers, then DATA). Neither side
 * buffers more than a window: the request body is acknowledged to the
 * peer (WINDOW_UPDATE) only as the app reads it, and a response write
 * blocks its pool thread while the stream holds CG_H2_OUT_HIGH bytes the
 * peer has not taken yet.
 *
 * Threads: the session, the socket and every nghttp2 call belong to the
 * loop thread; pool threads touch a stream's buffers under its
 * connection's mutex and wake the loop through the hub's eventfd. Streams
 * and connections are freed by the loop only, once no pool thread uses
 * them. Nothing here touches Python except cg_h2_job_run(). */
#ifndef CG_H2_H
#define CG_H2_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cg_conf_struct.h"
#include "cg_err.h"
#include "cg_http_error.h"
#include "cg_http_limits.h"
#include "cg_http_request.h"
#include "cg_listen.h"
#include "cg_transport.h"

#define CG_H2_OUT_HIGH (256 * 1024)

struct cg_wsgi;
struct cg_h2_conn;

/* One stream waiting for, or run by, its runner (a pool thread: `next` is
 * the pool's queue link). */
struct cg_h2_job {
    struct cg_h2_job *next;
    void *data; /* the runner's own (asgi: its stream connection) */
};

/* Per worker: settings, the request limits streams are parsed with, and
 * the wake-up of the loop by pool threads. */
struct cg_h2_hub {
    const struct cg_conf *conf;
    struct cg_http_limits limits; /* the worker's, with HTTP/2.0 as a version */
    bool tls;
    bool prior_knowledge;         /* http2_cleartext prior-knowledge or both */
    bool prior_only;              /* prior-knowledge alone: a trusted h1 peer gets a 400 */
    bool upgrade;                 /* http2_cleartext upgrade or both, not TLS: Upgrade: h2c */
    const struct cg_http_iplist *trusted; /* forwarded_allow_ips (borrowed) */
    int efd;                      /* owned eventfd; readable when `ready` has entries */
    void (*submit)(void *arg, struct cg_h2_job *job); /* run a stream (loop thread) */
    void *submit_arg;
    size_t share;                 /* streams of one connection run at once (0: half
                                     the threads, at least one) */
    bool nowait;                  /* an event-driven runner: the stream transport
                                     never waits (CG_TRANSPORT_NOWAIT always), and
                                     reads past the body's end give
                                     CG_TRANSPORT_AGAIN until the stream closes */
    /* An event-driven runner's news of a running job (body bytes, the
     * body's end, room for the response, the stream closed), or NULL.
     * Called on the loop thread inside the session's calls, with the
     * connection's lock held: it may only note the job for later, never
     * call back into cg_h2. */
    void (*wake)(void *arg, struct cg_h2_job *job);
    void *wake_arg;
    /* internal */
    void *mu;                     /* pthread_mutex_t *, owned */
    struct cg_h2_conn *ready;     /* connections with work for the loop (under mu) */
};

/* Whether the settings enable HTTP/2 (h2 in http_protocols). */
bool cg_h2_enabled(const struct cg_conf *conf);

/* Sets up the hub (loop thread, before the pool runs). Returns 0 or -1 with
 * err. */
int cg_h2_hub_init(struct cg_h2_hub *hub, const struct cg_conf *conf,
                   const struct cg_http_limits *limits, struct cg_err *err);
void cg_h2_hub_deinit(struct cg_h2_hub *hub);

/* What a new connection speaks, from what it sent so far (buf[0..n)) and
 * its transport. */
enum cg_h2_detect {
    CG_H2_DETECT_H1,     /* serve HTTP/1 */
    CG_H2_DETECT_H2,     /* ALPN h2, or the prior-knowledge preface */
    CG_H2_DETECT_MORE,   /* a part of the preface: wait for more */
    CG_H2_DETECT_REFUSE, /* a trusted peer that does not speak HTTP/2 on a
                            prior-knowledge port: answer 400, as gunicorn */
};
enum cg_h2_detect cg_h2_detect(const struct cg_h2_hub *hub, const struct cg_transport *t,
                               const struct sockaddr *peer, const char *buf, size_t n);

/* The 400 for CG_H2_DETECT_REFUSE: gunicorn expects a trusted peer on a
 * prior-knowledge port to speak HTTP/2 and never downgrades it. */
void cg_h2_preface_error(struct cg_http_error *e);

/* Starts an HTTP/2 session on a connection (its transport t, fd, listener
 * and peer are borrowed and must outlive it), feeding it the bytes already
 * received. `owner` is returned by cg_h2_conn_owner(). Returns NULL with
 * err. Loop thread. */
struct cg_h2_conn *cg_h2_conn_new(struct cg_h2_hub *hub, struct cg_transport *t,
                                  const struct cg_listener *l, const struct sockaddr *peer,
                                  socklen_t peer_len, void *owner, const char *buf, size_t n,
                                  struct cg_err *err);

void *cg_h2_conn_owner(const struct cg_h2_conn *hc);

/* What the loop should do with a connection after a step. */
enum cg_h2_next {
    CG_H2_READ,  /* wait for the socket to be readable */
    CG_H2_WRITE, /* output is pending: wait for writability */
    CG_H2_CLOSE, /* the session is over and no pool thread uses it: free it */
    CG_H2_WAIT,  /* the session is over; streams still run: wait for the hub */
};

/* The socket is ready (or `stopping` changed): reads, runs the session,
 * writes. Loop thread. */
enum cg_h2_next cg_h2_conn_io(struct cg_h2_conn *hc);

/* Takes the connections pool threads woke the loop for, as a list
 * (cg_h2_conn_next_ready), and clears the eventfd. Loop thread. */
struct cg_h2_conn *cg_h2_hub_take(struct cg_h2_hub *hub);
struct cg_h2_conn *cg_h2_conn_next_ready(struct cg_h2_conn *hc);

/* An HTTP/1.1 request asking to switch to h2c (RFC 7540 3.2), held while
 * its body is read (gthread: by a pool thread; asgi: as it arrives) until
 * the loop starts the session. */
struct cg_h2_upgrade;

/* The largest request body an upgrade carries over HTTP/1 (gunicorn's
 * H2C_UPGRADE_BODY_LIMIT): it is held in memory until stream 1 is built. */
#define CG_H2_UPGRADE_BODY_MAX 65536

/* Whether `req` from `peer` is an h2c upgrade gunicorn 27 honours: upgrade
 * on (hub->upgrade), a peer in forwarded_allow_ips (or a Unix socket),
 * HTTP/1.1 or later, "Upgrade: h2c", exactly one HTTP2-Settings header
 * with a valid base64url SETTINGS payload, both named in Connection, and a
 * Content-Length of at most CG_H2_UPGRADE_BODY_MAX. Returns the upgrade
 * (its head copied from req; free with cg_h2_upgrade_free) or NULL: serve
 * the request as HTTP/1.1. Any thread; no GIL needed. */
struct cg_h2_upgrade *cg_h2_upgrade_new(const struct cg_h2_hub *hub,
                                        const struct cg_http_request *req,
                                        const struct sockaddr *peer);

/* Adds request body bytes (decoded) to the upgrade. Returns 0, or -1 past
 * CG_H2_UPGRADE_BODY_MAX or out of memory. */
int cg_h2_upgrade_add_body(struct cg_h2_upgrade *up, const char *p, size_t n);

/* The bytes the client sent after the request (its HTTP/2 preface and
 * frames), copied. Returns 0 or -1 (out of memory). */
int cg_h2_upgrade_set_pending(struct cg_h2_upgrade *up, const char *p, size_t n);

void cg_h2_upgrade_free(struct cg_h2_upgrade *up);

/* The 101 answer, sent over HTTP/1.1 before the session starts. */
extern const char CG_H2_UPGRADE_101[];

/* Starts a session made by cg_h2_conn_new (with no bytes) as an upgraded
 * connection: the client's HTTP2-Settings applied, the request as stream 1
 * (half closed, its body in hand) queued for the pool, then the pending
 * bytes fed. Takes ownership of `up`. Returns 0, or -1 with err (the
 * connection must be closed). Loop thread. */
int cg_h2_conn_upgrade(struct cg_h2_conn *hc, struct cg_h2_upgrade *up, struct cg_err *err);

/* Sends a graceful GOAWAY (NO_ERROR): streams already begun finish, new
 * ones are refused (TERM, HUP, max_requests, keepalive). Loop thread. */
void cg_h2_conn_goaway(struct cg_h2_conn *hc);

/* The worker closes a live session (a stop's deadline, QUIT/INT, worker
 * exit): the GOAWAY (NO_ERROR, the last stream begun) goes now if none
 * went yet, written as far as the socket takes it without waiting; then
 * as cg_h2_conn_kill. Loop thread. */
void cg_h2_conn_end(struct cg_h2_conn *hc);

/* Gives up on a connection whose peer stopped reading (its writes blocked
 * past the deadline): no more I/O, running streams fail. Loop thread. */
void cg_h2_conn_kill(struct cg_h2_conn *hc);

/* Streams open or still run by a pool thread. */
size_t cg_h2_conn_active(const struct cg_h2_conn *hc);

/* Streams queued for or run by a pool thread (the connection cannot be
 * freed while there are any). */
size_t cg_h2_conn_jobs(const struct cg_h2_conn *hc);

/* Resets the streams whose response has not moved for timeout_ms (a peer
 * that keeps a zero window); returns how many. Loop thread. */
size_t cg_h2_conn_reset_stalled(struct cg_h2_conn *hc, uint64_t now_ms, uint64_t timeout_ms);

/* Frees the session and its streams (no pool thread may use them: only
 * after CG_H2_CLOSE, or at worker exit). Does not close the socket. */
void cg_h2_conn_free(struct cg_h2_conn *hc);

/* ---- the runner's side of a stream ---- */

/* Sets t up as the stream's transport: recv gives the request as an
 * HTTP/1 message, sendv takes an HTTP/1 response (module comment). t->fd
 * is -1 (the socket belongs to the connection). */
void cg_h2_job_transport(struct cg_h2_job *job, struct cg_transport *t);

/* The connection of a stream (its owner is cg_h2_conn_owner()). */
struct cg_h2_conn *cg_h2_job_conn(const struct cg_h2_job *job);

/* Whether the peer reset or the session ended the stream. */
bool cg_h2_job_closed(struct cg_h2_job *job);

/* The runner is done with the stream: a complete response ends it
 * (END_STREAM), an incomplete one resets it. The job must not be used
 * afterwards (the loop frees it). Any thread. */
void cg_h2_job_done(struct cg_h2_job *job, bool complete);

/* Runs one stream's request on a pool thread: the WSGI request (needs the
 * GIL, released around the waits). `count` is called once the head was
 * read, to count the request (max_requests). cg_h2_job_finish() then hands
 * the stream back. */
void cg_h2_job_run(struct cg_wsgi *g, struct cg_h2_job *job, void (*count)(void *), void *arg);

/* After cg_h2_job_run: ends the stream as cg_h2_job_done(job, true) and,
 * when `take`, takes the next stream of the same connection that waits for
 * its share of the pool (cg_h2_hub.share), to be run by the calling thread
 * in the finished one's place: the connection still runs at most `share`
 * streams at once, and the stream skips a trip through the loop and the
 * pool's queue. Returns that stream or NULL. Pool thread. */
struct cg_h2_job *cg_h2_job_finish(struct cg_h2_job *job, bool take);

#endif
