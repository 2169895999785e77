/* libFuzzer target: the HTTP/1 head parser and body decoder (Content-Length,
 * chunked with extensions and trailers, PROXY v1/v2 in front, pipelining).
 *
 * Input: byte 0 picks settings (folding, header_map, proxy protocol, strict
 * or relaxed method/version rules, small limits), bytes 1-2 the piece size
 * in which the bytes arrive (0 = all at once), the rest is what the client
 * sends. The driver checks the parser's promises (every byte taken on
 * NEED_MORE, decoded data is a span of the input, no status out of place),
 * and ASan/UBSan check memory. */
#include <stdint.h>
#include <stddef.h>

#include "fuzz_http_conn.h"
#include "fuzz_input.h"

static void limits_from_options(struct cg_http_limits *l, uint8_t opt)
{
    cg_http_limits_init(l);
    l->permit_obsolete_folding = opt & 0x01;
    l->header_map = (enum cg_http_header_map)((opt >> 1) % 3);
    l->proxy_protocol = (enum cg_http_proxy_mode)((opt >> 3) & 0x03);
    l->permit_unconventional_http_method = opt & 0x20;
    l->permit_unconventional_http_version = opt & 0x20;
    l->casefold_http_method = opt & 0x40;
    l->strip_header_spaces = opt & 0x40;
    if (opt & 0x80) {
        /* Tight limits reach the 414/431/400 paths with short inputs. */
        l->limit_request_line = 64;
        l->limit_request_fields = 4;
        l->limit_request_field_size = 32;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in = { data, size };
    struct cg_http_limits limits;
    struct fuzz_http_result res;

    limits_from_options(&limits, fuzz_take_byte(&in));
    size_t piece = fuzz_take_u16(&in) % 64;
    fuzz_http_conn_run(&limits, in.p, in.n, piece, false, &res);

    /* The same bytes in one piece must frame the same messages: where a
     * message ends cannot depend on how TCP split the stream. */
    struct fuzz_http_result whole;
    fuzz_http_conn_run(&limits, in.p, in.n, 0, false, &whole);
    if (whole.n_msgs != res.n_msgs || whole.error != res.error) {
        __builtin_trap();
    }
    for (size_t i = 0; i < res.n_msgs && i < FUZZ_MAX_MSGS; i++) {
        if (whole.end[i] != res.end[i] || whole.body[i] != res.body[i]) {
            __builtin_trap();
        }
    }
    return 0;
}
