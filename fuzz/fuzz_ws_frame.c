/* libFuzzer target: the WebSocket frame parser and the incremental UTF-8
 * validator (http/cg_ws_frame.c), driven as the asgi worker drives them.
 * Input: byte 0 sets the largest message (small values reach the 1009
 * path), byte 1 a split point; the rest is what a client sends. Checks:
 * a parsed frame lies inside the buffer and keeps the control-frame rules;
 * a frame parsed from a prefix of the bytes is the same frame parsed from
 * all of them; the validator gives the same answer fed in one piece or in
 * two split anywhere, and agrees with a code-point decoder written here
 * independently (RFC 3629 rules). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_ws_frame.h"
#include "fuzz_input.h"

/* Reference: decodes code points and checks each against RFC 3629. */
static bool reference_utf8(const unsigned char *p, size_t n, bool *partial)
{
    size_t i = 0;

    *partial = false;
    while (i < n) {
        unsigned char b = p[i];
        size_t len;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            len = 2, cp = b & 0x1f, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            len = 3, cp = b & 0x0f, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            len = 4, cp = b & 0x07, min = 0x10000;
        } else {
            return false;
        }
        size_t k = 1;
        for (; k < len && i + k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (k < len) {
            /* cut short: valid so far only if some completion is valid */
            uint32_t lo = cp, hi = cp;
            for (; k < len; k++) {
                lo <<= 6;
                hi = (hi << 6) | 0x3f;
            }
            if (hi < min || lo > 0x10ffff || (lo >= 0xd800 && hi <= 0xdfff)) {
                return false;
            }
            *partial = true;
            return true;
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += len;
    }
    return true;
}

static void check_utf8(const unsigned char *p, size_t n, size_t split)
{
    struct cg_utf8 whole = { 0 }, parts = { 0 };
    bool ok = cg_utf8_feed(&whole, p, n);
    bool ok2 = cg_utf8_feed(&parts, p, split) && cg_utf8_feed(&parts, p + split, n - split);
    bool partial;
    bool ref = reference_utf8(p, n, &partial);

    if (ok != ok2 || ok != ref) {
        __builtin_trap();
    }
    if (ok && (cg_utf8_complete(&whole) == partial ||
               cg_utf8_complete(&whole) != cg_utf8_complete(&parts))) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in = { data, size };
    uint8_t opt = fuzz_take_byte(&in);
    uint8_t split = fuzz_take_byte(&in);
    uint64_t max = opt < 0x80 ? opt : ((uint64_t)1 << 20);
    unsigned char *buf = malloc(in.n + 1);
    size_t pos = 0;
    uint64_t frag_len = 0;

    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, in.p, in.n);
    check_utf8(buf, in.n, in.n ? split % (in.n + 1) : 0);
    while (pos < in.n) {
        struct cg_ws_frame f;
        size_t avail = in.n - pos;
        enum cg_ws_parse r = cg_ws_frame_parse(buf + pos, avail, max, frag_len, &f);
        if (r != CG_WS_FRAME) {
            if (r == CG_WS_ERROR && (f.why == NULL || (f.code != 1002 && f.code != 1009))) {
                __builtin_trap();
            }
            break;
        }
        size_t total = f.header_len + (size_t)f.payload_len;
        if (total > avail || f.mask != buf + pos + f.header_len - 4 ||
            (f.opcode >= 8 && (!f.fin || f.payload_len > 125)) ||
            (f.opcode < 8 && frag_len + f.payload_len > max)) {
            __builtin_trap();
        }
        /* the frame alone parses to the same frame; any shorter prefix asks for more */
        struct cg_ws_frame g;
        if (cg_ws_frame_parse(buf + pos, total, max, frag_len, &g) != CG_WS_FRAME ||
            g.header_len != f.header_len || g.payload_len != f.payload_len ||
            g.opcode != f.opcode || g.fin != f.fin) {
            __builtin_trap();
        }
        if (cg_ws_frame_parse(buf + pos, total - 1, max, frag_len, &g) != CG_WS_MORE) {
            __builtin_trap();
        }
        unsigned char *payload = buf + pos + f.header_len;
        cg_ws_unmask(payload, f.payload_len, f.mask);
        if (f.opcode == 1 || f.opcode == 0) {
            check_utf8(payload, (size_t)f.payload_len,
                       f.payload_len ? split % (f.payload_len + 1) : 0);
        }
        if (f.opcode < 8) {
            frag_len = f.fin ? 0 : frag_len + f.payload_len;
        }
        pos += total;
    }
    free(buf);
    return 0;
}
