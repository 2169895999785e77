/* The dirty IPC wire format: one codec for every process (HTTP workers'
 * clients, the dirty arbiter, dirty workers). docs/dirty-protocol.md
 * documents it byte by byte.
 *
 * A frame is a fixed 24-byte header, a JSON object, and a blob section:
 *
 *   off len  field
 *   0   4    magic "CGD" then version byte 0x01
 *   4   1    type (enum cg_dirty_type)
 *   5   3    reserved, zero
 *   8   8    request id, unsigned, big-endian
 *   16  4    J = JSON length, big-endian
 *   20  4    B = blob length, big-endian
 *   24  J    JSON object (UTF-8): the message's fields
 *   24+J B   blob: the raw bytes of every `bytes` value, concatenated
 *
 * Values inside the JSON: None/bool/int/float/str/list/dict map to JSON.
 * Tagged objects carry what JSON cannot (a tag is a single key starting
 * with NUL, "\u0000"):
 *   {"\u0000b": [offset, length]}   bytes, a slice of the blob section
 *   {"\u0000i": "123456789012345678901234567890"}  int outside int64
 *   {"\u0000f": "nan" | "inf" | "-inf"}             non-finite float
 * A user dict key that starts with NUL is escaped by doubling that NUL.
 * Tuples travel as lists. Dict keys must be str. Anything else is refused
 * at encode time with a message naming the type and where it was found.
 *
 * The arbiter routes frames by header only (type, id), reading the JSON of
 * request frames for "app_path"; it never re-encodes payloads, and it may
 * rewrite the id in place (cg_dirty_frame_set_id). */
#ifndef CG_DIRTY_CODEC_H
#define CG_DIRTY_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "cg_err.h"

#define CG_DIRTY_HEADER_SIZE 24
#define CG_DIRTY_VERSION 1
#define CG_DIRTY_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)

enum cg_dirty_type {
    CG_DIRTY_REQUEST = 1,  /* {"app_path", "action", "args": [], "kwargs": {}, "timeout"?, "stream"?} */
    CG_DIRTY_RESPONSE = 2, /* {"result": value} */
    CG_DIRTY_ERROR = 3,    /* {"error": {"type", "message", "traceback"?, "app_path"?, "action"?}} */
    CG_DIRTY_CHUNK = 4,    /* {"data": value} (streaming) */
    CG_DIRTY_END = 5,      /* {} end of a stream */
    CG_DIRTY_CANCEL = 6,   /* {} caller gave up on request id (stream closed early, timeout) */
    CG_DIRTY_STASH = 7,    /* {"op", "table"?, "key"?, "value"?, ...} stash operations */
    CG_DIRTY_STATUS = 8,   /* {} / {"status": {...}} arbiter status query and reply */
    CG_DIRTY_TYPE_MAX = 8,
};

/* A decoded header. */
struct cg_dirty_header {
    enum cg_dirty_type type;
    uint64_t id;
    uint32_t json_len;
    uint32_t blob_len;
};

/* Parses the 24-byte header at `buf`. Checks magic, version, type, reserved
 * bytes and that 24 + J + B <= max_message. Returns 0, or -1 with err naming
 * what is wrong (the connection that sent it should be closed). */
int cg_dirty_header_decode(const unsigned char *buf, size_t max_message,
                           struct cg_dirty_header *out, struct cg_err *err);

/* Writes a 24-byte header into `buf`. */
void cg_dirty_header_encode(unsigned char *buf, const struct cg_dirty_header *h);

/* Rewrites the request id of an encoded frame in place. */
void cg_dirty_frame_set_id(unsigned char *frame, uint64_t id);

/* Total frame size for a decoded header. */
static inline size_t cg_dirty_frame_size(const struct cg_dirty_header *h)
{
    return CG_DIRTY_HEADER_SIZE + (size_t)h->json_len + (size_t)h->blob_len;
}

#endif
