/* Connection I/O for HTTP workers: buffered reads fed to the request parser,
 * decoded body reads for wsgi.input, writes that wait for a full socket, and
 * gunicorn's error pages. Sockets may be blocking or non-blocking: EAGAIN
 * waits with poll() up to the connection's I/O timeout. No Python here. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_py_wsgi_conn.h"
#include "cg_worker.h"

#define READ_CHUNK 65536

void cg_wsgi_conn_init(struct cg_wsgi_conn *c, int fd, const struct cg_listener *l,
                       const struct sockaddr *peer, socklen_t peer_len,
                       const struct cg_http_limits *limits, int io_timeout_ms)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
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

void cg_wsgi_conn_deinit(struct cg_wsgi_conn *c)
{
    cg_http_parser_deinit(&c->parser);
    free(c->buf);
    c->buf = NULL;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

bool cg_wsgi_conn_may_have_input(struct cg_wsgi_conn *c)
{
    return c->fd >= 0 && !c->eof &&
           (c->end > c->start || cg_http_parser_body_pending(&c->parser) ||
            cg_http_parser_error(&c->parser)->kind != CG_HTTP_ERR_NONE ||
            cg_fd_unread(c->fd) != 0);
}

void cg_wsgi_conn_linger(struct cg_wsgi_conn *c)
{
    char scratch[16384];
    size_t drained = 0;
    uint64_t deadline = cg_monotonic_ms() + CG_LINGER_MS;

    if (!cg_wsgi_conn_may_have_input(c) || shutdown(c->fd, SHUT_WR) < 0) {
        return;
    }
    while (drained <= CG_LINGER_MAX) {
        uint64_t now = cg_monotonic_ms();
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0) {
            return; /* timeout (or EINTR: close now) */
        }
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
            return; /* EOF or error */
        }
        drained += n > 0 ? (size_t)n : 0;
    }
}

/* Waits for `events` on the socket. Returns 0 when ready, -1 (ETIMEDOUT or
 * poll's errno) otherwise. */
static int wait_fd(struct cg_wsgi_conn *c, short events)
{
    struct pollfd p = { .fd = c->fd, .events = events };
    for (;;) {
        int rc = poll(&p, 1, c->io_timeout_ms > 0 ? c->io_timeout_ms : -1);
        if (rc > 0) {
            return 0;
        }
        if (rc == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

/* One recv into buf (waiting when `wait`). Sets c->eof on 0, read_errno on
 * -1. */
static ssize_t recv_into(struct cg_wsgi_conn *c, char *buf, size_t n, bool wait)
{
    for (;;) {
        ssize_t got = recv(c->fd, buf, n, 0);
        if (got >= 0) {
            c->eof = got == 0;
            return got;
        }
        if (errno == EINTR) {
            continue;
        }
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait && wait_fd(c, POLLIN) == 0) {
            continue;
        }
        c->read_errno = errno;
        return -1;
    }
}

/* Puts bytes the parser did not take back in front of the buffer. */
static int unread(struct cg_wsgi_conn *c, const char *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (c->start == c->end) {
        c->start = c->end = 0;
    }
    if (c->cap - c->end < n) {
        size_t cap = c->end + n > READ_CHUNK ? c->end + n : READ_CHUNK;
        char *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            c->read_errno = ENOMEM;
            return -1;
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->end, p, n);
    c->end += n;
    return 0;
}

ssize_t cg_wsgi_conn_fill(struct cg_wsgi_conn *c, bool wait)
{
    if (c->start == c->end) {
        c->start = c->end = 0;
    } else if (c->end == c->cap && c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : READ_CHUNK;
        char *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            c->read_errno = ENOMEM;
            return -1;
        }
        c->buf = nb;
        c->cap = cap;
    }
    ssize_t n = recv_into(c, c->buf + c->end, c->cap - c->end, wait);
    if (n > 0) {
        c->end += (size_t)n;
    }
    return n;
}

void cg_wsgi_conn_peer_ip(const struct cg_wsgi_conn *c, char *buf, size_t n)
{
    buf[0] = '\0';
    if (c->peer.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&c->peer)->sin_addr, buf, (socklen_t)n);
    } else if (c->peer.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&c->peer)->sin6_addr, buf,
                  (socklen_t)n);
    }
}

int cg_wsgi_conn_sendv(struct cg_wsgi_conn *c, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(c, POLLOUT) == 0) {
                continue;
            }
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int cg_wsgi_conn_send(struct cg_wsgi_conn *c, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    return cg_wsgi_conn_sendv(c, &iov, 1);
}

int cg_wsgi_conn_sendfile(struct cg_wsgi_conn *c, int fd, off_t *pos, uint64_t len)
{
    while (len > 0) {
        ssize_t n = sendfile(c->fd, fd, pos, len > 0x7ffff000 ? 0x7ffff000 : (size_t)len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(c, POLLOUT) == 0) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            break; /* the file is shorter than announced */
        }
        len -= (uint64_t)n;
    }
    return 0;
}

void cg_wsgi_conn_send_error(struct cg_wsgi_conn *c, const struct cg_http_error *e)
{
    char page[CG_HTTP_ERROR_RESPONSE_MAX];
    char ip[64];
    size_t n = cg_http_error_format_response(e, page, sizeof(page));

    /* gunicorn counts an unsupported transfer coding (501) among the
     * client's errors: a warning like any invalid request, not an ERROR. */
    if (cg_http_error_status(e->kind) >= 500 &&
        e->kind != CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING) {
        cg_log(CG_LOG_ERROR, "Error handling request: %s", e->detail);
    } else if (e->kind != CG_HTTP_ERR_NO_MORE_DATA) {
        cg_wsgi_conn_peer_ip(c, ip, sizeof(ip));
        cg_log(CG_LOG_WARNING, "Invalid request from ip=%s: %s", ip, e->detail);
    }
    if (n > 0) {
        cg_wsgi_conn_send(c, page, n);
    }
}

enum cg_wsgi_head cg_wsgi_conn_read_head(struct cg_wsgi_conn *c, bool wait)
{
    for (;;) {
        size_t used = 0;
        enum cg_http_status st;
        if (c->end > c->start) {
            st = cg_http_parser_head(&c->parser, c->buf + c->start, c->end - c->start, &used);
            c->start += used;
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
            if (!wait && (c->read_errno == EAGAIN || c->read_errno == EWOULDBLOCK)) {
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
        if (unread(c, out + used, (size_t)got - used) < 0) {
            cg_err_set(err, "out of memory buffering the request");
            return -1;
        }
        if (st == CG_HTTP_BODY_DATA) {
            memmove(out, data, dlen);
            return (ssize_t)dlen;
        }
        if (st != CG_HTTP_NEED_MORE || c->end > c->start) {
            return -2; /* done, error, or bytes to feed: the buffered path decides */
        }
    }
}

ssize_t cg_wsgi_conn_body_read(void *conn, char *out, size_t n, struct cg_err *err)
{
    struct cg_wsgi_conn *c = conn;

    if (c->start == c->end && !c->eof && n >= 4096 && !cg_http_parser_body_done(&c->parser)) {
        ssize_t r = body_read_direct(c, out, n, err);
        if (r != -2) {
            return r;
        }
    }
    for (;;) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        enum cg_http_status st = cg_http_parser_body(&c->parser, c->buf + c->start,
                                                     c->end - c->start, &used, n, &data, &dlen);
        c->start += used;
        if (st == CG_HTTP_BODY_DATA) {
            memcpy(out, data, dlen);
            return (ssize_t)dlen;
        }
        if (st == CG_HTTP_BODY_DONE) {
            return 0;
        }
        if (st == CG_HTTP_ERROR ||
            (c->eof && cg_http_parser_eof(&c->parser) != CG_HTTP_BODY_DONE)) {
            /* A body the client cut short is an error, never a short body:
             * an upload handler must not store a truncated file as whole. */
            const struct cg_http_error *e = cg_http_parser_error(&c->parser);
            c->body_error = *e;
            if (st != CG_HTTP_ERROR) { /* the parser's answer to the close */
                cg_err_set(err, "request body truncated: the client closed the connection "
                           "before the body ended (%s: %s)", cg_http_error_name(e->kind),
                           e->detail);
            } else {
                cg_err_set(err, "%s: %s", cg_http_error_name(e->kind), e->detail);
            }
            return -1;
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

bool cg_wsgi_conn_drain(struct cg_wsgi_conn *c, size_t limit)
{
    char scratch[16384];
    struct cg_err err;
    size_t total = 0;

    while (!cg_http_parser_body_done(&c->parser)) {
        ssize_t n = cg_wsgi_conn_body_read(c, scratch, sizeof(scratch), &err);
        if (n < 0) {
            return false;
        }
        if (n == 0) {
            return cg_http_parser_body_done(&c->parser);
        }
        total += (size_t)n;
        if (total > limit) {
            return false;
        }
    }
    return true;
}
