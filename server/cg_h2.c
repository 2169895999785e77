/* HTTP/2 sessions over nghttp2 for the gthread and asgi workers (see cg_h2.h):
 * the session, its connection and the flood defences. The stream transport
 * and gthread's runner are in cg_h2_stream.c, the h2c upgrade in
 * cg_h2_upgrade.c.
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
#include <sys/eventfd.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_h2_int.h"
#include "cg_http_iplist.h"
#include "cg_log.h"
#include "cg_transport_tls.h"

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

/* Streams reset for oversized header lists before the connection is
 * told to calm down (HPACK bomb). */
#define HEADER_ABUSE_MAX 1

int cg_h2_buf_add(struct buf *b, const void *d, size_t n)
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
void cg_h2_notify_locked(struct stream *s)
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

struct stream *cg_h2_stream_new(struct cg_h2_conn *hc, int32_t id)
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

void cg_h2_stream_free(struct stream *s)
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


char *cg_h2_dup(const uint8_t *p, size_t n)
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
    struct stream *s = cg_h2_stream_new(hc, frame->hd.stream_id);
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
        int rc = cg_h2_buf_add(&s->trailers, name, namelen) < 0 ||
                 cg_h2_buf_add(&s->trailers, ": ", 2) < 0 ||
                 cg_h2_buf_add(&s->trailers, value, valuelen) < 0 ||
                 cg_h2_buf_add(&s->trailers, "\r\n", 2) < 0;
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
        if (slot != NULL && *slot == NULL && (*slot = cg_h2_dup(value, valuelen)) == NULL) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (namelen == 6 && memcmp(name, "cookie", 6) == 0) {
        /* RFC 9113 8.2.3: crumbs are joined with "; " for HTTP/1 code */
        if ((s->cookie.len > 0 && cg_h2_buf_add(&s->cookie, "; ", 2) < 0) ||
            cg_h2_buf_add(&s->cookie, value, valuelen) < 0) {
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
    if (cg_h2_buf_add(&s->hdrs, name, namelen) < 0 || cg_h2_buf_add(&s->hdrs, ": ", 2) < 0 ||
        cg_h2_buf_add(&s->hdrs, value, valuelen) < 0 || cg_h2_buf_add(&s->hdrs, "\r\n", 2) < 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* The request as an HTTP/1 head for the parser. Returns 0 or -1. */
int cg_h2_build_head(struct stream *s, bool end_stream)
{
    const char *method = s->method ? s->method : "GET";
    const char *path = s->path ? s->path : "/";
    struct buf *h = &s->head;

    s->chunked_in = !end_stream && !s->has_length;
    if (cg_h2_buf_add(h, method, strlen(method)) < 0 || cg_h2_buf_add(h, " ", 1) < 0 ||
        cg_h2_buf_add(h, path, strlen(path)) < 0 || cg_h2_buf_add(h, " HTTP/2.0\r\n", 11) < 0 ||
        (s->hdrs.len > 0 && cg_h2_buf_add(h, s->hdrs.p, s->hdrs.len) < 0)) {
        return -1;
    }
    if (s->authority != NULL && (cg_h2_buf_add(h, "host: ", 6) < 0 ||
                                 cg_h2_buf_add(h, s->authority, strlen(s->authority)) < 0 ||
                                 cg_h2_buf_add(h, "\r\n", 2) < 0)) {
        return -1;
    }
    if (s->cookie.len > 0 && (cg_h2_buf_add(h, "cookie: ", 8) < 0 ||
                              cg_h2_buf_add(h, s->cookie.p, s->cookie.len) < 0 ||
                              cg_h2_buf_add(h, "\r\n", 2) < 0)) {
        return -1;
    }
    /* A body of unknown length (no content-length) is relayed chunked. */
    if (s->chunked_in && cg_h2_buf_add(h, "transfer-encoding: chunked\r\n", 28) < 0) {
        return -1;
    }
    if (cg_h2_buf_add(h, "\r\n", 2) < 0) {
        return -1;
    }
    buf_free(&s->hdrs);
    buf_free(&s->cookie);
    return 0;
}

/* The first stream waiting for its turn on the pool, taken off the list,
 * or NULL. hc->mu held. */
struct stream *cg_h2_wait_pop_locked(struct cg_h2_conn *hc)
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
        struct stream *s = cg_h2_wait_pop_locked(hc);
        pthread_mutex_unlock(&hc->mu);
        if (s == NULL) {
            break;
        }
        hc->running++;
        hc->hub->submit(hc->hub->submit_arg, &s->job);
    }
}

/* A stream whose head is built waits for a pool thread. Loop thread. */
void cg_h2_queue_stream(struct cg_h2_conn *hc, struct stream *s, bool end)
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
        if (cg_h2_build_head(s, end) < 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        cg_h2_queue_stream(hc, s, end);
        return 0;
    }
    if (end) {
        pthread_mutex_lock(&hc->mu);
        if (s->chunked_in && !s->in_eof) {
            cg_h2_buf_add(&s->in, "0\r\n\r\n", 5);
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
        rc = cg_h2_buf_add(&s->in, pre, (size_t)n) < 0 || cg_h2_buf_add(&s->in, data, len) < 0 ||
             cg_h2_buf_add(&s->in, "\r\n", 2) < 0;
    } else {
        rc = cg_h2_buf_add(&s->in, data, len);
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
        cg_h2_stream_free(s);
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
                cg_h2_stream_free(s);
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
            if (n < 0 || (n > 0 && cg_h2_buf_add(&hc->pend, p, (size_t)n) < 0)) {
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
        cg_h2_stream_free(hc->all);
    }
    pthread_mutex_destroy(&hc->mu);
    OPENSSL_free(hc->tls.der);
    buf_free(&hc->pend);
    free(hc);
}
