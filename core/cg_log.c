/* Error log writer: gunicorn's line format, levels and reopen-on-USR1.
 * Each line is written with one write(2) so lines from several processes
 * sharing the file do not interleave. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cg_log.h"
#include "cg_syslog.h"

static const char *const level_names[] = { "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL" };

static int log_fd = 2;
static char log_path[4096];
static enum cg_log_level log_level = CG_LOG_INFO;
static bool capture_output;
static cg_log_sink_fn sink;      /* logconfig: lines go to Python's logging */
static void (*sink_reopen)(void);
static cg_log_count_fn counter; /* statsd: counts warnings and worse */

int cg_log_level_parse(const char *name, enum cg_log_level *out, struct cg_err *err)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum cg_log_level)i;
            return 0;
        }
    }
    cg_err_set(err, "log level '%s': expected one of debug, info, warning, error, critical", name);
    return -1;
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int cg_log_open(const char *path, enum cg_log_level level, struct cg_err *err)
{
    log_level = level;
    if (path == NULL || strcmp(path, "-") == 0) {
        log_path[0] = '\0';
        log_fd = 2;
        return 0;
    }
    int fd = open_path(path);
    if (fd < 0) {
        int saved = errno;
        cg_err_set(err, "errorlog '%s': cannot open: %s; check the path and its permissions",
                   path, strerror(saved));
        return -1;
    }
    if (log_fd > 2) {
        close(log_fd);
    }
    log_fd = fd;
    snprintf(log_path, sizeof(log_path), "%s", path);
    return 0;
}

int cg_log_reopen(void)
{
    if (sink_reopen != NULL) {
        sink_reopen();
    }
    if (log_path[0] == '\0') {
        return 0;
    }
    int fd = open_path(log_path);
    if (fd < 0) {
        return -1;
    }
    /* dup2 keeps the fd number stable for anything that captured it. */
    if (dup2(fd, log_fd) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    close(fd);
    if (capture_output) {
        return cg_log_capture_output();
    }
    return 0;
}

int cg_log_capture_output(void)
{
    if (log_path[0] == '\0') {
        return 0; /* errorlog "-": stdout and stderr stay where they are */
    }
    capture_output = true;
    if (dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
        return -1;
    }
    return 0;
}

void cg_log_set_level(enum cg_log_level level)
{
    log_level = level;
}

bool cg_log_enabled(enum cg_log_level level)
{
    return level >= log_level;
}

int cg_log_fd(void)
{
    return log_fd;
}

void cg_log_set_sink(cg_log_sink_fn fn, void (*reopen)(void))
{
    sink = fn;
    sink_reopen = reopen;
}

void cg_log_set_counter(cg_log_count_fn fn)
{
    counter = fn;
}

/* Hands the message to the sink; returns 0 when it took it. */
static int to_sink(enum cg_log_level level, bool exception, int errnum, const char *fmt,
                   va_list ap)
{
    char text[8192];
    int k = vsnprintf(text, sizeof(text), fmt, ap);
    size_t n = k < 0 ? 0 : ((size_t)k < sizeof(text) ? (size_t)k : sizeof(text) - 1);

    text[n] = '\0';
    if (errnum != 0 && n < sizeof(text) - 1) {
        snprintf(text + n, sizeof(text) - n, ": %s", strerror(errnum));
    }
    return sink(level, exception, text);
}

static void log_va(enum cg_log_level level, int errnum, bool exception, const char *fmt,
                   va_list ap)
{
    char line[8192];
    struct tm tm;
    time_t now = time(NULL);
    size_t n = 0;

    if (sink != NULL) {
        va_list copy;
        va_copy(copy, ap);
        int rc = to_sink(level, exception, errnum, fmt, copy);
        va_end(copy);
        if (rc == 0) {
            return;
        }
    }
    if (cg_syslog_on()) { /* gunicorn's syslog handler beside the file's; a
                          * Python sink (logconfig, logger_class) has its own */
        char text[8192];
        va_list copy;
        va_copy(copy, ap);
        int k = vsnprintf(text, sizeof(text), fmt, copy);
        va_end(copy);
        size_t tn = k < 0 ? 0 : ((size_t)k < sizeof(text) ? (size_t)k : sizeof(text) - 1);
        if (errnum != 0 && tn < sizeof(text) - 1) {
            k = snprintf(text + tn, sizeof(text) - tn, ": %s", strerror(errnum));
            tn = k < 0 ? tn : (tn + (size_t)k < sizeof(text) ? tn + (size_t)k : sizeof(text) - 1);
        }
        cg_syslog_send(CG_SYSLOG_ERROR, level, text, tn);
    }
    localtime_r(&now, &tm);
    n = strftime(line, sizeof(line), "[%Y-%m-%d %H:%M:%S %z]", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, " [%d] [%s] ", (int)getpid(),
                          level_names[level]);
    int k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    n = k < 0 ? n : (n + (size_t)k < sizeof(line) ? n + (size_t)k : sizeof(line) - 1);
    if (errnum != 0 && n < sizeof(line) - 1) {
        k = snprintf(line + n, sizeof(line) - n, ": %s", strerror(errnum));
        n = k < 0 ? n : (n + (size_t)k < sizeof(line) ? n + (size_t)k : sizeof(line) - 1);
    }
    if (n >= sizeof(line) - 1) {
        n = sizeof(line) - 2;
    }
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w;
}

/* gunicorn's statsd logger counts warnings and worse, whatever loglevel
 * lets through. */
static void count(enum cg_log_level level, bool exception)
{
    static const char *const names[] = { NULL, NULL, "gunicorn.log.warning", "gunicorn.log.error",
                                         "gunicorn.log.critical" };
    const char *name = exception ? "gunicorn.log.exception" : names[level];
    if (name != NULL && counter != NULL) {
        counter(name);
    }
}

void cg_log(enum cg_log_level level, const char *fmt, ...)
{
    va_list ap;

    count(level, false);
    if (!cg_log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    log_va(level, 0, false, fmt, ap);
    va_end(ap);
}

void cg_log_errno(enum cg_log_level level, int errnum, const char *fmt, ...)
{
    va_list ap;

    count(level, false);
    if (!cg_log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    log_va(level, errnum, false, fmt, ap);
    va_end(ap);
}

void cg_log_exception(const char *fmt, ...)
{
    va_list ap;

    count(CG_LOG_ERROR, true);
    if (!cg_log_enabled(CG_LOG_ERROR)) {
        return;
    }
    va_start(ap, fmt);
    log_va(CG_LOG_ERROR, 0, true, fmt, ap);
    va_end(ap);
}
