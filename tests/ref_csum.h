/*
 * tests/ref_csum.h - the Internet checksum as RFC 1071 §4.1 writes it, the plain way, for the tests
 * that check offload.c and the frames vhost-xdp hands on (tests/test_offload.c,
 * tests/fuzz/fuzz_offload.c, tests/exercise_probe.c).  Written apart from offload.c on purpose: a
 * reference that shared offload.c's code would agree with it whatever it did.
 */
#ifndef VX_REF_CSUM_H
#define VX_REF_CSUM_H

#include <stddef.h>
#include <stdint.h>

/* Big-endian 16-bit words added into a 32-bit sum; an odd last byte padded with zero. */
static inline uint32_t ref_sum(const uint8_t *p, size_t n, uint32_t acc)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        acc += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        acc += (uint32_t)p[n - 1] << 8;
    return acc;
}

/* The carries folded back in: the one's-complement sum (0xffff over data whose checksum is right). */
static inline uint16_t ref_fold(uint32_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

#endif
