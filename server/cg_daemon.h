/* Process control around the master: daemonizing (gunicorn's
 * util.daemonize) and systemd integration (socket activation, sd_notify). */
#ifndef CG_DAEMON_H
#define CG_DAEMON_H

#include <stdbool.h>

#include "cg_err.h"

/* Detaches: fork, setsid, fork, umask 022, stdin from /dev/null, and stdout
 * and stderr to /dev/null unless `keep_stdio`. Skipped when GUNICORN_FD is
 * set (a USR2 re-exec). Needs the GIL (forks through cg_sup_fork).
 * Returns 0 in the daemon, -1 with err on failure; the parents _exit(0). */
int cg_daemon_start(bool keep_stdio, struct cg_err *err);

/* Number of sockets systemd passed (LISTEN_FDS, when LISTEN_PID is this
 * process), starting at fd 3; unsets both variables. 0 when none. */
int cg_systemd_listen_fds(void);

/* Sends `state` (e.g. "READY=1") to $NOTIFY_SOCKET; a no-op without it.
 * Failures are logged at DEBUG, as gunicorn. */
void cg_systemd_notify(const char *state);

#endif
