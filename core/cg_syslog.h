/* Syslog output as gunicorn's `syslog` setting gives it (glogging.py's
 * SysLogHandler): each error and access log line also goes, as
 *   <PRI>gunicorn.PREFIX.error: [PID] MESSAGE\0
 * to `syslog_addr` (udp://HOST:PORT, tcp://HOST:PORT, unix://PATH, with
 * unix://PATH#dgram forcing a datagram socket), PRI being the facility
 * times 8 plus the level's syslog priority. Part of the base layer: the
 * caller passes the settings' values. Sends never block: a line the socket
 * cannot take now is dropped. Shared by every process after fork; not
 * signal-safe. */
#ifndef CG_SYSLOG_H
#define CG_SYSLOG_H

#include <stdbool.h>
#include <stddef.h>

#include "cg_err.h"
#include "cg_log.h"

enum cg_syslog_log { CG_SYSLOG_ERROR, CG_SYSLOG_ACCESS };

/* Opens the socket. `prefix` is syslog_prefix, or proc_name with ':' made
 * '.' when that is unset (the caller decides); `facility` a name of
 * gunicorn's table ("user", "local0", ...); `access` whether access lines
 * go too (not disable_redirect_access_to_syslog). Returns 0, or -1 with err
 * naming the bad value ("unknown facility name", "invalid syslog address",
 * a TCP peer refusing). */
int cg_syslog_open(const char *addr, const char *prefix, const char *facility, bool access,
                   struct cg_err *err);

/* True once opened (for `log` lines; cg_syslog_access_on() for access lines). */
bool cg_syslog_on(void);
bool cg_syslog_access_on(void);

/* Sends one message (`text`, `n` bytes, no newline) of `level` for `which` log. */
void cg_syslog_send(enum cg_syslog_log which, enum cg_log_level level, const char *text,
                    size_t n);

#endif
