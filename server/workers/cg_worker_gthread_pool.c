/* The gthread worker's thread pool: `threads` pthreads take connections
 * whose request head is complete from a FIFO job queue, run the request
 * under the GIL with cg_py_wsgi_handle(), and hand the connection back to
 * the loop through a done queue and an eventfd.
 *
 * GIL: each pool thread takes the GIL once at start (PyGILState_Ensure, so
 * it gets one Python thread state for its whole life and threading.local
 * data survives between requests), releases it, and then takes it per
 * request (PyGILState_Ensure/Release). cg_py_wsgi_handle() releases it
 * around socket I/O that may wait; the non-blocking head read between
 * pipelined or back-to-back keep-alive requests keeps it (one recv and a
 * parse cost less than a GIL hand-off).
 *
 * Keep-alive: after a response that allowed reuse, the thread reads the
 * socket once without waiting; when the next head is already complete (a
 * pipelined request, or a fast client) and no other connection waits for a
 * thread, it serves it directly; otherwise the connection goes back to the
 * loop. A thread never waits for a head, so slow clients cannot hold one. */
#include <Python.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_py_deadline.h"
#include "cg_py_wsgi_int.h"
#include "cg_worker_gthread_int.h"

static void queue_push(struct cg_gthread_queue *q, struct cg_gthread_conn *k)
{
    k->qnext = NULL;
    if (q->tail != NULL) {
        q->tail->qnext = k;
    } else {
        q->head = k;
    }
    q->tail = k;
}

static struct cg_gthread_conn *queue_pop(struct cg_gthread_queue *q)
{
    struct cg_gthread_conn *k = q->head;
    if (k != NULL) {
        q->head = k->qnext;
        if (q->head == NULL) {
            q->tail = NULL;
        }
        k->qnext = NULL;
    }
    return k;
}

enum cg_wsgi_head cg_worker_gthread_read_head(struct cg_gthread_conn *k)
{
    struct cg_wsgi_conn *c = &k->c;

    if (c->in.start == c->in.end && !c->eof) {
        if (cg_wsgi_conn_fill(c, false) < 0) {
            if (c->read_errno == EAGAIN || c->read_errno == EWOULDBLOCK) {
                return CG_WSGI_HEAD_MORE;
            }
            return CG_WSGI_HEAD_CLOSE;
        }
    }
    if (k->idle && c->in.end > c->in.start) {
        k->idle = false;
        k->t0_us = cg_py_wsgi_now_us();
    }
    return cg_wsgi_conn_read_head(c, false);
}

/* Whether this request may leave its connection open, as gunicorn's
 * gthread decides: not past max_requests, not while stopping, not with
 * keepalive 0, not when the parked connections reached
 * worker_connections - threads. Counts the request. */
static bool want_keepalive(struct cg_gthread *gt)
{
    const struct cg_conf *conf = gt->conf;
    struct cg_worker *w = gt->w;
    uint64_t nr = atomic_fetch_add(&gt->nr, 1) + 1;

    atomic_store_explicit(&w->slot->requests, nr, memory_order_relaxed);
    if (w->max_requests > 0 && nr >= w->max_requests) {
        if (!atomic_exchange(&gt->stop_asked, true)) {
            cg_log(CG_LOG_INFO, "Autorestarting worker after current request.");
        }
        return false;
    }
    if (conf->keepalive <= 0 || atomic_load(&gt->draining) || atomic_load(&gt->stop_asked)) {
        return false;
    }
    long max_parked = (long)conf->worker_connections - (long)conf->threads;
    return (long)atomic_load(&gt->nwait) < max_parked;
}

/* An HTTP/2 stream's head was read: it counts as a request (max_requests
 * then asks for a stop, which sends GOAWAY). */
static void count_request(void *arg)
{
    (void)want_keepalive(arg);
}

static bool jobs_waiting(struct cg_gthread *gt)
{
    bool any;
    pthread_mutex_lock(&gt->mu);
    any = gt->jobs.head != NULL || gt->h2_head != NULL;
    pthread_mutex_unlock(&gt->mu);
    return any;
}

/* An HTTP/1.1 request asking for h2c (cg_h2_upgrade_new): reads its body
 * (at most CG_H2_UPGRADE_BODY_MAX), takes the bytes sent behind it, answers
 * 101 and leaves the switch to the loop in k->h2up, as gunicorn's gthread
 * does before it serves the request as stream 1. Returns false when the
 * request is to be served as HTTP/1.1. Needs the GIL (released here). */
static bool try_h2c_upgrade(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    struct cg_wsgi_conn *c = &k->c;
    const struct cg_http_request *req = cg_http_parser_request(&c->parser);
    struct cg_h2_upgrade *up = cg_h2_upgrade_new(&gt->hub, req, (const struct sockaddr *)&c->peer);
    struct cg_err err = { { 0 } };
    char chunk[16384];
    bool ok = true;

    if (up == NULL) {
        return false;
    }
    Py_BEGIN_ALLOW_THREADS
    if (req->expect_continue) {
        ok = cg_wsgi_conn_send(c, CG_HTTP_CONTINUE_RESPONSE,
                               strlen(CG_HTTP_CONTINUE_RESPONSE)) == 0;
    }
    for (ssize_t n = 1; ok && n > 0;) {
        n = cg_wsgi_conn_body_read(c, chunk, sizeof(chunk), &err);
        ok = n >= 0 && c->body_error.kind == CG_HTTP_ERR_NONE &&
             cg_h2_upgrade_add_body(up, chunk, (size_t)(n > 0 ? n : 0)) == 0;
    }
    ok = ok && cg_http_parser_body_done(&c->parser) &&
         cg_h2_upgrade_set_pending(up, c->in.p + c->in.start, c->in.end - c->in.start) == 0 &&
         cg_wsgi_conn_send(c, CG_H2_UPGRADE_101, strlen(CG_H2_UPGRADE_101)) == 0;
    Py_END_ALLOW_THREADS
    c->in.start = c->in.end;
    k->reuse = false;
    if (!ok) {
        /* a chunked body past the limit, or a client gone: the connection
         * ends (the body is spent, HTTP/1.1 cannot take over) */
        cg_log_debug("h2c upgrade from a client abandoned: %s",
                     err.msg[0] ? err.msg : "request body over 64 KiB or cut short");
        cg_h2_upgrade_free(up);
        return true;
    }
    k->h2up = up;
    return true;
}

/* Serves the connection's requests while they are complete in its buffer
 * or socket. Needs the GIL. Sets k->reuse and k->probed. */
static void serve(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    struct cg_wsgi *g = gt->wsgi;

    k->reuse = false;
    k->probed = false;
    if (k->head_error) {
        cg_py_wsgi_log_head_error(g, &k->c, k->t0_us);
        return;
    }
    for (;;) {
        enum cg_wsgi_head h;

        if (gt->h2_on && gt->hub.upgrade && try_h2c_upgrade(gt, k)) {
            return;
        }
        if (!cg_py_wsgi_handle(g, &k->c, want_keepalive(gt))) {
            return;
        }
        k->idle = true;
        if (jobs_waiting(gt)) {
            k->reuse = true; /* let the loop queue it behind the others */
            return;
        }
        /* One non-blocking read and a parse: cheaper with the GIL held
         * than handing the GIL to another thread and back. */
        h = cg_worker_gthread_read_head(k);
        if (h == CG_WSGI_HEAD_CLOSE) {
            if (cg_http_parser_error(&k->c.parser)->kind != CG_HTTP_ERR_NONE) {
                cg_py_wsgi_log_head_error(g, &k->c, k->t0_us);
            }
            return;
        }
        if (h == CG_WSGI_HEAD_MORE) {
            k->reuse = true;
            k->probed = true;
            return;
        }
    }
}

static void hand_back(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    uint64_t one = 1;
    pthread_mutex_lock(&gt->mu);
    bool was_empty = gt->done.head == NULL;
    queue_push(&gt->done, k);
    pthread_mutex_unlock(&gt->mu);
    if (was_empty) {
        /* The loop empties the whole queue per wake-up; one byte is enough
         * until it does. A full counter (cannot happen) would only delay. */
        ssize_t n = write(gt->done_fd, &one, sizeof(one));
        (void)n;
    }
}

static void *pool_main(void *arg)
{
    struct cg_gthread *gt = arg;
    PyGILState_STATE life = PyGILState_Ensure(); /* this thread's Python state */
    cg_py_deadline_bind();
    PyThreadState *ts = PyEval_SaveThread();

    for (;;) {
        struct cg_gthread_conn *k;
        struct cg_h2_job *job = NULL;

        pthread_mutex_lock(&gt->mu);
        while (gt->jobs.head == NULL && gt->h2_head == NULL && !gt->pool_quit) {
            pthread_cond_wait(&gt->cv, &gt->mu);
        }
        k = queue_pop(&gt->jobs);
        if (k == NULL && gt->h2_head != NULL) {
            job = gt->h2_head;
            gt->h2_head = job->next;
            if (gt->h2_head == NULL) {
                gt->h2_tail = NULL;
            }
            job->next = NULL;
        }
        pthread_mutex_unlock(&gt->mu);
        if (job != NULL) {
            /* A finished stream makes way for the next one of its
             * connection on this thread, the GIL kept, while no other
             * connection's work waits for a thread (as keep-alive in
             * serve()). */
            PyGILState_STATE st = PyGILState_Ensure();
            while (job != NULL) {
                cg_h2_job_run(gt->wsgi, job, count_request, gt);
                job = cg_h2_job_finish(job, !jobs_waiting(gt));
            }
            PyGILState_Release(st);
            continue;
        }
        if (k == NULL) {
            break;
        }
        PyGILState_STATE st = PyGILState_Ensure();
        serve(gt, k);
        PyGILState_Release(st);
        hand_back(gt, k);
    }
    PyEval_RestoreThread(ts);
    PyGILState_Release(life);
    return NULL;
}

int cg_worker_gthread_pool_start(struct cg_gthread *gt, struct cg_err *err)
{
    sigset_t all, old;
    size_t n = gt->conf->threads > 0 ? (size_t)gt->conf->threads : 1;
    int rc = -1;

    gt->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (gt->done_fd < 0) {
        cg_err_set(err, "eventfd for the gthread pool: %s", strerror(errno));
        return -1;
    }
    gt->threads = calloc(n, sizeof(*gt->threads));
    if (gt->threads == NULL) {
        cg_err_set(err, "out of memory starting %zu threads", n);
        return -1;
    }
    /* Pool threads inherit a mask that blocks every signal: the handlers
     * (and the self-pipe) run in the loop thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (size_t i = 0; i < n; i++) {
        int e = pthread_create(&gt->threads[i], NULL, pool_main, gt);
        if (e != 0) {
            cg_err_set(err, "starting gthread pool thread %zu of %zu: %s; lower --threads", i + 1,
                       n, strerror(e));
            goto cleanup;
        }
        gt->nthreads++;
    }
    rc = 0;
cleanup:
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void cg_worker_gthread_pool_submit(struct cg_gthread *gt, struct cg_gthread_conn *k)
{
    pthread_mutex_lock(&gt->mu);
    queue_push(&gt->jobs, k);
    pthread_cond_signal(&gt->cv);
    pthread_mutex_unlock(&gt->mu);
}

void cg_worker_gthread_pool_submit_h2(void *arg, struct cg_h2_job *job)
{
    struct cg_gthread *gt = arg;

    pthread_mutex_lock(&gt->mu);
    job->next = NULL;
    if (gt->h2_tail != NULL) {
        gt->h2_tail->next = job;
    } else {
        gt->h2_head = job;
    }
    gt->h2_tail = job;
    pthread_cond_signal(&gt->cv);
    pthread_mutex_unlock(&gt->mu);
}

struct cg_gthread_conn *cg_worker_gthread_pool_take_done(struct cg_gthread *gt)
{
    uint64_t v;
    struct cg_gthread_conn *list;

    ssize_t n = read(gt->done_fd, &v, sizeof(v));
    (void)n;
    pthread_mutex_lock(&gt->mu);
    list = gt->done.head;
    gt->done.head = gt->done.tail = NULL;
    pthread_mutex_unlock(&gt->mu);
    return list;
}

void cg_worker_gthread_pool_stop(struct cg_gthread *gt, bool join)
{
    pthread_mutex_lock(&gt->mu);
    gt->pool_quit = true;
    pthread_cond_broadcast(&gt->cv);
    pthread_mutex_unlock(&gt->mu);
    if (join) {
        for (size_t i = 0; i < gt->nthreads; i++) {
            pthread_join(gt->threads[i], NULL);
        }
        free(gt->threads);
        gt->threads = NULL;
        gt->nthreads = 0;
    }
    /* Threads left running (in-flight requests past graceful_timeout, or
     * QUIT) may still hand back a connection: keep the eventfd open for
     * them; the process exits right after. */
    if (join && gt->done_fd >= 0) {
        close(gt->done_fd);
        gt->done_fd = -1;
    }
}
