/* Unit tests for the dirty IPC codec (dirty/cg_dirty_codec*.c, cg_dirty_json.c)
 * and the _cgunicorn_dirty module: round trips of every value type, tags,
 * limits, truncated and corrupted frames, unsupported types. */
#include <Python.h>

#include <math.h>
#include <stdlib.h>

#include "cg_dirty_codec.h"
#include "cg_py_modules.h"
#include "cg_test.h"

static PyObject *globals; /* owned: namespace for eval() */

/* Evaluates a Python expression; new reference (aborts the test run on a
 * broken expression, which is a bug in the test itself). */
static PyObject *eval(const char *expr)
{
    PyObject *v = PyRun_String(expr, Py_eval_input, globals, globals);
    if (v == NULL) {
        PyErr_Print();
        fprintf(stderr, "bad test expression: %s\n", expr);
        exit(2);
    }
    return v;
}

static void run(const char *code)
{
    PyObject *v = PyRun_String(code, Py_file_input, globals, globals);
    if (v == NULL) {
        PyErr_Print();
        fprintf(stderr, "bad test code: %s\n", code);
        exit(2);
    }
    Py_DECREF(v);
}

/* Encodes body as a frame of `type`; new reference or NULL (exception kept). */
static PyObject *encode(PyObject *body, size_t max, enum cg_dirty_enc_error *why)
{
    return cg_dirty_frame_encode_py(CG_DIRTY_RESPONSE, 7, body, max, why);
}

/* Decodes a whole frame (bytes) with the C parser and the Python decoder;
 * new reference to the body dict or NULL. */
static PyObject *decode_frame(PyObject *frame)
{
    struct cg_dirty_msg m;
    struct cg_err err = { { 0 } };
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(frame);
    size_t len = (size_t)PyBytes_GET_SIZE(frame);

    if (cg_dirty_msg_parse(buf, len, CG_DIRTY_DEFAULT_MAX_MESSAGE, &m, &err) < 0) {
        fprintf(stderr, "msg_parse: %s\n", err.msg);
        return NULL;
    }
    cg_dirty_msg_deinit(&m);
    return cg_dirty_body_decode_py(buf + CG_DIRTY_HEADER_SIZE, m.hdr.json_len,
                                   buf + CG_DIRTY_HEADER_SIZE + m.hdr.json_len, m.hdr.blob_len);
}

/* Round-trips {"result": <expr>} and checks the decoded value equals
 * <expect> (a Python expression; "same" repeats expr) by Python's == and
 * by a type-sensitive comparison (bytes stay bytes, bool stays bool). */
static int roundtrip_ok(const char *expr, const char *expect)
{
    char code[4096];
    int ok = 0;
    PyObject *body = NULL, *frame = NULL, *back = NULL, *res = NULL;

    snprintf(code, sizeof(code), "{'result': %s}", expr);
    body = eval(code);
    frame = encode(body, CG_DIRTY_DEFAULT_MAX_MESSAGE, NULL);
    if (frame == NULL) {
        PyErr_Print();
        goto cleanup;
    }
    back = decode_frame(frame);
    if (back == NULL) {
        PyErr_Print();
        goto cleanup;
    }
    if (PyDict_SetItemString(globals, "_back", back) < 0) {
        goto cleanup;
    }
    snprintf(code, sizeof(code), "same_value(_back['result'], %s)",
             strcmp(expect, "same") == 0 ? expr : expect);
    res = eval(code);
    ok = res == Py_True;
    if (!ok) {
        fprintf(stderr, "round trip of %s gave %s\n", expr,
                PyUnicode_AsUTF8(PyObject_Repr(PyDict_GetItemString(back, "result"))));
    }
cleanup:
    Py_XDECREF(body);
    Py_XDECREF(frame);
    Py_XDECREF(back);
    Py_XDECREF(res);
    return ok;
}

/* The scatter-gather encoders (iovecs for the dirty worker, a list of
 * buffers for the client's sendmsg) produce exactly the bytes of the
 * one-buffer encoder, and refuse what it refuses. */
static int iov_same(const char *expr)
{
    char code[4096];
    int ok = 0;
    PyObject *body = NULL, *frame = NULL, *parts = NULL, *joined = NULL;
    struct cg_dirty_py_frame f = { 0 };

    snprintf(code, sizeof(code), "{'data': %s, 'n': 1}", expr);
    body = eval(code);
    frame = cg_dirty_frame_encode_py(CG_DIRTY_CHUNK, 42, body, 1 << 20, NULL);
    if (frame == NULL ||
        cg_dirty_frame_encode_py_iov(CG_DIRTY_CHUNK, 42, body, 1 << 20, NULL, &f, NULL) < 0) {
        PyErr_Print();
        goto cleanup;
    }
    size_t len = (size_t)PyBytes_GET_SIZE(frame), off = 0;
    ok = f.len == len;
    for (int i = 0; ok && i < f.iovcnt; i++) {
        ok = off + f.iov[i].iov_len <= len &&
             memcmp(PyBytes_AS_STRING(frame) + off, f.iov[i].iov_base, f.iov[i].iov_len) == 0;
        off += f.iov[i].iov_len;
    }
    ok = ok && off == len;
    parts = cg_dirty_frame_encode_py_parts(CG_DIRTY_CHUNK, 42, body, 1 << 20, NULL);
    if (parts == NULL || PyDict_SetItemString(globals, "_parts", parts) < 0) {
        PyErr_Print();
        ok = 0;
        goto cleanup;
    }
    joined = eval("b''.join(bytes(memoryview(p).cast('B')) for p in _parts)");
    ok = ok && joined != NULL && PyObject_RichCompareBool(joined, frame, Py_EQ) == 1;
    if (!ok) {
        fprintf(stderr, "scatter-gather encoding of %s differs\n", expr);
    }
cleanup:
    cg_dirty_py_frame_release(&f);
    Py_XDECREF(body);
    Py_XDECREF(frame);
    Py_XDECREF(parts);
    Py_XDECREF(joined);
    return ok;
}

static void test_scatter_gather_encoding(void)
{
    enum cg_dirty_enc_error why = CG_DIRTY_ENC_OTHER;
    struct cg_dirty_py_frame f = { 0 };

    CG_CHECK(iov_same("None"));
    CG_CHECK(iov_same("'text'"));
    CG_CHECK(iov_same("b''"));
    CG_CHECK(iov_same("[b'abc', bytearray(b'de'), memoryview(b'fgh'), b'', {'k': b'\\x00' * 70000}]"));
    CG_CHECK(iov_same("memoryview(bytes(range(256)) * 4).cast('I')"));
    /* refused like encode(): nothing held */
    PyObject *bad = eval("{'data': {1, 2}}");
    CG_CHECK(cg_dirty_frame_encode_py_iov(CG_DIRTY_CHUNK, 1, bad, 1 << 20, NULL, &f, &why) < 0);
    CG_CHECK(why == CG_DIRTY_ENC_UNSUPPORTED && f.iov == NULL && f.priv == NULL);
    PyErr_Clear();
    CG_CHECK(cg_dirty_frame_encode_py_parts(CG_DIRTY_CHUNK, 1, bad, 1 << 20, &why) == NULL);
    CG_CHECK(why == CG_DIRTY_ENC_UNSUPPORTED);
    PyErr_Clear();
    Py_DECREF(bad);
    PyObject *big = eval("{'data': b'x' * 2000}");
    CG_CHECK(cg_dirty_frame_encode_py_iov(CG_DIRTY_CHUNK, 1, big, 1000, NULL, &f, &why) < 0);
    CG_CHECK(why == CG_DIRTY_ENC_TOO_LARGE);
    PyErr_Clear();
    Py_DECREF(big);
}

static void test_roundtrip_scalars(void)
{
    CG_CHECK(roundtrip_ok("None", "same"));
    CG_CHECK(roundtrip_ok("True", "same"));
    CG_CHECK(roundtrip_ok("False", "same"));
    CG_CHECK(roundtrip_ok("0", "same"));
    CG_CHECK(roundtrip_ok("-1", "same"));
    CG_CHECK(roundtrip_ok("2**63 - 1", "same"));
    CG_CHECK(roundtrip_ok("-2**63", "same"));
    CG_CHECK(roundtrip_ok("1.5", "same"));
    CG_CHECK(roundtrip_ok("0.1", "same"));
    CG_CHECK(roundtrip_ok("1e300", "same"));
    CG_CHECK(roundtrip_ok("5e-324", "same"));
    CG_CHECK(roundtrip_ok("1e16", "same"));
    CG_CHECK(roundtrip_ok("-0.0", "same"));
    CG_CHECK(roundtrip_ok("''", "same"));
    CG_CHECK(roundtrip_ok("'h\\u00e9llo \\u2603 \\U0001f600'", "same"));
    CG_CHECK(roundtrip_ok("'quote\" back\\\\ nl\\n tab\\t nul\\x00 ctl\\x1f del\\x7f'", "same"));
    CG_CHECK(roundtrip_ok("b''", "same"));
    CG_CHECK(roundtrip_ok("b'\\x00\\xff binary'", "same"));
    CG_CHECK(roundtrip_ok("bytearray(b'abc')", "b'abc'"));
    CG_CHECK(roundtrip_ok("memoryview(b'xyz')", "b'xyz'"));
    CG_CHECK(roundtrip_ok("IntFlagLike(5)", "5"));
}

static void test_roundtrip_big_ints_and_nonfinite(void)
{
    CG_CHECK(roundtrip_ok("2**63", "same"));
    CG_CHECK(roundtrip_ok("-2**63 - 1", "same"));
    CG_CHECK(roundtrip_ok("2**64", "same"));
    CG_CHECK(roundtrip_ok("10**100", "same"));
    CG_CHECK(roundtrip_ok("-(10**100)", "same"));
    CG_CHECK(roundtrip_ok("[2**70, {'k': -2**80}]", "same"));
    CG_CHECK(roundtrip_ok("float('inf')", "same"));
    CG_CHECK(roundtrip_ok("float('-inf')", "same"));
    CG_CHECK(roundtrip_ok("float('nan')", "same")); /* same_value treats nan as equal */
    CG_CHECK(roundtrip_ok("[float('nan'), {'x': float('-inf')}]", "same"));
}

static void test_roundtrip_containers(void)
{
    CG_CHECK(roundtrip_ok("[]", "same"));
    CG_CHECK(roundtrip_ok("{}", "same"));
    CG_CHECK(roundtrip_ok("()", "[]"));
    CG_CHECK(roundtrip_ok("(1, 'a', (2, 3))", "[1, 'a', [2, 3]]"));
    CG_CHECK(roundtrip_ok("[[[]], {}, [{}], {'a': {}}]", "same"));
    CG_CHECK(roundtrip_ok("{'z': 1, 'a': 2, 'm': [1, 2, 3]}", "same"));
    CG_CHECK(roundtrip_ok("{'img': b'\\x89PNG', 'meta': {'w': 3, 'parts': [b'a', bytearray(b'b'),"
                          " {'deep': memoryview(b'c')}]}, 'after': b''}",
                          "{'img': b'\\x89PNG', 'meta': {'w': 3, 'parts': [b'a', b'b',"
                          " {'deep': b'c'}]}, 'after': b''}"));
    CG_CHECK(roundtrip_ok("[b'x' * 100000, b'y' * 3, 'tail']", "same"));
    CG_CHECK(roundtrip_ok("nested(150)", "same"));
}

static void test_roundtrip_nul_keys(void)
{
    /* Keys starting with NUL could be mistaken for tags: the encoder escapes them. */
    CG_CHECK(roundtrip_ok("{'\\x00b': [0, 1]}", "same"));
    CG_CHECK(roundtrip_ok("{'\\x00i': '123'}", "same"));
    CG_CHECK(roundtrip_ok("{'\\x00\\x00x': 2, '\\x00': 3, 'a\\x00b': 4}", "same"));
    CG_CHECK(roundtrip_ok("{'\\x00f': 'nan', 'other': b'\\x00'}", "same"));
    CG_CHECK(roundtrip_ok("[{'\\x00b': b'raw'}]", "same"));
}

static void test_nesting_limit(void)
{
    enum cg_dirty_enc_error why = 0;
    PyObject *body = eval("{'result': nested(250)}");
    PyObject *frame = encode(body, CG_DIRTY_DEFAULT_MAX_MESSAGE, &why);

    CG_CHECK(frame == NULL);
    CG_CHECK_INT(why, CG_DIRTY_ENC_UNSUPPORTED);
    CG_CHECK(PyErr_ExceptionMatches(PyExc_TypeError));
    PyErr_Clear();
    Py_DECREF(body);

    /* A list that contains itself ends at the depth limit, not in a crash. */
    body = eval("{'args': selfref()}");
    frame = encode(body, CG_DIRTY_DEFAULT_MAX_MESSAGE, &why);
    CG_CHECK(frame == NULL);
    CG_CHECK_INT(why, CG_DIRTY_ENC_UNSUPPORTED);
    PyErr_Clear();
    Py_DECREF(body);

    /* The decoder refuses deeper nesting than the encoder can produce. */
    char json[1200];
    size_t n = 0;
    json[n++] = '{';
    memcpy(json + n, "\"r\":", 4);
    n += 4;
    for (int i = 0; i < 250; i++) {
        json[n++] = '[';
    }
    for (int i = 0; i < 250; i++) {
        json[n++] = ']';
    }
    json[n++] = '}';
    struct cg_err err = { { 0 } };
    json_t *v = cg_dirty_body_parse((const unsigned char *)json, n, 0, &err);
    CG_CHECK(v == NULL);
    CG_CHECK(strstr(err.msg, "nested too deep") != NULL);
}

/* Encodes body, expects a TypeError whose message contains `want`. */
static void check_unsupported(const char *body_expr, const char *want)
{
    enum cg_dirty_enc_error why = 0;
    PyObject *body = eval(body_expr);
    PyObject *frame = encode(body, CG_DIRTY_DEFAULT_MAX_MESSAGE, &why);
    PyObject *type = NULL, *value = NULL, *tb = NULL;

    CG_CHECK(frame == NULL);
    CG_CHECK_INT(why, CG_DIRTY_ENC_UNSUPPORTED);
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    CG_CHECK(type == PyExc_TypeError);
    PyObject *s = value ? PyObject_Str(value) : NULL;
    const char *msg = s ? PyUnicode_AsUTF8(s) : "";
    if (strstr(msg, want) == NULL) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, want);
        CG_CHECK(!"message names the type and path");
    }
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    Py_XDECREF(frame);
    Py_DECREF(body);
}

static void test_unsupported_types(void)
{
    check_unsupported("{'args': [1, {'img': Image()}]}",
                      "args[1]['img']: cannot send object of type 'Image' to a dirty app; "
                      "convert it to bytes, str, int, float, bool, None, list or dict");
    check_unsupported("{'result': object()}", "result: cannot send object of type 'object'");
    check_unsupported("{'kwargs': {'when': __import__('datetime').date(2020, 1, 1)}}",
                      "kwargs['when']: cannot send object of type 'datetime.date'");
    check_unsupported("{'data': {1, 2}}", "data: cannot send object of type 'set'");
    check_unsupported("{'data': [1j]}", "data[0]: cannot send object of type 'complex'");
    check_unsupported("{'data': {1: 'x'}}", "data: dict key of type 'int'");
    check_unsupported("{'data': ['\\ud800']}", "data[0]: str cannot be encoded as UTF-8");
    check_unsupported("{'data': memoryview(b'abcdef')[::2]}", "non-contiguous memoryview");
    check_unsupported("{1: 2}", "body keys must be str");
}

static void test_size_limit(void)
{
    enum cg_dirty_enc_error why = 0;
    PyObject *body = eval("{'result': b'x' * 5000}");
    PyObject *frame = encode(body, 4096, &why);
    PyObject *type = NULL, *value = NULL, *tb = NULL;

    CG_CHECK(frame == NULL);
    CG_CHECK_INT(why, CG_DIRTY_ENC_TOO_LARGE);
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    CG_CHECK(type == PyExc_ValueError);
    PyObject *s = PyObject_Str(value);
    const char *msg = PyUnicode_AsUTF8(s);
    CG_CHECK(strstr(msg, "4096") != NULL);
    CG_CHECK(strstr(msg, "dirty_max_message_size") != NULL);
    CG_CHECK(strstr(msg, "5") != NULL);
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);

    /* A large str (JSON side) hits the limit as well. */
    Py_DECREF(body);
    body = eval("{'result': 'y' * 10000}");
    frame = encode(body, 4096, &why);
    CG_CHECK(frame == NULL);
    CG_CHECK_INT(why, CG_DIRTY_ENC_TOO_LARGE);
    PyErr_Clear();

    /* Exactly at the limit is fine; one byte below is not. */
    Py_DECREF(body);
    body = eval("{'result': b'z' * 1000}");
    frame = encode(body, CG_DIRTY_DEFAULT_MAX_MESSAGE, NULL);
    CG_CHECK(frame != NULL);
    size_t exact = (size_t)PyBytes_GET_SIZE(frame);
    Py_XDECREF(frame);
    frame = encode(body, exact, NULL);
    CG_CHECK(frame != NULL);
    Py_XDECREF(frame);
    frame = encode(body, exact - 1, &why);
    CG_CHECK(frame == NULL);
    CG_CHECK_INT(why, CG_DIRTY_ENC_TOO_LARGE);
    PyErr_Clear();
    Py_DECREF(body);

    /* The header decoder enforces the limit on incoming frames too. */
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    struct cg_dirty_header h = { .type = CG_DIRTY_CHUNK, .id = 1, .json_len = 100,
                                 .blob_len = 1000 }, out;
    struct cg_err err = { { 0 } };
    cg_dirty_header_encode(hdr, &h);
    CG_CHECK(cg_dirty_header_decode(hdr, 1124, &out, &err) == 0);
    CG_CHECK(cg_dirty_header_decode(hdr, 1123, &out, &err) < 0);
    CG_CHECK(strstr(err.msg, "1124 bytes exceeds the limit of 1123") != NULL);
    CG_CHECK(strstr(err.msg, "dirty_max_message_size") != NULL);
}

static void test_header(void)
{
    unsigned char buf[CG_DIRTY_HEADER_SIZE];
    struct cg_dirty_header h = { .type = CG_DIRTY_STASH, .id = 0x0102030405060708ULL,
                                 .json_len = 0x11223344, .blob_len = 0x55 }, out;
    struct cg_err err = { { 0 } };
    static const unsigned char expect[CG_DIRTY_HEADER_SIZE] = {
        'C', 'G', 'D', 1, 7, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0x55,
    };

    cg_dirty_header_encode(buf, &h);
    CG_CHECK(memcmp(buf, expect, sizeof(expect)) == 0);
    CG_CHECK(cg_dirty_header_decode(buf, SIZE_MAX, &out, &err) == 0);
    CG_CHECK_INT(out.type, CG_DIRTY_STASH);
    CG_CHECK(out.id == h.id);
    CG_CHECK_INT(out.json_len, 0x11223344);
    CG_CHECK_INT(out.blob_len, 0x55);
    cg_dirty_frame_set_id(buf, 42);
    CG_CHECK(cg_dirty_header_decode(buf, SIZE_MAX, &out, &err) == 0);
    CG_CHECK(out.id == 42);
    CG_CHECK_STR(cg_dirty_type_name(CG_DIRTY_CANCEL), "cancel");
    CG_CHECK_STR(cg_dirty_type_name(99), "unknown");

    struct {
        int at;
        unsigned char value;
        const char *want;
    } bad[] = {
        { 0, 'X', "magic" },        { 2, 'E', "magic" },          { 3, 2, "version 2" },
        { 4, 0, "message type 0" }, { 4, 9, "message type 9" }, { 6, 1, "reserved" },
        { 5, 65, "file descriptors" },
        { 7, 0x80, "reserved" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cg_dirty_header_encode(buf, &h);
        buf[bad[i].at] = bad[i].value;
        err.msg[0] = '\0';
        CG_CHECK(cg_dirty_header_decode(buf, SIZE_MAX, &out, &err) < 0);
        if (strstr(err.msg, bad[i].want) == NULL) {
            fprintf(stderr, "byte %d = %u: \"%s\" lacks \"%s\"\n", bad[i].at, bad[i].value,
                    err.msg, bad[i].want);
            CG_CHECK(!"header error names the problem");
        }
    }
    h.json_len = 1; /* cannot hold an object */
    cg_dirty_header_encode(buf, &h);
    CG_CHECK(cg_dirty_header_decode(buf, SIZE_MAX, &out, &err) < 0);
}

/* A valid frame with bytes, big ints, nan and nested values, for the
 * truncation and corruption tests. New reference. */
static PyObject *sample_frame(void)
{
    PyObject *body = eval("{'app_path': 'm:App', 'action': 'go', 'args': [b'\\x01\\x02\\x03', "
                          "10**30, float('nan'), {'k': [b'zz', None, True]}], "
                          "'kwargs': {'\\x00n': 'v', 'b': b'q'}, 'timeout': 2.5}");
    PyObject *frame = cg_dirty_frame_encode_py(CG_DIRTY_REQUEST, 99, body,
                                               CG_DIRTY_DEFAULT_MAX_MESSAGE, NULL);
    Py_DECREF(body);
    return frame;
}

static void test_truncated_prefixes(void)
{
    PyObject *frame = sample_frame();
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(frame);
    size_t len = (size_t)PyBytes_GET_SIZE(frame);
    struct cg_dirty_msg m;
    struct cg_err err;

    CG_CHECK(cg_dirty_msg_parse(buf, len, CG_DIRTY_DEFAULT_MAX_MESSAGE, &m, &err) == 0);
    cg_dirty_msg_deinit(&m);
    for (size_t n = 0; n < len; n++) {
        /* A heap copy of exactly n bytes, so that an over-read is caught by ASan. */
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        CG_CHECK(cg_dirty_msg_parse(copy, n, CG_DIRTY_DEFAULT_MAX_MESSAGE, &m, &err) < 0);
        CG_CHECK(m.body == NULL);
        free(copy);
    }
    /* Truncating the body part (J + B) as the Python decoder sees it. */
    struct cg_dirty_header h;
    CG_CHECK(cg_dirty_header_decode(buf, SIZE_MAX, &h, &err) == 0);
    for (size_t j = 0; j < h.json_len; j++) {
        unsigned char *copy = malloc(j ? j : 1);
        memcpy(copy, buf + CG_DIRTY_HEADER_SIZE, j);
        PyObject *v = cg_dirty_body_decode_py(copy, j, copy + j, 0);
        CG_CHECK(v == NULL);
        CG_CHECK(v != NULL || PyErr_ExceptionMatches(PyExc_ValueError));
        PyErr_Clear();
        free(copy);
    }
    /* Blob cut short: the bytes tags now point past its end. */
    PyObject *v = cg_dirty_body_decode_py(buf + CG_DIRTY_HEADER_SIZE, h.json_len,
                                          buf + CG_DIRTY_HEADER_SIZE + h.json_len,
                                          h.blob_len - 1);
    CG_CHECK(v == NULL);
    PyErr_Clear();
    /* One byte too many is refused as well. */
    unsigned char *big = malloc(len + 1);
    memcpy(big, buf, len);
    big[len] = 0;
    CG_CHECK(cg_dirty_msg_parse(big, len + 1, CG_DIRTY_DEFAULT_MAX_MESSAGE, &m, &err) < 0);
    free(big);
    Py_DECREF(frame);
}

static void test_corrupted_bytes(void)
{
    PyObject *frame = sample_frame();
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(frame);
    size_t len = (size_t)PyBytes_GET_SIZE(frame);
    static const unsigned char values[] = { 0x00, 0x01, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d,
                                            0x3a, 0x2c, 0x30, 0x80, 0xc3, 0xff };
    struct cg_dirty_msg m;
    struct cg_err err;
    int parsed = 0, refused = 0;

    /* Every byte, replaced by each of the values: the parser either refuses
     * the frame or yields a body whose every value decodes; never a crash. */
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k < sizeof(values); k++) {
            unsigned char *copy = malloc(len);
            memcpy(copy, buf, len);
            copy[i] = values[k];
            if (cg_dirty_msg_parse(copy, len, CG_DIRTY_DEFAULT_MAX_MESSAGE, &m, &err) == 0) {
                PyObject *v = cg_dirty_body_decode_py(copy + CG_DIRTY_HEADER_SIZE,
                                                      m.hdr.json_len,
                                                      m.blob, m.hdr.blob_len);
                CG_CHECK(v != NULL);
                PyErr_Clear();
                Py_XDECREF(v);
                cg_dirty_msg_deinit(&m);
                parsed++;
            } else {
                CG_CHECK(err.msg[0] != '\0');
                refused++;
            }
            free(copy);
        }
    }
    CG_CHECK(parsed > 0);
    CG_CHECK(refused > 0);
    Py_DECREF(frame);
}

/* Parses a JSON body text against a blob of blob_len bytes; expects failure
 * with `want` in the message. */
static void check_bad_body(const char *json, size_t blob_len, const char *want)
{
    struct cg_err err = { { 0 } };
    json_t *v = cg_dirty_body_parse((const unsigned char *)json, strlen(json), blob_len, &err);

    CG_CHECK(v == NULL);
    if (v == NULL && strstr(err.msg, want) == NULL) {
        fprintf(stderr, "%s: \"%s\" lacks \"%s\"\n", json, err.msg, want);
        CG_CHECK(!"body error names the problem");
    }
    json_decref(v);
    /* The Python decoder refuses the same body with a ValueError. */
    unsigned char blob[64] = { 0 };
    PyObject *p = cg_dirty_body_decode_py((const unsigned char *)json, strlen(json), blob,
                                          blob_len);
    CG_CHECK(p == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
    PyErr_Clear();
    Py_XDECREF(p);
}

static void test_bad_bodies(void)
{
    check_bad_body("[1,2]", 0, "expected an object");
    check_bad_body("\"s\"", 0, "expected an object");
    check_bad_body("{\"a\":1", 0, "expected in object");
    check_bad_body("{\"a\":1}x", 0, "unexpected data");
    check_bad_body("{\"a\":1,\"a\":2}", 0, "duplicate key");
    check_bad_body("{\"a\":01}", 0, "expected in object");
    check_bad_body("{\"a\":1.}", 0, "digit expected");
    check_bad_body("{\"a\":99999999999999999999}", 0, "outside int64");
    check_bad_body("{\"a\":1e999}", 0, "out of range");
    check_bad_body("{\"a\":NaN}", 0, "invalid number");
    check_bad_body("{\"a\":\"\xff\"}", 0, "invalid UTF-8");
    check_bad_body("{\"a\":\"\xed\xa0\x80\"}", 0, "invalid UTF-8");
    check_bad_body("{\"a\":\"\\ud800\"}", 0, "surrogate");
    check_bad_body("{\"a\":\"\\x\"}", 0, "invalid escape");
    check_bad_body("{\"a\":\"tab\there\"}", 0, "control character");
    check_bad_body("{\"a\":tru}", 0, "invalid literal");
    check_bad_body("{\"a\":{\"\\u0000b\":[0,5]}}", 4, "outside the 4-byte blob");
    check_bad_body("{\"a\":{\"\\u0000b\":[3,2]}}", 4, "outside the 4-byte blob");
    check_bad_body("{\"a\":{\"\\u0000b\":[-1,2]}}", 4, "malformed bytes tag");
    check_bad_body("{\"a\":{\"\\u0000b\":[0]}}", 4, "malformed bytes tag");
    check_bad_body("{\"a\":{\"\\u0000b\":\"x\"}}", 4, "malformed bytes tag");
    check_bad_body("{\"a\":[{\"\\u0000b\":[0,1],\"x\":1}]}", 4, "a[0]: malformed tag");
    check_bad_body("{\"a\":{\"\\u0000q\":1}}", 0, "unknown tag");
    check_bad_body("{\"a\":{\"\\u0000bb\":[0,0]}}", 0, "malformed tag");
    check_bad_body("{\"a\":{\"\\u0000i\":\"12a\"}}", 0, "malformed big-int tag");
    check_bad_body("{\"a\":{\"\\u0000i\":5}}", 0, "malformed big-int tag");
    check_bad_body("{\"a\":{\"\\u0000f\":\"nanx\"}}", 0, "malformed float tag");
    check_bad_body("{\"a\":{\"k\":{\"\\u0000f\":1}}}", 0, "a['k']: malformed float tag");

    /* A user key escaped as "\0\0..." is not a tag. */
    struct cg_err err = { { 0 } };
    const char *ok = "{\"a\":{\"\\u0000\\u0000b\":[0,99]}}";
    json_t *v = cg_dirty_body_parse((const unsigned char *)ok, strlen(ok), 0, &err);
    CG_CHECK(v != NULL);
    json_decref(v);
}

static void test_route_parse(void)
{
    PyObject *frame = sample_frame();
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(frame);
    struct cg_dirty_header h;
    struct cg_dirty_route r;
    struct cg_err err = { { 0 } };

    CG_CHECK(cg_dirty_header_decode(buf, SIZE_MAX, &h, &err) == 0);
    CG_CHECK(cg_dirty_route_parse(buf + CG_DIRTY_HEADER_SIZE, h.json_len, h.blob_len, 0, &r,
                                  &err) == 0);
    CG_CHECK_STR(r.app_path, "m:App");
    CG_CHECK_STR(r.action, "go");
    CG_CHECK(r.timeout == 2.5);
    CG_CHECK_INT(r.stream, 0);
    cg_dirty_route_deinit(&r);
    Py_DECREF(frame);

    struct {
        const char *json;
        const char *want;
    } bad[] = {
        { "{\"action\":\"a\"}", "\"app_path\" must be" },
        { "{\"app_path\":\"\",\"action\":\"a\"}", "\"app_path\" must be" },
        { "{\"app_path\":\"m:A\"}", "\"action\" must be" },
        { "{\"app_path\":\"m:A\",\"action\":\"a\",\"args\":{}}", "\"args\" must be a list" },
        { "{\"app_path\":\"m:A\",\"action\":\"a\",\"kwargs\":[]}", "\"kwargs\" must be" },
        { "{\"app_path\":\"m:A\",\"action\":\"a\",\"timeout\":0}", "\"timeout\" must be" },
        { "{\"app_path\":\"m:A\",\"action\":\"a\",\"timeout\":\"1\"}", "\"timeout\" must be" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        CG_CHECK(cg_dirty_route_parse((const unsigned char *)bad[i].json, strlen(bad[i].json), 0,
                                      0, &r, &err) < 0);
        CG_CHECK(r.body == NULL);
        if (strstr(err.msg, bad[i].want) == NULL) {
            fprintf(stderr, "%s: \"%s\" lacks \"%s\"\n", bad[i].json, err.msg, bad[i].want);
            CG_CHECK(!"route error names the field");
        }
    }
    const char *streaming = "{\"app_path\":\"m:A\",\"action\":\"a\",\"stream\":true}";
    CG_CHECK(cg_dirty_route_parse((const unsigned char *)streaming, strlen(streaming), 0, 0, &r,
                                  &err) == 0);
    CG_CHECK_INT(r.stream, 1);
    CG_CHECK(r.timeout < 0);
    cg_dirty_route_deinit(&r);
}

/* The arbiter's stash path: take a value out of one frame, send it in another. */
static void test_detach_and_build(void)
{
    PyObject *body = eval("{'op': 'put', 'table': 't', 'key': 'k', "
                          "'value': {'a': b'AAAA', 'n': [b'', 10**40, b'BB', float('nan')], "
                          "'\\x00esc': {'\\x00b': 1}}, "
                          "'pad': b'P' * 1000}");
    PyObject *frame = cg_dirty_frame_encode_py(CG_DIRTY_STASH, 5, body,
                                               CG_DIRTY_DEFAULT_MAX_MESSAGE, NULL);
    struct cg_dirty_msg m;
    struct cg_err err = { { 0 } };
    json_t *value = NULL;
    unsigned char *blob = NULL;
    size_t blob_len = 0;

    CG_CHECK(frame != NULL);
    CG_CHECK(cg_dirty_msg_parse((const unsigned char *)PyBytes_AS_STRING(frame),
                                (size_t)PyBytes_GET_SIZE(frame), CG_DIRTY_DEFAULT_MAX_MESSAGE, &m,
                                &err) == 0);
    CG_CHECK(cg_dirty_value_detach(json_object_get(m.body, "value"), m.blob, m.hdr.blob_len,
                                   &value, &blob, &blob_len, &err) == 0);
    CG_CHECK_INT(blob_len, 6); /* only the bytes the value uses, not 'pad' */
    cg_dirty_msg_deinit(&m);
    Py_DECREF(frame); /* the detached value no longer needs the frame */

    json_t *reply = json_object();
    json_object_set(reply, "result", value);
    struct cg_dirty_frame out = { 0 };
    CG_CHECK(cg_dirty_frame_build(&out, CG_DIRTY_RESPONSE, 5, reply, blob, blob_len,
                                  CG_DIRTY_DEFAULT_MAX_MESSAGE, &err) == 0);
    PyObject *back = cg_dirty_body_decode_py(out.data + CG_DIRTY_HEADER_SIZE,
                                             out.len - CG_DIRTY_HEADER_SIZE - blob_len,
                                             out.data + out.len - blob_len, blob_len);
    CG_CHECK(back != NULL);
    PyObject *expect = eval("{'result': {'a': b'AAAA', 'n': [b'', 10**40, b'BB', float('nan')], "
                            "'\\x00esc': {'\\x00b': 1}}}");
    PyDict_SetItemString(globals, "_back", back);
    PyDict_SetItemString(globals, "_expect", expect);
    PyObject *same = eval("same_value(_back, _expect)");
    CG_CHECK(same == Py_True);
    Py_DECREF(same);
    /* The limit applies to built frames too. */
    struct cg_dirty_frame small = { 0 };
    CG_CHECK(cg_dirty_frame_build(&small, CG_DIRTY_RESPONSE, 5, reply, blob, blob_len, 30,
                                  &err) < 0);
    CG_CHECK(strstr(err.msg, "dirty_max_message_size") != NULL);
    CG_CHECK(small.data == NULL);

    cg_dirty_frame_deinit(&out);
    cg_dirty_frame_deinit(&out); /* idempotent */
    Py_XDECREF(back);
    Py_DECREF(expect);
    Py_DECREF(body);
    json_decref(reply);
    json_decref(value);
    free(blob);
}

static void test_build_error(void)
{
    struct cg_dirty_frame out = { 0 };
    struct cg_err err = { { 0 } };
    json_t *extra = json_pack("{ss}", "app_path", "m:App");

    CG_CHECK(cg_dirty_frame_build_error(&out, 12, "DirtyNoWorkersAvailableError",
                                        "No workers available for app: m:App", extra, &err) == 0);
    PyObject *back = cg_dirty_body_decode_py(out.data + CG_DIRTY_HEADER_SIZE,
                                             out.len - CG_DIRTY_HEADER_SIZE, NULL, 0);
    PyObject *expect = eval("{'error': {'app_path': 'm:App', 'type': "
                            "'DirtyNoWorkersAvailableError', "
                            "'message': 'No workers available for app: m:App'}}");
    CG_CHECK(back != NULL && PyObject_RichCompareBool(back, expect, Py_EQ) == 1);
    struct cg_dirty_header h;
    CG_CHECK(cg_dirty_header_decode(out.data, SIZE_MAX, &h, &err) == 0);
    CG_CHECK_INT(h.type, CG_DIRTY_ERROR);
    CG_CHECK(h.id == 12);
    Py_XDECREF(back);
    Py_DECREF(expect);
    json_decref(extra);
    cg_dirty_frame_deinit(&out);
}

/* The JSON the encoder writes: compact, tags as the header comment shows. */
static void test_wire_text(void)
{
    PyObject *body = eval("{'result': [1, 2**64, b'ab', float('-inf'), {'\\x00k': b'c'}]}");
    PyObject *frame = encode(body, CG_DIRTY_DEFAULT_MAX_MESSAGE, NULL);
    const char *p = PyBytes_AS_STRING(frame);
    const char *want = "{\"result\":[1,{\"\\u0000i\":\"18446744073709551616\"},"
                       "{\"\\u0000b\":[0,2]},{\"\\u0000f\":\"-inf\"},"
                       "{\"\\u0000\\u0000k\":{\"\\u0000b\":[2,1]}}]}";
    struct cg_dirty_header h;
    struct cg_err err;

    CG_CHECK(cg_dirty_header_decode((const unsigned char *)p, SIZE_MAX, &h, &err) == 0);
    CG_CHECK_INT(h.json_len, strlen(want));
    CG_CHECK(h.json_len == strlen(want) &&
             memcmp(p + CG_DIRTY_HEADER_SIZE, want, strlen(want)) == 0);
    CG_CHECK_INT(h.blob_len, 3);
    CG_CHECK(memcmp(p + CG_DIRTY_HEADER_SIZE + h.json_len, "abc", 3) == 0);
    CG_CHECK_INT(h.type, CG_DIRTY_RESPONSE);
    CG_CHECK(h.id == 7);
    Py_DECREF(frame);
    Py_DECREF(body);
}

/* The builtin module, as Python code inside the binary uses it. */
static void test_module(void)
{
    run("import _cgunicorn_dirty as d\n"
        "f = d.encode(d.REQUEST, 2**64 - 1, {'app_path': 'a:B', 'action': 'x', "
        "'args': [b'\\x00' * 10], 'kwargs': {}})\n"
        "t, i, j, b = d.decode_header(f[:d.HEADER_SIZE])\n"
        "ok1 = (t, i, b) == (d.REQUEST, 2**64 - 1, 10) and j + b + 24 == len(f)\n"
        "body = d.decode_body(memoryview(f)[d.HEADER_SIZE:], j)\n"
        "ok2 = body['args'] == [b'\\x00' * 10] and body['kwargs'] == {}\n"
        "try:\n"
        "    d.encode(d.RESPONSE, 1, {'result': [Image()]})\n"
        "    ok3 = False\n"
        "except d.UnsupportedValueError as e:\n"
        "    ok3 = isinstance(e, TypeError) and \"result[0]: cannot send object of type 'Image'\" in str(e)\n"
        "try:\n"
        "    d.encode(d.RESPONSE, 1, {'result': b'x' * 100}, max_message=64)\n"
        "    ok4 = False\n"
        "except d.MessageTooLargeError as e:\n"
        "    ok4 = isinstance(e, ValueError) and 'dirty_max_message_size' in str(e)\n"
        "try:\n"
        "    d.decode_header(b'XXXX' + bytes(20))\n"
        "    ok5 = False\n"
        "except ValueError as e:\n"
        "    ok5 = 'magic' in str(e)\n"
        "try:\n"
        "    d.decode_header(f[:10])\n"
        "    ok6 = False\n"
        "except ValueError as e:\n"
        "    ok6 = 'truncated' in str(e)\n"
        "try:\n"
        "    d.decode_header(f[:24], max_message=30)\n"
        "    ok7 = False\n"
        "except ValueError as e:\n"
        "    ok7 = 'exceeds the limit of 30' in str(e)\n"
        "try:\n"
        "    d.decode_body(b'{}', 5)\n"
        "    ok8 = False\n"
        "except ValueError:\n"
        "    ok8 = True\n"
        "ok9 = d.type_name(d.CHUNK) == 'chunk' and d.END == 5 and d.CANCEL == 6\n");
    const char *names[] = { "ok1", "ok2", "ok3", "ok4", "ok5", "ok6", "ok7", "ok8", "ok9" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        PyObject *v = PyDict_GetItemString(globals, names[i]); /* borrowed */
        if (v != Py_True) {
            fprintf(stderr, "module check %s failed\n", names[i]);
        }
        CG_CHECK(v == Py_True);
    }
}

static void setup(void)
{
    struct cg_err err = { { 0 } };

    if (cg_py_modules_register(&err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    Py_Initialize();
    globals = PyDict_New();
    PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
    run("import math\n"
        "class Image:\n"
        "    pass\n"
        "class IntFlagLike(int):\n"
        "    def __repr__(self):\n"
        "        raise RuntimeError('must not be called')\n"
        "def nested(n):\n"
        "    v = []\n"
        "    for _ in range(n - 1):\n"
        "        v = [v]\n"
        "    return v\n"
        "def selfref():\n"
        "    v = [1]\n"
        "    v.append(v)\n"
        "    return v\n"
        "def same_value(a, b):\n"
        "    if type(a) is not type(b):\n"
        "        return False\n"
        "    if isinstance(a, float):\n"
        "        if math.isnan(a) or math.isnan(b):\n"
        "            return math.isnan(a) and math.isnan(b)\n"
        "        return a == b and math.copysign(1, a) == math.copysign(1, b)\n"
        "    if isinstance(a, list):\n"
        "        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))\n"
        "    if isinstance(a, dict):\n"
        "        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)\n"
        "    return a == b\n");
}

static void test_setup_sanity(void)
{
    /* same_value itself must tell values apart, or every round trip passes. */
    PyObject *v = eval("(same_value(1, True), same_value(b'a', 'a'), same_value(0.0, -0.0), "
                       "same_value([1], (1,)), same_value({'a': 1, 'b': 2}, {'b': 2, 'a': 1}), "
                       "same_value(float('nan'), float('nan')))");
    PyObject *expect = eval("(False, False, False, False, False, True)");
    CG_CHECK(PyObject_RichCompareBool(v, expect, Py_EQ) == 1);
    Py_DECREF(v);
    Py_DECREF(expect);
}

static const struct cg_test_case cases[] = {
    CG_TEST(test_setup_sanity),
    CG_TEST(test_header),
    CG_TEST(test_roundtrip_scalars),
    CG_TEST(test_roundtrip_big_ints_and_nonfinite),
    CG_TEST(test_roundtrip_containers),
    CG_TEST(test_roundtrip_nul_keys),
    CG_TEST(test_nesting_limit),
    CG_TEST(test_unsupported_types),
    CG_TEST(test_size_limit),
    CG_TEST(test_wire_text),
    CG_TEST(test_truncated_prefixes),
    CG_TEST(test_corrupted_bytes),
    CG_TEST(test_bad_bodies),
    CG_TEST(test_route_parse),
    CG_TEST(test_detach_and_build),
    CG_TEST(test_build_error),
    CG_TEST(test_module),
    CG_TEST(test_scatter_gather_encoding),
};

int main(void)
{
    setup();
    int rc = cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
    Py_DECREF(globals);
    Py_Finalize();
    return rc;
}
