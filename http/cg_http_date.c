/* The Date header, cached per second and per thread (gthread pool threads
 * format responses concurrently, so the cache is thread-local, not shared). */
#include "cg_http_date.h"

#include <stdio.h>
#include <string.h>

static _Thread_local time_t cached_sec = (time_t)-1;
static _Thread_local char cached[CG_HTTP_DATE_LEN + 1];
static _Thread_local unsigned long format_count;

size_t cg_http_date_format(time_t t, char *buf)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;

    /* Locale-independent on purpose: strftime's %a/%b follow LC_TIME. */
    gmtime_r(&t, &tm);
    snprintf(buf, CG_HTTP_DATE_LEN + 1, "%s, %02d %s %04d %02d:%02d:%02d GMT",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    return strlen(buf);
}

const char *cg_http_date_now(void)
{
    /* Not time(): it reads the kernel's coarse clock, which lags a tick
     * behind, so for a few ms after each second the Date would be older
     * than the time.time() the app just read. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t now = ts.tv_sec;

    if (now != cached_sec) {
        cg_http_date_format(now, cached);
        cached_sec = now;
        format_count++;
    }
    return cached;
}

unsigned long cg_http_date_format_count(void)
{
    return format_count;
}
