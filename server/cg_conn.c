/* The connection parts every worker class shares (see cg_conn.h): buffer
 * compaction, the body discard, the protocol-error page and log line, the
 * deferred-release list. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_conn.h"
#include "cg_http_date.h"
#include "cg_log.h"

int cg_conn_buf_reserve(struct cg_conn_buf *b, size_t min_free)
{
    if (b->start == b->end) {
        b->start = b->end = 0;
    } else if (b->cap - b->end < min_free && b->start > 0) {
        memmove(b->p, b->p + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
    if (b->cap - b->end < min_free) {
        size_t cap = b->cap ? b->cap * 2 : CG_CONN_READ_CHUNK;
        while (cap - b->end < min_free) {
            cap *= 2;
        }
        char *nb = realloc(b->p, cap);
        if (nb == NULL) {
            errno = ENOMEM;
            return -1;
        }
        b->p = nb;
        b->cap = cap;
    }
    return 0;
}

int cg_conn_buf_append(struct cg_conn_buf *b, const char *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (cg_conn_buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->p + b->end, p, n);
    b->end += n;
    return 0;
}

void cg_conn_buf_free(struct cg_conn_buf *b)
{
    free(b->p);
    *b = (struct cg_conn_buf){ 0 };
}

ssize_t cg_conn_buf_fill(struct cg_conn_buf *b, struct cg_transport *t, size_t min_free)
{
    if (cg_conn_buf_reserve(b, min_free) < 0) {
        return -1;
    }
    ssize_t n = cg_transport_recv(t, b->p + b->end, b->cap - b->end, 0);
    if (n > 0) {
        b->end += (size_t)n;
    }
    return n;
}

enum cg_http_status cg_conn_body_next(struct cg_http_parser *p, struct cg_conn_buf *b,
                                      const char **data, size_t *dlen)
{
    size_t used = 0;
    enum cg_http_status st =
        cg_http_parser_body(p, b->p + b->start, b->end - b->start, &used, SIZE_MAX, data, dlen);

    b->start += used;
    return st;
}

enum cg_conn_skip cg_conn_body_skip(struct cg_http_parser *p, struct cg_conn_buf *b,
                                    size_t *skipped)
{
    for (;;) {
        size_t dlen = 0;
        const char *data = NULL;
        enum cg_http_status st = cg_conn_body_next(p, b, &data, &dlen);
        *skipped += dlen;
        if (st == CG_HTTP_BODY_DONE) {
            return CG_CONN_SKIP_DONE;
        }
        if (st == CG_HTTP_ERROR) {
            return CG_CONN_SKIP_ERROR;
        }
        if (st == CG_HTTP_NEED_MORE) {
            return CG_CONN_SKIP_MORE;
        }
    }
}

void cg_conn_peer_ip(const struct sockaddr_storage *peer, char *buf, size_t n)
{
    buf[0] = '\0';
    if (peer->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, buf, (socklen_t)n);
    } else if (peer->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, buf, (socklen_t)n);
    }
}

void cg_conn_log_request_error(const struct cg_http_error *e, const struct sockaddr_storage *peer)
{
    char ip[64];

    /* gunicorn counts an unsupported transfer coding (501) among the
     * client's errors: a warning like any invalid request, not an ERROR. */
    if (cg_http_error_status(e->kind) >= 500 &&
        e->kind != CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING) {
        cg_log(CG_LOG_ERROR, "Error handling request: %s", e->detail);
    } else if (e->kind != CG_HTTP_ERR_NO_MORE_DATA && e->kind != CG_HTTP_ERR_NONE) {
        cg_conn_peer_ip(peer, ip, sizeof(ip));
        cg_log(CG_LOG_WARNING, "Invalid request from ip=%s: %s", ip, e->detail);
    }
}

size_t cg_conn_plain_head(char *buf, size_t cap, int status, const char *reason, size_t mlen,
                          const char *extra)
{
    int n = snprintf(buf, cap,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                     status, reason, cg_http_date_now(), mlen, extra ? extra : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t cg_conn_error_page(const struct cg_http_error *e, enum cg_conn_page style, char *buf,
                          size_t cap)
{
    int status = cg_http_error_status(e->kind);

    if (style == CG_CONN_PAGE_HTML || status == 0) {
        return status == 0 ? 0 : cg_http_error_format_response(e, buf, cap);
    }
    size_t mlen = strlen(e->detail);
    size_t n = cg_conn_plain_head(buf, cap, status, cg_http_error_reason(e->kind), mlen, NULL);
    if (n == 0 || cap - n < mlen) {
        return 0;
    }
    memcpy(buf + n, e->detail, mlen);
    return n + mlen;
}

bool cg_conn_release_push(struct cg_conn_release *r, struct cg_conn_release_node *node)
{
    bool first = r->head == NULL;

    node->next = r->head;
    r->head = node;
    r->n++;
    return first;
}

size_t cg_conn_release_run(struct cg_conn_release *r,
                           void (*fn)(struct cg_conn_release_node *, void *), void *arg)
{
    size_t done = 0;

    while (r->head != NULL) {
        struct cg_conn_release_node *node = r->head;
        r->head = node->next;
        r->n--;
        node->next = NULL;
        fn(node, arg); /* may queue more: taken by this loop */
        done++;
    }
    return done;
}
