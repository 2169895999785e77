/* Internals shared by the HTTP/2 files (server/cg_h2.c: the session and
 * its connection; cg_h2_stream.c: the stream transport a runner reads the
 * request from and writes the response to, and gthread's runner;
 * cg_h2_upgrade.c: the h2c upgrade). Not for use outside them. */
#ifndef CG_H2_INT_H
#define CG_H2_INT_H

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cg_h2.h"
#include "cg_py_wsgi_conn.h"

struct buf {
    char *p;
    size_t len, cap, off; /* p[off, len) unread */
};

/* Appends n bytes; returns 0, or -1 when out of memory. */
int cg_h2_buf_add(struct buf *b, const void *d, size_t n);

static inline size_t buf_avail(const struct buf *b)
{
    return b->len - b->off;
}

static inline void buf_free(struct buf *b)
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

/* Session helpers the stream and upgrade files use (cg_h2.c). */
struct stream *cg_h2_stream_new(struct cg_h2_conn *hc, int32_t id);
void cg_h2_stream_free(struct stream *s);
char *cg_h2_dup(const uint8_t *p, size_t n);
/* Builds the HTTP/1 head the parser reads from the stream's fields. */
int cg_h2_build_head(struct stream *s, bool end_stream);
/* Queues a stream whose head is complete for its runner (end: the body
 * has ended too). */
void cg_h2_queue_stream(struct cg_h2_conn *hc, struct stream *s, bool end);
/* Tells the loop the stream has news; hc->mu held. */
void cg_h2_notify_locked(struct stream *s);
/* The next stream waiting beyond the connection's share, or NULL; hc->mu held. */
struct stream *cg_h2_wait_pop_locked(struct cg_h2_conn *hc);

#endif
