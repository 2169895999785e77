/* Connection I/O for HTTP workers: buffered reads fed to the request parser,
 * decoded body reads for wsgi.input, writes that wait for a full socket, and
 * gunicorn's error pages, all through the connection's transport. Sockets
 * may be blocking (sync) or non-blocking (gthread): a would-block waits
 * with poll() up to the connection's I/O timeout. No Python here. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "cg_clock.h"
#include "cg_conn.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_py_wsgi_conn.h"
#include "cg_worker.h"

void cg_wsgi_conn_init(struct cg_wsgi_conn *c, int fd, const struct cg_listener *l,
                       const struct sockaddr *peer, socklen_t peer_len,
                       const struct cg_http_limits *limits, int io_timeout_ms)
{
    memset(c, 0, sizeof(*c));
    cg_transport_init(&c->t, fd);
    c->l = l;
    if (peer != NULL && peer_len > 0 && peer_len <= sizeof(c->peer)) {
        memcpy(&c->peer, peer, peer_len);
        c->peer_len = peer_len;
    } else {
        c->peer.ss_family = AF_UNIX;
    }
    c->io_timeout_ms = io_timeout_ms;
    cg_http_parser_init(&c->parser, limits, (const struct sockaddr *)&c->peer);
}

void cg_wsgi_conn_close(struct cg_wsgi_conn *c)
{
    cg_transport_close(&c->t);
}

void cg_wsgi_conn_deinit(struct cg_wsgi_conn *c)
{
    cg_http_parser_deinit(&c->parser);
    cg_conn_buf_free(&c->in);
    cg_transport_close(&c->t);
}

bool cg_wsgi_conn_may_have_input(struct cg_wsgi_conn *c)
{
    return c->t.fd >= 0 && !c->eof &&
           (c->in.end > c->in.start || cg_http_parser_body_pending(&c->parser) ||
            cg_http_parser_error(&c->parser)->kind != CG_HTTP_ERR_NONE ||
            cg_transport_unread(&c->t) != 0);
}

void cg_wsgi_conn_linger(struct cg_wsgi_conn *c)
{
    char scratch[16384];
    size_t drained = 0;
    uint64_t deadline = cg_monotonic_ms() + CG_LINGER_MS;

    if (!cg_wsgi_conn_may_have_input(c) || cg_transport_shutdown(&c->t) < 0) {
        return;
    }
    while (drained <= CG_LINGER_MAX) {
        uint64_t now = cg_monotonic_ms();
        c->t.want = POLLIN;
        if (now >= deadline || cg_transport_wait(&c->t, (int)(deadline - now)) < 0) {
            return; /* timeout (or EINTR: close now) */
        }
        ssize_t n = cg_transport_recv(&c->t, scratch, sizeof(scratch), CG_TRANSPORT_NOWAIT);
        if (n == 0 || n == -1) {
            return; /* EOF or error */
        }
        drained += n > 0 ? (size_t)n : 0;
    }
}

/* One receive into buf (waiting when `wait`). Sets c->eof on 0, read_errno
 * on -1 (EAGAIN when the transport would block and !wait). */
static ssize_t recv_into(struct cg_wsgi_conn *c, char *buf, size_t n, bool wait)
{
    ssize_t got = cg_transport_recv_wait(&c->t, buf, n, wait, c->io_timeout_ms);

    if (got >= 0) {
        c->eof = got == 0;
        return got;
    }
    c->read_errno = got == CG_TRANSPORT_AGAIN ? EAGAIN : errno;
    return -1;
}

ssize_t cg_wsgi_conn_fill(struct cg_wsgi_conn *c, bool wait)
{
    /* Room for a whole TLS record: a record half read would stay inside
     * the TLS transport, where the gthread loop's poll cannot see it. */
    if (cg_conn_buf_reserve(&c->in, CG_CONN_READ_CHUNK / 4) < 0) {
        c->read_errno = ENOMEM;
        return -1;
    }
    ssize_t n = recv_into(c, c->in.p + c->in.end, c->in.cap - c->in.end, wait);
    if (n > 0) {
        c->in.end += (size_t)n;
    }
    return n;
}

int cg_wsgi_conn_sendv(struct cg_wsgi_conn *c, struct iovec *iov, int n)
{
    return cg_transport_sendv_all(&c->t, iov, n, c->io_timeout_ms);
}

int cg_wsgi_conn_send(struct cg_wsgi_conn *c, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    return cg_wsgi_conn_sendv(c, &iov, 1);
}

int cg_wsgi_conn_sendfile(struct cg_wsgi_conn *c, int fd, off_t *pos, uint64_t len)
{
    return cg_transport_sendfile_all(&c->t, fd, pos, len, c->io_timeout_ms);
}

void cg_wsgi_conn_send_error(struct cg_wsgi_conn *c, const struct cg_http_error *e)
{
    char page[CG_HTTP_ERROR_RESPONSE_MAX];
    size_t n = cg_conn_error_page(e, CG_CONN_PAGE_HTML, page, sizeof(page));

    cg_conn_log_request_error(e, &c->peer);
    if (n > 0) {
        cg_wsgi_conn_send(c, page, n);
    }
}

enum cg_wsgi_head cg_wsgi_conn_read_head(struct cg_wsgi_conn *c, bool wait)
{
    for (;;) {
        size_t used = 0;
        enum cg_http_status st;
        if (c->in.end > c->in.start) {
            st = cg_http_parser_head(&c->parser, c->in.p + c->in.start, c->in.end - c->in.start,
                                     &used);
            c->in.start += used;
            if (st == CG_HTTP_HEAD_DONE) {
                return CG_WSGI_HEAD_READY;
            }
            if (st == CG_HTTP_ERROR) {
                cg_wsgi_conn_send_error(c, cg_http_parser_error(&c->parser));
                return CG_WSGI_HEAD_CLOSE;
            }
        }
        if (c->eof) {
            if (cg_http_parser_eof(&c->parser) == CG_HTTP_ERROR) {
                cg_wsgi_conn_send_error(c, cg_http_parser_error(&c->parser));
            }
            return CG_WSGI_HEAD_CLOSE;
        }
        if (cg_wsgi_conn_fill(c, wait) < 0) {
            if (!wait && c->read_errno == EAGAIN) {
                return CG_WSGI_HEAD_MORE;
            }
            return CG_WSGI_HEAD_CLOSE;
        }
    }
}

/* Body bytes straight from the socket into `out` when nothing is buffered:
 * the parser decodes in place (a Content-Length body is not moved at all;
 * chunk framing is squeezed out with memmove), so a large upload costs one
 * copy out of the kernel. Bytes past this body go back to the buffer.
 * Returns like cg_wsgi_conn_body_read, or -2 when the buffered path must
 * be taken (the parser wants to be fed again from the buffer). */
static ssize_t body_read_direct(struct cg_wsgi_conn *c, char *out, size_t n, struct cg_err *err)
{
    for (;;) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        /* Ask first whether the body is already complete (never wait for
         * bytes the client will not send). */
        if (cg_http_parser_body(&c->parser, out, 0, &used, n, &data, &dlen) != CG_HTTP_NEED_MORE) {
            return -2;
        }
        ssize_t got = recv_into(c, out, n, true);
        if (got < 0) {
            cg_err_set(err, "reading from the client: %s", strerror(c->read_errno));
            return -1;
        }
        if (got == 0) {
            return -2; /* EOF: let the buffered path ask the parser */
        }
        enum cg_http_status st =
            cg_http_parser_body(&c->parser, out, (size_t)got, &used, n, &data, &dlen);
        if (cg_conn_buf_append(&c->in, out + used, (size_t)got - used) < 0) {
            c->read_errno = ENOMEM;
            cg_err_set(err, "out of memory buffering the request");
            return -1;
        }
        if (st == CG_HTTP_BODY_DATA) {
            memmove(out, data, dlen);
            return (ssize_t)dlen;
        }
        if (st != CG_HTTP_NEED_MORE || c->in.end > c->in.start) {
            return -2; /* done, error, or bytes to feed: the buffered path decides */
        }
    }
}

/* The body ended in error or was cut short by the client's close. */
static ssize_t body_failed(struct cg_wsgi_conn *c, bool parser_error, struct cg_err *err)
{
    /* A body the client cut short is an error, never a short body: an
     * upload handler must not store a truncated file as whole. */
    const struct cg_http_error *e = cg_http_parser_error(&c->parser);

    c->body_error = *e;
    if (!parser_error) { /* the parser's answer to the close */
        cg_err_set(err, "request body truncated: the client closed the connection "
                   "before the body ended (%s: %s)", cg_http_error_name(e->kind), e->detail);
    } else {
        cg_err_set(err, "%s: %s", cg_http_error_name(e->kind), e->detail);
    }
    return -1;
}

/* Feeds the buffered bytes to the body parser; decoded bytes (BODY_DATA)
 * are copied to out and counted in *got. */
static enum cg_http_status parse_buffered(struct cg_wsgi_conn *c, char *out, size_t n,
                                          size_t *got)
{
    size_t used = 0, dlen = 0;
    const char *data = NULL;
    enum cg_http_status st = cg_http_parser_body(
        &c->parser, c->in.p + c->in.start, c->in.end - c->in.start, &used, n, &data, &dlen);

    c->in.start += used;
    if (st == CG_HTTP_BODY_DATA) {
        memcpy(out, data, dlen);
        *got = dlen;
    }
    return st;
}

ssize_t cg_wsgi_conn_body_read(void *conn, char *out, size_t n, struct cg_err *err)
{
    struct cg_wsgi_conn *c = conn;

    if (c->in.start == c->in.end && !c->eof && n >= 4096 &&
        !cg_http_parser_body_done(&c->parser)) {
        ssize_t r = body_read_direct(c, out, n, err);
        if (r != -2) {
            return r;
        }
    }
    for (;;) {
        size_t got = 0;
        enum cg_http_status st = parse_buffered(c, out, n, &got);
        if (st == CG_HTTP_BODY_DATA) {
            return (ssize_t)got;
        }
        if (st == CG_HTTP_BODY_DONE) {
            return 0;
        }
        if (st == CG_HTTP_ERROR ||
            (c->eof && cg_http_parser_eof(&c->parser) != CG_HTTP_BODY_DONE)) {
            return body_failed(c, st == CG_HTTP_ERROR, err);
        }
        if (c->eof) {
            return 0; /* the body ended before the close */
        }
        if (cg_wsgi_conn_fill(c, true) < 0) {
            cg_err_set(err, "reading from the client: %s", strerror(c->read_errno));
            return -1;
        }
    }
}

ssize_t cg_wsgi_conn_body_read_buffered(void *conn, char *out, size_t n, struct cg_err *err)
{
    struct cg_wsgi_conn *c = conn;
    size_t got = 0;

    (void)err;
    if (c->in.end == c->in.start && !cg_http_parser_body_done(&c->parser)) {
        return -2;
    }
    enum cg_http_status st = parse_buffered(c, out, n, &got);
    if (st == CG_HTTP_BODY_DATA) {
        return (ssize_t)got;
    }
    /* Done; or more to wait for, an error (the parser keeps it), the
     * client's close: cg_wsgi_conn_body_read decides. */
    return st == CG_HTTP_BODY_DONE ? 0 : -2;
}

bool cg_wsgi_conn_drain(struct cg_wsgi_conn *c, size_t limit)
{
    size_t total = 0;

    for (;;) {
        switch (cg_conn_body_skip(&c->parser, &c->in, &total)) {
        case CG_CONN_SKIP_DONE:
            return true;
        case CG_CONN_SKIP_ERROR:
            return false;
        case CG_CONN_SKIP_MORE:
            break;
        }
        if (total > limit || c->eof || cg_wsgi_conn_fill(c, true) <= 0) {
            return false;
        }
    }
}
