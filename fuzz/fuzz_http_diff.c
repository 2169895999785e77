/* libFuzzer target, differential: the same request bytes through our
 * HTTP/1 parser and through llhttp (strict, no lenient flags) as the oracle
 * of message framing. Where both accept a message, they must agree on where
 * it ends and on its body length; otherwise a proxy in front (framing like
 * llhttp) and cgunicorn would see different requests — request smuggling.
 *
 * A message one side refuses ends the comparison: refusing is always safe.
 * gunicorn's rules accept some messages llhttp refuses (any token is a
 * method) and the reverse; only disagreement on accepted framing counts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "fuzz_http_conn.h"
#include "fuzz_input.h"

struct oracle {
    size_t n_msgs;
    size_t end[FUZZ_MAX_MSGS];
    uint64_t body[FUZZ_MAX_MSGS];
    uint64_t cur_body;
    bool upgrade;      /* llhttp stopped at an Upgrade/CONNECT: framing ends */
    bool incomplete;   /* llhttp took every byte and waits for more of a message */
};

static int on_message_begin(llhttp_t *p)
{
    struct oracle *o = p->data;
    o->cur_body = 0;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct oracle *o = p->data;
    (void)at;
    o->cur_body += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct oracle *o = p->data;
    if (p->upgrade) {
        /* CONNECT or an accepted Upgrade: what follows the head is a tunnel
         * to llhttp, not HTTP. We close after CONNECT and take an upgrade's
         * bytes only as the app's, so framing ends here on both sides. */
        o->upgrade = true;
        return 0;
    }
    return HPE_PAUSED; /* stop right after the message to learn its end */
}

/* Frames data with llhttp; fills o with each complete message's end. */
static void oracle_run(const uint8_t *data, size_t len, struct oracle *o)
{
    llhttp_settings_t s;
    llhttp_t p;
    size_t off = 0;

    memset(o, 0, sizeof(*o));
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    llhttp_init(&p, HTTP_REQUEST, &s);
    p.data = o;
    while (off < len && o->n_msgs < FUZZ_MAX_MSGS) {
        llhttp_errno_t e = llhttp_execute(&p, (const char *)data + off, len - off);
        if (o->upgrade) {
            return;
        }
        if (e == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&p);
            off = (size_t)(pos - (const char *)data);
            o->end[o->n_msgs] = off;
            o->body[o->n_msgs] = o->cur_body;
            o->n_msgs++;
            if (!llhttp_should_keep_alive(&p)) {
                return;
            }
            llhttp_resume(&p);
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            o->upgrade = true;
        }
        o->incomplete = (e == HPE_OK);
        return; /* HPE_OK: all taken, message incomplete; or an error */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in = { data, size };
    struct cg_http_limits limits;
    struct fuzz_http_result ours;
    struct oracle o;

    cg_http_limits_init(&limits);
    size_t piece = fuzz_take_byte(&in) % 32;
    fuzz_http_conn_run(&limits, in.p, in.n, piece, true, &ours);
    oracle_run(in.p, in.n, &o);

    size_t both = ours.n_msgs < o.n_msgs ? ours.n_msgs : o.n_msgs;
    if (both > FUZZ_MAX_MSGS) {
        both = FUZZ_MAX_MSGS;
    }
    for (size_t i = 0; i < both; i++) {
        if (ours.end[i] != o.end[i] || ours.body[i] != o.body[i]) {
            __builtin_trap();
        }
    }
    /* llhttp read on, without an error, past the end we found for the next
     * message: the bytes we took as the next request are its body (or it
     * still waits for body bytes we never expected). */
    if (o.incomplete && !o.upgrade && ours.n_msgs > o.n_msgs && o.n_msgs < FUZZ_MAX_MSGS) {
        __builtin_trap();
    }
    return 0;
}
