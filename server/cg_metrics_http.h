/* The master's metrics listener: /metrics, /healthz, /readyz on
 * metrics_bind (see cg_metrics_http.c). Master only, its loop thread; no
 * Python, no GIL needed. */
#ifndef CG_METRICS_HTTP_H
#define CG_METRICS_HTTP_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_err.h"
#include "cg_listen.h"
#include "cg_metrics.h"

/* The master's view the endpoint renders from, filled on each request. */
struct cg_metrics_kid {
    int slot;
    int pid;
    bool stopping;
    uint64_t beat_ms; /* last heartbeat, cg_monotonic_ms() */
};

struct cg_metrics_state {
    struct cg_metrics_kid kids[CG_METRICS_SLOTS];
    int nkids;
    int wanted;     /* num_workers */
    int timeout_s;  /* the timeout setting (heartbeat limit); 0: none */
    bool dirty_on;  /* dirty apps are configured */
    const struct cg_listener *ls; /* the HTTP listeners (backlog), borrowed */
    size_t nls;
};

typedef void (*cg_metrics_state_fn)(struct cg_metrics_state *st, void *arg);

/* Binds `addr` (HOST:PORT or unix:PATH; NULL or "": off) and logs
 * "Serving metrics at: ...". `fn(st, arg)` fills the state per request.
 * Returns 0, or -1 with err naming metrics_bind. */
int cg_metrics_http_open(const char *addr, int umask_value, cg_metrics_state_fn fn, void *arg,
                         struct cg_err *err);

/* Serves on `fd`, the metrics listener an old master passed across USR2
 * (CGUNICORN_METRICS_FD); its unix path, if any, is unlinked by
 * cg_metrics_http_close(true) once this master is promoted. Takes `fd`
 * (closed on failure). Returns 0, or -1 with err. */
int cg_metrics_http_adopt(int fd, cg_metrics_state_fn fn, void *arg, struct cg_err *err);

/* The listening fd, or -1 when not serving (what USR2 passes on). */
int cg_metrics_http_fd(void);

/* HUP: serves on `addr` instead of the current address (NULL or "": stops
 * serving). The new address is bound first, once (no retry: the loop must
 * not sleep); only then is the old listener closed (its unix file
 * unlinked). Clients already accepted finish. Logs "Stopped serving
 * metrics at: OLD" and "Serving metrics at: NEW". Returns 0, or -1 with err
 * naming metrics_bind and the value, the old listener still serving. */
int cg_metrics_http_move(const char *addr, int umask_value, cg_metrics_state_fn fn, void *arg,
                         struct cg_err *err);

/* Closes the listener and every client (the master at exit). */
void cg_metrics_http_close(bool unlink_unix);

/* In a forked child: closes the inherited fds without touching the socket
 * path. */
void cg_metrics_http_atfork_child(void);

/* Serving: a listener, or clients of a closed one still being answered. */
bool cg_metrics_http_on(void);

/* A stop while a USR2 partner master shares the listener: closes this
 * master's copy (the partner answers every new scrape and probe) and
 * answers the clients already accepted with the /healthz and /readyz
 * verdicts of this moment, not with the 503 of workers being stopped. */
void cg_metrics_http_hand_off(void);

/* Fills up to `max` pollfds with the listener and client fds; returns how
 * many. */
int cg_metrics_http_pollfds(struct pollfd *p, int max);

/* Services the fds cg_metrics_http_pollfds() gave, after poll() returned,
 * and closes clients past their deadline. Never blocks. */
void cg_metrics_http_service(const struct pollfd *p, int n);

#endif
