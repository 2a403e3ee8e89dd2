/*
 * Block layouts of the ggml types halo computes with, declared once and size-checked
 * (the TS side mirrors these in src/kernels/types.ts and tests that the two agree), plus
 * the scalar IEEE half <-> float conversions every kernel variant shares.
 *
 * Everything here is `static inline`: this header is included by files compiled with
 * different -m flags (AVX2, dotprod), and a non-static inline would let the linker pick an
 * AVX2-compiled copy for code that runs on a CPU without AVX2.
 */
#ifndef HALO_QUANTS_H
#define HALO_QUANTS_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml type ids (GGUF tensor records carry these). */
enum halo_type {
  HALO_TYPE_F32 = 0,
  HALO_TYPE_F16 = 1,
  HALO_TYPE_Q4_0 = 2,
  HALO_TYPE_Q8_0 = 8,
};

typedef uint16_t halo_fp16;

#define QK8_0 32
/* Q8_0: x[i] = d * qs[i]. */
typedef struct {
  halo_fp16 d;
  int8_t qs[QK8_0];
} block_q8_0;

#define QK4_0 32
/* Q4_0: byte j holds element j (low nibble) and element j + 16 (high nibble); x = d * (nibble - 8). */
typedef struct {
  halo_fp16 d;
  uint8_t qs[QK4_0 / 2];
} block_q4_0;

#ifdef __cplusplus
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes");
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes");
#else
_Static_assert(sizeof(block_q8_0) == sizeof(halo_fp16) + QK8_0, "block_q8_0 must be 34 bytes");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes");
_Static_assert(sizeof(block_q4_0) == sizeof(halo_fp16) + QK4_0 / 2, "block_q4_0 must be 18 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes");
#endif

static inline uint32_t halo_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float halo_f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Half bits to float, exact (subnormals, infinities and NaN included). */
static inline float halo_fp16_to_fp32(halo_fp16 h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return halo_f32_from_bits(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return halo_f32_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  /* Zero or subnormal: mantissa * 2^-24 is exact in float. */
  const float magnitude = (float)mantissa * (1.0f / 16777216.0f);
  return sign ? -magnitude : magnitude;
}

/* Float to half bits, rounding to nearest even; overflow gives infinity (as F16C does). */
static inline halo_fp16 halo_fp32_to_fp16(float f) {
  const uint32_t x = halo_f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exponent = (x >> 23) & 0xffu;
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xff) return (halo_fp16)(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
  const int32_t e = (int32_t)exponent - 127 + 15;
  if (e >= 0x1f) return (halo_fp16)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (halo_fp16)sign;
    mantissa |= 0x800000u;
    const uint32_t shift = (uint32_t)(14 - e);
    uint32_t half = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (remainder > halfway || (remainder == halfway && (half & 1u))) half += 1u;
    return (halo_fp16)(sign | half);
  }
  uint32_t half = ((uint32_t)e << 10) | (mantissa >> 13);
  const uint32_t remainder = mantissa & 0x1fffu;
  /* A carry out of the mantissa correctly bumps the exponent (up to infinity). */
  if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u))) half += 1u;
  return (halo_fp16)(sign | half);
}

/* Reads a little-endian half from unaligned bytes. */
static inline halo_fp16 halo_load_fp16(const void *p) {
  halo_fp16 h;
  memcpy(&h, p, sizeof h);
  return h;
}

#ifdef __cplusplus
}
#endif

#endif /* HALO_QUANTS_H */
