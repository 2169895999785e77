/* The dirty IPC codec, plain-C half: frame headers, whole-frame build and
 * parse, tag validation, request routing fields and stash value detaching,
 * all without Python (the arbiter uses these). The Python-value half is
 * cg_dirty_codec_py.c; the JSON parser is cg_dirty_json.c. The wire format
 * is specified in cg_dirty_codec.h and docs/dirty-protocol.md. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_codec_int.h"

static const char magic[3] = { 'C', 'G', 'D' };

static const char *const type_names[] = {
    [CG_DIRTY_REQUEST] = "request", [CG_DIRTY_RESPONSE] = "response", [CG_DIRTY_ERROR] = "error",
    [CG_DIRTY_CHUNK] = "chunk",     [CG_DIRTY_END] = "end",           [CG_DIRTY_CANCEL] = "cancel",
    [CG_DIRTY_STASH] = "stash",     [CG_DIRTY_STATUS] = "status",
};

const char *cg_dirty_type_name(int type)
{
    if (type < CG_DIRTY_REQUEST || type > CG_DIRTY_TYPE_MAX) {
        return "unknown";
    }
    return type_names[type];
}

static uint32_t get_be32(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static void put_be64(unsigned char *b, uint64_t v)
{
    put_be32(b, (uint32_t)(v >> 32));
    put_be32(b + 4, (uint32_t)v);
}

int cg_dirty_header_decode(const unsigned char *buf, size_t max_message,
                           struct cg_dirty_header *out, struct cg_err *err)
{
    if (memcmp(buf, magic, sizeof(magic)) != 0) {
        cg_err_set(err, "bad dirty frame: magic is %02x %02x %02x, expected \"CGD\" "
                   "(the peer does not speak the cgunicorn dirty protocol)", buf[0], buf[1], buf[2]);
        return -1;
    }
    if (buf[3] != CG_DIRTY_VERSION) {
        cg_err_set(err, "bad dirty frame: protocol version %u, this build speaks version %d "
                   "(mixed cgunicorn versions?)", buf[3], CG_DIRTY_VERSION);
        return -1;
    }
    if (buf[4] < CG_DIRTY_REQUEST || buf[4] > CG_DIRTY_TYPE_MAX) {
        cg_err_set(err, "bad dirty frame: unknown message type %u (expected 1..%d)", buf[4],
                   CG_DIRTY_TYPE_MAX);
        return -1;
    }
    if (buf[5] > CG_DIRTY_MAX_FDS) {
        cg_err_set(err, "bad dirty frame: %u file descriptors announced, at most %d",
                   buf[5], CG_DIRTY_MAX_FDS);
        return -1;
    }
    if (buf[6] != 0 || buf[7] != 0) {
        cg_err_set(err, "bad dirty frame: reserved bytes 6..7 are not zero");
        return -1;
    }
    out->nfds = buf[5];
    out->type = (enum cg_dirty_type)buf[4];
    out->id = ((uint64_t)get_be32(buf + 8) << 32) | get_be32(buf + 12);
    out->json_len = get_be32(buf + 16);
    out->blob_len = get_be32(buf + 20);
    size_t total = cg_dirty_frame_size(out);
    if (total > max_message) {
        cg_err_set(err, "dirty %s message of %zu bytes exceeds the limit of %zu bytes "
                   "(raise dirty_max_message_size to allow larger messages)",
                   cg_dirty_type_name(out->type), total, max_message);
        return -1;
    }
    if (out->json_len < 2) {
        cg_err_set(err, "bad dirty frame: JSON length %" PRIu32 " is too short for an object",
                   out->json_len);
        return -1;
    }
    return 0;
}

void cg_dirty_header_encode(unsigned char *buf, const struct cg_dirty_header *h)
{
    memcpy(buf, magic, sizeof(magic));
    buf[3] = CG_DIRTY_VERSION;
    buf[4] = (unsigned char)h->type;
    buf[5] = (unsigned char)(h->nfds <= CG_DIRTY_MAX_FDS ? h->nfds : 0);
    buf[6] = buf[7] = 0;
    put_be64(buf + 8, h->id);
    put_be32(buf + 16, h->json_len);
    put_be32(buf + 20, h->blob_len);
}

void cg_dirty_frame_set_id(unsigned char *frame, uint64_t id)
{
    put_be64(frame + 8, id);
}

/* ------------------------------------------------------------------ paths */

void cg_dirty_path_init(struct cg_dirty_path *p, const char *root)
{
    p->len = (size_t)snprintf(p->buf, sizeof(p->buf), "%s", root);
    if (p->len >= sizeof(p->buf)) {
        p->len = sizeof(p->buf) - 1;
    }
}

static void path_append(struct cg_dirty_path *p, const char *s, size_t n)
{
    size_t room = sizeof(p->buf) - 1 - p->len;
    if (n > room) {
        n = room;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

size_t cg_dirty_path_push_key(struct cg_dirty_path *p, const char *key, size_t key_len)
{
    size_t saved = p->len;
    char tmp[48];
    size_t n = 0;

    path_append(p, "['", 2);
    for (size_t i = 0; i < key_len && n < sizeof(tmp) - 3; i++) {
        unsigned char c = (unsigned char)key[i];
        tmp[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (key_len > n) {
        memcpy(tmp + n, "...", 3);
        n += 3;
    }
    path_append(p, tmp, n);
    path_append(p, "']", 2);
    return saved;
}

size_t cg_dirty_path_push_index(struct cg_dirty_path *p, size_t index)
{
    size_t saved = p->len;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "[%zu]", index);

    path_append(p, tmp, (size_t)n);
    return saved;
}

void cg_dirty_path_pop(struct cg_dirty_path *p, size_t saved)
{
    p->len = saved;
    p->buf[saved] = '\0';
}

/* ------------------------------------------------------------------- tags */

int cg_dirty_is_decimal(const char *text, size_t len)
{
    size_t i = 0;

    if (len > 0 && text[0] == '-') {
        i = 1;
    }
    if (i == len || len - i > 5000) {
        return 0;
    }
    for (; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return 0;
        }
    }
    return 1;
}

int cg_dirty_tag_classify(const json_t *obj, size_t blob_len, size_t nfds,
                          const struct cg_dirty_path *path, size_t *off, size_t *len,
                          const char **text, struct cg_err *err)
{
    const char *key = NULL;
    size_t key_len = 0;
    json_t *v = NULL;
    int tagged = 0;

    json_object_keylen_foreach((json_t *)obj, key, key_len, v) {
        if (key_len >= 1 && key[0] == '\0' && !(key_len >= 2 && key[1] == '\0')) {
            tagged = 1;
            break;
        }
    }
    if (!tagged) {
        return CG_DIRTY_TAG_NONE;
    }
    if (json_object_size(obj) != 1 || key_len != 2) {
        cg_err_set(err, "%s: malformed tag (an object with a key starting with NUL must have "
                   "exactly one key \"\\u0000b\", \"\\u0000m\", \"\\u0000i\" or "
                   "\"\\u0000f\")", path->buf);
        return -1;
    }
    switch (key[1]) {
    case 'b': {
        json_t *jo = json_array_get(v, 0), *jl = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(jo) ||
            !json_is_integer(jl) || json_integer_value(jo) < 0 || json_integer_value(jl) < 0) {
            cg_err_set(err, "%s: malformed bytes tag (expected [offset, length])", path->buf);
            return -1;
        }
        uint64_t o = (uint64_t)json_integer_value(jo), l = (uint64_t)json_integer_value(jl);
        if (o > blob_len || l > blob_len - o) {
            cg_err_set(err, "%s: bytes tag [%" PRIu64 ", %" PRIu64 "] lies outside the %zu-byte "
                       "blob section", path->buf, o, l, blob_len);
            return -1;
        }
        *off = (size_t)o;
        *len = (size_t)l;
        return CG_DIRTY_TAG_BYTES;
    }
    case 'm': {
        json_t *jk = json_array_get(v, 0), *jl = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(jk) ||
            !json_is_integer(jl) || json_integer_value(jk) < 0 || json_integer_value(jl) < 0) {
            cg_err_set(err, "%s: malformed memfd tag (expected [fd index, length])", path->buf);
            return -1;
        }
        uint64_t k = (uint64_t)json_integer_value(jk);
        if (k >= nfds) {
            cg_err_set(err, "%s: memfd tag names descriptor #%" PRIu64 " but the frame came "
                       "with %zu", path->buf, k, nfds);
            return -1;
        }
        *off = (size_t)k;
        *len = (size_t)json_integer_value(jl);
        return CG_DIRTY_TAG_MEMFD;
    }
    case 'i':
        if (!json_is_string(v) || !cg_dirty_is_decimal(json_string_value(v), json_string_length(v))) {
            cg_err_set(err, "%s: malformed big-int tag (expected a string of decimal digits)",
                       path->buf);
            return -1;
        }
        *text = json_string_value(v);
        return CG_DIRTY_TAG_INT;
    case 'f':
        if (!json_is_string(v) || (strcmp(json_string_value(v), "nan") != 0 &&
                                   strcmp(json_string_value(v), "inf") != 0 &&
                                   strcmp(json_string_value(v), "-inf") != 0) ||
            json_string_length(v) > 4) {
            cg_err_set(err, "%s: malformed float tag (expected \"nan\", \"inf\" or \"-inf\")",
                       path->buf);
            return -1;
        }
        *text = json_string_value(v);
        return CG_DIRTY_TAG_FLOAT;
    default:
        cg_err_set(err, "%s: unknown tag \"\\u0000%c\" (expected b, m, i or f)", path->buf,
                   (key[1] >= 0x20 && key[1] < 0x7f) ? key[1] : '?');
        return -1;
    }
}

static int check_value(const json_t *v, size_t blob_len, size_t nfds,
                       struct cg_dirty_path *path, struct cg_err *err)
{
    size_t off, len, saved;
    const char *text;

    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            saved = cg_dirty_path_push_index(path, i);
            if (check_value(json_array_get(v, i), blob_len, nfds, path, err) < 0) {
                return -1;
            }
            cg_dirty_path_pop(path, saved);
        }
        return 0;
    }
    if (!json_is_object(v)) {
        return 0;
    }
    int kind = cg_dirty_tag_classify(v, blob_len, nfds, path, &off, &len, &text, err);
    if (kind != CG_DIRTY_TAG_NONE) {
        return kind < 0 ? -1 : 0;
    }
    const char *key;
    size_t key_len;
    json_t *item;
    json_object_keylen_foreach((json_t *)v, key, key_len, item) {
        /* An escaped user key "\0\0..." stands for "\0..." */
        size_t skip = (key_len >= 2 && key[0] == '\0') ? 1 : 0;
        saved = cg_dirty_path_push_key(path, key + skip, key_len - skip);
        if (check_value(item, blob_len, nfds, path, err) < 0) {
            return -1;
        }
        cg_dirty_path_pop(path, saved);
    }
    return 0;
}

int cg_dirty_value_check(const json_t *value, size_t blob_len, struct cg_err *err)
{
    struct cg_dirty_path path;

    cg_dirty_path_init(&path, "value");
    return check_value(value, blob_len, 0, &path, err);
}

/* Checks each top-level member of a body, naming paths from the member. */
static int check_body(const json_t *body, size_t blob_len, size_t nfds, struct cg_err *err)
{
    struct cg_dirty_path path;
    const char *key;
    size_t key_len;
    json_t *item;

    json_object_keylen_foreach((json_t *)body, key, key_len, item) {
        cg_dirty_path_init(&path, "");
        path_append(&path, key, strnlen(key, key_len));
        if (check_value(item, blob_len, nfds, &path, err) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ----------------------------------------------------------------- frames */

void cg_dirty_frame_deinit(struct cg_dirty_frame *f)
{
    if (f == NULL) {
        return;
    }
    free(f->data);
    f->data = NULL;
    f->len = 0;
}

int cg_dirty_frame_build(struct cg_dirty_frame *out, enum cg_dirty_type type, uint64_t id,
                         const json_t *body, const unsigned char *blob, size_t blob_len,
                         size_t max_message, struct cg_err *err)
{
    struct cg_dirty_header h = { .type = type, .id = id };

    out->data = NULL;
    out->len = 0;
    if (!json_is_object(body)) {
        cg_err_set(err, "dirty %s message body must be a JSON object", cg_dirty_type_name(type));
        return -1;
    }
    size_t j = json_dumpb(body, NULL, 0, JSON_COMPACT);
    if (j == 0) {
        cg_err_set(err, "dirty %s message body cannot be serialised", cg_dirty_type_name(type));
        return -1;
    }
    size_t total = CG_DIRTY_HEADER_SIZE + j + blob_len;
    if (total > max_message || j > UINT32_MAX || blob_len > UINT32_MAX) {
        cg_err_set(err, "dirty %s message of %zu bytes exceeds the limit of %zu bytes "
                   "(raise dirty_max_message_size to allow larger messages)",
                   cg_dirty_type_name(type), total, max_message);
        return -1;
    }
    out->data = malloc(total);
    if (out->data == NULL) {
        cg_err_set(err, "out of memory building a %zu-byte dirty %s message", total,
                   cg_dirty_type_name(type));
        return -1;
    }
    if (json_dumpb(body, (char *)out->data + CG_DIRTY_HEADER_SIZE, j, JSON_COMPACT) != j) {
        cg_err_set(err, "dirty %s message body changed size while serialised",
                   cg_dirty_type_name(type));
        cg_dirty_frame_deinit(out);
        return -1;
    }
    h.json_len = (uint32_t)j;
    h.blob_len = (uint32_t)blob_len;
    cg_dirty_header_encode(out->data, &h);
    if (blob_len > 0) {
        memcpy(out->data + CG_DIRTY_HEADER_SIZE + j, blob, blob_len);
    }
    out->len = total;
    return 0;
}

json_t *cg_dirty_body_parse(const unsigned char *json, size_t json_len, size_t blob_len,
                            struct cg_err *err)
{
    return cg_dirty_body_parse_fds(json, json_len, blob_len, 0, err);
}

json_t *cg_dirty_body_parse_fds(const unsigned char *json, size_t json_len, size_t blob_len,
                                size_t nfds, struct cg_err *err)
{
    json_t *body = cg_dirty_json_parse(json, json_len, err);

    if (body == NULL) {
        return NULL;
    }
    if (!json_is_object(body)) {
        cg_err_set(err, "malformed JSON body: expected an object, found another JSON value");
        json_decref(body);
        return NULL;
    }
    if (check_body(body, blob_len, nfds, err) < 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

int cg_dirty_msg_parse(const unsigned char *buf, size_t len, size_t max_message,
                       struct cg_dirty_msg *out, struct cg_err *err)
{
    memset(out, 0, sizeof(*out));
    if (len < CG_DIRTY_HEADER_SIZE) {
        cg_err_set(err, "truncated dirty frame: %zu bytes, shorter than the %d-byte header", len,
                   CG_DIRTY_HEADER_SIZE);
        return -1;
    }
    if (cg_dirty_header_decode(buf, max_message, &out->hdr, err) < 0) {
        return -1;
    }
    size_t want = cg_dirty_frame_size(&out->hdr);
    if (len != want) {
        cg_err_set(err, "%s dirty frame: %zu bytes, the header announces %zu",
                   len < want ? "truncated" : "oversized", len, want);
        return -1;
    }
    out->body = cg_dirty_body_parse_fds(buf + CG_DIRTY_HEADER_SIZE, out->hdr.json_len,
                                        out->hdr.blob_len, out->hdr.nfds, err);
    if (out->body == NULL) {
        return -1;
    }
    out->blob = buf + CG_DIRTY_HEADER_SIZE + out->hdr.json_len;
    return 0;
}

void cg_dirty_msg_deinit(struct cg_dirty_msg *m)
{
    json_decref(m->body);
    m->body = NULL;
}

/* ---------------------------------------------------------------- routing */

int cg_dirty_route_parse(const unsigned char *json, size_t json_len, size_t blob_len,
                         size_t nfds, struct cg_dirty_route *out, struct cg_err *err)
{
    json_t *v;

    memset(out, 0, sizeof(*out));
    out->timeout = -1;
    out->body = cg_dirty_body_parse_fds(json, json_len, blob_len, nfds, err);
    if (out->body == NULL) {
        return -1;
    }
    v = json_object_get(out->body, "app_path");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        cg_err_set(err, "dirty request: \"app_path\" must be a non-empty string like "
                   "\"module:Class\"");
        goto fail;
    }
    out->app_path = json_string_value(v);
    v = json_object_get(out->body, "action");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        cg_err_set(err, "dirty request for %s: \"action\" must be a non-empty string",
                   out->app_path);
        goto fail;
    }
    out->action = json_string_value(v);
    v = json_object_get(out->body, "args");
    if (v != NULL && !json_is_array(v)) {
        cg_err_set(err, "dirty request %s.%s: \"args\" must be a list", out->app_path, out->action);
        goto fail;
    }
    v = json_object_get(out->body, "kwargs");
    if (v != NULL && !json_is_object(v)) {
        cg_err_set(err, "dirty request %s.%s: \"kwargs\" must be an object", out->app_path,
                   out->action);
        goto fail;
    }
    v = json_object_get(out->body, "timeout");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0) {
            cg_err_set(err, "dirty request %s.%s: \"timeout\" must be a positive number of "
                       "seconds", out->app_path, out->action);
            goto fail;
        }
        out->timeout = json_number_value(v);
    }
    out->stream = json_is_true(json_object_get(out->body, "stream"));
    return 0;
fail:
    cg_dirty_route_deinit(out);
    return -1;
}

void cg_dirty_route_deinit(struct cg_dirty_route *r)
{
    json_decref(r->body);
    memset(r, 0, sizeof(*r));
    r->timeout = -1;
}

/* ---------------------------------------------------------------- detach */

struct detach {
    const unsigned char *blob;
    size_t blob_len;
    unsigned char *out;
    size_t len, cap;
    struct cg_dirty_path path;
    struct cg_err *err;
};

static int detach_append(struct detach *d, const unsigned char *p, size_t n)
{
    if (d->cap - d->len < n) {
        size_t cap = d->cap ? d->cap : 256;
        while (cap - d->len < n) {
            cap *= 2;
        }
        unsigned char *grown = realloc(d->out, cap);
        if (grown == NULL) {
            cg_err_set(d->err, "out of memory copying a %zu-byte stash value", n);
            return -1;
        }
        d->out = grown;
        d->cap = cap;
    }
    if (n > 0) {
        memcpy(d->out + d->len, p, n);
    }
    d->len += n;
    return 0;
}

static json_t *detach_value(struct detach *d, const json_t *v)
{
    size_t off, len, saved;
    const char *text;
    json_t *copy = NULL;

    if (json_is_array(v)) {
        copy = json_array();
        for (size_t i = 0; copy != NULL && i < json_array_size(v); i++) {
            saved = cg_dirty_path_push_index(&d->path, i);
            json_t *item = detach_value(d, json_array_get(v, i));
            if (item == NULL || json_array_append_new(copy, item) < 0) {
                json_decref(copy);
                return NULL;
            }
            cg_dirty_path_pop(&d->path, saved);
        }
        return copy;
    }
    if (!json_is_object(v)) {
        return json_deep_copy(v);
    }
    int kind = cg_dirty_tag_classify(v, d->blob_len, 0, &d->path, &off, &len, &text, d->err);
    if (kind < 0) {
        return NULL;
    }
    if (kind == CG_DIRTY_TAG_BYTES) {
        size_t new_off = d->len;
        if (detach_append(d, d->blob + off, len) < 0) {
            return NULL;
        }
        json_t *tag = json_object(), *pair = json_array();
        if (tag == NULL || pair == NULL) {
            json_decref(pair);
            pair = NULL;
        }
        /* json_object_setn_new_nocheck takes pair even when it fails */
        if (pair == NULL ||
            json_array_append_new(pair, json_integer((json_int_t)new_off)) < 0 ||
            json_array_append_new(pair, json_integer((json_int_t)len)) < 0 ||
            json_object_setn_new_nocheck(tag, "\0b", 2, pair) < 0) {
            json_decref(tag);
            cg_err_set(d->err, "out of memory copying a stash value");
            return NULL;
        }
        return tag;
    }
    const char *key;
    size_t key_len;
    json_t *item;
    /* Not json_deep_copy(): jansson 2.14 copies object keys up to their
     * first NUL, which would turn tags and escaped keys into "". Tags and
     * plain objects alike are copied key by key with their full length. */
    copy = json_object();
    json_object_keylen_foreach((json_t *)v, key, key_len, item) {
        if (copy == NULL) {
            break;
        }
        saved = cg_dirty_path_push_key(&d->path, key, key_len);
        json_t *c = detach_value(d, item);
        if (c == NULL || json_object_setn_new_nocheck(copy, key, key_len, c) < 0) {
            json_decref(copy);
            return NULL;
        }
        cg_dirty_path_pop(&d->path, saved);
    }
    return copy;
}

int cg_dirty_value_detach(const json_t *value, const unsigned char *blob, size_t blob_len,
                          json_t **out_value, unsigned char **out_blob, size_t *out_blob_len,
                          struct cg_err *err)
{
    struct detach d = { .blob = blob, .blob_len = blob_len, .err = err };

    cg_dirty_path_init(&d.path, "value");
    *out_value = detach_value(&d, value);
    if (*out_value == NULL) {
        if (err != NULL && err->msg[0] == '\0') {
            cg_err_set(err, "out of memory copying a stash value");
        }
        free(d.out);
        *out_blob = NULL;
        *out_blob_len = 0;
        return -1;
    }
    *out_blob = d.out;
    *out_blob_len = d.len;
    return 0;
}

int cg_dirty_frame_build_error(struct cg_dirty_frame *out, uint64_t id, const char *type,
                               const char *message, const json_t *extra, struct cg_err *err)
{
    json_t *body = NULL, *e = NULL;
    int rc = -1;

    e = json_object();
    body = json_object();
    if (e == NULL || body == NULL || json_object_set_new(body, "error", e) < 0) {
        json_decref(e);
        cg_err_set(err, "out of memory building a dirty error message");
        goto cleanup;
    }
    if (extra != NULL && json_is_object(extra) && json_object_update((json_t *)e,
                                                                     (json_t *)extra) < 0) {
        cg_err_set(err, "cannot add fields to a dirty error message");
        goto cleanup;
    }
    /* type and message are set last so that `extra` cannot override them. */
    if (json_object_set_new(e, "type", json_string(type)) < 0 ||
        json_object_set_new(e, "message", json_string(message)) < 0) {
        cg_err_set(err, "dirty error message: type and message must be UTF-8 strings");
        goto cleanup;
    }
    rc = cg_dirty_frame_build(out, CG_DIRTY_ERROR, id, body, NULL, 0,
                              CG_DIRTY_DEFAULT_MAX_MESSAGE, err);
cleanup:
    json_decref(body);
    return rc;
}
