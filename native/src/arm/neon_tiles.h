/*
 * Tile templates shared by the two AArch64 variants. Each includer defines
 * `static inline int32x4_t block_dot_i8(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1)`
 * (four lanes whose sum is Σ w·x over one 32-element block) before including this file, and
 * gets dot_q8_0_neon_tile / dot_q4_0_neon_tile built on it.
 *
 * Two accumulators per token (even and odd blocks), reduced the same way whatever the tile
 * width, so a token's result does not depend on which tokens share its tile.
 */
#ifndef HALO_ARM_NEON_TILES_H
#define HALO_ARM_NEON_TILES_H

#include <arm_neon.h>
#include <stddef.h>

#include "../kernels.h"

#define HALO_NEON_INLINE static inline __attribute__((always_inline))

HALO_NEON_INLINE float neon_load_half(const uint8_t *p) { return halo_fp16_to_fp32(halo_load_fp16(p)); }

/* Weight block as two 16-lane halves: elements 0..15 in *w0, 16..31 in *w1. */
HALO_NEON_INLINE void load_q8_0_weights(const uint8_t *wb, int8x16_t *w0, int8x16_t *w1) {
  const int8_t *qs = (const int8_t *)(wb + offsetof(block_q8_0, qs));
  *w0 = vld1q_s8(qs);
  *w1 = vld1q_s8(qs + 16);
}

HALO_NEON_INLINE void load_q4_0_weights(const uint8_t *wb, int8x16_t *w0, int8x16_t *w1) {
  const uint8x16_t raw = vld1q_u8(wb + offsetof(block_q4_0, qs));
  const int8x16_t eight = vdupq_n_s8(8);
  *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f))), eight);
  *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
}

#define HALO_NEON_Q_BLOCK(ACC, LOAD_W, BLOCK_BYTES, IB)                                                   \
  do {                                                                                                  \
    const uint8_t *wb_ = w + (IB) * (int64_t)(BLOCK_BYTES);                                              \
    const float dw_ = neon_load_half(wb_);                                                               \
    int8x16_t w0_, w1_;                                                                                  \
    LOAD_W(wb_, &w0_, &w1_);                                                                             \
    for (int t = 0; t < n_tokens; t++) {                                                                 \
      const uint8_t *xb_ = (const uint8_t *)x + t * x_stride_bytes + (IB) * (int64_t)sizeof(block_q8_0); \
      const int8_t *xq_ = (const int8_t *)(xb_ + offsetof(block_q8_0, qs));                              \
      const int32x4_t s_ = block_dot_i8(w0_, w1_, vld1q_s8(xq_), vld1q_s8(xq_ + 16));                    \
      ACC[t] = vfmaq_f32(ACC[t], vcvtq_f32_s32(s_), vdupq_n_f32(dw_ * neon_load_half(xb_)));             \
    }                                                                                                    \
  } while (0)

#define HALO_NEON_Q_TILE(NAME, LOAD_W, BLOCK_BYTES)                                                        \
  HALO_NEON_INLINE void NAME(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes,           \
                             const int n_tokens, float *out) {                                            \
    float32x4_t acc0[HALO_TILE_TOKENS], acc1[HALO_TILE_TOKENS];                                           \
    for (int t = 0; t < n_tokens; t++) acc0[t] = acc1[t] = vdupq_n_f32(0.0f);                              \
    const int64_t n_blocks = n / QK8_0;                                                                   \
    int64_t ib = 0;                                                                                       \
    for (; ib + 2 <= n_blocks; ib += 2) {                                                                 \
      HALO_NEON_Q_BLOCK(acc0, LOAD_W, BLOCK_BYTES, ib);                                                   \
      HALO_NEON_Q_BLOCK(acc1, LOAD_W, BLOCK_BYTES, ib + 1);                                               \
    }                                                                                                     \
    if (ib < n_blocks) HALO_NEON_Q_BLOCK(acc0, LOAD_W, BLOCK_BYTES, ib);                                  \
    for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(vaddq_f32(acc0[t], acc1[t]));                   \
  }

HALO_NEON_Q_TILE(dot_q8_0_neon_tile, load_q8_0_weights, sizeof(block_q8_0))
HALO_NEON_Q_TILE(dot_q4_0_neon_tile, load_q4_0_weights, sizeof(block_q4_0))

/* Instantiate each tile width with a constant token count so accumulators stay in registers. */
#define HALO_NEON_DISPATCH(NAME, TILE)                                                                     \
  static void NAME(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens,       \
                   float *out) {                                                                          \
    switch (n_tokens) {                                                                                   \
      case 4: TILE(n, w, x, x_stride_bytes, 4, out); break;                                               \
      case 3: TILE(n, w, x, x_stride_bytes, 3, out); break;                                               \
      case 2: TILE(n, w, x, x_stride_bytes, 2, out); break;                                               \
      default: TILE(n, w, x, x_stride_bytes, 1, out); break;                                              \
    }                                                                                                     \
  }

/* The parts both AArch64 variants share (defined in kernels_neon.c). */
void halo_quantize_row_q8_0_neon(const float *x, uint8_t *dst, int64_t n);
void halo_dot_f32_neon(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out);
void halo_dot_f16_neon(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out);
void halo_to_f32_f16_neon(const uint8_t *src, float *out, int64_t n);
void halo_dot_rows_f32_neon(int64_t n, const float *q, const float *rows, int64_t row_stride, int64_t n_rows,
                            float *out);
double halo_exp_sum_f32_neon(int64_t n, float *x, float shift);
void halo_weighted_sum_f32_neon(int64_t n, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                float *out);

#endif /* HALO_ARM_NEON_TILES_H */
