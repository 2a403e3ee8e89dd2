/*
 * AArch64 fast paths for plain ARMv8-A NEON (every AArch64 CPU): widening multiplies with
 * pairwise accumulation (vmull/vpadal) for the quantized dots, FCVTL for F16 weights, FMA for
 * the float accumulations. kernels_neon_dotprod.c swaps in SDOT and reuses the rest.
 */
#include <arm_neon.h>
#include <math.h>
#include <stddef.h>

#include "../kernels.h"

/* Σ w·x over one block as four int32 lanes; int8·int8 products fit int16 (|p| <= 16384). */
static inline __attribute__((always_inline)) int32x4_t block_dot_i8(int8x16_t w0, int8x16_t w1, int8x16_t x0,
                                                                   int8x16_t x1) {
  int32x4_t s = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
  s = vpadalq_s16(s, vmull_high_s8(w0, x0));
  s = vpadalq_s16(s, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
  s = vpadalq_s16(s, vmull_high_s8(w1, x1));
  return s;
}

#include "neon_tiles.h"

HALO_NEON_DISPATCH(dot_q8_0_neon, dot_q8_0_neon_tile)
HALO_NEON_DISPATCH(dot_q4_0_neon, dot_q4_0_neon_tile)

void halo_quantize_row_q8_0_neon(const float *x, uint8_t *dst, int64_t n) {
  for (int64_t ib = 0; ib < n / QK8_0; ib++) {
    const float *xb = x + ib * QK8_0;
    uint8_t *out = dst + ib * (int64_t)sizeof(block_q8_0);
    float32x4_t v[8];
    float32x4_t amax_v = vdupq_n_f32(0.0f);
    for (int k = 0; k < 8; k++) {
      v[k] = vld1q_f32(xb + 4 * k);
      amax_v = vmaxq_f32(amax_v, vabsq_f32(v[k]));
    }
    const float amax = vmaxvq_f32(amax_v);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!isfinite(id)) {
      /* A denormal scale whose inverse overflows: the rare case the scalar code spells out. */
      halo_quantize_row_q8_0_generic(xb, out, QK8_0);
      continue;
    }
    const halo_fp16 dh = halo_fp32_to_fp16(d);
    memcpy(out + offsetof(block_q8_0, d), &dh, sizeof dh);
    int32x4_t q[8];
    /* FCVTAS rounds to nearest with ties away from zero, which is roundf(). */
    for (int k = 0; k < 8; k++) q[k] = vcvtaq_s32_f32(vmulq_n_f32(v[k], id));
    const int16x8_t h0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
    const int16x8_t h1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
    const int16x8_t h2 = vcombine_s16(vmovn_s32(q[4]), vmovn_s32(q[5]));
    const int16x8_t h3 = vcombine_s16(vmovn_s32(q[6]), vmovn_s32(q[7]));
    int8_t *qs = (int8_t *)(out + offsetof(block_q8_0, qs));
    vst1q_s8(qs, vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)));
    vst1q_s8(qs + 16, vcombine_s8(vmovn_s16(h2), vmovn_s16(h3)));
  }
}

static inline __attribute__((always_inline)) float32x4_t load4_f32(const uint8_t *w, int64_t i) {
  return vld1q_f32((const float *)w + i);
}
static inline __attribute__((always_inline)) float load1_f32(const uint8_t *w, int64_t i) {
  float f;
  memcpy(&f, w + 4 * i, sizeof f);
  return f;
}
static inline __attribute__((always_inline)) float32x4_t load4_f16(const uint8_t *w, int64_t i) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(w + 2 * i))));
}
static inline __attribute__((always_inline)) float load1_f16(const uint8_t *w, int64_t i) {
  return halo_fp16_to_fp32(halo_load_fp16(w + 2 * i));
}

/* Four accumulators per token over 16-element steps, reduced as (a0 + a1) + (a2 + a3). */
#define HALO_NEON_FLOAT_TILE(NAME, LOAD4, LOAD1)                                                           \
  static inline __attribute__((always_inline)) void NAME(int64_t n, const uint8_t *w, const void *x,       \
                                                         int64_t x_stride_bytes, const int n_tokens,       \
                                                         float *out) {                                    \
    float32x4_t acc[HALO_TILE_TOKENS][4];                                                                 \
    const float *xt[HALO_TILE_TOKENS];                                                                    \
    for (int t = 0; t < n_tokens; t++) {                                                                  \
      for (int k = 0; k < 4; k++) acc[t][k] = vdupq_n_f32(0.0f);                                          \
      xt[t] = (const float *)((const uint8_t *)x + t * x_stride_bytes);                                   \
    }                                                                                                     \
    int64_t i = 0;                                                                                        \
    for (; i + 16 <= n; i += 16) {                                                                        \
      const float32x4_t w0 = LOAD4(w, i), w1 = LOAD4(w, i + 4), w2 = LOAD4(w, i + 8), w3 = LOAD4(w, i + 12); \
      for (int t = 0; t < n_tokens; t++) {                                                                \
        acc[t][0] = vfmaq_f32(acc[t][0], w0, vld1q_f32(xt[t] + i));                                       \
        acc[t][1] = vfmaq_f32(acc[t][1], w1, vld1q_f32(xt[t] + i + 4));                                   \
        acc[t][2] = vfmaq_f32(acc[t][2], w2, vld1q_f32(xt[t] + i + 8));                                   \
        acc[t][3] = vfmaq_f32(acc[t][3], w3, vld1q_f32(xt[t] + i + 12));                                  \
      }                                                                                                   \
    }                                                                                                     \
    for (; i + 4 <= n; i += 4) {                                                                          \
      const float32x4_t w0 = LOAD4(w, i);                                                                 \
      for (int t = 0; t < n_tokens; t++) acc[t][0] = vfmaq_f32(acc[t][0], w0, vld1q_f32(xt[t] + i));      \
    }                                                                                                     \
    for (int t = 0; t < n_tokens; t++) {                                                                  \
      const float32x4_t s = vaddq_f32(vaddq_f32(acc[t][0], acc[t][1]), vaddq_f32(acc[t][2], acc[t][3]));  \
      float sum = vaddvq_f32(s);                                                                          \
      for (int64_t j = i; j < n; j++) sum = fmaf(LOAD1(w, j), xt[t][j], sum);                              \
      out[t] = sum;                                                                                       \
    }                                                                                                     \
  }

HALO_NEON_FLOAT_TILE(dot_f32_neon_tile, load4_f32, load1_f32)
HALO_NEON_FLOAT_TILE(dot_f16_neon_tile, load4_f16, load1_f16)

HALO_NEON_DISPATCH(dot_f32_neon_dispatch, dot_f32_neon_tile)
HALO_NEON_DISPATCH(dot_f16_neon_dispatch, dot_f16_neon_tile)

void halo_dot_f32_neon(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out) {
  dot_f32_neon_dispatch(n, w, x, x_stride_bytes, n_tokens, out);
}

void halo_dot_f16_neon(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out) {
  dot_f16_neon_dispatch(n, w, x, x_stride_bytes, n_tokens, out);
}

void halo_to_f32_f16_neon(const uint8_t *src, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, load4_f16(src, i));
  for (; i < n; i++) out[i] = load1_f16(src, i);
}

const halo_kernel_set halo_kernels_neon = {
    .name = "neon",
    .quantize_row_q8_0 = halo_quantize_row_q8_0_neon,
    .dot_f32 = halo_dot_f32_neon,
    .dot_f16 = halo_dot_f16_neon,
    .dot_q8_0 = dot_q8_0_neon,
    .dot_q4_0 = dot_q4_0_neon,
    .to_f32_f32 = halo_to_f32_f32_generic,
    .to_f32_f16 = halo_to_f32_f16_neon,
    .to_f32_q8_0 = halo_to_f32_q8_0_generic,
    .to_f32_q4_0 = halo_to_f32_q4_0_generic,
};
