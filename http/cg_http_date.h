/* The Date header value (RFC 7231 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37
 * GMT", what gunicorn's util.http_date() gives), formatted at most once per
 * second per thread. */
#ifndef CG_HTTP_DATE_H
#define CG_HTTP_DATE_H

#include <stddef.h>
#include <time.h>

#define CG_HTTP_DATE_LEN 29 /* strlen("Sun, 06 Nov 1994 08:49:37 GMT") */

/* The current date. The pointer is to thread-local storage, valid until the
 * calling thread's next call. Any thread; async-signal-unsafe. */
const char *cg_http_date_now(void);

/* Formats `t` into buf (>= CG_HTTP_DATE_LEN + 1 bytes); returns the length. */
size_t cg_http_date_format(time_t t, char *buf);

/* How many times this thread formatted a date (for the cache test). */
unsigned long cg_http_date_format_count(void);

#endif
