/* The arbiter's stash tables: every op of docs/dirty-protocol.md, values
 * with bytes kept intact, error types. */
#include <stdlib.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_stash.h"
#include "cg_test.h"

/* Runs one STASH op (body given as JSON text, plus an optional blob) and
 * returns the parsed reply; *blob_out gets the reply's blob bytes. */
static struct cg_dirty_msg run(struct cg_dirty_stash *s, const char *json,
                               const unsigned char *blob, size_t blob_len,
                               struct cg_dirty_frame *reply)
{
    struct cg_dirty_msg m = { 0 }, out = { 0 };
    struct cg_err err = { { 0 } };
    size_t jlen = strlen(json);
    struct cg_dirty_header h = { .type = CG_DIRTY_STASH, .id = 7, .json_len = (uint32_t)jlen,
                                 .blob_len = (uint32_t)blob_len };
    unsigned char *req = malloc(CG_DIRTY_HEADER_SIZE + jlen + blob_len + 1);

    /* Built by hand: the wire bytes exactly as a client sends them. */
    cg_dirty_header_encode(req, &h);
    memcpy(req + CG_DIRTY_HEADER_SIZE, json, jlen);
    if (blob_len > 0) {
        memcpy(req + CG_DIRTY_HEADER_SIZE + jlen, blob, blob_len);
    }
    CG_CHECK_INT(cg_dirty_msg_parse(req, CG_DIRTY_HEADER_SIZE + jlen + blob_len,
                                    CG_DIRTY_DEFAULT_MAX_MESSAGE, &m, &err), 0);
    if (err.msg[0]) {
        fprintf(stderr, "parse: %s\n", err.msg);
    }
    CG_CHECK_INT(cg_dirty_stash_handle(s, &m, CG_DIRTY_DEFAULT_MAX_MESSAGE, reply, &err), 0);
    CG_CHECK_INT(cg_dirty_msg_parse(reply->data, reply->len, CG_DIRTY_DEFAULT_MAX_MESSAGE, &out,
                                    &err), 0);
    CG_CHECK_INT(out.hdr.id, 7);
    cg_dirty_msg_deinit(&m);
    free(req);
    return out;
}

static char *result_of(struct cg_dirty_stash *s, const char *json)
{
    struct cg_dirty_frame reply = { 0 };
    struct cg_dirty_msg r = run(s, json, NULL, 0, &reply);
    char *text = NULL;
    if (r.hdr.type == CG_DIRTY_RESPONSE) {
        text = json_dumps(json_object_get(r.body, "result"), JSON_COMPACT | JSON_ENCODE_ANY);
    } else {
        text = json_dumps(json_object_get(json_object_get(r.body, "error"), "type"),
                          JSON_ENCODE_ANY);
    }
    cg_dirty_msg_deinit(&r);
    cg_dirty_frame_deinit(&reply);
    return text;
}

#define CHECK_RESULT(s, req, want)                                                         \
    do {                                                                                   \
        char *got_ = result_of(s, req);                                                    \
        CG_CHECK_STR(got_, want);                                                          \
        free(got_);                                                                        \
    } while (0)

static void test_ops(void)
{
    struct cg_dirty_stash s;

    cg_dirty_stash_init(&s);
    CHECK_RESULT(&s, "{\"op\":\"tables\",\"table\":\"\"}", "[]");
    CHECK_RESULT(&s, "{\"op\":\"put\",\"table\":\"t\",\"key\":\"a\",\"value\":[1,{\"x\":2}]}",
                 "true");
    CHECK_RESULT(&s, "{\"op\":\"get\",\"table\":\"t\",\"key\":\"a\"}", "[1,{\"x\":2}]");
    CHECK_RESULT(&s, "{\"op\":\"put\",\"table\":\"t\",\"key\":\"a\",\"value\":3}", "true");
    CHECK_RESULT(&s, "{\"op\":\"get\",\"table\":\"t\",\"key\":\"a\"}", "3");
    CHECK_RESULT(&s, "{\"op\":\"get\",\"table\":\"t\",\"key\":\"zz\"}",
                 "\"StashKeyNotFoundError\"");
    CHECK_RESULT(&s, "{\"op\":\"get\",\"table\":\"none\",\"key\":\"a\"}",
                 "\"StashKeyNotFoundError\"");
    for (int i = 0; i < 200; i++) { /* forces the table to grow */
        char req[128];
        snprintf(req, sizeof(req),
                 "{\"op\":\"put\",\"table\":\"t\",\"key\":\"user:%d\",\"value\":%d}", i, i);
        CHECK_RESULT(&s, req, "true");
    }
    CHECK_RESULT(&s, "{\"op\":\"get\",\"table\":\"t\",\"key\":\"user:150\"}", "150");
    CHECK_RESULT(&s, "{\"op\":\"keys\",\"table\":\"t\",\"pattern\":\"user:1?\"}",
                 "[\"user:10\",\"user:11\",\"user:12\",\"user:13\",\"user:14\",\"user:15\","
                 "\"user:16\",\"user:17\",\"user:18\",\"user:19\"]");
    CHECK_RESULT(&s, "{\"op\":\"info\",\"table\":\"t\"}", "{\"size\":201,\"table\":\"t\"}");
    CHECK_RESULT(&s, "{\"op\":\"info\",\"table\":\"nope\"}", "\"StashTableNotFoundError\"");
    CHECK_RESULT(&s, "{\"op\":\"exists\",\"table\":\"t\",\"key\":\"a\"}", "true");
    CHECK_RESULT(&s, "{\"op\":\"delete\",\"table\":\"t\",\"key\":\"a\"}", "true");
    CHECK_RESULT(&s, "{\"op\":\"delete\",\"table\":\"t\",\"key\":\"a\"}", "false");
    CHECK_RESULT(&s, "{\"op\":\"exists\",\"table\":\"t\",\"key\":\"a\"}", "false");
    CHECK_RESULT(&s, "{\"op\":\"exists\",\"table\":\"t\"}", "true");
    CHECK_RESULT(&s, "{\"op\":\"clear\",\"table\":\"t\"}", "true");
    CHECK_RESULT(&s, "{\"op\":\"keys\",\"table\":\"t\"}", "[]");
    CHECK_RESULT(&s, "{\"op\":\"ensure\",\"table\":\"u\"}", "true");
    CHECK_RESULT(&s, "{\"op\":\"tables\",\"table\":\"\"}", "[\"u\",\"t\"]");
    CHECK_RESULT(&s, "{\"op\":\"delete_table\",\"table\":\"t\"}", "true");
    CHECK_RESULT(&s, "{\"op\":\"delete_table\",\"table\":\"t\"}", "false");
    CHECK_RESULT(&s, "{\"op\":\"exists\",\"table\":\"t\"}", "false");
    CHECK_RESULT(&s, "{\"op\":\"frobnicate\",\"table\":\"t\"}", "\"StashError\"");
    CHECK_RESULT(&s, "{\"op\":\"put\",\"table\":\"t\"}", "\"StashError\"");
    cg_dirty_stash_deinit(&s);
}

/* A bytes value is stored with only the bytes it uses and sent back intact. */
static void test_bytes_value(void)
{
    struct cg_dirty_stash s;
    struct cg_dirty_frame reply = { 0 };
    unsigned char blob[] = "xxxxHELLOyyyy";

    cg_dirty_stash_init(&s);
    struct cg_dirty_msg r = run(&s,
                                "{\"op\":\"put\",\"table\":\"b\",\"key\":\"k\","
                                "\"value\":{\"img\":{\"\\u0000b\":[4,5]}}}",
                                blob, 13, &reply);
    CG_CHECK_INT(r.hdr.type, CG_DIRTY_RESPONSE);
    cg_dirty_msg_deinit(&r);
    cg_dirty_frame_deinit(&reply);

    r = run(&s, "{\"op\":\"get\",\"table\":\"b\",\"key\":\"k\"}", NULL, 0, &reply);
    CG_CHECK_INT(r.hdr.type, CG_DIRTY_RESPONSE);
    CG_CHECK_INT(r.hdr.blob_len, 5);
    CG_CHECK(r.blob != NULL && memcmp(r.blob, "HELLO", 5) == 0);
    cg_dirty_msg_deinit(&r);
    cg_dirty_frame_deinit(&reply);
    cg_dirty_stash_deinit(&s);
}

CG_TEST_MAIN(CG_TEST(test_ops), CG_TEST(test_bytes_value))
