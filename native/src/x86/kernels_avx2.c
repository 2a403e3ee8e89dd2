/*
 * x86-64 fast paths: AVX2 integer dot products for Q8_0/Q4_0 weights against Q8_0
 * activations, F16C conversion for F16 weights, FMA for the float accumulations (float dots,
 * attention scores and the attention-weighted sum of value rows), and an 8-lane exp for the
 * softmax.
 * Compiled with -mavx2 -mfma -mf16c; only called after cpu_features.c has checked the CPU.
 *
 * Every tile kernel keeps two accumulators per token (even and odd blocks or 8-lane groups)
 * and reduces them the same way whatever the tile width, so a token's result does not
 * depend on which tokens share its tile.
 */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>

#include "../kernels.h"

#define HALO_AVX2_INLINE static inline __attribute__((always_inline))

HALO_AVX2_INLINE float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

HALO_AVX2_INLINE float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

HALO_AVX2_INLINE float load_half(const uint8_t *p) { return _cvtsh_ss(halo_load_fp16(p)); }

/* ---- activation quantizer -------------------------------------------------------------- */

/* roundf() on 8 lanes: truncate, then step one away from zero where |fraction| >= 0.5. */
HALO_AVX2_INLINE __m256i round_away_epi32(__m256 v) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_andnot_ps(sign_mask, _mm256_sub_ps(v, t));
  const __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign_mask), _mm256_set1_ps(1.0f));
  const __m256 adjust = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step);
  return _mm256_cvttps_epi32(_mm256_add_ps(t, adjust));
}

static void quantize_row_q8_0_avx2(const float *x, uint8_t *dst, int64_t n) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (int64_t ib = 0; ib < n / QK8_0; ib++) {
    const float *xb = x + ib * QK8_0;
    uint8_t *out = dst + ib * (int64_t)sizeof(block_q8_0);
    const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
    const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
    const __m256 max01 = _mm256_max_ps(_mm256_andnot_ps(sign_mask, v0), _mm256_andnot_ps(sign_mask, v1));
    const __m256 max23 = _mm256_max_ps(_mm256_andnot_ps(sign_mask, v2), _mm256_andnot_ps(sign_mask, v3));
    const float amax = hmax_ps(_mm256_max_ps(max01, max23));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!isfinite(id)) {
      /* A denormal scale whose inverse overflows: the rare case the scalar code spells out. */
      halo_quantize_row_q8_0_generic(xb, out, QK8_0);
      continue;
    }
    const halo_fp16 dh = (halo_fp16)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    memcpy(out + offsetof(block_q8_0, d), &dh, sizeof dh);
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i i0 = round_away_epi32(_mm256_mul_ps(v0, vid));
    const __m256i i1 = round_away_epi32(_mm256_mul_ps(v1, vid));
    const __m256i i2 = round_away_epi32(_mm256_mul_ps(v2, vid));
    const __m256i i3 = round_away_epi32(_mm256_mul_ps(v3, vid));
    /* packs work per 128-bit lane; the permute restores element order. */
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    const __m256i q = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(out + offsetof(block_q8_0, qs)), q);
  }
}

/* ---- quantized dot products ------------------------------------------------------------ */

/* 32 signed weights times 32 signed activations, as 8 float lanes of pair sums. */
HALO_AVX2_INLINE __m256 block_dot_ps(__m256i w_abs, __m256i w, __m256i xq) {
  const __m256i x_signed = _mm256_sign_epi8(xq, w);
  const __m256i pairs = _mm256_maddubs_epi16(w_abs, x_signed);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

HALO_AVX2_INLINE __m256i load_q8_0_weights(const uint8_t *wb) {
  return _mm256_loadu_si256((const __m256i *)(wb + offsetof(block_q8_0, qs)));
}

HALO_AVX2_INLINE __m256i load_q4_0_weights(const uint8_t *wb) {
  const __m128i raw = _mm_loadu_si128((const __m128i *)(wb + offsetof(block_q4_0, qs)));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(raw, m4);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

/* acc[t] += (dw·dx_t) · Σ w·x_t over block ib, for each token t of the tile. */
#define HALO_AVX2_Q_BLOCK(ACC, LOAD_W, BLOCK_BYTES, IB)                                                 \
  do {                                                                                                \
    const uint8_t *wb_ = w + (IB) * (int64_t)(BLOCK_BYTES);                                            \
    const float dw_ = load_half(wb_);                                                                  \
    const __m256i wv_ = LOAD_W(wb_);                                                                   \
    const __m256i wabs_ = _mm256_sign_epi8(wv_, wv_);                                                  \
    for (int t = 0; t < n_tokens; t++) {                                                               \
      const uint8_t *xb_ = (const uint8_t *)x + t * x_stride_bytes + (IB) * (int64_t)sizeof(block_q8_0); \
      const __m256i xq_ = _mm256_loadu_si256((const __m256i *)(xb_ + offsetof(block_q8_0, qs)));      \
      const __m256 d_ = _mm256_set1_ps(dw_ * load_half(xb_));                                          \
      ACC[t] = _mm256_fmadd_ps(d_, block_dot_ps(wabs_, wv_, xq_), ACC[t]);                             \
    }                                                                                                  \
  } while (0)

#define HALO_AVX2_Q_TILE(NAME, LOAD_W, BLOCK_BYTES)                                                      \
  HALO_AVX2_INLINE void NAME(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes,         \
                             const int n_tokens, float *out) {                                          \
    __m256 acc0[HALO_TILE_TOKENS], acc1[HALO_TILE_TOKENS];                                              \
    for (int t = 0; t < n_tokens; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();                          \
    const int64_t n_blocks = n / QK8_0;                                                                 \
    int64_t ib = 0;                                                                                     \
    for (; ib + 2 <= n_blocks; ib += 2) {                                                               \
      HALO_AVX2_Q_BLOCK(acc0, LOAD_W, BLOCK_BYTES, ib);                                                 \
      HALO_AVX2_Q_BLOCK(acc1, LOAD_W, BLOCK_BYTES, ib + 1);                                             \
    }                                                                                                   \
    if (ib < n_blocks) HALO_AVX2_Q_BLOCK(acc0, LOAD_W, BLOCK_BYTES, ib);                                \
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(_mm256_add_ps(acc0[t], acc1[t]));                \
  }

HALO_AVX2_Q_TILE(dot_q8_0_tile, load_q8_0_weights, sizeof(block_q8_0))
HALO_AVX2_Q_TILE(dot_q4_0_tile, load_q4_0_weights, sizeof(block_q4_0))

/* ---- float dot products ---------------------------------------------------------------- */

HALO_AVX2_INLINE __m256 load8_f32(const uint8_t *w, int64_t i) { return _mm256_loadu_ps((const float *)w + i); }
HALO_AVX2_INLINE float load1_f32(const uint8_t *w, int64_t i) {
  float f;
  memcpy(&f, w + 4 * i, sizeof f);
  return f;
}
HALO_AVX2_INLINE __m256 load8_f16(const uint8_t *w, int64_t i) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
}
HALO_AVX2_INLINE float load1_f16(const uint8_t *w, int64_t i) { return load_half(w + 2 * i); }

#define HALO_AVX2_FLOAT_TILE(NAME, LOAD8, LOAD1)                                                         \
  HALO_AVX2_INLINE void NAME(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes,         \
                             const int n_tokens, float *out) {                                          \
    __m256 acc0[HALO_TILE_TOKENS], acc1[HALO_TILE_TOKENS];                                              \
    const float *xt[HALO_TILE_TOKENS];                                                                  \
    for (int t = 0; t < n_tokens; t++) {                                                                \
      acc0[t] = acc1[t] = _mm256_setzero_ps();                                                           \
      xt[t] = (const float *)((const uint8_t *)x + t * x_stride_bytes);                                 \
    }                                                                                                   \
    int64_t i = 0;                                                                                      \
    for (; i + 16 <= n; i += 16) {                                                                      \
      const __m256 w0 = LOAD8(w, i), w1 = LOAD8(w, i + 8);                                              \
      for (int t = 0; t < n_tokens; t++) {                                                              \
        acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt[t] + i), acc0[t]);                             \
        acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt[t] + i + 8), acc1[t]);                         \
      }                                                                                                 \
    }                                                                                                   \
    if (i + 8 <= n) {                                                                                   \
      const __m256 w0 = LOAD8(w, i);                                                                    \
      for (int t = 0; t < n_tokens; t++) acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt[t] + i), acc0[t]); \
      i += 8;                                                                                           \
    }                                                                                                   \
    for (int t = 0; t < n_tokens; t++) {                                                                \
      float sum = hsum_ps(_mm256_add_ps(acc0[t], acc1[t]));                                              \
      for (int64_t j = i; j < n; j++) sum = fmaf(LOAD1(w, j), xt[t][j], sum);                            \
      out[t] = sum;                                                                                     \
    }                                                                                                   \
  }

HALO_AVX2_FLOAT_TILE(dot_f32_tile, load8_f32, load1_f32)
HALO_AVX2_FLOAT_TILE(dot_f16_tile, load8_f16, load1_f16)

/* Instantiate each tile width with a constant token count so the compiler keeps accumulators in registers. */
#define HALO_AVX2_DISPATCH(NAME, TILE)                                                                   \
  static void NAME(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens,     \
                   float *out) {                                                                        \
    switch (n_tokens) {                                                                                 \
      case 4: TILE(n, w, x, x_stride_bytes, 4, out); break;                                             \
      case 3: TILE(n, w, x, x_stride_bytes, 3, out); break;                                             \
      case 2: TILE(n, w, x, x_stride_bytes, 2, out); break;                                             \
      default: TILE(n, w, x, x_stride_bytes, 1, out); break;                                            \
    }                                                                                                   \
  }

HALO_AVX2_DISPATCH(dot_q8_0_avx2, dot_q8_0_tile)
HALO_AVX2_DISPATCH(dot_q4_0_avx2, dot_q4_0_tile)
HALO_AVX2_DISPATCH(dot_f32_avx2, dot_f32_tile)
HALO_AVX2_DISPATCH(dot_f16_avx2, dot_f16_tile)

/* ---- attention: scores against key rows, weighted sum of value rows ----------------------- */

/*
 * q · k for NR (1 or 4) rows at once: two accumulators per row over 16-element steps, one more
 * 8-element step, then the scalar tail; the same operations per row whatever NR is.
 */
HALO_AVX2_INLINE void dot_rows_block(const int nr, int64_t n, const float *q, const float *k, int64_t row_stride,
                                     float *out) {
  __m256 acc0[4], acc1[4];
  for (int r = 0; r < nr; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 q0 = _mm256_loadu_ps(q + i), q1 = _mm256_loadu_ps(q + i + 8);
    for (int r = 0; r < nr; r++) {
      acc0[r] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k + r * row_stride + i), acc0[r]);
      acc1[r] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(k + r * row_stride + i + 8), acc1[r]);
    }
  }
  if (i + 8 <= n) {
    const __m256 q0 = _mm256_loadu_ps(q + i);
    for (int r = 0; r < nr; r++) acc0[r] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k + r * row_stride + i), acc0[r]);
    i += 8;
  }
  for (int r = 0; r < nr; r++) {
    float sum = hsum_ps(_mm256_add_ps(acc0[r], acc1[r]));
    for (int64_t j = i; j < n; j++) sum = fmaf(q[j], k[r * row_stride + j], sum);
    out[r] = sum;
  }
}

static void dot_rows_f32_avx2(int64_t n, const float *q, const float *rows, int64_t row_stride, int64_t n_rows,
                              float *out) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) dot_rows_block(4, n, q, rows + r * row_stride, row_stride, out + r);
  for (; r < n_rows; r++) dot_rows_block(1, n, q, rows + r * row_stride, row_stride, out + r);
}

/*
 * exp on 8 lanes, Cephes-style: exp(x) = 2^k · exp(r) with k = round(x·log2 e) and
 * r = x − k·ln 2 (ln 2 split in two so r is exact), exp(r) by a degree-7 polynomial; within ~2
 * ulp of expf. Below −87.3 (where exp underflows to 2^−126) the result is 0, so −∞ gives
 * exactly 0; NaN propagates.
 */
HALO_AVX2_INLINE __m256 exp_ps(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), x); /* (min/max return their second operand for NaN) */
  x = _mm256_max_ps(_mm256_set1_ps(-87.33654f), x);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(scale)));
}

/* exp of 8 lanes in place, adding them to two double accumulators. */
HALO_AVX2_INLINE void exp_sum_8(float *x, __m256 shift, __m256d *sum_lo, __m256d *sum_hi) {
  const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x), shift));
  _mm256_storeu_ps(x, e);
  *sum_lo = _mm256_add_pd(*sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
  *sum_hi = _mm256_add_pd(*sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
}

static double exp_sum_f32_avx2(int64_t n, float *x, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256d sum_lo = _mm256_setzero_pd(), sum_hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) exp_sum_8(x + i, vshift, &sum_lo, &sum_hi);
  if (i < n) {
    /* The tail through the same code, padded with −∞ (exp 0). */
    float tail[8];
    for (int j = 0; j < 8; j++) tail[j] = i + j < n ? x[i + j] : -INFINITY;
    exp_sum_8(tail, vshift, &sum_lo, &sum_hi);
    for (int64_t j = i; j < n; j++) x[j] = tail[j - i];
  }
  const __m256d s = _mm256_add_pd(sum_lo, sum_hi);
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

/*
 * out[0..8·nv) over all rows, nv (1..8) constant per instantiation so the accumulators stay in
 * registers: at most 8 of the 16 ymm registers, leaving room for the weight and the loads.
 */
HALO_AVX2_INLINE void weighted_sum_chunk(const int nv, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                         float *out) {
  __m256 acc[8];
  for (int j = 0; j < nv; j++) acc[j] = _mm256_setzero_ps();
  for (int64_t s = 0; s < n_rows; s++) {
    if (p[s] == 0.0f) continue;
    const __m256 ps = _mm256_set1_ps(p[s]);
    const float *vs = v + s * v_stride;
    for (int j = 0; j < nv; j++) acc[j] = _mm256_fmadd_ps(ps, _mm256_loadu_ps(vs + 8 * j), acc[j]);
  }
  for (int j = 0; j < nv; j++) _mm256_storeu_ps(out + 8 * j, acc[j]);
}

/* Chunks of up to 64 columns, one pass over the rows each; the last n % 8 columns in scalar FMA. */
static void weighted_sum_f32_avx2(int64_t n, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                  float *out) {
  int64_t i = 0;
  for (; i + 8 <= n;) {
    const int64_t left = (n - i) / 8;
    const int nv = left < 8 ? (int)left : 8;
    switch (nv) {
      case 8: weighted_sum_chunk(8, p, n_rows, v + i, v_stride, out + i); break;
      case 7: weighted_sum_chunk(7, p, n_rows, v + i, v_stride, out + i); break;
      case 6: weighted_sum_chunk(6, p, n_rows, v + i, v_stride, out + i); break;
      case 5: weighted_sum_chunk(5, p, n_rows, v + i, v_stride, out + i); break;
      case 4: weighted_sum_chunk(4, p, n_rows, v + i, v_stride, out + i); break;
      case 3: weighted_sum_chunk(3, p, n_rows, v + i, v_stride, out + i); break;
      case 2: weighted_sum_chunk(2, p, n_rows, v + i, v_stride, out + i); break;
      default: weighted_sum_chunk(1, p, n_rows, v + i, v_stride, out + i); break;
    }
    i += 8 * (int64_t)nv;
  }
  if (i == n) return;
  float tail[8] = {0};
  for (int64_t s = 0; s < n_rows; s++) {
    if (p[s] == 0.0f) continue;
    const float *vs = v + s * v_stride;
    for (int64_t j = i; j < n; j++) tail[j - i] = fmaf(p[s], vs[j], tail[j - i]);
  }
  for (int64_t j = i; j < n; j++) out[j] = tail[j - i];
}

static void to_f32_f16_avx2(const uint8_t *src, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8_f16(src, i));
  for (; i < n; i++) out[i] = load1_f16(src, i);
}

const halo_kernel_set halo_kernels_avx2 = {
    .name = "avx2",
    .quantize_row_q8_0 = quantize_row_q8_0_avx2,
    .dot_f32 = dot_f32_avx2,
    .dot_f16 = dot_f16_avx2,
    .dot_q8_0 = dot_q8_0_avx2,
    .dot_q4_0 = dot_q4_0_avx2,
    .to_f32_f32 = halo_to_f32_f32_generic,
    .to_f32_f16 = to_f32_f16_avx2,
    .to_f32_q8_0 = halo_to_f32_q8_0_generic,
    .to_f32_q4_0 = halo_to_f32_q4_0_generic,
    .dot_rows_f32 = dot_rows_f32_avx2,
    .exp_sum_f32 = exp_sum_f32_avx2,
    .weighted_sum_f32 = weighted_sum_f32_avx2,
};
