/* Helpers shared by the fuzz targets: the fuzzer's input is split into a
 * few option bytes and the payload, so one target explores settings and
 * split points along with the bytes themselves. Header-only on purpose: each
 * target is one translation unit linked with the code under test. */
#ifndef CG_FUZZ_INPUT_H
#define CG_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct fuzz_input {
    const uint8_t *p;
    size_t n;
};

/* Takes one option byte from the front (0 when the input is used up). */
static inline uint8_t fuzz_take_byte(struct fuzz_input *in)
{
    if (in->n == 0) {
        return 0;
    }
    uint8_t b = in->p[0];
    in->p++;
    in->n--;
    return b;
}

/* Takes a 16-bit little-endian option from the front. */
static inline uint16_t fuzz_take_u16(struct fuzz_input *in)
{
    uint16_t lo = fuzz_take_byte(in);
    uint16_t hi = fuzz_take_byte(in);
    return (uint16_t)(lo | (hi << 8));
}

#endif
