/*
 * AArch64 fast paths for plain ARMv8-A NEON (every AArch64 CPU): widening multiplies with
 * pairwise accumulation (vmull/vpadal) for the quantized dots, FCVTL for F16 weights, FMA for
 * the float accumulations (float dots, attention scores and the attention-weighted sum of
 * value rows), and a 4-lane exp for the softmax.
 * kernels_neon_dotprod.c swaps in SDOT and reuses the rest.
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

/*
 * q · k for NR (1 or 4) rows at once: four accumulators per row over 16-element steps, one more
 * per 4-element step, reduced as (a0 + a1) + (a2 + a3), then the scalar tail; the same
 * operations per row whatever NR is.
 */
static inline __attribute__((always_inline)) void dot_rows_block(const int nr, int64_t n, const float *q,
                                                                const float *k, int64_t row_stride, float *out) {
  float32x4_t acc[4][4];
  for (int r = 0; r < nr; r++) {
    for (int j = 0; j < 4; j++) acc[r][j] = vdupq_n_f32(0.0f);
  }
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const float32x4_t q0 = vld1q_f32(q + i), q1 = vld1q_f32(q + i + 4);
    const float32x4_t q2 = vld1q_f32(q + i + 8), q3 = vld1q_f32(q + i + 12);
    for (int r = 0; r < nr; r++) {
      const float *kr = k + r * row_stride + i;
      acc[r][0] = vfmaq_f32(acc[r][0], q0, vld1q_f32(kr));
      acc[r][1] = vfmaq_f32(acc[r][1], q1, vld1q_f32(kr + 4));
      acc[r][2] = vfmaq_f32(acc[r][2], q2, vld1q_f32(kr + 8));
      acc[r][3] = vfmaq_f32(acc[r][3], q3, vld1q_f32(kr + 12));
    }
  }
  for (; i + 4 <= n; i += 4) {
    const float32x4_t q0 = vld1q_f32(q + i);
    for (int r = 0; r < nr; r++) acc[r][0] = vfmaq_f32(acc[r][0], q0, vld1q_f32(k + r * row_stride + i));
  }
  for (int r = 0; r < nr; r++) {
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[r][0], acc[r][1]), vaddq_f32(acc[r][2], acc[r][3])));
    for (int64_t j = i; j < n; j++) sum = fmaf(q[j], k[r * row_stride + j], sum);
    out[r] = sum;
  }
}

void halo_dot_rows_f32_neon(int64_t n, const float *q, const float *rows, int64_t row_stride, int64_t n_rows,
                            float *out) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) dot_rows_block(4, n, q, rows + r * row_stride, row_stride, out + r);
  for (; r < n_rows; r++) dot_rows_block(1, n, q, rows + r * row_stride, row_stride, out + r);
}

/*
 * exp on 4 lanes, as the AVX2 one (x86/kernels_avx2.c): 2^k · exp(r), k = round(x·log2 e),
 * a degree-7 polynomial for exp(r); 0 below −87.3 (so −∞ gives exactly 0), NaN propagates.
 */
static inline __attribute__((always_inline)) float32x4_t exp_f32x4(float32x4_t x) {
  const uint32x4_t underflow = vcltq_f32(x, vdupq_n_f32(-87.33654f));
  /* FMAX/FMIN return NaN when an operand is NaN. */
  const float32x4_t c = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.33654f)), vdupq_n_f32(88.0f));
  const float32x4_t k = vrndnq_f32(vmulq_n_f32(c, 1.44269504088896341f));
  float32x4_t r = vfmsq_n_f32(c, k, 0.693359375f);
  r = vfmsq_n_f32(r, k, -2.12194440e-4f);
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  const int32x4_t scale = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
  const float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(scale));
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), underflow));
}

/* exp of 4 lanes in place, adding them to two double accumulators. */
static inline __attribute__((always_inline)) void exp_sum_4(float *x, float shift, float64x2_t *sum_lo,
                                                           float64x2_t *sum_hi) {
  const float32x4_t e = exp_f32x4(vsubq_f32(vld1q_f32(x), vdupq_n_f32(shift)));
  vst1q_f32(x, e);
  *sum_lo = vaddq_f64(*sum_lo, vcvt_f64_f32(vget_low_f32(e)));
  *sum_hi = vaddq_f64(*sum_hi, vcvt_high_f64_f32(e));
}

double halo_exp_sum_f32_neon(int64_t n, float *x, float shift) {
  float64x2_t sum_lo = vdupq_n_f64(0.0), sum_hi = vdupq_n_f64(0.0);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) exp_sum_4(x + i, shift, &sum_lo, &sum_hi);
  if (i < n) {
    /* The tail through the same code, padded with −∞ (exp 0). */
    float tail[4];
    for (int j = 0; j < 4; j++) tail[j] = i + j < n ? x[i + j] : -INFINITY;
    exp_sum_4(tail, shift, &sum_lo, &sum_hi);
    for (int64_t j = i; j < n; j++) x[j] = tail[j - i];
  }
  return vaddvq_f64(vaddq_f64(sum_lo, sum_hi));
}

/* out[0..4·nv) over all rows; nv constant per instantiation so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void weighted_sum_chunk(const int nv, const float *p, int64_t n_rows,
                                                                    const float *v, int64_t v_stride, float *out) {
  float32x4_t acc[16];
  for (int j = 0; j < nv; j++) acc[j] = vdupq_n_f32(0.0f);
  for (int64_t s = 0; s < n_rows; s++) {
    const float ps = p[s];
    if (ps == 0.0f) continue;
    const float *vs = v + s * v_stride;
    for (int j = 0; j < nv; j++) acc[j] = vfmaq_n_f32(acc[j], vld1q_f32(vs + 4 * j), ps);
  }
  for (int j = 0; j < nv; j++) vst1q_f32(out + 4 * j, acc[j]);
}

/*
 * Column chunks of 64, 32, 16, 8 or 4 (one pass over the rows each, up to 16 of the 32 vector
 * registers as accumulators), then the last n % 4 columns in scalar FMA. Every element is
 * accumulated over the rows in order whatever chunk it falls in.
 */
void halo_weighted_sum_f32_neon(int64_t n, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                float *out) {
  int64_t i = 0;
  while (n - i >= 4) {
    const int64_t left = (n - i) / 4;
    if (left >= 16) {
      weighted_sum_chunk(16, p, n_rows, v + i, v_stride, out + i);
      i += 64;
    } else if (left >= 8) {
      weighted_sum_chunk(8, p, n_rows, v + i, v_stride, out + i);
      i += 32;
    } else if (left >= 4) {
      weighted_sum_chunk(4, p, n_rows, v + i, v_stride, out + i);
      i += 16;
    } else if (left >= 2) {
      weighted_sum_chunk(2, p, n_rows, v + i, v_stride, out + i);
      i += 8;
    } else {
      weighted_sum_chunk(1, p, n_rows, v + i, v_stride, out + i);
      i += 4;
    }
  }
  if (i == n) return;
  float tail[4] = {0};
  for (int64_t s = 0; s < n_rows; s++) {
    if (p[s] == 0.0f) continue;
    const float *vs = v + s * v_stride;
    for (int64_t j = i; j < n; j++) tail[j - i] = fmaf(p[s], vs[j], tail[j - i]);
  }
  for (int64_t j = i; j < n; j++) out[j] = tail[j - i];
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
    .dot_rows_f32 = halo_dot_rows_f32_neon,
    .exp_sum_f32 = halo_exp_sum_f32_neon,
    .weighted_sum_f32 = halo_weighted_sum_f32_neon,
};
