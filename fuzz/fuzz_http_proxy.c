/* libFuzzer target: the PROXY protocol v1/v2 parser on the first bytes of a
 * connection. Input: byte 0 picks the mode (v1, v2, auto) and whether the
 * peer is allowed; the rest is what the proxy sends. Checks that a header
 * is only reported done with a consumed length inside the input, and that
 * the decision is the same whether the bytes arrive at once or grow. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_http_proxy.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in = { data, size };
    uint8_t opt = fuzz_take_byte(&in);
    int mode = 1 + opt % 3;
    bool allowed = opt & 0x10;
    struct cg_http_proxy_info info;
    struct cg_http_error err;
    size_t used = 0;

    memset(&info, 0, sizeof(info));
    memset(&err, 0, sizeof(err));
    enum cg_http_proxy_result whole = cg_http_proxy_parse(mode, (const char *)in.p, in.n, allowed,
                                                          "192.0.2.1", &info, &used, &err);
    if (whole == CG_HTTP_PROXY_DONE && used > in.n) {
        __builtin_trap();
    }
    /* Growing prefixes: no prefix may decide differently from the whole once
     * it decides (NEED_MORE until enough bytes, then the same answer). */
    size_t step = 1 + (opt >> 5);
    for (size_t k = 0; k < in.n; k += step) {
        struct cg_http_proxy_info pi;
        struct cg_http_error pe;
        size_t pu = 0;
        memset(&pi, 0, sizeof(pi));
        memset(&pe, 0, sizeof(pe));
        enum cg_http_proxy_result r = cg_http_proxy_parse(mode, (const char *)in.p, k, allowed,
                                                          "192.0.2.1", &pi, &pu, &pe);
        if (r == CG_HTTP_PROXY_NEED_MORE) {
            continue;
        }
        if (r == CG_HTTP_PROXY_DONE && (pu > k || whole != CG_HTTP_PROXY_DONE || pu != used)) {
            __builtin_trap();
        }
        if (r == CG_HTTP_PROXY_NONE && whole != CG_HTTP_PROXY_NONE) {
            __builtin_trap();
        }
        break;
    }
    return 0;
}
