/* HTTP/2 sessions of the gthread worker over nghttp2 (see cg_h2.h).
 *
 * A stream's life:
 *
 *   HEADERS ─► head built (loop) ─► job queued ─► pool thread: parser reads
 *   the head through the stream transport, cg_py_wsgi_handle() runs the
 *   app, reading DATA as wsgi.input and writing the response ─► job done
 *   (loop notified) ─► the loop frees the stream once nghttp2 closed it.
 *
 * Locking: hc->mu guards every stream's buffers and flags shared with pool
 * threads; the hub's mutex guards its ready list (taken after hc->mu,
 * never before). nghttp2 is called by the loop only, and never with hc->mu
 * held while it may call back into the data provider (mem_send). */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_h2.h"
#include "cg_http_iplist.h"
#include "cg_log.h"
#include "cg_py_wsgi_conn.h"
#include "cg_py_wsgi_int.h"
#include "cg_transport_tls.h"

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

/* Streams reset for oversized header lists before the connection is
 * told to calm down (HPACK bomb). */
#define HEADER_ABUSE_MAX 1

struct buf {
    char *p;
    size_t len, cap, off; /* p[off, len) unread */
};

static int buf_add(struct buf *b, const void *d, size_t n)
{
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + n > b->cap) {
        if (b->off > 0) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n) {
            cap *= 2;
        }
        if (cap != b->cap) {
            char *p = realloc(b->p, cap);
            if (p == NULL) {
                return -1;
            }
            b->p = p;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

static size_t buf_avail(const struct buf *b)
{
    return b->len - b->off;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

struct stream {
    struct cg_h2_job job; /* first: the pool's link */
    struct cg_h2_conn *hc;
    int32_t id;
    pthread_cond_t cv; /* the pool thread waits here (hc->mu) */

    /* request head, built by the loop from HEADERS */
    char *method, *path, *authority;
    char *scheme;      /* :scheme, for url_scheme when the peer is trusted */
    struct buf hdrs;   /* "name: value\r\n" lines */
    struct buf cookie; /* crumbs joined with "; " */
    size_t hdr_bytes;
    bool has_length;
    bool chunked_in;   /* no content-length and a body: DATA relayed chunked */
    struct buf head;   /* the HTTP/1 head the parser reads (const after queueing) */
    struct buf trailers; /* request trailers, "name: value\r\n" (hc->mu) */
    size_t trailer_bytes;

    /* shared with the pool thread (hc->mu) */
    struct buf in;        /* body bytes (chunk-framed when chunked_in) */
    uint64_t payload_in;  /* DATA payload received (loop) */
    uint64_t taken;       /* body bytes handed to the parser (pool) */
    uint64_t consumed;    /* acknowledged with nghttp2_session_consume (loop) */
    bool in_eof;
    bool closed;          /* nghttp2 closed the stream (RST or done) */
    bool queued;          /* a job was submitted */
    bool job_done;
    bool done_seen;       /* the loop acted on job_done (loop only) */
    bool aborted;         /* the runner gave up on its response: reset it */
    bool notified;        /* on hc->notify */
    bool passed;          /* its pool thread went on to the next waiting stream
                             (cg_h2_job_finish): its slot of the share moved on */
    struct stream *nnext;
    struct stream *lnext;         /* a list service() took (loop only) */
    struct stream *aprev, *anext; /* hc->all (loop) */
    struct stream *wnext;         /* hc->wait_head (mu) */

    /* response: written by the pool thread, sent by the loop */
    struct buf rhead;     /* HTTP/1 head until its blank line */
    bool rhead_done;
    nghttp2_nv *nva;
    size_t nnv;
    char *nvbuf;
    bool resp_ready, resp_submitted;
    bool chunked_out;     /* the HTTP/1 body is chunk-framed: strip it */
    int cstate;           /* chunk decoder: 0 size, 1 size-ext, 2 LF, 3 data, 4 CR, 5 LF, 6 end */
    uint64_t cleft;
    struct buf out;       /* response payload not yet taken by nghttp2 */
    bool out_sized;       /* the head has a content-length: out_left is what is due */
    uint64_t out_left;
    bool out_eof;
    bool deferred;
    uint64_t progress_ms; /* last time output moved (stall check) */
};

struct cg_h2_conn {
    struct cg_h2_hub *hub;
    nghttp2_session *ses;
    struct cg_transport *t;
    const struct cg_listener *l;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    void *owner;
    bool has_tls;
    struct cg_wsgi_tls tls; /* TLS: taken at the start, for gunicorn.socket */
    pthread_mutex_t mu;
    struct stream *all;     /* every stream not yet freed (loop) */
    struct stream *notify;  /* streams with work for the loop (mu) */
    bool queued;            /* on the hub's ready list (hub->mu) */
    struct cg_h2_conn *rnext; /* the hub's ready list (hub->mu) */
    struct cg_h2_conn *tnext; /* a list cg_h2_hub_take returned (loop) */
    struct buf pend;        /* mem_send output not written yet (loop) */
    bool dead;              /* socket failed or peer closed: no more I/O */
    bool goaway;            /* stopping: new streams are refused */
    bool goaway_sent;
    int header_abuse;
    size_t njobs;           /* streams queued here or on the pool, or running */
    size_t running;         /* of which submitted to the pool (loop) */
    struct stream *wait_head, *wait_tail; /* queued here, beyond the pool share (mu) */
    size_t nstreams;
};

bool cg_h2_enabled(const struct cg_conf *conf)
{
    for (size_t i = 0; i < conf->http_protocols.n; i++) {
        if (strcmp(conf->http_protocols.v[i], "h2") == 0) {
            return true;
        }
    }
    return false;
}

/* ---- hub ---------------------------------------------------------------- */

int cg_h2_hub_init(struct cg_h2_hub *hub, const struct cg_conf *conf,
                   const struct cg_http_limits *limits, struct cg_err *err)
{
    memset(hub, 0, sizeof(*hub));
    hub->conf = conf;
    hub->limits = *limits;
    /* The head a stream hands its parser says HTTP/2.0, which HTTP/1's
     * request line rules count as an unconventional version. */
    hub->limits.permit_unconventional_http_version = true;
    hub->tls = limits->is_ssl;
    hub->prior_knowledge = strcmp(conf->http2_cleartext, "prior-knowledge") == 0 ||
                           strcmp(conf->http2_cleartext, "both") == 0;
    hub->prior_only = strcmp(conf->http2_cleartext, "prior-knowledge") == 0;
    hub->upgrade = !hub->tls && (strcmp(conf->http2_cleartext, "upgrade") == 0 ||
                                 strcmp(conf->http2_cleartext, "both") == 0);
    hub->trusted = limits->forwarded_allow_ips;
    hub->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_t *mu = malloc(sizeof(*mu));
    if (hub->efd < 0 || mu == NULL) {
        free(mu);
        cg_err_set(err, "HTTP/2: cannot set up the loop's wake-up (%s)", strerror(errno));
        return -1;
    }
    pthread_mutex_init(mu, NULL);
    hub->mu = mu;
    return 0;
}

void cg_h2_hub_deinit(struct cg_h2_hub *hub)
{
    if (hub->efd >= 0) {
        close(hub->efd);
        hub->efd = -1;
    }
    if (hub->mu != NULL) {
        pthread_mutex_destroy(hub->mu);
        free(hub->mu);
        hub->mu = NULL;
    }
}

/* Puts s on its connection's notify list and the connection on the hub's
 * ready list, waking the loop. Called with hc->mu held. */
static void notify_locked(struct stream *s)
{
    struct cg_h2_conn *hc = s->hc;
    if (!s->notified) {
        s->notified = true;
        s->nnext = hc->notify;
        hc->notify = s;
    }
    pthread_mutex_lock(hc->hub->mu);
    bool wake = false;
    if (!hc->queued) {
        hc->queued = true;
        wake = hc->hub->ready == NULL;
        hc->rnext = hc->hub->ready;
        hc->hub->ready = hc;
    }
    pthread_mutex_unlock(hc->hub->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(hc->hub->efd, &one, sizeof(one));
        (void)w;
    }
}

/* Tells whoever runs s that it has news (body bytes, the body's end, room
 * for the response, the stream closed): its pool thread waits on s->cv;
 * an event-driven runner gets hub->wake. Called with hc->mu held. */
static void stream_wake(struct stream *s)
{
    struct cg_h2_hub *hub = s->hc->hub;

    pthread_cond_broadcast(&s->cv);
    if (hub->wake != NULL && s->queued && !s->job_done) {
        hub->wake(hub->wake_arg, &s->job);
    }
}

struct cg_h2_conn *cg_h2_hub_take(struct cg_h2_hub *hub)
{
    uint64_t v;
    ssize_t r = read(hub->efd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(hub->mu);
    struct cg_h2_conn *list = hub->ready;
    hub->ready = NULL;
    /* Off the ready list: a pool thread may queue each again at once, so
     * the loop walks its own link. */
    for (struct cg_h2_conn *hc = list; hc != NULL; hc = hc->rnext) {
        hc->queued = false;
        hc->tnext = hc->rnext;
    }
    pthread_mutex_unlock(hub->mu);
    return list;
}

struct cg_h2_conn *cg_h2_conn_next_ready(struct cg_h2_conn *hc)
{
    return hc->tnext;
}

/* ---- detection ---------------------------------------------------------- */

void cg_h2_preface_error(struct cg_http_error *e)
{
    cg_http_error_set(e, CG_HTTP_ERR_INVALID_REQUEST_LINE, "%s",
                      "expected the HTTP/2 connection preface (http2_cleartext)");
}

enum cg_h2_detect cg_h2_detect(const struct cg_h2_hub *hub, const struct cg_transport *t,
                               const struct sockaddr *peer, const char *buf, size_t n)
{
    struct cg_transport_tls_info ti;

    if (cg_transport_is_tls(t)) {
        if (!cg_transport_tls_info(t, &ti)) {
            return CG_H2_DETECT_MORE; /* ALPN is known once the handshake is done */
        }
        return strcmp(ti.alpn, "h2") == 0 ? CG_H2_DETECT_H2 : CG_H2_DETECT_H1;
    }
    if (!hub->prior_knowledge || hub->tls) {
        return CG_H2_DETECT_H1;
    }
    /* Only peers in forwarded_allow_ips; a Unix socket peer is trusted,
     * as for forwarded headers. */
    if (peer->sa_family != AF_UNIX && !cg_http_iplist_allows(hub->trusted, peer)) {
        return CG_H2_DETECT_H1;
    }
    size_t m = n < PREFACE_LEN ? n : PREFACE_LEN;
    if (memcmp(buf, PREFACE, m) == 0) {
        return m == PREFACE_LEN ? CG_H2_DETECT_H2 : CG_H2_DETECT_MORE;
    }
    return hub->prior_only ? CG_H2_DETECT_REFUSE : CG_H2_DETECT_H1;
}

/* ---- streams (loop side) ------------------------------------------------ */

static struct stream *stream_new(struct cg_h2_conn *hc, int32_t id)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->hc = hc;
    s->id = id;
    pthread_cond_init(&s->cv, NULL);
    hc->nstreams++;
    s->anext = hc->all;
    if (hc->all != NULL) {
        hc->all->aprev = s;
    }
    hc->all = s;
    return s;
}

static void stream_free(struct stream *s)
{
    pthread_cond_destroy(&s->cv);
    free(s->method);
    free(s->path);
    free(s->authority);
    free(s->scheme);
    buf_free(&s->hdrs);
    buf_free(&s->cookie);
    buf_free(&s->head);
    buf_free(&s->trailers);
    buf_free(&s->in);
    buf_free(&s->rhead);
    buf_free(&s->out);
    free(s->nva);
    free(s->nvbuf);
    if (s->aprev != NULL) {
        s->aprev->anext = s->anext;
    } else {
        s->hc->all = s->anext;
    }
    if (s->anext != NULL) {
        s->anext->aprev = s->aprev;
    }
    s->hc->nstreams--;
    free(s);
}


static char *dup_n(const uint8_t *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
    struct cg_h2_conn *hc = ud;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct stream *s = stream_new(hc, frame->hd.stream_id);
    if (s == NULL) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    nghttp2_session_set_stream_user_data(ses, frame->hd.stream_id, s);
    return 0;
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    struct cg_h2_conn *hc = ud;
    struct stream *s = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
    uint32_t max = (uint32_t)hc->hub->conf->http2_max_header_list_size;
    (void)flags;

    if (s == NULL) {
        return 0;
    }
    if (s->queued) {
        /* trailers (nghttp2 refuses pseudo-fields there): kept for the
         * post_request hook's req.trailers, as gunicorn's HTTP2Request */
        s->trailer_bytes += namelen + valuelen + 32;
        if (max > 0 && s->trailer_bytes > max) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        pthread_mutex_lock(&hc->mu);
        int rc = buf_add(&s->trailers, name, namelen) < 0 || buf_add(&s->trailers, ": ", 2) < 0 ||
                 buf_add(&s->trailers, value, valuelen) < 0 ||
                 buf_add(&s->trailers, "\r\n", 2) < 0;
        pthread_mutex_unlock(&hc->mu);
        return rc ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    }
    /* RFC 9113 6.5.2's size (name + value + 32 per field), checked as the
     * fields are decoded: an HPACK bomb stops at the limit. */
    s->hdr_bytes += namelen + valuelen + 32;
    if (max > 0 && s->hdr_bytes > max) {
        if (++hc->header_abuse >= HEADER_ABUSE_MAX) {
            nghttp2_session_terminate_session(ses, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (namelen > 0 && name[0] == ':') {
        char **slot = namelen == 7 && memcmp(name, ":method", 7) == 0      ? &s->method
                      : namelen == 5 && memcmp(name, ":path", 5) == 0      ? &s->path
                      : namelen == 10 && memcmp(name, ":authority", 10) == 0 ? &s->authority
                      : namelen == 7 && memcmp(name, ":scheme", 7) == 0    ? &s->scheme
                                                                            : NULL;
        if (slot != NULL && *slot == NULL && (*slot = dup_n(value, valuelen)) == NULL) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (namelen == 6 && memcmp(name, "cookie", 6) == 0) {
        /* RFC 9113 8.2.3: crumbs are joined with "; " for HTTP/1 code */
        if ((s->cookie.len > 0 && buf_add(&s->cookie, "; ", 2) < 0) ||
            buf_add(&s->cookie, value, valuelen) < 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (namelen == 4 && memcmp(name, "host", 4) == 0 && s->authority != NULL) {
        return 0; /* :authority wins (RFC 9113 8.3.1) */
    }
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        s->has_length = true;
    }
    if (buf_add(&s->hdrs, name, namelen) < 0 || buf_add(&s->hdrs, ": ", 2) < 0 ||
        buf_add(&s->hdrs, value, valuelen) < 0 || buf_add(&s->hdrs, "\r\n", 2) < 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* The request as an HTTP/1 head for the parser. Returns 0 or -1. */
static int build_head(struct stream *s, bool end_stream)
{
    const char *method = s->method ? s->method : "GET";
    const char *path = s->path ? s->path : "/";
    struct buf *h = &s->head;

    s->chunked_in = !end_stream && !s->has_length;
    if (buf_add(h, method, strlen(method)) < 0 || buf_add(h, " ", 1) < 0 ||
        buf_add(h, path, strlen(path)) < 0 || buf_add(h, " HTTP/2.0\r\n", 11) < 0 ||
        (s->hdrs.len > 0 && buf_add(h, s->hdrs.p, s->hdrs.len) < 0)) {
        return -1;
    }
    if (s->authority != NULL && (buf_add(h, "host: ", 6) < 0 ||
                                 buf_add(h, s->authority, strlen(s->authority)) < 0 ||
                                 buf_add(h, "\r\n", 2) < 0)) {
        return -1;
    }
    if (s->cookie.len > 0 && (buf_add(h, "cookie: ", 8) < 0 ||
                              buf_add(h, s->cookie.p, s->cookie.len) < 0 ||
                              buf_add(h, "\r\n", 2) < 0)) {
        return -1;
    }
    /* A body of unknown length (no content-length) is relayed chunked. */
    if (s->chunked_in && buf_add(h, "transfer-encoding: chunked\r\n", 28) < 0) {
        return -1;
    }
    if (buf_add(h, "\r\n", 2) < 0) {
        return -1;
    }
    buf_free(&s->hdrs);
    buf_free(&s->cookie);
    return 0;
}

/* The first stream waiting for its turn on the pool, taken off the list,
 * or NULL. hc->mu held. */
static struct stream *wait_pop_locked(struct cg_h2_conn *hc)
{
    struct stream *s = hc->wait_head;
    if (s != NULL) {
        hc->wait_head = s->wnext;
        if (hc->wait_head == NULL) {
            hc->wait_tail = NULL;
        }
        s->wnext = NULL;
    }
    return s;
}

/* Hands waiting streams to the pool while the connection holds less than
 * its share of the threads (half of them, at least one): one connection's
 * streams, even ones that wait for bodies that never come, cannot take
 * every thread from the others. Loop thread. */
static void pump(struct cg_h2_conn *hc)
{
    int threads = hc->hub->conf->threads > 1 ? hc->hub->conf->threads : 1;
    size_t share = threads / 2 > 0 ? (size_t)(threads / 2) : 1;

    if (hc->hub->share > 0) {
        share = hc->hub->share;
    }

    while (hc->running < share) {
        pthread_mutex_lock(&hc->mu);
        struct stream *s = wait_pop_locked(hc);
        pthread_mutex_unlock(&hc->mu);
        if (s == NULL) {
            break;
        }
        hc->running++;
        hc->hub->submit(hc->hub->submit_arg, &s->job);
    }
}

/* A stream whose head is built waits for a pool thread. Loop thread. */
static void queue_stream(struct cg_h2_conn *hc, struct stream *s, bool end)
{
    pthread_mutex_lock(&hc->mu);
    s->in_eof = end;
    s->queued = true;
    if (hc->wait_tail != NULL) {
        hc->wait_tail->wnext = s;
    } else {
        hc->wait_head = s;
    }
    hc->wait_tail = s;
    pthread_mutex_unlock(&hc->mu);
    hc->njobs++;
    pump(hc);
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
    struct cg_h2_conn *hc = ud;
    struct stream *s = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
    bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

    if (s == NULL || (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && !s->queued) {
        if (hc->goaway) {
            nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
            return 0;
        }
        if (build_head(s, end) < 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        queue_stream(hc, s, end);
        return 0;
    }
    if (end) {
        pthread_mutex_lock(&hc->mu);
        if (s->chunked_in && !s->in_eof) {
            buf_add(&s->in, "0\r\n\r\n", 5);
        }
        s->in_eof = true;
        stream_wake(s);
        pthread_mutex_unlock(&hc->mu);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct cg_h2_conn *hc = ud;
    struct stream *s = nghttp2_session_get_stream_user_data(ses, id);
    int rc = 0;
    (void)flags;

    if (s == NULL) {
        nghttp2_session_consume_connection(ses, len);
        return 0;
    }
    pthread_mutex_lock(&hc->mu);
    if (s->job_done) {
        /* nobody reads it any more: give the window back at once */
        pthread_mutex_unlock(&hc->mu);
        nghttp2_session_consume(ses, id, len);
        return 0;
    }
    if (s->chunked_in) {
        char pre[24];
        int n = snprintf(pre, sizeof(pre), "%zx\r\n", len);
        rc = buf_add(&s->in, pre, (size_t)n) < 0 || buf_add(&s->in, data, len) < 0 ||
             buf_add(&s->in, "\r\n", 2) < 0;
    } else {
        rc = buf_add(&s->in, data, len);
    }
    s->payload_in += len;
    stream_wake(s);
    pthread_mutex_unlock(&hc->mu);
    return rc != 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t code, void *ud)
{
    struct cg_h2_conn *hc = ud;
    struct stream *s = nghttp2_session_get_stream_user_data(ses, id);
    (void)code;

    if (s == NULL) {
        return 0;
    }
    nghttp2_session_set_stream_user_data(ses, id, NULL);
    pthread_mutex_lock(&hc->mu);
    s->closed = true;
    stream_wake(s);
    /* not queued: never given to the pool, or its job's end was seen */
    bool gone = !s->queued && !s->notified;
    pthread_mutex_unlock(&hc->mu);
    if (gone) {
        stream_free(s);
    }
    return 0;
}

/* nghttp2's data provider: the response payload the pool thread wrote. */
static ssize_t read_body(nghttp2_session *ses, int32_t id, uint8_t *out, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *src, void *ud)
{
    struct stream *s = src->ptr;
    struct cg_h2_conn *hc = ud;
    ssize_t n = 0;
    (void)ses;
    (void)id;

    pthread_mutex_lock(&hc->mu);
    size_t avail = buf_avail(&s->out);
    if (avail > 0) {
        n = (ssize_t)(avail < length ? avail : length);
        memcpy(out, s->out.p + s->out.off, (size_t)n);
        s->out.off += (size_t)n;
        s->progress_ms = cg_monotonic_ms();
        stream_wake(s); /* room for the writer */
    }
    if (buf_avail(&s->out) == 0) {
        if (s->out_eof) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            s->deferred = true;
            n = NGHTTP2_ERR_DEFERRED;
        }
    }
    pthread_mutex_unlock(&hc->mu);
    return n;
}

/* Acts on what pool threads asked for: submits response heads, resumes
 * deferred bodies, acknowledges body bytes the app read, frees streams
 * whose job ended after nghttp2 closed them. Loop thread. */
static void service(struct cg_h2_conn *hc)
{
    struct stream *list;

    pthread_mutex_lock(&hc->mu);
    list = hc->notify;
    hc->notify = NULL;
    /* Off the list: a pool thread may list each again at once (through
     * nnext), so this walk follows its own link. */
    for (struct stream *s = list; s != NULL; s = s->nnext) {
        s->notified = false;
        s->lnext = s->nnext;
    }
    pthread_mutex_unlock(&hc->mu);

    for (struct stream *s = list, *next; s != NULL; s = next) {
        next = s->lnext;
        pthread_mutex_lock(&hc->mu);
        bool closed = s->closed, ready = s->resp_ready && !s->resp_submitted;
        bool resume = s->deferred && (buf_avail(&s->out) > 0 || s->out_eof);
        uint64_t target = s->taken < s->payload_in ? s->taken : s->payload_in;
        if (s->job_done) {
            target = s->payload_in; /* unread rest: window back */
        }
        uint64_t ack = target > s->consumed ? target - s->consumed : 0;
        s->consumed += ack;
        if (resume) {
            s->deferred = false;
        }
        if (ready) {
            s->resp_submitted = true;
        }
        /* A stream may be on the list again already (the pool notified it
         * after the list was taken): its job's end is acted on once, and
         * it is not freed while listed. */
        bool done_now = s->job_done && !s->done_seen;
        s->done_seen = s->done_seen || done_now;
        bool listed = s->notified, passed = s->passed;
        pthread_mutex_unlock(&hc->mu);

        if (done_now) {
            if (!passed) {
                hc->running--;
            }
            hc->njobs--;
        }
        if (closed) {
            if (s->done_seen && !listed) {
                stream_free(s);
            }
            continue;
        }
        if (done_now && (!s->resp_ready || s->aborted)) {
            /* the app's response never began (a client gone, a head that
             * was not answered), or its runner gave up on it midway:
             * reset rather than leave it hanging or end it as complete */
            nghttp2_submit_rst_stream(hc->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        }
        if (done_now) {
            s->queued = false; /* freed by on_stream_close from now on */
        }
        if (ack > 0) {
            nghttp2_session_consume(hc->ses, s->id, (size_t)ack);
        }
        if (ready) {
            nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_body };
            s->progress_ms = cg_monotonic_ms();
            if (nghttp2_submit_response(hc->ses, s->id, s->nva, s->nnv, &prd) != 0) {
                nghttp2_submit_rst_stream(hc->ses, NGHTTP2_FLAG_NONE, s->id,
                                          NGHTTP2_INTERNAL_ERROR);
            }
        } else if (resume) {
            nghttp2_session_resume_data(hc->ses, s->id);
        }
    }
    pump(hc);
}

/* ---- the connection (loop side) ------------------------------------------ */

static int submit_settings(struct cg_h2_conn *hc)
{
    const struct cg_conf *conf = hc->hub->conf;
    nghttp2_settings_entry iv[4];
    size_t n = 0;

    iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                        (uint32_t)conf->http2_max_concurrent_streams };
    iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                        (uint32_t)conf->http2_initial_window_size };
    iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_FRAME_SIZE,
                                        (uint32_t)conf->http2_max_frame_size };
    if (conf->http2_max_header_list_size > 0) {
        iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                            (uint32_t)conf->http2_max_header_list_size };
    }
    return nghttp2_submit_settings(hc->ses, NGHTTP2_FLAG_NONE, iv, n);
}

struct cg_h2_conn *cg_h2_conn_new(struct cg_h2_hub *hub, struct cg_transport *t,
                                  const struct cg_listener *l, const struct sockaddr *peer,
                                  socklen_t peer_len, void *owner, const char *buf, size_t n,
                                  struct cg_err *err)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    struct cg_h2_conn *hc = calloc(1, sizeof(*hc));

    if (hc == NULL || nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
        goto oom;
    }
    hc->hub = hub;
    hc->t = t;
    hc->l = l;
    hc->owner = owner;
    if (peer_len > 0 && peer_len <= sizeof(hc->peer)) {
        memcpy(&hc->peer, peer, peer_len);
        hc->peer_len = peer_len;
    } else {
        hc->peer.ss_family = AF_UNIX;
    }
    pthread_mutex_init(&hc->mu, NULL);
    /* The pool threads' gunicorn.socket answers from this copy: the SSL
     * object belongs to the loop thread. */
    hc->has_tls = cg_transport_tls_info(t, &hc->tls.info);
    if (hc->has_tls) {
        hc->tls.der_len = cg_transport_tls_peer_der(t, &hc->tls.der, &hc->tls.verified);
        /* cg_h2_conn_io reads until the socket is empty and looks at what
         * OpenSSL holds before it waits */
        cg_transport_tls_read_ahead(t);
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* Flow control follows the app's reads (cg_h2.h), not the arrival. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Floods: a SETTINGS frame with many entries, CONTINUATION frames
     * without end, resets faster than streams can be served (CVE-2023-44487)
     * and frames that only make us answer (PING, SETTINGS: nghttp2 stops
     * at max_outbound_ack) end the session with GOAWAY. */
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_stream_reset_rate_limit(opt, 200, 33);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    int rc = nghttp2_session_server_new2(&hc->ses, cbs, hc, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;
    if (rc != 0 || submit_settings(hc) != 0) {
        goto oom;
    }
    /* The connection window: a few streams' worth, so parallel uploads do
     * not starve each other, still bounded per connection. */
    int64_t win = (int64_t)hub->conf->http2_initial_window_size * 4;
    if (win > 65535) {
        nghttp2_session_set_local_window_size(hc->ses, NGHTTP2_FLAG_NONE, 0,
                                              win > (1 << 24) ? (1 << 24) : (int32_t)win);
    }
    if (n > 0 && nghttp2_session_mem_recv(hc->ses, (const uint8_t *)buf, n) < 0) {
        hc->dead = true;
    }
    return hc;
oom:
    if (cbs != NULL) {
        nghttp2_session_callbacks_del(cbs);
    }
    if (opt != NULL) {
        nghttp2_option_del(opt);
    }
    if (hc != NULL) {
        if (hc->ses != NULL) {
            nghttp2_session_del(hc->ses);
        }
        OPENSSL_free(hc->tls.der);
        free(hc);
    }
    cg_err_set(err, "HTTP/2: cannot start a session (out of memory)");
    return NULL;
}

void *cg_h2_conn_owner(const struct cg_h2_conn *hc)
{
    return hc->owner;
}

/* Writes what nghttp2 has to send. nghttp2 hands its output out frame by
 * frame: up to FLUSH_GATHER bytes of it are gathered into hc->pend and
 * written at once (one TLS record and one syscall for many small frames,
 * such as a hundred streams' HEADERS and DATA). Returns false when the
 * socket is full (hc->pend keeps the rest, at most FLUSH_GATHER plus one
 * frame), true when all was written or the connection died. */
#define FLUSH_GATHER 16384

static bool flush(struct cg_h2_conn *hc)
{
    for (;;) {
        while (buf_avail(&hc->pend) < FLUSH_GATHER) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(hc->ses, &p);
            if (n < 0 || (n > 0 && buf_add(&hc->pend, p, (size_t)n) < 0)) {
                hc->dead = true;
                buf_free(&hc->pend);
                return true;
            }
            if (n == 0) {
                break;
            }
        }
        size_t avail = buf_avail(&hc->pend);
        if (avail == 0) {
            return true;
        }
        struct iovec iov = { hc->pend.p + hc->pend.off, avail };
        ssize_t w = cg_transport_sendv(hc->t, &iov, 1, 0);
        if (w == CG_TRANSPORT_AGAIN) {
            return false;
        }
        if (w < 0) {
            hc->dead = true;
            buf_free(&hc->pend);
            return true;
        }
        hc->pend.off += (size_t)w;
        if ((size_t)w < avail) {
            return false;
        }
    }
}

/* Every stream a pool thread still runs is told the connection is gone:
 * its reads and writes fail from now on. */
static void abort_streams(struct cg_h2_conn *hc)
{
    pthread_mutex_lock(&hc->mu);
    for (struct stream *s = hc->all; s != NULL; s = s->anext) {
        s->closed = true;
        stream_wake(s);
    }
    pthread_mutex_unlock(&hc->mu);
}

static bool goaway_send(struct cg_h2_conn *hc);

enum cg_h2_next cg_h2_conn_io(struct cg_h2_conn *hc)
{
    char buf[32768];

    service(hc);
    goaway_send(hc);
again:
    /* Reads only while our output drains: a peer that does not read what
     * it asks for stops being read. */
    while (!hc->dead && buf_avail(&hc->pend) == 0 && nghttp2_session_want_read(hc->ses)) {
        ssize_t n = cg_transport_recv(hc->t, buf, sizeof(buf), 0);
        if (n == CG_TRANSPORT_AGAIN) {
            break;
        }
        if (n <= 0) {
            hc->dead = true;
            break;
        }
        ssize_t r = nghttp2_session_mem_recv(hc->ses, (const uint8_t *)buf, (size_t)n);
        if (r < 0) {
            /* a protocol error or a flood: nghttp2 queued its GOAWAY */
            cg_log_debug("HTTP/2 session ended: %s", nghttp2_strerror((int)r));
            flush(hc);
            hc->dead = true;
            break;
        }
        if (!flush(hc)) {
            break;
        }
    }
    goaway_send(hc);
    bool drained = hc->dead || flush(hc);
    if (drained && goaway_send(hc)) { /* the flush closed the last stream */
        drained = hc->dead || flush(hc);
    }
    if (!hc->dead && drained && nghttp2_session_want_read(hc->ses) &&
        cg_transport_tls_buffered(hc->t)) {
        goto again; /* read ahead by OpenSSL: the socket would not say */
    }
    if (hc->dead) {
        abort_streams(hc);
    }
    bool over = hc->dead || (!nghttp2_session_want_read(hc->ses) &&
                             !nghttp2_session_want_write(hc->ses) && buf_avail(&hc->pend) == 0);
    if (over) {
        return hc->njobs == 0 ? CG_H2_CLOSE : CG_H2_WAIT;
    }
    if (!drained) {
        return CG_H2_WRITE;
    }
    return hc->t->want == POLLOUT ? CG_H2_WRITE : CG_H2_READ;
}

void cg_h2_conn_kill(struct cg_h2_conn *hc)
{
    hc->dead = true;
    buf_free(&hc->pend);
    abort_streams(hc);
}

/* The GOAWAY itself goes once the streams begun are done: some clients
 * (python-h2) drop a stream's DATA that follows a GOAWAY. Meanwhile new
 * streams are refused (REFUSED_STREAM: safe to retry elsewhere). */
static bool goaway_send(struct cg_h2_conn *hc)
{
    if (hc->goaway && !hc->goaway_sent && !hc->dead && hc->nstreams == 0 && hc->njobs == 0) {
        hc->goaway_sent = true;
        nghttp2_submit_goaway(hc->ses, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->ses),
                              NGHTTP2_NO_ERROR, NULL, 0);
        return true;
    }
    return false;
}

void cg_h2_conn_end(struct cg_h2_conn *hc)
{
    if (hc->dead || hc->goaway_sent) {
        return;
    }
    hc->goaway = hc->goaway_sent = true;
    nghttp2_submit_goaway(hc->ses, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(hc->ses), NGHTTP2_NO_ERROR,
                          NULL, 0);
    (void)flush(hc); /* what the socket takes now: never waits */
    hc->dead = true;
    buf_free(&hc->pend);
    abort_streams(hc);
}

void cg_h2_conn_goaway(struct cg_h2_conn *hc)
{
    hc->goaway = true;
    goaway_send(hc);
}

size_t cg_h2_conn_active(const struct cg_h2_conn *hc)
{
    return hc->nstreams + hc->njobs;
}

size_t cg_h2_conn_jobs(const struct cg_h2_conn *hc)
{
    return hc->njobs;
}

size_t cg_h2_conn_reset_stalled(struct cg_h2_conn *hc, uint64_t now_ms, uint64_t timeout_ms)
{
    size_t n = 0;

    for (struct stream *s = hc->all; s != NULL && !hc->dead; s = s->anext) {
        pthread_mutex_lock(&hc->mu);
        bool stalled = !s->closed && s->resp_submitted && buf_avail(&s->out) > 0 &&
                       now_ms > s->progress_ms + timeout_ms;
        pthread_mutex_unlock(&hc->mu);
        if (stalled) {
            nghttp2_submit_rst_stream(hc->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
            n++;
        }
    }
    return n;
}

void cg_h2_conn_free(struct cg_h2_conn *hc)
{
    if (hc == NULL) {
        return;
    }
    /* Off the hub's list if a pool thread put it there. A list the loop
     * took is walked before any connection of it is released. */
    pthread_mutex_lock(hc->hub->mu);
    if (hc->queued) {
        for (struct cg_h2_conn **pp = &hc->hub->ready; *pp != NULL; pp = &(*pp)->rnext) {
            if (*pp == hc) {
                *pp = hc->rnext;
                break;
            }
        }
    }
    pthread_mutex_unlock(hc->hub->mu);
    /* nghttp2 frees its streams without calling on_stream_close: ours go
     * here (no pool thread uses them any more). */
    nghttp2_session_del(hc->ses);
    while (hc->all != NULL) {
        stream_free(hc->all);
    }
    pthread_mutex_destroy(&hc->mu);
    OPENSSL_free(hc->tls.der);
    buf_free(&hc->pend);
    free(hc);
}

/* ---- the stream transport (pool thread) ---------------------------------- */

static struct stream *t_stream(struct cg_transport *t)
{
    return t->impl;
}

/* Waits on the stream's condition up to the connection's I/O timeout.
 * Returns 0, or -1 with errno ETIMEDOUT. hc->mu held. */
static int stream_wait(struct stream *s, int timeout_ms)
{
    if (timeout_ms <= 0) {
        pthread_cond_wait(&s->cv, &s->hc->mu);
        return 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    if (pthread_cond_timedwait(&s->cv, &s->hc->mu, &ts) == ETIMEDOUT) {
        errno = ETIMEDOUT;
        return -1;
    }
    return 0;
}

static int stream_timeout_ms(struct stream *s)
{
    int t = s->hc->hub->conf->timeout;
    return t > 0 ? t * 1000 : -1;
}

static ssize_t st_recv(struct cg_transport *t, void *out, size_t n, int flags)
{
    struct stream *s = t_stream(t);
    struct cg_h2_conn *hc = s->hc;
    ssize_t got = -1;

    if (hc->hub->nowait) {
        flags |= CG_TRANSPORT_NOWAIT;
    }

    if (buf_avail(&s->head) > 0) { /* the head is never changed once queued */
        size_t k = buf_avail(&s->head) < n ? buf_avail(&s->head) : n;
        memcpy(out, s->head.p + s->head.off, k);
        s->head.off += k;
        return (ssize_t)k;
    }
    pthread_mutex_lock(&hc->mu);
    for (;;) {
        size_t avail = buf_avail(&s->in);
        if (avail > 0) {
            size_t k = avail < n ? avail : n;
            memcpy(out, s->in.p + s->in.off, k);
            s->in.off += k;
            s->taken += k;
            notify_locked(s); /* the window opens as the app reads */
            got = (ssize_t)k;
            break;
        }
        if (s->in_eof && !hc->hub->nowait) {
            got = 0;
            break;
        }
        if (s->closed) {
            errno = ECONNRESET;
            break;
        }
        if (s->in_eof) {
            /* an event-driven runner reads on past the body only to learn
             * that the peer went away: the body's end is not that */
            got = CG_TRANSPORT_AGAIN;
            t->want = POLLIN;
            break;
        }
        if (flags & CG_TRANSPORT_NOWAIT) {
            got = CG_TRANSPORT_AGAIN;
            t->want = POLLIN;
            break;
        }
        if (stream_wait(s, stream_timeout_ms(s)) < 0) {
            break;
        }
    }
    pthread_mutex_unlock(&hc->mu);
    return got;
}

/* Turns the HTTP/1 response head into HTTP/2 fields: :status, then the
 * headers less the connection-specific ones RFC 9113 8.2.2 forbids.
 * Called without hc->mu (the pool thread owns rhead). Returns 0 or -1. */
static int parse_rhead(struct stream *s)
{
    char *p = s->rhead.p, *end = s->rhead.p + s->rhead.len;
    size_t lines = 0;

    for (char *q = p; q < end; q++) {
        lines += *q == '\n';
    }
    s->nva = calloc(lines + 1, sizeof(*s->nva));
    s->nvbuf = malloc(s->rhead.len + 8);
    if (s->nva == NULL || s->nvbuf == NULL) {
        return -1;
    }
    memcpy(s->nvbuf, p, s->rhead.len);
    char *b = s->nvbuf, *e = s->nvbuf + s->rhead.len;
    char *eol = memchr(b, '\n', (size_t)(e - b));
    char *sp = eol ? memchr(b, ' ', (size_t)(eol - b)) : NULL;
    if (sp == NULL || eol - sp < 4) {
        return -1;
    }
    /* ":status" from the three digits after "HTTP/x.y " */
    static char status_name[] = ":status";
    s->nva[s->nnv++] = (nghttp2_nv){ (uint8_t *)status_name, (uint8_t *)sp + 1, 7, 3,
                                     NGHTTP2_NV_FLAG_NONE };
    for (char *line = eol + 1; line < e;) {
        char *le = memchr(line, '\n', (size_t)(e - line));
        if (le == NULL) {
            break;
        }
        char *ve = le > line && le[-1] == '\r' ? le - 1 : le;
        char *colon = memchr(line, ':', (size_t)(ve - line));
        if (colon != NULL) {
            size_t nl = (size_t)(colon - line);
            char *v = colon + 1;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            for (size_t i = 0; i < nl; i++) {
                line[i] = (char)((line[i] >= 'A' && line[i] <= 'Z') ? line[i] + 32 : line[i]);
            }
            if (nl == 14 && strncmp(line, "content-length", 14) == 0 && v < ve) {
                char *de = v;
                uint64_t len = 0;
                while (de < ve && *de >= '0' && *de <= '9' && len < UINT64_MAX / 10 - 9) {
                    len = len * 10 + (uint64_t)(*de++ - '0');
                }
                s->out_sized = de == ve;
                s->out_left = len;
            }
            bool chunked = nl == 17 && strncmp(line, "transfer-encoding", 17) == 0;
            if (chunked) {
                s->chunked_out = (size_t)(ve - v) >= 7 && strncasecmp(v, "chunked", 7) == 0;
            }
            bool skip = chunked || (nl == 10 && strncmp(line, "connection", 10) == 0) ||
                        (nl == 10 && strncmp(line, "keep-alive", 10) == 0) ||
                        (nl == 7 && strncmp(line, "upgrade", 7) == 0) ||
                        (nl == 16 && strncmp(line, "proxy-connection", 16) == 0);
            if (!skip) {
                s->nva[s->nnv++] = (nghttp2_nv){ (uint8_t *)line, (uint8_t *)v, nl,
                                                 (size_t)(ve - v), NGHTTP2_NV_FLAG_NONE };
            }
        }
        line = le + 1;
    }
    return 0;
}

/* Appends response body bytes to s->out, removing the chunk framing of a
 * chunked HTTP/1 body. hc->mu held. Returns 0 or -1. */
static int out_body(struct stream *s, const char *p, size_t n)
{
    if (!s->chunked_out && s->out_sized) {
        /* The whole content-length in hand ends the stream with its last
         * DATA frame: the loop need not wait for the job's end to send
         * END_STREAM (an empty DATA frame more). Bytes past it are not
         * sent (the peer would reject the stream). */
        size_t k = n < s->out_left ? n : (size_t)s->out_left;
        s->out_left -= k;
        if (s->out_left == 0 && !s->chunked_out) {
            s->out_eof = true;
        }
        return buf_add(&s->out, p, k);
    }
    if (!s->chunked_out) {
        return buf_add(&s->out, p, n);
    }
    while (n > 0) {
        char c = *p;
        switch (s->cstate) {
        case 0: /* size digits */
            if (c == '\r') {
                s->cstate = 2;
            } else if (c == ';') {
                s->cstate = 1;
            } else {
                int d = c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f'
                                                             ? (c | 32) - 'a' + 10 : -1;
                if (d < 0) {
                    return -1;
                }
                s->cleft = s->cleft * 16 + (uint64_t)d;
            }
            p++, n--;
            break;
        case 1: /* extension */
            s->cstate = c == '\r' ? 2 : 1;
            p++, n--;
            break;
        case 2: /* LF after the size */
            s->cstate = s->cleft == 0 ? 6 : 3;
            p++, n--;
            break;
        case 3: { /* data */
            size_t k = n < s->cleft ? n : (size_t)s->cleft;
            if (buf_add(&s->out, p, k) < 0) {
                return -1;
            }
            s->cleft -= k;
            p += k, n -= k;
            if (s->cleft == 0) {
                s->cstate = 4;
            }
            break;
        }
        case 4: /* CR after data */
            s->cstate = 5;
            p++, n--;
            break;
        case 5: /* LF after data */
            s->cstate = 0;
            p++, n--;
            break;
        default: /* the last chunk and trailers: nothing more to relay */
            p++, n--;
            break;
        }
    }
    return 0;
}

/* Takes up to n response bytes: the head whole, the body while the stream
 * holds less than CG_H2_OUT_HIGH, waiting for the peer to take some
 * unless `flags` has CG_TRANSPORT_NOWAIT (a first try with the GIL held:
 * it must never wait, or the loop, which takes the GIL for signals, could
 * not drain the stream). Returns how many (maybe short),
 * CG_TRANSPORT_AGAIN, or -1 with errno. */
static ssize_t st_take(struct stream *s, const char *p, size_t n, int flags, bool *news)
{
    struct cg_h2_conn *hc = s->hc;
    size_t used = 0;

    while (!s->rhead_done && used < n) {
        const char *nl = memchr(p + used, '\n', n - used);
        size_t k = nl ? (size_t)(nl - (p + used)) + 1 : n - used;
        if (buf_add(&s->rhead, p + used, k) < 0) {
            errno = ENOMEM;
            return -1;
        }
        used += k;
        size_t L = s->rhead.len;
        if (L >= 4 && memcmp(s->rhead.p + L - 4, "\r\n\r\n", 4) == 0) {
            if (L >= 12 && memcmp(s->rhead.p + 9, "100", 3) == 0) {
                s->rhead.len = 0; /* 100 Continue: no interim answer on HTTP/2 */
                continue;
            }
            if (parse_rhead(s) < 0) {
                errno = ENOMEM;
                return -1;
            }
            pthread_mutex_lock(&hc->mu);
            s->rhead_done = true;
            s->resp_ready = true;
            pthread_mutex_unlock(&hc->mu);
            *news = true;
        }
    }
    if (used == n) {
        return (ssize_t)n;
    }
    pthread_mutex_lock(&hc->mu);
    ssize_t rc = -1;
    for (;;) {
        if (s->closed) {
            errno = EPIPE;
            break;
        }
        if (buf_avail(&s->out) < CG_H2_OUT_HIGH) {
            if (out_body(s, p + used, n - used) < 0) {
                errno = ENOMEM;
                break;
            }
            *news = true;
            rc = (ssize_t)n;
            break;
        }
        if (flags & CG_TRANSPORT_NOWAIT) {
            rc = used > 0 ? (ssize_t)used : CG_TRANSPORT_AGAIN;
            break;
        }
        if (*news) {
            notify_locked(s); /* what this write took so far must move first */
            *news = false;
        }
        if (stream_wait(s, stream_timeout_ms(s)) < 0) {
            break; /* a peer that keeps its window shut: the request ends */
        }
    }
    pthread_mutex_unlock(&hc->mu);
    return rc;
}

/* The loop is told once per write (head and body of a small response
 * together: one submit, its DATA read without another hand-off). */
static ssize_t st_sendv(struct cg_transport *t, const struct iovec *iov, int n, int flags)
{
    struct stream *s = t_stream(t);
    size_t total = 0;
    ssize_t rc = 0;
    bool news = false;

    if (s->hc->hub->nowait) {
        flags |= CG_TRANSPORT_NOWAIT;
    }

    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len == 0) {
            continue;
        }
        ssize_t r = st_take(s, iov[i].iov_base, iov[i].iov_len, flags, &news);
        if (r < 0) {
            if (r == CG_TRANSPORT_AGAIN) {
                t->want = POLLOUT;
            }
            rc = r;
            break;
        }
        total += (size_t)r;
        if ((size_t)r < iov[i].iov_len) {
            break;
        }
    }
    if (news) {
        pthread_mutex_lock(&s->hc->mu);
        notify_locked(s);
        pthread_mutex_unlock(&s->hc->mu);
    }
    return total > 0 || rc == 0 ? (ssize_t)total : rc;
}

static ssize_t st_sendfile(struct cg_transport *t, int fd, off_t *pos, size_t n)
{
    char chunk[65536];
    ssize_t r = pread(fd, chunk, n < sizeof(chunk) ? n : sizeof(chunk), *pos);

    if (r <= 0) {
        return r;
    }
    struct iovec iov = { chunk, (size_t)r };
    ssize_t w = st_sendv(t, &iov, 1, 0);
    if (w > 0) {
        *pos += w;
    }
    return w;
}

static int st_shutdown(struct cg_transport *t)
{
    (void)t;
    return 0;
}

static int st_unread(struct cg_transport *t)
{
    (void)t;
    return 0;
}

/* The request trailers received so far (cg_wsgi_conn.trailers). */
static char *st_trailers(struct cg_wsgi_conn *c, size_t *len)
{
    struct stream *s = c->t.impl;
    char *copy = NULL;

    pthread_mutex_lock(&s->hc->mu);
    *len = s->trailers.len;
    if (s->trailers.len > 0 && (copy = malloc(s->trailers.len)) != NULL) {
        memcpy(copy, s->trailers.p, s->trailers.len);
    }
    pthread_mutex_unlock(&s->hc->mu);
    return copy;
}

static const struct cg_transport_ops stream_ops = {
    .recv = st_recv,
    .sendv = st_sendv,
    .sendfile = st_sendfile,
    .shutdown = st_shutdown,
    .unread = st_unread,
    .release = NULL,
};

void cg_h2_job_transport(struct cg_h2_job *job, struct cg_transport *t)
{
    memset(t, 0, sizeof(*t));
    t->ops = &stream_ops;
    t->fd = -1;
    t->impl = job;
}

struct cg_h2_conn *cg_h2_job_conn(const struct cg_h2_job *job)
{
    return ((const struct stream *)job)->hc;
}

bool cg_h2_job_closed(struct cg_h2_job *job)
{
    struct stream *s = (struct stream *)job;

    pthread_mutex_lock(&s->hc->mu);
    bool closed = s->closed;
    pthread_mutex_unlock(&s->hc->mu);
    return closed;
}

void cg_h2_job_done(struct cg_h2_job *job, bool complete)
{
    struct stream *s = (struct stream *)job;
    struct cg_h2_conn *hc = s->hc;

    pthread_mutex_lock(&hc->mu);
    s->out_eof = complete; /* an incomplete one is reset, never ended */
    s->aborted = !complete;
    s->job_done = true;
    notify_locked(s);
    pthread_mutex_unlock(&hc->mu);
}

struct cg_h2_job *cg_h2_job_finish(struct cg_h2_job *job, bool take)
{
    struct stream *s = (struct stream *)job;
    struct cg_h2_conn *hc = s->hc;
    struct stream *next = NULL;

    pthread_mutex_lock(&hc->mu);
    s->out_eof = true;
    s->job_done = true;
    if (take && (next = wait_pop_locked(hc)) != NULL) {
        s->passed = true; /* the loop's count of running streams stays */
    }
    notify_locked(s);
    pthread_mutex_unlock(&hc->mu);
    return next != NULL ? &next->job : NULL;
}

void cg_h2_job_run(struct cg_wsgi *g, struct cg_h2_job *job, void (*count)(void *), void *arg)
{
    struct stream *s = (struct stream *)job;
    struct cg_h2_conn *hc = s->hc;
    struct cg_wsgi_conn c;
    uint64_t t0 = cg_py_wsgi_now_us();

    if (!cg_h2_job_closed(job)) {
        /* The stream as a connection of its own (cg_h2.h). The socket's fd
         * is lent for environ["gunicorn.socket"], never closed here. */
        memset(&c, 0, sizeof(c));
        cg_h2_job_transport(job, &c.t);
        c.t.fd = hc->t->fd;
        c.l = hc->l;
        c.peer = hc->peer;
        c.peer_len = hc->peer_len;
        c.io_timeout_ms = stream_timeout_ms(s);
        c.http2 = true;
        c.tls = hc->has_tls ? &hc->tls : NULL;
        c.trailers = st_trailers;
        cg_http_parser_init(&c.parser, &hc->hub->limits, (const struct sockaddr *)&c.peer);
        if (s->scheme != NULL && cg_http_parser_peer_trusted(&c.parser)) {
            /* gunicorn: a :scheme is honoured from a forwarded_allow_ips
             * peer only; from others the connection's scheme stays, as an
             * untrusted X-Forwarded-Proto on HTTP/1 */
            cg_http_parser_set_scheme(&c.parser, s->scheme);
        }
        /* The head is whole in memory (build_head): it is read with the
         * GIL held, as a wait cannot happen; the GIL is let go only if the
         * parser asks for more than that. */
        enum cg_wsgi_head h = cg_wsgi_conn_read_head(&c, false);
        if (h == CG_WSGI_HEAD_MORE) {
            Py_BEGIN_ALLOW_THREADS
            h = cg_wsgi_conn_read_head(&c, true);
            Py_END_ALLOW_THREADS
        }
        count(arg);
        if (h == CG_WSGI_HEAD_READY) {
            cg_py_wsgi_handle(g, &c, false);
        } else {
            cg_py_wsgi_log_head_error(g, &c, t0);
        }
        c.t.fd = -1;
        c.t.impl = NULL;
        c.t.ops = &cg_transport_plain;
        cg_wsgi_conn_deinit(&c);
    }
}

/* ---- h2c upgrade (RFC 7540 3.2) ------------------------------------------ */

const char CG_H2_UPGRADE_101[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Upgrade: h2c\r\n"
                                 "\r\n";

struct cg_h2_upgrade {
    uint8_t *settings; /* the decoded HTTP2-Settings payload */
    size_t settings_len;
    bool head_request;
    char *method, *path, *authority, *scheme;
    struct buf hdrs;   /* "name: value\r\n", less the upgrade's own fields */
    bool chunked;      /* the body came chunked: stream 1 relays it chunked too */
    struct buf body;
    struct buf pending;
};

static int b64url_value(char c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26
         : c >= '0' && c <= '9' ? c - '0' + 52 : c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decodes HTTP2-Settings (base64url, padding optional) into `out` and
 * checks it as gunicorn does: whole 6-byte entries, ENABLE_PUSH 0 or 1,
 * INITIAL_WINDOW_SIZE at most 2^31-1, MAX_FRAME_SIZE within 2^14..2^24-1.
 * Returns the payload length, or -1. `out` holds at least n bytes. */
static ssize_t settings_decode(const char *v, size_t n, uint8_t *out)
{
    size_t len = 0, bits = 0;
    uint32_t acc = 0;

    while (n > 0 && v[n - 1] == '=') {
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        int d = b64url_value(v[i]);
        if (d < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (uint8_t)(acc >> bits);
        }
    }
    if (n % 4 == 1 || len % 6 != 0) {
        return -1;
    }
    for (size_t i = 0; i < len; i += 6) {
        uint32_t code = (uint32_t)out[i] << 8 | out[i + 1];
        uint32_t val = (uint32_t)out[i + 2] << 24 | (uint32_t)out[i + 3] << 16 |
                       (uint32_t)out[i + 4] << 8 | out[i + 5];
        if ((code == NGHTTP2_SETTINGS_ENABLE_PUSH && val > 1) ||
            (code == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE && val > 0x7fffffffu) ||
            (code == NGHTTP2_SETTINGS_MAX_FRAME_SIZE && (val < 16384 || val > 16777215))) {
            return -1;
        }
    }
    return (ssize_t)len;
}

static bool span_is(const struct cg_http_span *s, const char *lit)
{
    return s->len == strlen(lit) && strncasecmp(s->ptr, lit, s->len) == 0;
}

/* Whether the comma-separated list `v` has the token `tok` (any case). */
static bool has_token(const struct cg_http_span *v, const char *tok)
{
    const char *p = v->ptr, *end = v->ptr + v->len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        struct cg_http_span t = { p, (size_t)(e - p) };
        while (t.len > 0 && (*t.ptr == ' ' || *t.ptr == '\t')) {
            t.ptr++, t.len--;
        }
        while (t.len > 0 && (t.ptr[t.len - 1] == ' ' || t.ptr[t.len - 1] == '\t')) {
            t.len--;
        }
        if (span_is(&t, tok)) {
            return true;
        }
        p = e + 1;
    }
    return false;
}

/* Copies the request head into `up`: the pseudo-fields gunicorn gives
 * stream 1 (method, target, Host as :authority, the request's scheme) and
 * every other field but Connection, Upgrade and HTTP2-Settings, in their
 * order (Transfer-Encoding too: a chunked body stays chunked, and an ASGI
 * scope lists it where gunicorn's does, before host). Returns 0 or -1. */
static int upgrade_copy_head(struct cg_h2_upgrade *up, const struct cg_http_request *req)
{
    const struct cg_http_span *host = cg_http_request_header(req, "HOST");

    up->head_request = span_is(&req->method, "HEAD");
    up->chunked = req->body_kind == CG_HTTP_BODY_CHUNKED;
    up->method = dup_n((const uint8_t *)req->method.ptr, req->method.len);
    up->path = dup_n((const uint8_t *)req->uri.ptr, req->uri.len);
    up->scheme = strdup(req->url_scheme);
    up->authority = host != NULL ? dup_n((const uint8_t *)host->ptr, host->len) : NULL;
    if (up->method == NULL || up->path == NULL || up->scheme == NULL ||
        (host != NULL && up->authority == NULL)) {
        return -1;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (span_is(&h->name, "CONNECTION") || span_is(&h->name, "UPGRADE") ||
            span_is(&h->name, "HTTP2-SETTINGS") || span_is(&h->name, "HOST")) {
            continue;
        }
        size_t at = up->hdrs.len;
        if (buf_add(&up->hdrs, h->name.ptr, h->name.len) < 0 || buf_add(&up->hdrs, ": ", 2) < 0 ||
            buf_add(&up->hdrs, h->value.ptr, h->value.len) < 0 ||
            buf_add(&up->hdrs, "\r\n", 2) < 0) {
            return -1;
        }
        for (size_t j = at; j < at + h->name.len; j++) {
            up->hdrs.p[j] = (char)(up->hdrs.p[j] >= 'A' && up->hdrs.p[j] <= 'Z'
                                       ? up->hdrs.p[j] + 32 : up->hdrs.p[j]);
        }
    }
    return 0;
}

struct cg_h2_upgrade *cg_h2_upgrade_new(const struct cg_h2_hub *hub,
                                        const struct cg_http_request *req,
                                        const struct sockaddr *peer)
{
    const struct cg_http_span *upgrade = NULL, *connection = NULL, *settings = NULL;
    size_t nsettings = 0;

    if (!hub->upgrade || (peer->sa_family != AF_UNIX &&
                          !cg_http_iplist_allows(hub->trusted, peer))) {
        return NULL;
    }
    /* gunicorn reads the last Upgrade and Connection fields */
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct cg_http_header *h = &req->headers[i];
        if (span_is(&h->name, "UPGRADE")) {
            upgrade = &h->value;
        } else if (span_is(&h->name, "CONNECTION")) {
            connection = &h->value;
        } else if (span_is(&h->name, "HTTP2-SETTINGS")) {
            settings = &h->value;
            nsettings++;
        }
    }
    if (upgrade == NULL || !span_is(upgrade, "h2c") || nsettings != 1 || connection == NULL ||
        !has_token(connection, "http2-settings") || !has_token(connection, "upgrade") ||
        req->version_major < 1 || (req->version_major == 1 && req->version_minor < 1) ||
        (req->body_kind == CG_HTTP_BODY_LENGTH && req->content_length > CG_H2_UPGRADE_BODY_MAX)) {
        return NULL;
    }
    struct cg_h2_upgrade *up = calloc(1, sizeof(*up));
    if (up == NULL || (up->settings = malloc(settings->len + 1)) == NULL) {
        cg_h2_upgrade_free(up);
        return NULL;
    }
    ssize_t n = settings_decode(settings->ptr, settings->len, up->settings);
    if (n < 0 || upgrade_copy_head(up, req) < 0) {
        /* gunicorn: settings it cannot use mean no upgrade (and no 101) */
        cg_h2_upgrade_free(up);
        return NULL;
    }
    up->settings_len = (size_t)n;
    return up;
}

int cg_h2_upgrade_add_body(struct cg_h2_upgrade *up, const char *p, size_t n)
{
    if (up->body.len + n > CG_H2_UPGRADE_BODY_MAX) {
        return -1;
    }
    return buf_add(&up->body, p, n);
}

int cg_h2_upgrade_set_pending(struct cg_h2_upgrade *up, const char *p, size_t n)
{
    return n > 0 ? buf_add(&up->pending, p, n) : 0;
}

void cg_h2_upgrade_free(struct cg_h2_upgrade *up)
{
    if (up == NULL) {
        return;
    }
    free(up->settings);
    free(up->method);
    free(up->path);
    free(up->authority);
    free(up->scheme);
    buf_free(&up->hdrs);
    buf_free(&up->body);
    buf_free(&up->pending);
    free(up);
}

int cg_h2_conn_upgrade(struct cg_h2_conn *hc, struct cg_h2_upgrade *up, struct cg_err *err)
{
    int rc = -1;
    struct stream *s = stream_new(hc, 1);

    if (s == NULL) {
        cg_err_set(err, "HTTP/2 upgrade: out of memory");
        goto cleanup;
    }
    /* stream 1 is the upgrading request (RFC 7540 3.2): the fields move
     * over; a chunked body stays chunked (no content-length, as gunicorn's
     * stream, which keeps Transfer-Encoding) */
    s->method = up->method;
    s->path = up->path;
    s->authority = up->authority;
    s->scheme = up->scheme;
    s->hdrs = up->hdrs;
    s->has_length = !up->chunked;
    up->method = up->path = up->authority = up->scheme = NULL;
    memset(&up->hdrs, 0, sizeof(up->hdrs));
    int e = nghttp2_session_upgrade2(hc->ses, up->settings, up->settings_len, up->head_request,
                                     s);
    if (e != 0) {
        cg_err_set(err, "HTTP/2 upgrade: %s", nghttp2_strerror(e));
        goto cleanup;
    }
    if (build_head(s, true) < 0) { /* the fields as they came: no more DATA */
        cg_err_set(err, "HTTP/2 upgrade: out of memory");
        goto cleanup;
    }
    /* The body came over HTTP/1: in hand, no window is owed for it. */
    if (up->chunked) {
        char size[24];
        int k = snprintf(size, sizeof(size), "%zx\r\n", up->body.len);
        if ((up->body.len > 0 && (buf_add(&s->in, size, (size_t)k) < 0 ||
                                  buf_add(&s->in, up->body.p, up->body.len) < 0 ||
                                  buf_add(&s->in, "\r\n", 2) < 0)) ||
            buf_add(&s->in, "0\r\n\r\n", 5) < 0) {
            cg_err_set(err, "HTTP/2 upgrade: out of memory");
            goto cleanup;
        }
    } else {
        s->in = up->body;
        memset(&up->body, 0, sizeof(up->body));
    }
    queue_stream(hc, s, true);
    s = NULL;
    rc = 0;
    if (buf_avail(&up->pending) > 0 &&
        nghttp2_session_mem_recv(hc->ses, (const uint8_t *)up->pending.p + up->pending.off,
                                 buf_avail(&up->pending)) < 0) {
        hc->dead = true;
    }
cleanup:
    if (s != NULL) {
        nghttp2_session_set_stream_user_data(hc->ses, 1, NULL);
        stream_free(s);
    }
    cg_h2_upgrade_free(up);
    return rc;
}
