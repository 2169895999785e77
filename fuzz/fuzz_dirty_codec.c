/* libFuzzer target: the dirty IPC frame codec as the arbiter meets it —
 * a frame from a peer process: header, JSON body, blob section, bytes tags
 * pointing into the blob, and a REQUEST's routing fields. Whatever parses
 * must re-encode into a frame that parses to the same header and body
 * (the arbiter forwards frames it parsed). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_dirty_codec.h"
#include "fuzz_json_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cg_dirty_msg msg;
    struct cg_err err;
    struct cg_dirty_header hdr;

    memset(&err, 0, sizeof(err));
    if (size >= CG_DIRTY_HEADER_SIZE) {
        (void)cg_dirty_header_decode(data, CG_DIRTY_DEFAULT_MAX_MESSAGE, &hdr, &err);
    }
    memset(&msg, 0, sizeof(msg));
    if (cg_dirty_msg_parse(data, size, CG_DIRTY_DEFAULT_MAX_MESSAGE, &msg, &err) != 0) {
        return 0;
    }
    const unsigned char *json = data + CG_DIRTY_HEADER_SIZE;
    if (msg.hdr.type == CG_DIRTY_REQUEST) {
        struct cg_dirty_route route;
        memset(&route, 0, sizeof(route));
        if (cg_dirty_route_parse(json, msg.hdr.json_len, msg.hdr.blob_len, msg.hdr.nfds, &route,
                                 &err) == 0) {
            if (route.app_path == NULL || route.action == NULL) {
                __builtin_trap();
            }
        }
        cg_dirty_route_deinit(&route);
    }
    /* Detach (what the stash does) and rebuild the frame from the copy. */
    json_t *copy = NULL;
    unsigned char *blob = NULL;
    size_t blob_len = 0;
    if (cg_dirty_value_detach(msg.body, msg.blob, msg.hdr.blob_len, &copy, &blob, &blob_len,
                              &err) == 0) {
        struct cg_dirty_frame f = { 0 };
        if (cg_dirty_frame_build(&f, msg.hdr.type, msg.hdr.id, copy, blob, blob_len,
                                 CG_DIRTY_DEFAULT_MAX_MESSAGE, &err) == 0) {
            struct cg_dirty_msg again;
            memset(&again, 0, sizeof(again));
            if (cg_dirty_msg_parse(f.data, f.len, CG_DIRTY_DEFAULT_MAX_MESSAGE, &again,
                                   &err) != 0) {
                __builtin_trap(); /* what we build, we must read back */
            }
            if (again.hdr.type != msg.hdr.type || again.hdr.id != msg.hdr.id ||
                !fuzz_json_same(again.body, copy)) {
                __builtin_trap();
            }
            cg_dirty_msg_deinit(&again);
        }
        cg_dirty_frame_deinit(&f);
        json_decref(copy);
        free(blob);
    }
    cg_dirty_msg_deinit(&msg);
    return 0;
}
