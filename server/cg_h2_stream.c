/* The HTTP/2 stream transport (see cg_h2.h): what a runner reads a
 * stream's request from as an HTTP/1 message and writes its HTTP/1
 * response to, turned into HEADERS and DATA by the session (cg_h2.c);
 * the job calls a runner makes, and gthread's runner (cg_h2_job_run). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cg_clock.h"
#include "cg_h2_int.h"
#include "cg_py_wsgi_int.h"

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
            cg_h2_notify_locked(s); /* the window opens as the app reads */
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
        return cg_h2_buf_add(&s->out, p, k);
    }
    if (!s->chunked_out) {
        return cg_h2_buf_add(&s->out, p, n);
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
            if (cg_h2_buf_add(&s->out, p, k) < 0) {
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
        if (cg_h2_buf_add(&s->rhead, p + used, k) < 0) {
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
            cg_h2_notify_locked(s); /* what this write took so far must move first */
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
        cg_h2_notify_locked(s);
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
    cg_h2_notify_locked(s);
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
    if (take && (next = cg_h2_wait_pop_locked(hc)) != NULL) {
        s->passed = true; /* the loop's count of running streams stays */
    }
    cg_h2_notify_locked(s);
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
