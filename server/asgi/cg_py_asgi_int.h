/* Declarations shared by the ASGI worker files (cg_py_asgi*.c,
 * cg_worker_asgi.c).
 *
 * Shape of the worker: the asyncio (or uvloop) event loop only tells us that
 * an fd is ready (loop.add_reader / add_writer with C callbacks) and runs the
 * application's tasks. Everything else is C: accept, recv into the
 * connection's buffer, the HTTP parser, the scope, the receive/send
 * callables, the response framing, writev to the socket, WebSocket frames.
 *
 *   cg_py_asgi_conn.c    connection: accept, read/write buffers, keep-alive,
 *                        pipelining, back-pressure, close
 *   cg_py_asgi_http.c    one HTTP request: the object, the task, completion,
 *                        a lost client, errors, access log
 *   cg_py_asgi_http_receive.c  receive(): request body, 100 Continue, disconnect
 *   cg_py_asgi_http_send.c     send(): message dispatch, body framing, drain
 *   cg_py_asgi_http_head.c     response and 1xx heads: validation, formatting
 *   cg_py_asgi_scope.c   interned names, scope dicts, the ready awaitable
 *   cg_py_asgi_ws.c      WebSocket (RFC 6455) handshake, frames, receive/send
 *   cg_py_asgi_h2.c      HTTP/2: a connection's nghttp2 session (cg_h2.c), each
 *                        stream served as a stream connection of its own
 *   cg_worker_asgi.c     the worker: server object, signals, liveness, and
 *                        the hand-off to cgunicorn.asgi (loop, lifespan)
 *
 * Everything runs on the loop's thread with the GIL held. */
#ifndef CG_PY_ASGI_INT_H
#define CG_PY_ASGI_INT_H

#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cg_conn.h"
#include "cg_h2.h"
#include "cg_http_parser.h"
#include "cg_listen.h"
#include "cg_py_wsgi_int.h"
#include "cg_transport.h"
#include "cg_worker.h"

/* Interned strings, created once per worker (owned). */
struct cg_asgi_keys {
    PyObject *type, *asgi, *version, *spec_version, *http_version, *method, *scheme, *path,
        *raw_path, *query_string, *root_path, *headers, *server, *client, *state, *subprotocols,
        *body, *more_body, *status, *text, *bytes, *code, *reason, *subprotocol, *message;
    /* values */
    PyObject *v_http, *v_websocket, *v_3_0, *v_2_4, *v_1_0, *v_1_1, *v_2, *v_https, *v_ws, *v_wss,
        *v_http_request, *v_http_disconnect, *v_ws_connect, *v_ws_receive, *v_ws_disconnect,
        *empty_bytes, *empty_str;
    /* message types the app sends */
    PyObject *m_start, *m_body, *m_info, *m_ws_accept, *m_ws_send, *m_ws_close;
    /* loop/future methods */
    PyObject *add_done_callback, *set_result, *done, *cancel, *exception, *cancelled;
};

struct cg_asgi_conn;

/* The worker-wide serving state (one per process). */
struct cg_asgi_srv {
    struct cg_worker *w;
    const struct cg_conf *conf;
    struct cg_wsgi *wsgi;        /* parser limits and access log; owned */
    PyObject *app;               /* borrowed from the worker */
    PyObject *loop;              /* owned */
    PyObject *state;             /* lifespan state dict, or NULL; owned */
    PyObject *root_path;         /* str; owned */
    PyObject *path_prefix;       /* str put before scope["path"] (Uvicorn's root_path rule), or NULL */
    PyObject *raw_path_prefix;   /* the same as bytes for raw_path, or NULL */
    PyObject *wake;              /* callable run when the worker must stop; owned */
    PyObject *add_reader, *remove_reader, *add_writer, *remove_writer; /* bound; owned */
    PyObject *create_task, *create_future, *call_later, *call_soon;     /* bound; owned */
    PyObject *release_cb;        /* releases `closed` (run with call_soon); owned */
    struct cg_conn_release closed; /* closed connections, released once the callback
                                    * that closed them returned (cg_py_asgi_conn_release) */
    PyObject *ready_none;        /* awaitable returning None; owned */
    PyObject *listen_cbs;        /* list of accept callbacks; owned */
    PyObject *sha1;              /* hashlib.sha1; owned */
    struct cg_asgi_keys k;
    struct cg_asgi_conn *conns;  /* open connections (each holds one reference to itself) */
    size_t nconns;
    bool accepting;
    bool listening;              /* the listeners are loop readers */
    bool queue_open;             /* TERM: the listen queues may still hold connections */
    bool cap_blocked;            /* at worker_connections with nothing idle to close */
    struct cg_cap_log cap_log;   /* idle connections closed at the cap */
    bool quick;                  /* QUIT/INT: stop within CG_QUIT_GRACE_MS */
    uint64_t stop_ms;            /* when the stop began (0: serving) */
    uint64_t stop_deadline_ms;   /* when the stop gives up waiting */
    uint64_t ws_max;             /* websocket_max_message_size */
    /* HTTP/2 (cg_py_asgi_h2.c) */
    bool h2_on;                  /* http_protocols has h2: the hub is set up */
    struct cg_h2_hub hub;
    PyObject *h2_hub_cb;         /* reader of hub.efd; owned */
    PyObject *h2_run_cb;         /* runs h2_pending (call_soon); owned */
    bool h2_run_scheduled;
    struct cg_asgi_conn *h2_pending; /* stream connections with news (each referenced) */
};

enum cg_asgi_conn_state {
    CG_ASGI_IDLE,     /* waiting for (more of) a request head */
    CG_ASGI_BUSY,     /* a request is being served */
    CG_ASGI_DRAIN,    /* response done; discarding the rest of the request body */
    CG_ASGI_WS,       /* upgraded to WebSocket */
    CG_ASGI_H2,       /* an HTTP/2 session: its streams are stream connections */
    CG_ASGI_H2UP,     /* an HTTP/1.1 "Upgrade: h2c" request: its body read, then 101 */
    CG_ASGI_CLOSED,
};

struct cg_asgi_req;
struct cg_asgi_ws;

/* One client connection. A Python object so loop callbacks and requests can
 * hold it; the server's list holds one reference while it is open. */
struct cg_asgi_conn {
    PyObject_HEAD
    struct cg_asgi_srv *srv;
    struct cg_asgi_conn *prev, *next;
    struct cg_transport t;           /* owns the socket */
    const struct cg_listener *l;
    struct sockaddr_storage peer;
    PyObject *client, *server;       /* scope address tuples (or None); owned */
    struct cg_http_parser parser;
    bool parser_ready;
    struct cg_conn_buf in;           /* unparsed bytes */
    char *out;                       /* owned; unsent bytes in [out_start, out_end) */
    size_t out_start, out_end, out_cap;
    PyObject *on_read, *on_write;    /* bound callbacks (reference this conn); owned */
    PyObject *drain_waiter;          /* future resolved when `out` drains; owned */
    bool reading, writing;           /* reader/writer registered with the loop */
    bool read_wants_write;           /* the transport's read waits to write (TLS) */
    bool eof;                        /* the peer closed its side (or reset) */
    bool close_when_flushed;
    uint64_t linger_until_ms;        /* lingering close: discard input until then (0: no) */
    size_t lingered;                 /* bytes discarded while lingering */
    enum cg_asgi_conn_state state;
    struct cg_asgi_req *req;         /* current HTTP request; owned */
    struct cg_asgi_ws *ws;           /* WebSocket session; owned */
    uint64_t idle_since_ms;
    struct cg_conn_release_node rel; /* closed: holds the list's reference until released */
    /* HTTP/2 (cg_py_asgi_h2.c). A connection that speaks it (state H2)
     * owns the session; each stream is a stream connection of its own:
     * not a socket, but the stream's transport (cg_h2_job_transport), so
     * the HTTP/1 request code serves it unchanged. Its reader and writer
     * are run by the session's news (pending), not by the loop. */
    bool h2_checked;                 /* whether it speaks HTTP/2 is known */
    struct cg_h2_conn *h2;           /* state H2: the session; owned */
    struct cg_h2_upgrade *h2up;      /* state H2UP: the upgrade (cg_h2_upgrade_new); owned */
    bool h2up_sent;                  /* state H2UP: 101 queued; the session starts once
                                      * it is written */
    uint64_t h2_write_since_ms;      /* state H2: output blocked since (0: not) */
    struct cg_asgi_conn *streams;    /* state H2: its stream connections (each referenced) */
    bool is_stream;                  /* a stream connection: */
    struct cg_h2_job *job;           /*   its stream, until closed */
    struct cg_asgi_conn *parent;     /*   the session's connection (borrowed; it closes
                                      *   its streams before it goes) */
    struct cg_asgi_conn *sprev, *snext; /* the parent's list */
    struct cg_asgi_conn *pnext;      /*   srv->h2_pending */
    bool pending, started;
    bool h2_clean;                   /*   closed after a complete response */
};

/* One HTTP request/response cycle (the receive/send callables' self). */
struct cg_asgi_req {
    PyObject_HEAD
    struct cg_asgi_conn *conn;       /* owned */
    PyObject *task;                  /* owned until done */
    PyObject *receive_waiter;        /* future for a pending receive(); owned */
    PyObject *send_waiter;           /* future for a send() waiting on drain; owned */
    PyObject *log_info;              /* request facts for the access log, or NULL; owned */
    PyObject *resp_headers;          /* response headers for the access log, or NULL; owned */
    PyObject *grace_timer;           /* loop TimerHandle that cancels the task once
                                      * asgi_disconnect_grace_period ran out; owned */
    PyObject *deadline_timer;        /* loop TimerHandle of request_timeout; owned */
    bool timed_out;                  /* request_timeout cancelled the task */
    char what[224];                  /* "METHOD target" for its log line */
    bool lost;                       /* the client is gone (closed, reset, or EOF) */
    bool detached;                   /* no longer the connection's current request */
    bool started, complete, chunked, omits_body, is_head, expect_continue, continue_sent;
    bool body_done;                  /* the parser reached the end of the request body */
    bool body_eof_sent;              /* the app got more_body=False */
    bool disconnected;
    bool should_close;               /* the request asked to close */
    int status;
    int ver_major, ver_minor;
    bool close_announced;            /* the head said Connection: close */
    int64_t length;                  /* Content-Length the app gave, or -1 */
    uint64_t sent;
    uint64_t t0_us;
    int metrics_method;              /* cg_metrics_method_index() of the request */
    bool metrics_started;            /* counted in flight: req_dealloc ends it */
    char *head;                      /* formatted head not yet written; owned */
    size_t head_len;
};

/* ---- cg_py_asgi_scope.c ---- */
int cg_py_asgi_keys_init(struct cg_asgi_keys *k);
void cg_py_asgi_keys_deinit(struct cg_asgi_keys *k);
/* An awaitable that completes at once with `value` (new reference). */
PyObject *cg_py_asgi_ready_new(PyObject *value);
int cg_py_asgi_types_ready(void);
/* The http or websocket scope of the parsed request (new reference). */
PyObject *cg_py_asgi_scope(struct cg_asgi_conn *c, const struct cg_http_request *req, bool ws);
/* ("host", port) for an address, or None (new reference). */
PyObject *cg_py_asgi_addr(const struct sockaddr *sa);

/* ---- cg_py_asgi_conn.c ---- */
extern PyTypeObject cg_asgi_conn_type;
/* Watches the listeners while accepting (and below worker_connections). */
void cg_py_asgi_listen(struct cg_asgi_srv *s);
/* Accepts every pending connection on listener `idx`. */
/* TERM: accepts the connections already queued on the listeners (the
 * master stopped new ones from queueing) as far as worker_connections
 * allows, and reads what each sent at once, so that none is taken for idle
 * and closed unread: they are served, with "Connection: close". Sets
 * queue_open false once a pass over every listener accepts nothing; until
 * then tick() and the listeners' readers call it again. */
void cg_py_asgi_drain_queues(struct cg_asgi_srv *s);

PyObject *cg_py_asgi_accept(struct cg_asgi_srv *s, size_t idx);
/* Queues bytes for the socket (writes now when nothing is pending). Returns
 * 0, or -1 when the connection is dead (nothing is raised). */
int cg_py_asgi_conn_write(struct cg_asgi_conn *c, const struct iovec *iov, int n);
/* True when the output backlog is above the high-water mark. */
bool cg_py_asgi_conn_congested(const struct cg_asgi_conn *c);
/* A future resolved once the backlog drains (new reference), or NULL+exc. */
PyObject *cg_py_asgi_conn_drain_future(struct cg_asgi_conn *c);
/* Closes the socket now (pending output is dropped). The connection's
 * memory outlives the call: the server's reference moves to srv->closed,
 * dropped by cg_py_asgi_conn_release after the running callback returned. */
void cg_py_asgi_conn_close(struct cg_asgi_conn *c);
/* Drops the references of the closed connections (the loop's call_soon,
 * and the worker's teardown). */
void cg_py_asgi_conn_release(struct cg_asgi_srv *s);
/* Closes once pending output is written. */
void cg_py_asgi_conn_close_soon(struct cg_asgi_conn *c);
/* Starts/stops watching the socket for reads. */
void cg_py_asgi_conn_want_read(struct cg_asgi_conn *c, bool on);
/* The response of the current request is complete: keep-alive or close. */
void cg_py_asgi_conn_request_done(struct cg_asgi_conn *c, bool keep_alive);
/* Ends idle connections past keepalive (or past the stop's idle time once
 * the worker stops) and lingering closes past their bound. */
void cg_py_asgi_conn_sweep(struct cg_asgi_srv *s);
void cg_py_asgi_conn_want_write(struct cg_asgi_conn *c, bool on);
/* Answers a request error with gunicorn's plain-text page and closes. */
void cg_py_asgi_conn_error_page(struct cg_asgi_conn *c, const struct cg_http_error *e);
/* A new stream connection for an HTTP/2 stream of `parent` (new
 * reference), or NULL with an exception. */
struct cg_asgi_conn *cg_py_asgi_conn_new_stream(struct cg_asgi_conn *parent,
                                                struct cg_h2_job *job);
/* A stream connection's news: runs its reader and writer, as the loop
 * does a socket's (the first run reads the request's head). */
void cg_py_asgi_conn_stream_step(struct cg_asgi_conn *c);
/* Unconsumed input bytes. */
static inline size_t cg_py_asgi_conn_buffered(const struct cg_asgi_conn *c)
{
    return c->in.end - c->in.start;
}
#define CG_ASGI_READ_HIGH (256 * 1024) /* stop reading above this many unparsed bytes */
#define CG_ASGI_WRITE_HIGH (64 * 1024) /* send() waits above this many unsent bytes */

/* ---- cg_py_asgi_http.c ---- */
extern PyTypeObject cg_asgi_req_type;
/* Starts serving the request whose head was just parsed on `c`. Returns 0,
 * or -1 (the connection was answered/closed; nothing raised). */
int cg_py_asgi_http_start(struct cg_asgi_conn *c, const struct cg_http_request *req);
/* New input or EOF arrived for the current request: wake a pending receive. */
void cg_py_asgi_http_on_input(struct cg_asgi_req *r);
/* The client went away while the application call runs: as gunicorn's
 * ASGI worker, the app gets http.disconnect and asgi_disconnect_grace_period
 * seconds to finish, then its task is cancelled (at once for 0). */
void cg_py_asgi_http_on_lost(struct cg_asgi_req *r);
/* The output drained below the high-water mark: wake a pending send. */
void cg_py_asgi_http_on_drain(struct cg_asgi_req *r);
/* Answers with a plain-text error response and closes (as gunicorn's ASGI
 * worker's _send_error_response). */
void cg_py_asgi_http_error(struct cg_asgi_conn *c, int status, const char *reason,
                           const char *msg, const char *extra_headers);

/* Inside the HTTP request files (cg_py_asgi_http*.c): */
/* Resolves a pending future (receive or send waiter) with `value`, unless
 * it is done already; clears *waiter (its reference is dropped). */
void cg_py_asgi_http_resolve(struct cg_asgi_srv *s, PyObject **waiter, PyObject *value);
/* A new {"type": "http.disconnect"} message (new reference), or NULL with
 * an exception. */
PyObject *cg_py_asgi_http_disconnect_msg(struct cg_asgi_srv *s);
/* The response is complete (or abandoned): logs it, counts it against
 * max_requests, wakes a pending receive with http.disconnect, and lets the
 * connection go on (keep_alive) or close. Once per request. */
void cg_py_asgi_http_finish(struct cg_asgi_req *r, bool keep_alive);
/* (cg_py_asgi_http_receive.c) The request's receive() callable (self: r).
 * Returns an awaitable (new reference), or NULL with an exception. */
PyObject *cg_py_asgi_http_receive(PyObject *self, PyObject *unused);
/* (cg_py_asgi_http_send.c) The request's send() callable (self: r).
 * Returns an awaitable (new reference), or NULL with an exception. */
PyObject *cg_py_asgi_http_send(PyObject *self, PyObject *msg);
/* (cg_py_asgi_http_head.c) http.response.start: validates and formats the
 * head into r->head (written with the first body bytes). Returns 0 or -1
 * with an exception. */
int cg_py_asgi_http_head_format(struct cg_asgi_req *r, PyObject *msg);
/* (cg_py_asgi_http_head.c) http.response.informational: writes the 1xx head
 * now (not to HTTP/1.0 clients). Returns 0 or -1 with an exception. */
int cg_py_asgi_http_send_informational(struct cg_asgi_req *r, PyObject *msg);

/* ---- cg_py_asgi_ws.c ---- */
extern PyTypeObject cg_asgi_ws_type;
/* Takes over the connection for a WebSocket upgrade request. Returns 0 or -1
 * (answered with 400/426 and closed). */
int cg_py_asgi_ws_start(struct cg_asgi_conn *c, const struct cg_http_request *req);
/* Input/EOF/drain on an upgraded connection. */
void cg_py_asgi_ws_on_input(struct cg_asgi_ws *ws);
void cg_py_asgi_ws_on_drain(struct cg_asgi_ws *ws);
void cg_py_asgi_ws_free(struct cg_asgi_ws *ws);
/* Is this request a WebSocket upgrade (GET + Upgrade: websocket + Connection: upgrade)? */
bool cg_py_asgi_ws_is_upgrade(const struct cg_http_request *req);

/* ---- cg_py_asgi_h2.c ---- */
/* Sets up HTTP/2 when http_protocols has h2 (no-op otherwise). Returns 0
 * or -1 with err. */
int cg_py_asgi_h2_init(struct cg_asgi_srv *s, struct cg_err *err);
/* Watches the hub's wake-up (the loop is known). Returns 0 or -1 with an
 * exception. */
int cg_py_asgi_h2_start(struct cg_asgi_srv *s);
void cg_py_asgi_h2_deinit(struct cg_asgi_srv *s);
/* A new connection's first bytes: whether it speaks HTTP/2 (ALPN, or the
 * prior-knowledge preface from a trusted peer). Returns true when the
 * connection was taken care of (now HTTP/2, waiting for more bytes,
 * refused), false when it is HTTP/1's. */
bool cg_py_asgi_h2_check(struct cg_asgi_conn *c);
/* A request head just parsed on a socket connection: whether it is an h2c
 * upgrade gunicorn honours (cg_h2_upgrade_new). Returns true when the
 * connection took it (state H2UP, then cg_py_asgi_h2_upgrade_step), false
 * when it is served as HTTP/1.1. */
bool cg_py_asgi_h2_upgrade_begin(struct cg_asgi_conn *c, const struct cg_http_request *req);
/* State H2UP: reads the request body (at most CG_H2_UPGRADE_BODY_MAX),
 * answers 101 and, once the 101 is written, starts the session with the
 * request as stream 1. A body cut short or too large ends the connection. */
void cg_py_asgi_h2_upgrade_step(struct cg_asgi_conn *c);
/* State H2: the socket is ready, or the session has work. */
void cg_py_asgi_h2_io(struct cg_asgi_conn *c);
/* State H2, closing: ends its stream connections and frees the session. */
void cg_py_asgi_h2_close(struct cg_asgi_conn *c);
/* A stream connection closed: its stream is done (ended or reset). */
void cg_py_asgi_h2_stream_closed(struct cg_asgi_conn *c);
/* A stream connection wants its reader or writer run. */
void cg_py_asgi_h2_schedule(struct cg_asgi_conn *c);
/* State H2, once per tick: GOAWAY when idle past keepalive or stopping,
 * stalled streams reset past timeout, a peer that stopped reading dropped. */
void cg_py_asgi_h2_sweep(struct cg_asgi_conn *c, uint64_t now_ms);
/* The worker stops: every session sends GOAWAY (streams begun finish). */
void cg_py_asgi_h2_stop(struct cg_asgi_srv *s);

uint64_t cg_py_asgi_now_us(void);

#endif
