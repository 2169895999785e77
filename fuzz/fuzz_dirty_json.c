/* libFuzzer target: the strict JSON parser of the dirty codec (UTF-8,
 * escapes and surrogates, numbers, depth limit, duplicate keys). A value it
 * accepts must survive a dump by jansson and a second parse unchanged
 * (the codec builds frames with jansson's dump and reads them with this). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_codec_int.h"
#include "fuzz_json_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cg_err err;
    memset(&err, 0, sizeof(err));
    json_t *v = cg_dirty_json_parse(data, size, &err);
    if (v == NULL) {
        return 0;
    }
    size_t n = 0;
    char *buf = fuzz_json_dump(v, &n);
    if (buf != NULL) {
        json_t *again = cg_dirty_json_parse((const unsigned char *)buf, n, &err);
        if (again == NULL || !fuzz_json_same(v, again)) {
            __builtin_trap();
        }
        json_decref(again);
        free(buf);
    }
    json_decref(v);
    return 0;
}
