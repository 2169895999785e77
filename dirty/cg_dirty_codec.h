/* The dirty IPC wire format: one codec for every process (HTTP workers'
 * clients, the dirty arbiter, dirty workers). docs/dirty-protocol.md
 * documents it byte by byte.
 *
 * A frame is a fixed 24-byte header, a JSON object, and a blob section:
 *
 *   off len  field
 *   0   4    magic "CGD" then version byte 0x01
 *   4   1    type (enum cg_dirty_type)
 *   5   1    N = number of file descriptors sent with the frame (SCM_RIGHTS), 0..64
 *   6   2    reserved, zero
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
 *   {"\u0000m": [k, length]}        bytes, the first `length` bytes of the sealed
 *                                   memfd #k (0..N-1) passed with this frame
 *   {"\u0000i": "123456789012345678901234567890"}  int outside int64
 *   {"\u0000f": "nan" | "inf" | "-inf"}             non-finite float
 * A user dict key that starts with NUL is escaped by doubling that NUL.
 * Tuples travel as lists. Dict keys must be str. Anything else is refused
 * at encode time with a message naming the type and where it was found.
 *
 * jansson note: its own parser refuses keys containing NUL, and
 * json_deep_copy()/json_object_set() (without "n") cut keys at the first NUL.
 * Parse bodies with cg_dirty_body_parse()/cg_dirty_msg_parse() and copy
 * values with cg_dirty_value_detach(); the *_n/keylen jansson calls are safe.
 *
 * The arbiter routes frames by header only (type, id), reading the JSON of
 * request frames for "app_path"; it never re-encodes payloads, and it may
 * rewrite the id in place (cg_dirty_frame_set_id). */
#ifndef CG_DIRTY_CODEC_H
#define CG_DIRTY_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <jansson.h>

#include "cg_err.h"

/* Same typedef as <Python.h> (C11 allows the repeat), so that C-only users
 * of this header (the arbiter) need not include Python.h. */
typedef struct _object PyObject;

#define CG_DIRTY_HEADER_SIZE 24
#define CG_DIRTY_VERSION 1
#define CG_DIRTY_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)

/* Zero-copy payloads: at most this many memfds travel with one frame (the
 * rest of its bytes values go inline); defaults of the settings
 * dirty_zero_copy_threshold and dirty_max_payload_size. */
#define CG_DIRTY_MAX_FDS 64
#define CG_DIRTY_DEFAULT_ZC_THRESHOLD ((size_t)1 << 20)
#define CG_DIRTY_DEFAULT_MAX_PAYLOAD ((size_t)4 << 30)

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
    unsigned nfds; /* descriptors passed with the frame (header byte 5) */
};

/* Parses the 24-byte header at `buf`. Checks magic, version, type, the fd
 * count (<= CG_DIRTY_MAX_FDS), reserved bytes and that 24 + J + B <=
 * max_message. Returns 0, or -1 with err naming what is wrong (the
 * connection that sent it should be closed). */
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

/* Name of a message type ("request", "response", ...), "unknown" otherwise. */
const char *cg_dirty_type_name(int type);

/* Values deeper than this (lists/dicts inside lists/dicts) are refused by
 * both the encoder and the decoder. */
#define CG_DIRTY_MAX_DEPTH 200

/* ---------------------------------------------------------------------
 * Plain C (no Python, no GIL): used by the arbiter, which never runs app code.
 * ------------------------------------------------------------------- */

/* A whole frame in one malloc'd buffer, ready for a single send. */
struct cg_dirty_frame {
    unsigned char *data; /* owned; free with cg_dirty_frame_deinit() */
    size_t len;
};

/* Frees f->data and clears the struct. f may be NULL or already clear. */
void cg_dirty_frame_deinit(struct cg_dirty_frame *f);

/* Builds header + compact JSON dump of `body` (a JSON object) + `blob` into
 * out (one allocation). `body` may hold {"\u0000b": [off, len]} tags that
 * refer into `blob` (blob may be NULL when blob_len is 0). Fails (-1, err
 * naming size and limit) when the frame would exceed max_message, or when
 * body is not an object / cannot be dumped. Does not take ownership of body. */
int cg_dirty_frame_build(struct cg_dirty_frame *out, enum cg_dirty_type type, uint64_t id,
                         const json_t *body, const unsigned char *blob, size_t blob_len,
                         size_t max_message, struct cg_err *err);

/* A frame parsed without Python: the header, the JSON body and the blob.
 * `blob` points into the caller's buffer (valid as long as it is). */
struct cg_dirty_msg {
    struct cg_dirty_header hdr;
    json_t *body; /* owned (new reference); a JSON object */
    const unsigned char *blob;
};

/* Parses a whole frame of `len` bytes at `buf`: header (as
 * cg_dirty_header_decode), exactly 24 + J + B bytes, JSON that is one
 * object, and every tag in it well-formed with blob references in range.
 * Returns 0, or -1 with err (out->body is then NULL). Release with
 * cg_dirty_msg_deinit(). */
int cg_dirty_msg_parse(const unsigned char *buf, size_t len, size_t max_message,
                       struct cg_dirty_msg *out, struct cg_err *err);

/* Drops out->body. */
void cg_dirty_msg_deinit(struct cg_dirty_msg *m);

/* Parses J bytes of JSON into an object (new reference), checking tags
 * against a blob section of blob_len bytes. NULL with err on failure. */
json_t *cg_dirty_body_parse(const unsigned char *json, size_t json_len, size_t blob_len,
                            struct cg_err *err);

/* As cg_dirty_body_parse() for a frame that came with `nfds` descriptors:
 * memfd tags must name one of them. */
json_t *cg_dirty_body_parse_fds(const unsigned char *json, size_t json_len, size_t blob_len,
                                size_t nfds, struct cg_err *err);

/* Checks that every tag inside `value` is well-formed (see the top of this
 * file) and that every bytes slice lies inside a blob of blob_len bytes.
 * Returns 0, or -1 with err naming the path (e.g. "args[1]['img']"). */
int cg_dirty_value_check(const json_t *value, size_t blob_len, struct cg_err *err);

/* What the arbiter needs to route a REQUEST frame, read from its JSON body
 * alone (args/kwargs are parsed by jansson but never converted). */
struct cg_dirty_route {
    json_t *body;         /* owned */
    const char *app_path; /* borrowed from body: "module:Class" */
    const char *action;   /* borrowed from body */
    double timeout;       /* the caller's "timeout" in seconds, or -1 if absent */
    int stream;           /* "stream": true was sent (a hint only) */
};

/* Parses a REQUEST frame's JSON (json/json_len: the J bytes after the
 * header; blob_len: B from its header; nfds: N from its header). Requires "app_path" and "action"
 * as non-empty strings, "args" a list and "kwargs" an object when present,
 * "timeout" a positive number when present. Returns 0, or -1 with err
 * naming the missing/bad field. Release with cg_dirty_route_deinit(). */
int cg_dirty_route_parse(const unsigned char *json, size_t json_len, size_t blob_len,
                         size_t nfds, struct cg_dirty_route *out, struct cg_err *err);

/* Drops r->body and clears r. */
void cg_dirty_route_deinit(struct cg_dirty_route *r);

/* Copies `value` (which refers into `blob`) into a self-contained value:
 * *out_value (new reference) whose bytes tags refer into *out_blob (malloc'd,
 * caller frees; NULL when *out_blob_len is 0), holding only the bytes the
 * value uses. For the arbiter's stash: store a value out of one frame, send
 * it later in another (cg_dirty_frame_build with blob = *out_blob).
 * Returns 0, or -1 with err. */
int cg_dirty_value_detach(const json_t *value, const unsigned char *blob, size_t blob_len,
                          json_t **out_value, unsigned char **out_blob, size_t *out_blob_len,
                          struct cg_err *err);

/* Builds an ERROR frame {"error": {"type": type, "message": message}} plus
 * the string fields in `extra` (a JSON object or NULL, e.g. {"app_path": ..}).
 * For the arbiter's own errors (DirtyTimeoutError, DirtyAppNotFoundError,
 * DirtyNoWorkersAvailableError, DirtyWorkerError...). Returns 0 or -1 + err. */
int cg_dirty_frame_build_error(struct cg_dirty_frame *out, uint64_t id, const char *type,
                               const char *message, const json_t *extra, struct cg_err *err);

/* ---------------------------------------------------------------------
 * Python values (GIL required): HTTP workers' client, dirty workers.
 * ------------------------------------------------------------------- */

/* Why an encode failed (the Python exception is set in every case). */
enum cg_dirty_enc_error {
    CG_DIRTY_ENC_UNSUPPORTED = 1, /* TypeError: a value the protocol cannot carry; the
                                   * message names the type and the path, e.g.
                                   * "args[1]['img']: cannot send object of type 'Image' to a
                                   * dirty app; convert it to bytes, str, ..." (also dict keys
                                   * that are not str, str with lone surrogates, nesting deeper
                                   * than CG_DIRTY_MAX_DEPTH, non-contiguous memoryviews) */
    CG_DIRTY_ENC_TOO_LARGE = 2,   /* ValueError: the frame would exceed max_message; the
                                   * message names the size, the limit and the setting
                                   * dirty_max_message_size */
    CG_DIRTY_ENC_OTHER = 3,       /* anything else (MemoryError, ...) */
    CG_DIRTY_ENC_PAYLOAD_TOO_LARGE = 4, /* ValueError: a bytes value above the zero-copy
                                   * threshold is larger than dirty_max_payload_size (the
                                   * message names the size, the limit and the setting) */
};

/* Zero-copy options of the encoders. Bytes values longer than `threshold`
 * (0: never) are written into a memfd (memfd_create, then sealed with
 * F_SEAL_WRITE|F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL) that is sent with
 * the frame and tagged {"\u0000m": [k, length]}; one larger than
 * `max_payload` is refused. A NULL options pointer means no memfds. */
struct cg_dirty_zc {
    size_t threshold;
    size_t max_payload;
};

/* Per-process counters of the memfds the codec made and mapped (for tests
 * and status: proof that a payload went inline or not). GIL held. */
struct cg_dirty_zc_stats {
    unsigned long long sent, sent_bytes, received, received_bytes;
};
void cg_dirty_zc_stats_get(struct cg_dirty_zc_stats *out);

/* Encodes a whole frame whose body is the Python dict `body` (str keys; the
 * top-level keys name the paths in error messages: "args[0]", "result",
 * "data"...). Returns a new reference to a bytes object holding header +
 * JSON + blob (each bytes value copied once, straight into it), or NULL with
 * a Python exception set and *why (may be NULL) saying which kind. */
PyObject *cg_dirty_frame_encode_py(enum cg_dirty_type type, uint64_t id, PyObject *body,
                                   size_t max_message, enum cg_dirty_enc_error *why);

/* A frame encoded for scatter-gather output (writev/sendmsg) without
 * copying its bytes values: iov[0] is the header + JSON (owned by the
 * frame), iov[1..iovcnt-1] point into the bytes-like objects of the body,
 * which stay referenced (and buffer views held) until release. */
struct cg_dirty_py_frame {
    struct iovec *iov;     /* owned */
    int iovcnt;
    size_t len;            /* total bytes */
    const int *fds;        /* the memfds to pass with the frame's first byte (nfds of them);
                            * owned by the frame, closed by cg_dirty_py_frame_release() */
    int nfds;
    void *priv;            /* the encoder state (owned) */
};

/* As cg_dirty_frame_encode_py(), into `f`. Returns 0, or -1 with a Python
 * exception and *why. The iovecs may be read without the GIL (the memory
 * is pinned); release with cg_dirty_py_frame_release() (needs the GIL). */
int cg_dirty_frame_encode_py_iov(enum cg_dirty_type type, uint64_t id, PyObject *body,
                                 size_t max_message, const struct cg_dirty_zc *zc,
                                 struct cg_dirty_py_frame *f, enum cg_dirty_enc_error *why);

/* As cg_dirty_frame_encode_py(), as a list for socket.sendmsg(): item 0 is
 * a bytes object with the header and JSON, then each bytes-like value of
 * the body itself, in blob order (nothing copied). New reference, or NULL
 * with a Python exception and *why. The objects must not change size before
 * they are sent. */
PyObject *cg_dirty_frame_encode_py_parts(enum cg_dirty_type type, uint64_t id, PyObject *body,
                                         size_t max_message, enum cg_dirty_enc_error *why);

/* As cg_dirty_frame_encode_py_parts() with zero-copy options: the memfds
 * made go to fds[0..*nfds-1] (room for CG_DIRTY_MAX_FDS); the caller owns
 * and closes them once the frame is sent (or not). On failure none are left
 * open (*nfds is 0). */
PyObject *cg_dirty_frame_encode_py_parts_fds(enum cg_dirty_type type, uint64_t id,
                                             PyObject *body, size_t max_message,
                                             const struct cg_dirty_zc *zc, int *fds,
                                             size_t *nfds, enum cg_dirty_enc_error *why);

/* Drops what an encoded frame holds; `f` becomes empty. Needs the GIL.
 * An empty `f` is fine. */
void cg_dirty_py_frame_release(struct cg_dirty_py_frame *f);

/* Decodes a frame body: json (J bytes) + blob (B bytes) into a new dict
 * (new reference). Bytes values become bytes objects (one copy each). NULL
 * with ValueError (naming what is malformed and where) on a bad body. */
PyObject *cg_dirty_body_decode_py(const unsigned char *json, size_t json_len,
                                  const unsigned char *blob, size_t blob_len);

/* As cg_dirty_body_decode_py() for a frame that came with `nfds`
 * descriptors: a memfd tag's bytes are copied out of a read-only mapping of
 * its memfd (which must be sealed against writing, shrinking and growing,
 * and hold at least `length` bytes; `length` at most max_payload). The fds
 * stay the caller's (it closes them). */
PyObject *cg_dirty_body_decode_py_fds(const unsigned char *json, size_t json_len,
                                      const unsigned char *blob, size_t blob_len,
                                      const int *fds, size_t nfds, size_t max_payload);

/* Converts a jansson value that refers into `blob` to a Python object (new
 * reference), NULL with ValueError on a malformed tag. `path` names the
 * value in messages ("result"). For a C caller holding a cg_dirty_msg. */
PyObject *cg_dirty_value_to_py(const json_t *value, const unsigned char *blob, size_t blob_len,
                               const char *path);

#endif
