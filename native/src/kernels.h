/*
 * One kernel set per instruction-set variant (generic scalar, AVX2, NEON, NEON+dotprod),
 * selected at run time. The drivers (halo_api.c for matrices, attention.c) only ever call
 * through this table.
 *
 * Dot kernels compute a tile: one weight row against `n_tokens` (1..HALO_TILE_TOKENS)
 * activation rows, so the weight bytes are read once per tile. Each variant's tile kernel
 * performs, per token, exactly the same operations in the same order as with n_tokens == 1,
 * so a matmul gives bit-identical results to the equivalent matvecs.
 */
#ifndef HALO_KERNELS_H
#define HALO_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "quants.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tokens per tile in matmul (activation rows sharing one pass over a weight row). */
#define HALO_TILE_TOKENS 4

/*
 * out[t] = dot(weight row w[0..n), activation row t) for t < n_tokens.
 * For Q8_0/Q4_0 weights the activation rows are Q8_0 blocks; for F32/F16 they are floats.
 * `x_stride_bytes` is the distance between consecutive activation rows.
 */
typedef void (*halo_dot_fn)(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens,
                            float *out);

/* dst = Q8_0 blocks of x[0..n), n % 32 == 0; byte-identical to quantizeRowQ8_0 in the TS reference. */
typedef void (*halo_quantize_fn)(const float *x, uint8_t *dst, int64_t n);

/* out[0..n) = the n elements stored at src (n % block size == 0). */
typedef void (*halo_to_f32_fn)(const uint8_t *src, float *out, int64_t n);

/*
 * out[r] = Σ_{i<n} q[i] · rows[r·row_stride + i] for r < n_rows: one query against consecutive
 * float rows (attention scores against cached keys). A row's result has the same bits whether
 * it is computed alone or with its neighbours.
 */
typedef void (*halo_dot_rows_fn)(int64_t n, const float *q, const float *rows, int64_t row_stride, int64_t n_rows,
                                 float *out);

/*
 * x[i] = exp(x[i] − shift) in place for i < n, returning Σ x[i] accumulated in double: the
 * softmax numerators. exp(−∞) is exactly 0 (how attention marks invalid positions); NaN stays
 * NaN. Fast paths may differ from expf by a few ulp.
 */
typedef double (*halo_exp_sum_fn)(int64_t n, float *x, float shift);

/*
 * The attention-weighted sum of value rows:
 *   out[i] = Σ_{s < n_rows, p[s] != 0} p[s] · v[s·v_stride + i]   for i < n,
 * each element accumulated over s in ascending order. A row whose weight is exactly 0 is never
 * read (an invalid cache row may hold anything). out must not overlap p or v.
 */
typedef void (*halo_weighted_sum_fn)(int64_t n, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                     float *out);

typedef struct halo_kernel_set {
  const char *name;
  halo_quantize_fn quantize_row_q8_0;
  halo_dot_fn dot_f32;
  halo_dot_fn dot_f16;
  halo_dot_fn dot_q8_0;
  halo_dot_fn dot_q4_0;
  halo_to_f32_fn to_f32_f32;
  halo_to_f32_fn to_f32_f16;
  halo_to_f32_fn to_f32_q8_0;
  halo_to_f32_fn to_f32_q4_0;
  halo_dot_rows_fn dot_rows_f32;
  halo_exp_sum_fn exp_sum_f32;
  halo_weighted_sum_fn weighted_sum_f32;
} halo_kernel_set;

/* Generic scalar kernels (kernels_generic.c); every variant may reuse these. */
extern const halo_kernel_set halo_kernels_generic;
void halo_quantize_row_q8_0_generic(const float *x, uint8_t *dst, int64_t n);
void halo_dot_f32_generic(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out);
void halo_dot_f16_generic(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out);
void halo_dot_q8_0_generic(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out);
void halo_dot_q4_0_generic(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out);
void halo_to_f32_f32_generic(const uint8_t *src, float *out, int64_t n);
void halo_to_f32_f16_generic(const uint8_t *src, float *out, int64_t n);
void halo_to_f32_q8_0_generic(const uint8_t *src, float *out, int64_t n);
void halo_to_f32_q4_0_generic(const uint8_t *src, float *out, int64_t n);
void halo_dot_rows_f32_generic(int64_t n, const float *q, const float *rows, int64_t row_stride, int64_t n_rows,
                               float *out);
double halo_exp_sum_f32_generic(int64_t n, float *x, float shift);
void halo_weighted_sum_f32_generic(int64_t n, const float *p, int64_t n_rows, const float *v, int64_t v_stride,
                                   float *out);

#if defined(__x86_64__) || defined(_M_X64)
/* AVX2 + FMA + F16C (x86/kernels_avx2.c, compiled with -mavx2 -mfma -mf16c). */
extern const halo_kernel_set halo_kernels_avx2;
#endif

#if defined(__aarch64__)
/* Plain ARMv8-A NEON (arm/kernels_neon.c). */
extern const halo_kernel_set halo_kernels_neon;
/* ARMv8.2-A dot product (arm/kernels_neon_dotprod.c, compiled with -march=armv8.2-a+dotprod). */
extern const halo_kernel_set halo_kernels_neon_dotprod;
#endif

/* The compile-target architecture name ("x86_64", "aarch64", ...). */
const char *halo_isa_name(void);

/*
 * The kernel sets this CPU can run, best first, ending with the generic set. Returns the count
 * (at most `cap` are stored).
 */
int halo_available_kernel_sets(const halo_kernel_set **sets, int cap);

/* The available set named `name`, or NULL (the best one if name is NULL or ""). */
const halo_kernel_set *halo_find_kernel_set(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* HALO_KERNELS_H */
