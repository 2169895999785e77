/* A connection driven through the HTTP/1 parser the way a worker drives it:
 * bytes arrive in pieces, bytes the parser did not take are fed again with
 * the next piece, every request's body is decoded to its end, and the peer's
 * close is reported last. Used by the parser target and the differential
 * target (which records where each message ended). */
#ifndef CG_FUZZ_HTTP_CONN_H
#define CG_FUZZ_HTTP_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "cg_http_parser.h"

#define FUZZ_MAX_MSGS 64

struct fuzz_http_result {
    size_t n_msgs;                 /* messages whose body ended */
    size_t end[FUZZ_MAX_MSGS];     /* input offset just past each message */
    uint64_t body[FUZZ_MAX_MSGS];  /* decoded body bytes of each message */
    bool closes[FUZZ_MAX_MSGS];    /* the connection closes after it */
    bool error;                    /* the parser refused the input */
    bool eof_error;                /* the close left a message unfinished */
};

/* Feeds data[0..len) in pieces of `piece` bytes (0: all at once) through a
 * parser set up with `limits`. `stop_at_close`: stop after a message whose
 * connection closes (what a worker does). Records into `res`. */
static inline void fuzz_http_conn_run(const struct cg_http_limits *limits, const uint8_t *data,
                                      size_t len, size_t piece, bool stop_at_close,
                                      struct fuzz_http_result *res)
{
    struct cg_http_parser p;
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    size_t fed = 0;    /* bytes of data handed to the parser so far */
    size_t start = 0;  /* first byte not yet taken by the parser */
    bool in_body = false;
    uint64_t body = 0;

    memset(res, 0, sizeof(*res));
    cg_http_parser_init(&p, limits, (const struct sockaddr *)&peer);
    for (;;) {
        if (start == fed) {
            if (fed == len) {
                break;
            }
            fed = (piece == 0 || len - fed < piece) ? len : fed + piece;
        }
        const char *in = (const char *)data + start;
        size_t n = fed - start;
        size_t used = 0;
        enum cg_http_status st;
        if (!in_body) {
            st = cg_http_parser_head(&p, in, n, &used);
            start += used;
            if (st == CG_HTTP_HEAD_DONE) {
                in_body = true;
                body = 0;
                /* An empty body is reported done by a call with no bytes. */
                const char *d = NULL;
                size_t dl = 0;
                st = cg_http_parser_body(&p, in + used, 0, &used, 4096, &d, &dl);
                if (st != CG_HTTP_BODY_DONE && st != CG_HTTP_NEED_MORE) {
                    if (st == CG_HTTP_ERROR) {
                        res->error = true;
                        goto done;
                    }
                    abort(); /* BODY_DATA without input is impossible */
                }
                if (st == CG_HTTP_NEED_MORE) {
                    continue;
                }
            } else if (st == CG_HTTP_NEED_MORE) {
                if (used != n) {
                    abort(); /* the API promises every byte is taken */
                }
                continue;
            } else if (st == CG_HTTP_ERROR) {
                res->error = true;
                goto done;
            } else {
                abort(); /* head() returns nothing else */
            }
        } else {
            const char *d = NULL;
            size_t dl = 0;
            size_t max = 1 + (n % 7) * 1000;
            st = cg_http_parser_body(&p, in, n, &used, max, &d, &dl);
            start += used;
            if (st == CG_HTTP_BODY_DATA) {
                if (dl == 0 || dl > max || d < in || d + dl > in + n) {
                    abort(); /* decoded bytes must be a span of the input */
                }
                body += dl;
                continue;
            }
            if (st == CG_HTTP_NEED_MORE) {
                if (used != n) {
                    abort();
                }
                continue;
            }
            if (st == CG_HTTP_ERROR) {
                res->error = true;
                goto done;
            }
            if (st != CG_HTTP_BODY_DONE) {
                abort();
            }
        }
        /* BODY_DONE: one whole message. */
        const struct cg_http_request *req = cg_http_parser_request(&p);
        if (req == NULL || !cg_http_parser_body_done(&p)) {
            abort();
        }
        bool closes = cg_http_request_should_close(req);
        if (res->n_msgs < FUZZ_MAX_MSGS) {
            res->end[res->n_msgs] = start;
            res->body[res->n_msgs] = body;
            res->closes[res->n_msgs] = closes;
        }
        res->n_msgs++;
        in_body = false;
        if (cg_http_parser_next(&p) != 0) {
            abort();
        }
        if ((closes && stop_at_close) || res->n_msgs >= FUZZ_MAX_MSGS) {
            goto done;
        }
    }
    if (cg_http_parser_eof(&p) == CG_HTTP_ERROR) {
        res->eof_error = true;
    }
done:
    cg_http_parser_deinit(&p);
}

#endif
