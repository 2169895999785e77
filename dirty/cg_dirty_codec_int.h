/* Declarations shared by the dirty codec's files (cg_dirty_codec.c,
 * cg_dirty_json.c, cg_dirty_codec_py.c): the strict JSON parser and the
 * path helper used in error messages. Not part of the codec's public API. */
#ifndef CG_DIRTY_CODEC_INT_H
#define CG_DIRTY_CODEC_INT_H

#include <stddef.h>

#include <jansson.h>

#include "cg_err.h"

/* Parses exactly `len` bytes of JSON text (RFC 8259, UTF-8 validated, no
 * duplicate keys, integers within int64, finite numbers, containers nested at
 * most CG_DIRTY_MAX_DEPTH deep) into a new jansson value (new reference).
 * Unlike jansson's own parser it accepts object keys that contain NUL, which
 * the wire format's tags need. NULL with err naming the byte offset. */
json_t *cg_dirty_json_parse(const unsigned char *buf, size_t len, struct cg_err *err);

/* Where a value sits inside a message body, for error messages:
 * "args[1]['img']". Pushing returns the previous length; pop restores it. */
struct cg_dirty_path {
    char buf[256];
    size_t len;
};

void cg_dirty_path_init(struct cg_dirty_path *p, const char *root);
size_t cg_dirty_path_push_key(struct cg_dirty_path *p, const char *key, size_t key_len);
size_t cg_dirty_path_push_index(struct cg_dirty_path *p, size_t index);
void cg_dirty_path_pop(struct cg_dirty_path *p, size_t saved);

/* The kinds of object a tag can be (see cg_dirty_codec.h). */
enum cg_dirty_tag {
    CG_DIRTY_TAG_NONE = 0, /* a plain object (user dict) */
    CG_DIRTY_TAG_BYTES,
    CG_DIRTY_TAG_INT,
    CG_DIRTY_TAG_FLOAT,
    CG_DIRTY_TAG_MEMFD,
};

/* Classifies the JSON object `obj`: a plain dict, or a well-formed tag.
 * For BYTES, *off and *len give the slice, checked against blob_len; for
 * MEMFD, *off is the descriptor's index (checked against nfds), *len the
 * length; for INT
 * and FLOAT, *text is the tag's string (borrowed). Returns the kind, or -1
 * with err (prefixed by the path) for a malformed tag. */
int cg_dirty_tag_classify(const json_t *obj, size_t blob_len, size_t nfds,
                          const struct cg_dirty_path *path, size_t *off, size_t *len,
                          const char **text, struct cg_err *err);

/* True when text is -?[0-9]+ (at most 5000 digits): a valid big-int tag. */
int cg_dirty_is_decimal(const char *text, size_t len);

#endif
