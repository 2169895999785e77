/* StatsD metrics as gunicorn's statsd logger sends them (statsd_host,
 * statsd_prefix, dogstatsd_tags):
 *   <prefix>gunicorn.requests:1|c|@1.0          per request
 *   <prefix>gunicorn.request.status.200:1|c|@1.0
 *   <prefix>gunicorn.request.duration:1.234|ms
 *   <prefix>gunicorn.log.{critical,error,warning,exception}:1|c|@1.0
 *   <prefix>gunicorn.workers:4|g                master, when the count changes
 *   <prefix>gunicorn.backlog:0|h                master, enable_backlog_metric
 * each datagram followed by "|#<tags>" when dogstatsd_tags is set.
 *
 * One connected datagram socket per server, opened by the master before it
 * forks (every child inherits it, as gunicorn's logger socket is), sends
 * without blocking; a lost datagram is not an error. State is process-wide,
 * set once before threads start; sending is thread-safe. */
#ifndef CG_STATSD_H
#define CG_STATSD_H

#include <stdbool.h>
#include <stdint.h>

#include "cg_err.h"

/* Opens the socket for `host` as the settings table stores it ("HOST:PORT",
 * "[V6]:PORT", or a unix socket path), with `prefix` (a "." is added when
 * missing) and `tags` ("" or NULL for none). host NULL closes it (metrics
 * off). Replaces a socket already open (HUP). Returns 0, or -1 with err
 * naming the address. */
int cg_statsd_open(const char *host, const char *prefix, const char *tags, struct cg_err *err);

bool cg_statsd_on(void);

/* Sends "<prefix><name>:<value>|<kind>[|#<tags>]"; kind is "c|@1.0",
 * "g", "ms" or "h". Does nothing while metrics are off. */
void cg_statsd_metric(const char *name, const char *value, const char *kind);

void cg_statsd_counter(const char *name, long value);
void cg_statsd_gauge(const char *name, long value);
void cg_statsd_histogram(const char *name, long value);

/* The three per-request metrics of gunicorn's access(): duration (from
 * microseconds, shown in ms as Python prints a float), the request count
 * and the count for `status`. */
void cg_statsd_request(int status, uint64_t duration_us);

#endif
