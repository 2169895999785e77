/* WebSocket (RFC 6455) frames as a server reads them: the frame header
 * parser and an incremental UTF-8 validator for text messages. Pure C, no
 * I/O and no Python, so the fuzz target drives exactly what the asgi worker
 * runs (server/asgi/cg_py_asgi_ws.c). */
#ifndef CG_WS_FRAME_H
#define CG_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cg_ws_parse {
    CG_WS_ERROR = -1, /* the connection must fail with code/why */
    CG_WS_MORE = 0,   /* the frame is not all in the buffer yet */
    CG_WS_FRAME = 1,  /* a whole frame: header_len + payload_len bytes */
};

struct cg_ws_frame {
    bool fin;
    int opcode;            /* 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong */
    size_t header_len;     /* including the 4-byte masking key */
    uint64_t payload_len;
    const unsigned char *mask;
    int code;              /* CG_WS_ERROR: 1002 (protocol) or 1009 (too big) */
    const char *why;       /* CG_WS_ERROR: the close reason */
};

/* Parses the client frame at p (avail bytes buffered). max is the largest
 * message accepted, frag_len the bytes of the current fragmented message so
 * far. Checks, in this order: RSV bits, opcode, masking, control frame
 * limits, message size. */
enum cg_ws_parse cg_ws_frame_parse(const unsigned char *p, size_t avail, uint64_t max,
                                   uint64_t frag_len, struct cg_ws_frame *f);

/* Unmasks a payload in place (mask from cg_ws_frame_parse). */
void cg_ws_unmask(unsigned char *data, uint64_t len, const unsigned char *mask);

/* UTF-8 validation that can stop and resume at any byte (a text message
 * split into fragments, a code point split between them). Zero it to start. */
struct cg_utf8 {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* the range the next continuation byte must be in */
};

/* Feeds n bytes; false at the first byte no valid UTF-8 can contain there
 * (overlong forms, surrogates, beyond U+10FFFF, stray continuation bytes). */
bool cg_utf8_feed(struct cg_utf8 *u, const unsigned char *p, size_t n);

/* True when the bytes fed so far end on a code point boundary. */
static inline bool cg_utf8_complete(const struct cg_utf8 *u)
{
    return u->need == 0;
}

#endif
