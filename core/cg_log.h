/* The error log, in gunicorn's format:
 *   [2026-11-24 22:03:49 +0000] [1234] [INFO] Listening at: http://127.0.0.1:8000 (1234)
 * One module for every process; cg_log() is not signal-safe. Part of the
 * base layer (core/): it knows nothing of metrics or Python logging, which
 * plug in through a counter and a sink. */
#ifndef CG_LOG_H
#define CG_LOG_H

#include <stdbool.h>

#include "cg_err.h"

enum cg_log_level {
    CG_LOG_DEBUG,
    CG_LOG_INFO,
    CG_LOG_WARNING,
    CG_LOG_ERROR,
    CG_LOG_CRITICAL,
};

/* Parses a gunicorn loglevel name (debug, info, warning, error, critical;
 * case-insensitive). Returns 0, or -1 with err naming the value. */
int cg_log_level_parse(const char *name, enum cg_log_level *out, struct cg_err *err);

/* Opens the error log: path "-" (or NULL) is stderr, else appended to.
 * Returns 0, or -1 with err naming the path. */
int cg_log_open(const char *path, enum cg_log_level level, struct cg_err *err);

/* Reopens the error log file (USR1). Returns 0 or -1 (errno set). */
int cg_log_reopen(void);

/* capture_output: points fds 1 and 2 at the error log file (and again after
 * each reopen), so what the app prints lands in the log, as gunicorn does.
 * No-op when the error log is stderr. Returns 0 or -1 with errno. */
int cg_log_capture_output(void);

void cg_log_set_level(enum cg_log_level level);
bool cg_log_enabled(enum cg_log_level level);

/* The fd the error log writes to (stderr's 2 by default). */
int cg_log_fd(void);

void cg_log(enum cg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like cg_log, with ": <strerror(errnum)>" appended. */
void cg_log_errno(enum cg_log_level level, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A sink takes every line that passes the level filter instead of the log
 * file: the message text alone (no time, pid or level prefix), its level,
 * and whether it is an exception's traceback. It returns 0 when it took the
 * line, -1 to have it written to the log file as usual. `reopen` runs on
 * cg_log_reopen(). NULL, NULL puts the file back. */
typedef int (*cg_log_sink_fn)(enum cg_log_level level, bool exception, const char *text);
void cg_log_set_sink(cg_log_sink_fn sink, void (*reopen)(void));

/* A counter receives the metric name of every line at WARNING or worse
 * ("gunicorn.log.warning", ".error", ".critical", ".exception"), whatever
 * the level filter lets through, as gunicorn's statsd logger counts them.
 * The metrics module (server/cg_statsd.c) sets it; NULL counts nothing.
 * Set before threads start. */
typedef void (*cg_log_count_fn)(const char *name);
void cg_log_set_counter(cg_log_count_fn fn);

/* An error with a traceback (gunicorn's log.exception): written at ERROR,
 * counted as gunicorn.log.exception by statsd. */
void cg_log_exception(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define cg_log_debug(...)                                                                  \
    do {                                                                                   \
        if (cg_log_enabled(CG_LOG_DEBUG)) {                                                \
            cg_log(CG_LOG_DEBUG, __VA_ARGS__);                                             \
        }                                                                                  \
    } while (0)

#endif
