/* Value equality for the dirty targets. jansson's json_equal() looks object
 * keys up by C string, so keys with a NUL (the codec's tags) never compare
 * equal; two values are the same here when their compact dumps are. */
#ifndef CG_FUZZ_JSON_SAME_H
#define CG_FUZZ_JSON_SAME_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Returns a malloc'd compact dump of v and its length in *n, or NULL. */
static inline char *fuzz_json_dump(const json_t *v, size_t *n)
{
    size_t len = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    char *buf = len > 0 ? malloc(len) : NULL;
    if (buf != NULL && json_dumpb(v, buf, len, JSON_COMPACT | JSON_ENCODE_ANY) != len) {
        free(buf);
        buf = NULL;
    }
    *n = len;
    return buf;
}

static inline bool fuzz_json_same(const json_t *a, const json_t *b)
{
    size_t na = 0, nb = 0;
    char *da = fuzz_json_dump(a, &na);
    char *db = fuzz_json_dump(b, &nb);
    bool same = da != NULL && db != NULL && na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

#endif
