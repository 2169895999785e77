/* WebSocket frame header parsing and incremental UTF-8 validation. */
#include "cg_ws_frame.h"

static enum cg_ws_parse refuse(struct cg_ws_frame *f, int code, const char *why)
{
    f->code = code;
    f->why = why;
    return CG_WS_ERROR;
}

enum cg_ws_parse cg_ws_frame_parse(const unsigned char *p, size_t avail, uint64_t max,
                                   uint64_t frag_len, struct cg_ws_frame *f)
{
    uint64_t len;
    size_t hl = 2;

    if (avail < 2) {
        return CG_WS_MORE;
    }
    f->fin = (p[0] & 0x80) != 0;
    f->opcode = p[0] & 0x0f;
    if (p[0] & 0x70) {
        return refuse(f, 1002, "RSV bits set");
    }
    if (!(f->opcode <= 2 || (f->opcode >= 8 && f->opcode <= 10))) {
        return refuse(f, 1002, "Reserved opcode");
    }
    if (!(p[1] & 0x80)) {
        return refuse(f, 1002, "Client frames must be masked");
    }
    len = p[1] & 0x7f;
    if (len == 126) {
        if (avail < 4) {
            return CG_WS_MORE;
        }
        len = ((uint64_t)p[2] << 8) | p[3];
        hl = 4;
    } else if (len == 127) {
        if (avail < 10) {
            return CG_WS_MORE;
        }
        len = 0;
        for (int i = 0; i < 8; i++) {
            len = (len << 8) | p[2 + i];
        }
        hl = 10;
    }
    if (f->opcode >= 8 && (!f->fin || len > 125)) {
        return refuse(f, 1002, "Invalid control frame");
    }
    /* written so that no sum can wrap: len may be anything up to 2^64-1 */
    if (f->opcode < 8 && (len > max || frag_len > max - len)) {
        return refuse(f, 1009, "Message too big");
    }
    f->header_len = hl + 4;
    f->payload_len = len;
    f->mask = p + hl;
    if (avail < f->header_len || avail - f->header_len < len) {
        return CG_WS_MORE;
    }
    return CG_WS_FRAME;
}

void cg_ws_unmask(unsigned char *data, uint64_t len, const unsigned char *mask)
{
    for (uint64_t i = 0; i < len; i++) {
        data[i] ^= mask[i & 3];
    }
}

bool cg_utf8_feed(struct cg_utf8 *u, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char b = p[i];
        if (u->need > 0) {
            if (b < u->lo || b > u->hi) {
                return false;
            }
            u->need--;
            u->lo = 0x80; /* only the first continuation byte is narrowed */
            u->hi = 0xbf;
            continue;
        }
        if (b < 0x80) {
            continue;
        }
        u->lo = 0x80;
        u->hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf) {
            u->need = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            u->need = 2;
            if (b == 0xe0) {
                u->lo = 0xa0; /* overlong below U+0800 */
            } else if (b == 0xed) {
                u->hi = 0x9f; /* U+D800..U+DFFF are surrogates */
            }
        } else if (b >= 0xf0 && b <= 0xf4) {
            u->need = 3;
            if (b == 0xf0) {
                u->lo = 0x90; /* overlong below U+10000 */
            } else if (b == 0xf4) {
                u->hi = 0x8f; /* beyond U+10FFFF */
            }
        } else {
            return false; /* continuation byte, C0/C1 (overlong), F5..FF */
        }
    }
    return true;
}
