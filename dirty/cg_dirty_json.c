/* A strict JSON parser producing jansson values, for the dirty codec.
 *
 * jansson's own parser refuses object keys containing NUL, and the dirty
 * wire format marks its tags with keys that start with NUL ("\u0000b"), so
 * the codec parses with this one and uses jansson only for the values (its
 * objects do hold NUL keys via json_object_setn). It accepts exactly RFC 8259
 * JSON text: UTF-8 validated, no duplicate keys, integers within int64 (big
 * ints travel tagged), finite numbers, and at most CG_DIRTY_MAX_DEPTH nested
 * containers. It never reads outside [buf, buf + len). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_codec_int.h"

struct parser {
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    struct cg_err *err;
};

static json_t *parse_value(struct parser *ps);

static void fail(struct parser *ps, const char *what)
{
    cg_err_set(ps->err, "malformed JSON body: %s at byte %zu", what, (size_t)(ps->p - ps->start));
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid.
 * Rejects overlong forms, surrogates and code points past U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) {
            return 0;
        }
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)) {
            return 0; /* overlong, or a UTF-16 surrogate */
        }
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) {
            return 0;
        }
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)) {
            return 0;
        }
        return 4;
    }
    return 0;
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return -1;
        }
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape after a backslash at ps->p (pointing at the letter).
 * Writes UTF-8 to o, returns bytes written or 0 on error (err set). */
static size_t parse_escape(struct parser *ps, unsigned char *o)
{
    unsigned cp, lo;

    switch (*ps->p) {
    case '"': case '\\': case '/':
        o[0] = *ps->p++;
        return 1;
    case 'b': o[0] = '\b'; ps->p++; return 1;
    case 'f': o[0] = '\f'; ps->p++; return 1;
    case 'n': o[0] = '\n'; ps->p++; return 1;
    case 'r': o[0] = '\r'; ps->p++; return 1;
    case 't': o[0] = '\t'; ps->p++; return 1;
    case 'u':
        break;
    default:
        fail(ps, "invalid escape in string");
        return 0;
    }
    if (ps->end - ps->p < 5 || hex4(ps->p + 1, &cp) < 0) {
        fail(ps, "invalid \\u escape in string");
        return 0;
    }
    ps->p += 5;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        fail(ps, "lone low surrogate escape in string");
        return 0;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) < 0 ||
            lo < 0xDC00 || lo > 0xDFFF) {
            fail(ps, "lone high surrogate escape in string");
            return 0;
        }
        ps->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return put_utf8(o, cp);
}

/* Parses a string starting at the opening quote. On success *out is a
 * malloc'd buffer (caller frees) of *out_len bytes, NUL-terminated. */
static int parse_string(struct parser *ps, char **out, size_t *out_len)
{
    const unsigned char *q;
    unsigned char *buf = NULL, *o;

    ps->p++; /* opening quote */
    /* The decoded text is never longer than the raw text up to the closing
     * quote, so one allocation sized from a scan is enough. */
    for (q = ps->p; q < ps->end && *q != '"'; q++) {
        if (*q == '\\') {
            q++;
            if (q == ps->end) {
                break;
            }
        }
    }
    if (q >= ps->end) {
        ps->p = ps->end;
        fail(ps, "unterminated string");
        return -1;
    }
    buf = malloc((size_t)(q - ps->p) + 1);
    if (buf == NULL) {
        fail(ps, "out of memory for string");
        return -1;
    }
    o = buf;
    while (*ps->p != '"') {
        unsigned c = *ps->p;
        if (c == '\\') {
            ps->p++;
            size_t n = parse_escape(ps, o);
            if (n == 0) {
                free(buf);
                return -1;
            }
            o += n;
        } else if (c < 0x20) {
            fail(ps, "unescaped control character in string");
            free(buf);
            return -1;
        } else {
            size_t n = utf8_seq_len(ps->p, (size_t)(q - ps->p));
            if (n == 0) {
                fail(ps, "invalid UTF-8 in string");
                free(buf);
                return -1;
            }
            memcpy(o, ps->p, n);
            o += n;
            ps->p += n;
        }
    }
    ps->p++; /* closing quote */
    *o = '\0';
    *out = (char *)buf;
    *out_len = (size_t)(o - buf);
    return 0;
}

static json_t *parse_number(struct parser *ps)
{
    const unsigned char *s = ps->p;
    int is_real = 0;
    char tmp[400];

    if (ps->p < ps->end && *ps->p == '-') {
        ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '0') {
        ps->p++;
    } else if (ps->p < ps->end && *ps->p >= '1' && *ps->p <= '9') {
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            ps->p++;
        }
    } else {
        fail(ps, "invalid number");
        return NULL;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        is_real = 1;
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
            fail(ps, "invalid number (digit expected after '.')");
            return NULL;
        }
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            ps->p++;
        }
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        is_real = 1;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) {
            ps->p++;
        }
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
            fail(ps, "invalid number (digit expected in exponent)");
            return NULL;
        }
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            ps->p++;
        }
    }
    size_t n = (size_t)(ps->p - s);
    if (n >= sizeof(tmp)) {
        ps->p = s;
        fail(ps, "number too long");
        return NULL;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    if (!is_real) {
        long long v = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) {
            ps->p = s;
            fail(ps, "integer outside int64 (big ints travel as {\"\\u0000i\": \"digits\"})");
            return NULL;
        }
        return json_integer(v);
    }
    double d = strtod(tmp, NULL);
    if (errno == ERANGE && (d > 1.0 || d < -1.0)) {
        ps->p = s;
        fail(ps, "number out of range (non-finite floats travel as {\"\\u0000f\": \"inf\"})");
        return NULL;
    }
    return json_real(d);
}

static int expect_literal(struct parser *ps, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) {
        fail(ps, "invalid literal");
        return -1;
    }
    ps->p += n;
    return 0;
}

static json_t *parse_array(struct parser *ps)
{
    json_t *arr = json_array();

    ps->p++; /* '[' */
    if (arr == NULL) {
        fail(ps, "out of memory");
        return NULL;
    }
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return arr;
    }
    for (;;) {
        json_t *v = parse_value(ps);
        if (v == NULL || json_array_append_new(arr, v) < 0) {
            if (v != NULL) {
                fail(ps, "out of memory");
            }
            json_decref(arr);
            return NULL;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return arr;
        }
        fail(ps, "',' or ']' expected in array");
        json_decref(arr);
        return NULL;
    }
}

static json_t *parse_object(struct parser *ps)
{
    json_t *obj = json_object();
    char *key = NULL;
    size_t key_len = 0;

    ps->p++; /* '{' */
    if (obj == NULL) {
        fail(ps, "out of memory");
        return NULL;
    }
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return obj;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') {
            fail(ps, "string key expected in object");
            goto fail;
        }
        const unsigned char *key_at = ps->p;
        if (parse_string(ps, &key, &key_len) < 0) {
            goto fail;
        }
        if (json_object_getn(obj, key, key_len) != NULL) {
            ps->p = key_at;
            fail(ps, "duplicate key in object");
            goto fail;
        }
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') {
            fail(ps, "':' expected after object key");
            goto fail;
        }
        ps->p++;
        json_t *v = parse_value(ps);
        if (v == NULL) {
            goto fail;
        }
        if (json_object_setn_new_nocheck(obj, key, key_len, v) < 0) {
            fail(ps, "out of memory");
            goto fail;
        }
        free(key);
        key = NULL;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return obj;
        }
        fail(ps, "',' or '}' expected in object");
        goto fail;
    }
fail:
    free(key);
    json_decref(obj);
    return NULL;
}

static json_t *parse_value(struct parser *ps)
{
    json_t *v = NULL;
    char *s = NULL;
    size_t n = 0;

    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "value expected, found end of body");
        return NULL;
    }
    switch (*ps->p) {
    case '{':
    case '[':
        /* +3: the body object itself, and a tag's object and array at the deepest level */
        if (++ps->depth > CG_DIRTY_MAX_DEPTH + 3) {
            fail(ps, "containers nested too deep");
            return NULL;
        }
        v = *ps->p == '{' ? parse_object(ps) : parse_array(ps);
        ps->depth--;
        return v;
    case '"':
        if (parse_string(ps, &s, &n) < 0) {
            return NULL;
        }
        v = json_stringn_nocheck(s, n);
        free(s);
        if (v == NULL) {
            fail(ps, "out of memory");
        }
        return v;
    case 't':
        return expect_literal(ps, "true") < 0 ? NULL : json_true();
    case 'f':
        return expect_literal(ps, "false") < 0 ? NULL : json_false();
    case 'n':
        return expect_literal(ps, "null") < 0 ? NULL : json_null();
    default:
        return parse_number(ps);
    }
}

json_t *cg_dirty_json_parse(const unsigned char *buf, size_t len, struct cg_err *err)
{
    struct parser ps = { .start = buf, .p = buf, .end = buf + len, .depth = 0, .err = err };
    json_t *v = parse_value(&ps);

    if (v == NULL) {
        return NULL;
    }
    skip_ws(&ps);
    if (ps.p != ps.end) {
        fail(&ps, "unexpected data after the JSON value");
        json_decref(v);
        return NULL;
    }
    return v;
}
