/*
 * Generic scalar kernels: the portable fallback every variant can reuse, written for
 * clarity first. Compiled with -ffp-contract=off so the compiler never fuses a*b+c, which
 * keeps the tile kernels bit-identical to their one-token use on every architecture.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"

void halo_quantize_row_q8_0_generic(const float *x, uint8_t *dst, int64_t n) {
  const int64_t n_blocks = n / QK8_0;
  for (int64_t ib = 0; ib < n_blocks; ib++) {
    const float *xb = x + ib * QK8_0;
    uint8_t *out = dst + ib * (int64_t)sizeof(block_q8_0);
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; j++) {
      const float a = fabsf(xb[j]);
      if (a > amax) amax = a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const halo_fp16 dh = halo_fp32_to_fp16(d);
    memcpy(out + offsetof(block_q8_0, d), &dh, sizeof dh);
    int8_t *qs = (int8_t *)(out + offsetof(block_q8_0, qs));
    for (int j = 0; j < QK8_0; j++) {
      const float v = xb[j] * id;
      /* roundf rounds halves away from zero; a non-finite v (id overflowed) stores 0, as the reference does. */
      qs[j] = isfinite(v) ? (int8_t)(int)roundf(v) : 0;
    }
  }
}

static inline float load_f32(const uint8_t *p) {
  float f;
  memcpy(&f, p, sizeof f);
  return f;
}

/* Four partial sums per token, combined as (s0 + s1) + (s2 + s3). */
#define HALO_GENERIC_FLOAT_DOT(NAME, W_BYTES, LOAD_W)                                                      \
  void NAME(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out) { \
    float acc[HALO_TILE_TOKENS][4] = {{0}};                                                               \
    int64_t i = 0;                                                                                         \
    for (; i + 4 <= n; i += 4) {                                                                           \
      float wv[4];                                                                                         \
      for (int k = 0; k < 4; k++) wv[k] = LOAD_W(w + (i + k) * (W_BYTES));                                 \
      for (int t = 0; t < n_tokens; t++) {                                                                 \
        const float *xt = (const float *)((const uint8_t *)x + t * x_stride_bytes);                       \
        for (int k = 0; k < 4; k++) acc[t][k] += wv[k] * xt[i + k];                                        \
      }                                                                                                    \
    }                                                                                                      \
    for (; i < n; i++) {                                                                                   \
      const float wv = LOAD_W(w + i * (W_BYTES));                                                          \
      for (int t = 0; t < n_tokens; t++) {                                                                 \
        const float *xt = (const float *)((const uint8_t *)x + t * x_stride_bytes);                       \
        acc[t][0] += wv * xt[i];                                                                           \
      }                                                                                                    \
    }                                                                                                      \
    for (int t = 0; t < n_tokens; t++) out[t] = (acc[t][0] + acc[t][1]) + (acc[t][2] + acc[t][3]);         \
  }

#define HALO_LOAD_F16_AS_F32(p) halo_fp16_to_fp32(halo_load_fp16(p))

HALO_GENERIC_FLOAT_DOT(halo_dot_f32_generic, 4, load_f32)
HALO_GENERIC_FLOAT_DOT(halo_dot_f16_generic, 2, HALO_LOAD_F16_AS_F32)

/* sum_t += float(Σ wq·xq) · (dw·dx) per block, for each token of the tile. */
static inline void dot_q_blocks_generic(const int8_t wq[QK8_0], float dw, const void *x, int64_t x_stride_bytes,
                                        int n_tokens, int64_t ib, float *sum) {
  for (int t = 0; t < n_tokens; t++) {
    const uint8_t *xb = (const uint8_t *)x + t * x_stride_bytes + ib * (int64_t)sizeof(block_q8_0);
    const float dx = halo_fp16_to_fp32(halo_load_fp16(xb + offsetof(block_q8_0, d)));
    const int8_t *xq = (const int8_t *)(xb + offsetof(block_q8_0, qs));
    int32_t sumi = 0;
    for (int j = 0; j < QK8_0; j++) sumi += (int32_t)wq[j] * (int32_t)xq[j];
    sum[t] += (float)sumi * (dw * dx);
  }
}

void halo_dot_q8_0_generic(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens,
                           float *out) {
  float sum[HALO_TILE_TOKENS] = {0};
  const int64_t n_blocks = n / QK8_0;
  for (int64_t ib = 0; ib < n_blocks; ib++) {
    const uint8_t *wb = w + ib * (int64_t)sizeof(block_q8_0);
    const float dw = halo_fp16_to_fp32(halo_load_fp16(wb + offsetof(block_q8_0, d)));
    int8_t wq[QK8_0];
    memcpy(wq, wb + offsetof(block_q8_0, qs), QK8_0);
    dot_q_blocks_generic(wq, dw, x, x_stride_bytes, n_tokens, ib, sum);
  }
  for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}

void halo_dot_q4_0_generic(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens,
                           float *out) {
  float sum[HALO_TILE_TOKENS] = {0};
  const int64_t n_blocks = n / QK4_0;
  for (int64_t ib = 0; ib < n_blocks; ib++) {
    const uint8_t *wb = w + ib * (int64_t)sizeof(block_q4_0);
    const float dw = halo_fp16_to_fp32(halo_load_fp16(wb + offsetof(block_q4_0, d)));
    const uint8_t *qs = wb + offsetof(block_q4_0, qs);
    int8_t wq[QK4_0];
    for (int j = 0; j < QK4_0 / 2; j++) {
      wq[j] = (int8_t)((qs[j] & 0x0f) - 8);
      wq[j + QK4_0 / 2] = (int8_t)((qs[j] >> 4) - 8);
    }
    dot_q_blocks_generic(wq, dw, x, x_stride_bytes, n_tokens, ib, sum);
  }
  for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}

void halo_to_f32_f32_generic(const uint8_t *src, float *out, int64_t n) { memcpy(out, src, (size_t)n * sizeof(float)); }

void halo_to_f32_f16_generic(const uint8_t *src, float *out, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = halo_fp16_to_fp32(halo_load_fp16(src + 2 * i));
}

void halo_to_f32_q8_0_generic(const uint8_t *src, float *out, int64_t n) {
  for (int64_t ib = 0; ib < n / QK8_0; ib++) {
    const uint8_t *b = src + ib * (int64_t)sizeof(block_q8_0);
    const float d = halo_fp16_to_fp32(halo_load_fp16(b + offsetof(block_q8_0, d)));
    const int8_t *qs = (const int8_t *)(b + offsetof(block_q8_0, qs));
    for (int j = 0; j < QK8_0; j++) out[ib * QK8_0 + j] = d * (float)qs[j];
  }
}

void halo_to_f32_q4_0_generic(const uint8_t *src, float *out, int64_t n) {
  for (int64_t ib = 0; ib < n / QK4_0; ib++) {
    const uint8_t *b = src + ib * (int64_t)sizeof(block_q4_0);
    const float d = halo_fp16_to_fp32(halo_load_fp16(b + offsetof(block_q4_0, d)));
    const uint8_t *qs = b + offsetof(block_q4_0, qs);
    for (int j = 0; j < QK4_0 / 2; j++) {
      out[ib * QK4_0 + j] = d * (float)((qs[j] & 0x0f) - 8);
      out[ib * QK4_0 + j + QK4_0 / 2] = d * (float)((qs[j] >> 4) - 8);
    }
  }
}

void halo_dot_rows_f32_generic(int64_t n, const float *q, const float *rows, int64_t row_stride, int64_t n_rows,
                               float *out) {
  for (int64_t r = 0; r < n_rows; r++) {
    halo_dot_f32_generic(n, (const uint8_t *)q, rows + r * row_stride, 0, 1, out + r);
  }
}

double halo_exp_sum_f32_generic(int64_t n, float *x, float shift) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = expf(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

void halo_weighted_sum_f32_generic(int64_t n, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                   float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = 0.0f;
  for (int64_t s = 0; s < n_rows; s++) {
    const float ps = p[s];
    if (ps == 0.0f) continue;
    const float *vs = v + s * v_stride;
    for (int64_t i = 0; i < n; i++) out[i] += ps * vs[i];
  }
}

const halo_kernel_set halo_kernels_generic = {
    .name = "generic",
    .quantize_row_q8_0 = halo_quantize_row_q8_0_generic,
    .dot_f32 = halo_dot_f32_generic,
    .dot_f16 = halo_dot_f16_generic,
    .dot_q8_0 = halo_dot_q8_0_generic,
    .dot_q4_0 = halo_dot_q4_0_generic,
    .to_f32_f32 = halo_to_f32_f32_generic,
    .to_f32_f16 = halo_to_f32_f16_generic,
    .to_f32_q8_0 = halo_to_f32_q8_0_generic,
    .to_f32_q4_0 = halo_to_f32_q4_0_generic,
    .dot_rows_f32 = halo_dot_rows_f32_generic,
    .exp_sum_f32 = halo_exp_sum_f32_generic,
    .weighted_sum_f32 = halo_weighted_sum_f32_generic,
};
