/* Deadlines and cancellation of dirty calls: each call's timer (dirty_timeout
 * between the worker's frames, capped by the caller's own timeout for the
 * whole call; dirty_queue_timeout for a call still waiting for a worker, which
 * then fails with DirtyBusyError), the DirtyTimeoutError reply, CANCEL to the worker and, if it
 * does not give the call up within CG_DIRTY_KILL_GRACE_SEC, SIGKILL. Also a
 * caller abandoning a call (CANCEL frame, deadline).
 *
 * Arbiter process only, single-threaded (libevent callbacks). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_dirty_arbiter_int.h"
#include "cg_dirty_codec.h"
#include "cg_log.h"
#include "cg_metrics.h"

/* ------------------------------------------------------------------ */
/* Deadlines                                                           */

static void arm_timer(struct cg_dirty_call *c, double seconds)
{
    struct timeval tv;

    if (c->timer == NULL) {
        return;
    }
    if (seconds < 0) {
        seconds = 0;
    }
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    evtimer_add((struct event *)c->timer, &tv);
}

/* Arms the call's deadline: dirty_timeout from now (the wait for the
 * worker's next frame; restarted at dispatch and by every chunk), capped by
 * what is left of the caller's timeout for the whole call. A call still
 * queued is not bounded by dirty_timeout (no worker is running it: the
 * pool may be booting, bounded by dirty_boot_timeout), only by the
 * caller's timeout and dirty_queue_timeout. */
void cg_dirty_relay_rearm(struct cg_dirty_call *c)
{
    bool queued = c->state == CG_DIRTY_CALL_QUEUED;
    double wait = c->idle_sec > 0 && !queued ? c->idle_sec : -1;

    c->armed_for = CG_DIRTY_DEADLINE_IDLE;
    if (c->total_sec > 0) {
        double left = c->started + c->total_sec - cg_dirty_now();
        if (wait < 0 || left < wait) {
            wait = left;
            c->armed_for = CG_DIRTY_DEADLINE_TOTAL;
        }
    }
    if (c->state == CG_DIRTY_CALL_QUEUED && c->queue_sec > 0) {
        double left = c->started + c->queue_sec - cg_dirty_now();
        if (wait < 0 || left < wait) {
            wait = left;
            c->armed_for = CG_DIRTY_DEADLINE_QUEUE;
        }
    }
    if (wait >= 0) {
        arm_timer(c, wait);
    }
}

/* The caller gave up on a call (CANCEL, its deadline): later frames for it
 * are dropped, and a worker paused because that caller read too slowly is
 * let go so it can reach the cancellation. */
void cg_dirty_relay_call_abandon(struct cg_dirty_call *c)
{
    struct cg_dirty_client *cl = c->client;

    cg_dirty_relay_call_detach(c);
    if (cl != NULL && c->worker != NULL && c->worker->paused_by == cl) {
        cg_dirty_relay_link_resume(c->worker);
    }
}

/* A deadline passed (first firing) or the worker did not give the call up
 * within the grace period after it (second firing). */
void cg_dirty_relay_on_call_timer(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_call *c = arg;
    struct cg_dirty_arb *arb = c->arb;
    (void)fd;
    (void)what;
    if (!c->timed_out) {
        bool total = c->armed_for == CG_DIRTY_DEADLINE_TOTAL;
        if (c->armed_for == CG_DIRTY_DEADLINE_QUEUE && c->state == CG_DIRTY_CALL_QUEUED) {
            /* Waited dirty_queue_timeout for a worker: back-pressure, not
             * a timeout of the call (it never ran). */
            char why[96];
            snprintf(why, sizeof(why), "no worker took the call within %gs (dirty_queue_timeout)",
                     c->queue_sec);
            cg_dirty_relay_send_busy(arb, c->client, c->cid, c->app, c->action, why);
            cg_dirty_relay_call_abandon(c);
            cg_dirty_pool_dequeue(&arb->pool, c);
            cg_dirty_relay_call_free(c);
            cg_dirty_arb_maybe_stop(arb);
            return;
        }
        if (!total && c->worker != NULL && c->worker->paused_by != NULL) {
            /* The worker's frames wait for a slow reader (back-pressure):
             * the worker is not late, a caller is. */
            cg_dirty_relay_rearm(c);
            return;
        }
        c->timed_out = true;
        if (c->client != NULL) {
            cg_dirty_relay_count(arb, c, CG_METRICS_DIRTY_TIMEOUT);
            double t = total ? c->total_sec : c->idle_sec;
            cg_dirty_relay_send_error(c->client, c->cid, "DirtyTimeoutError",
                                      json_pack("{s:f}", "timeout", t),
                                      total ? "Dirty call %s.%s timed out after %gs "
                                              "(the client's timeout)"
                                            : "Dirty call %s.%s timed out: no reply from the "
                                              "worker for %gs (dirty_timeout)",
                                      arb->pool.apps[c->app].path, c->action, t);
        }
        cg_dirty_relay_call_abandon(c);
        if (c->state == CG_DIRTY_CALL_QUEUED) {
            cg_dirty_pool_dequeue(&arb->pool, c);
            cg_dirty_relay_call_free(c);
            cg_dirty_arb_maybe_stop(arb);
            return;
        }
        cg_dirty_relay_send_cancel(c);
        arm_timer(c, CG_DIRTY_KILL_GRACE_SEC);
        return;
    }
    /* Still running after the grace period: the worker is stuck in it. */
    if (c->worker != NULL) {
        cg_log(CG_LOG_CRITICAL, "DIRTY WORKER TIMEOUT (pid:%d)", (int)c->worker->pid);
        struct cg_dirty_wk *w = c->worker;
        cg_dirty_arb_kill(arb, w, SIGKILL);
        cg_dirty_relay_link_lost(arb, w, "it was killed after a call passed its deadline");
    }
}

