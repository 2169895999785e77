/* The sync worker: one request at a time, blocking I/O, one request per
 * connection (gunicorn's sync worker closes after each response). The loop
 * waits on the listeners and the signal pipe with poll(), wakes at least
 * every second to report liveness, and serves each accepted connection with
 * cg_py_wsgi_serve(). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_log.h"
#include "cg_py_deadline.h"
#include "cg_py_wsgi.h"
#include "cg_sig.h"
#include "cg_worker.h"

#define MAX_POLL 64

static int poll_timeout_ms(const struct cg_conf *conf)
{
    /* Report in at least twice per timeout period, and at least every second. */
    int ms = conf->timeout > 0 ? conf->timeout * 500 : 1000;
    return ms > 1000 ? 1000 : (ms < 50 ? 50 : ms);
}

/* Accepts and serves every pending connection on one listener. Returns false
 * when the worker must stop. */
static bool accept_loop(struct cg_worker *w, struct cg_wsgi *wsgi, struct cg_listener *l)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd;

        Py_BEGIN_ALLOW_THREADS
        fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
        Py_END_ALLOW_THREADS
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED) {
                cg_log_errno(CG_LOG_ERROR, errno, "accept on %s", l->name);
            }
            return true;
        }
        cg_worker_notify(w);
        cg_py_wsgi_serve(wsgi, fd, l, (struct sockaddr *)&peer, plen);
        w->nr++;
        cg_worker_notify(w);
        if (w->max_requests > 0 && w->nr >= w->max_requests) {
            cg_log(CG_LOG_INFO, "Autorestarting worker after current request.");
            w->alive = false;
        }
        if (cg_worker_check_signals(w) || !w->alive) {
            return false;
        }
    }
}

/* TERM: serves what the listen queues already hold (the master stopped new
 * connections from queueing), until they are empty, a QUIT/INT, or
 * graceful_timeout; the kernel would reset them when the last worker
 * closes the listener. */
static void drain_queues(struct cg_worker *w, struct cg_wsgi *wsgi)
{
    uint64_t deadline = cg_monotonic_ms() + (uint64_t)w->conf->graceful_timeout * 1000u;
    bool more = true;

    w->busy = true;
    while (more && cg_monotonic_ms() < deadline && !w->quit_after_request) {
        more = false;
        for (size_t i = 0; i < w->nlisteners && !w->quit_after_request; i++) {
            struct sockaddr_storage peer;
            socklen_t plen = sizeof(peer);
            int fd = accept4(w->listeners[i].fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
            if (fd < 0) {
                more = more || errno == EINTR || errno == ECONNABORTED;
                continue;
            }
            more = true;
            cg_worker_notify(w);
            cg_py_wsgi_serve(wsgi, fd, &w->listeners[i], (struct sockaddr *)&peer, plen);
            w->nr++;
            cg_worker_check_signals(w);
        }
    }
    w->busy = false;
}

static bool accept_ready(struct cg_worker *w, struct cg_wsgi *wsgi, struct cg_listener *l)
{
    bool go_on;

    w->busy = true; /* a QUIT now waits for the request in hand */
    go_on = accept_loop(w, wsgi, l);
    w->busy = false;
    return go_on && !cg_worker_check_signals(w);
}

void cg_worker_sync_run(struct cg_worker *w)
{
    struct pollfd pfds[MAX_POLL];
    size_t n = w->nlisteners < MAX_POLL - 1 ? w->nlisteners : MAX_POLL - 1;
    struct cg_err err = { { 0 } };
    struct cg_wsgi *wsgi = cg_py_wsgi_new(w, &err);

    if (wsgi == NULL || cg_py_deadline_open(w->conf->request_timeout, 1, &err) < 0) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        cg_py_wsgi_free(wsgi);
        return;
    }
    cg_py_deadline_bind();
    for (size_t i = 0; i < n; i++) {
        pfds[i] = (struct pollfd){ .fd = w->listeners[i].fd, .events = POLLIN };
    }
    pfds[n] = (struct pollfd){ .fd = cg_sig_fd(), .events = POLLIN };
    int timeout = poll_timeout_ms(w->conf);
    while (w->alive) {
        int rc;
        cg_worker_notify(w);
        Py_BEGIN_ALLOW_THREADS
        rc = poll(pfds, n + 1, timeout);
        Py_END_ALLOW_THREADS
        if (cg_worker_check_signals(w)) {
            break;
        }
        if (rc <= 0) {
            continue;
        }
        for (size_t i = 0; i < n && w->alive; i++) {
            if ((pfds[i].revents & POLLIN) && !accept_ready(w, wsgi, &w->listeners[i])) {
                break;
            }
        }
    }
    if (w->terminating && !w->quit_after_request) {
        drain_queues(w, wsgi);
    }
    cg_py_wsgi_free(wsgi);
}
