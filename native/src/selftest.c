/*
 * A standalone check of every kernel set this CPU runs against the generic scalar set, for
 * architectures the Node tests cannot reach here (AArch64 under qemu-user). Not part of the
 * addon. From native/, for example:
 *
 *   CC=aarch64-linux-gnu-gcc; F="-O2 -std=gnu11 -ffp-contract=off -pthread"
 *   $CC $F -march=armv8.2-a+dotprod -c src/arm/kernels_neon_dotprod.c -o /tmp/neon_dotprod.o
 *   $CC $F -march=armv8-a -static -o /tmp/halo-selftest src/selftest.c src/halo_api.c src/attention.c \
 *     src/threadpool.c src/cpu_features.c src/kernels_generic.c src/arm/kernels_neon.c /tmp/neon_dotprod.o -lm
 *   qemu-aarch64-static -cpu max /tmp/halo-selftest          # neon-dotprod, neon, generic
 *   qemu-aarch64-static -cpu cortex-a53 /tmp/halo-selftest   # neon, generic (no SDOT)
 *
 * (-march is not per file in GCC: the dotprod file must be compiled on its own, or the baseline
 * code picks up ARMv8.2 instructions and dies on older cores.) On x86-64 build
 * src/x86/kernels_avx2.c the same way with -mavx2 -mfma -mf16c. Checks: the
 * quantizer byte for byte, each dot within 1e-10 NMSE of generic, tiles bit-identical to
 * single tokens, F16 rows exactly, matmul identical for 1 and 3 threads, the attention scores
 * and weighted sum within 1e-10 NMSE of generic (scores bit-identical alone and together), exp
 * within 2e-7 of expf,
 * attention within 1e-10 NMSE of generic and identical for 1 and 3 threads, and the pool doing
 * every item of every run exactly once. Ends with the line "N passed, N failed" and exits
 * non-zero on any failure. test/native/selftest.test.ts builds and runs it for x86-64 (AVX2 and
 * the portable scalar build, -DHALO_PORTABLE_SCALAR) and for AArch64 under qemu-user (Pi 4 and
 * Pi 5 cores, and the scalar build); -DHALO_SELFTEST_WRONG_REFERENCE makes the reference wrong
 * on purpose (npm run selftest:wrong-reference), which must fail.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "halo_api.h"
#include "kernels.h"
#include "threadpool.h"

static int n_passed, n_failed;

static void check(int ok, const char *set, const char *what, int64_t n) {
  if (ok) {
    n_passed++;
  } else {
    n_failed++;
    printf("FAIL %s: %s (n=%lld)\n", set, what, (long long)n);
  }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}
static float gaussian(void) {
  const double u1 = 1.0 - uniform(), u2 = uniform();
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void fill(float *x, int64_t n, float scale) {
  for (int64_t i = 0; i < n; i++) x[i] = scale * gaussian();
}

/* Weights of `type` for n_rows rows of n columns, encoded from Gaussian floats. */
static uint8_t *make_weights(int type, int64_t n_rows, int64_t n, int64_t *row_bytes) {
  int64_t bs = 0, bb = 0;
  halo_type_block(type, &bs, &bb);
  *row_bytes = n / bs * bb;
  uint8_t *w = malloc((size_t)(*row_bytes * n_rows));
  float *row = malloc((size_t)n * sizeof(float));
  for (int64_t r = 0; r < n_rows; r++) {
    fill(row, n, 1.0f);
    uint8_t *dst = w + r * *row_bytes;
    if (type == HALO_TYPE_F32) {
      memcpy(dst, row, (size_t)n * sizeof(float));
    } else if (type == HALO_TYPE_F16) {
      for (int64_t i = 0; i < n; i++) {
        const halo_fp16 h = halo_fp32_to_fp16(row[i]);
        memcpy(dst + 2 * i, &h, 2);
      }
    } else if (type == HALO_TYPE_Q8_0) {
      halo_quantize_row_q8_0_generic(row, dst, n);
    } else {
      /* Q4_0: any nibbles and a positive scale exercise the kernel. */
      for (int64_t b = 0; b < n / QK4_0; b++) {
        const halo_fp16 d = halo_fp32_to_fp16(0.05f + (float)uniform());
        memcpy(dst + b * 18, &d, 2);
        for (int j = 0; j < 16; j++) dst[b * 18 + 2 + j] = (uint8_t)(uniform() * 256);
      }
    }
  }
  free(row);
  return w;
}

static void check_quantizer(const halo_kernel_set *k) {
  static const int64_t sizes[] = {32, 64, 224, 4096};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    const int64_t n = sizes[s];
    float *x = malloc((size_t)n * sizeof(float));
    uint8_t *a = malloc((size_t)(n / 32 * 34)), *b = malloc((size_t)(n / 32 * 34));
    for (int scale = -30; scale <= 30; scale += 15) {
      fill(x, n, powf(10.0f, (float)scale));
      if (n == 64) {
        const float edges[] = {127, 2.5f, -2.5f, 0.5f, -0.5f, 126.5f, -126.5f, 1.5f, -1.5f, 0.49999997f};
        memcpy(x, edges, sizeof edges);
        for (int j = 32; j < 64; j++) x[j] = j < 40 ? 1e-40f : 0.0f;
      }
      k->quantize_row_q8_0(x, a, n);
      halo_quantize_row_q8_0_generic(x, b, n);
      check(memcmp(a, b, (size_t)(n / 32 * 34)) == 0, k->name, "quantize_row_q8_0 matches generic bytes", n);
    }
    free(x);
    free(a);
    free(b);
  }
}

/* dot vs generic within NMSE 1e-10 over 8 rows, and tile widths 2..4 bit-identical to width 1. */
static void check_dot(const halo_kernel_set *k, int type, halo_dot_fn fast, halo_dot_fn slow, const char *what) {
  static const int64_t float_sizes[] = {1, 7, 8, 15, 16, 17, 33, 173, 2048};
  static const int64_t quant_sizes[] = {32, 64, 96, 352, 2048};
  const int quantized = type == HALO_TYPE_Q8_0 || type == HALO_TYPE_Q4_0;
  const int64_t *sizes = quantized ? quant_sizes : float_sizes;
  const size_t n_sizes = quantized ? 5 : 9;
  for (size_t s = 0; s < n_sizes; s++) {
    const int64_t n = sizes[s];
    int64_t row_bytes = 0;
    uint8_t *w = make_weights(type, 8, n, &row_bytes);
    float *xf = malloc((size_t)(4 * n) * sizeof(float));
    fill(xf, 4 * n, 1.0f);
    uint8_t *xq = malloc((size_t)(4 * (n / 32 + 1) * 34));
    const void *x = xf;
    int64_t stride = n * (int64_t)sizeof(float);
    if (quantized) {
      for (int t = 0; t < 4; t++) halo_quantize_row_q8_0_generic(xf + t * n, xq + t * (n / 32) * 34, n);
      x = xq;
      stride = n / 32 * 34;
    }
    double err = 0, norm = 0;
    int tiles_match = 1;
    for (int r = 0; r < 8; r++) {
      float single[4], tile[4], ref[4];
      for (int t = 0; t < 4; t++) fast(n, w + r * row_bytes, (const uint8_t *)x + t * stride, stride, 1, &single[t]);
      slow(n, w + r * row_bytes, x, stride, 4, ref);
      for (int width = 2; width <= 4; width++) {
        fast(n, w + r * row_bytes, x, stride, width, tile);
        if (memcmp(tile, single, (size_t)width * sizeof(float)) != 0) tiles_match = 0;
      }
      for (int t = 0; t < 4; t++) {
        err += ((double)single[t] - ref[t]) * ((double)single[t] - ref[t]);
        norm += (double)ref[t] * ref[t];
      }
    }
    char label[96];
    snprintf(label, sizeof label, "%s within 1e-10 NMSE of generic", what);
    check(err <= 1e-10 * norm, k->name, label, n);
    snprintf(label, sizeof label, "%s tiles bit-identical to single tokens", what);
    check(tiles_match, k->name, label, n);
    free(w);
    free(xf);
    free(xq);
  }
}

static void check_rows(const halo_kernel_set *k) {
  int64_t row_bytes = 0;
  uint8_t *w = make_weights(HALO_TYPE_F16, 1, 173, &row_bytes);
  float a[173], b[173];
  k->to_f32_f16(w, a, 173);
  halo_to_f32_f16_generic(w, b, 173);
  check(memcmp(a, b, sizeof a) == 0, k->name, "to_f32_f16 exact", 173);
  free(w);
}

static void check_threads(const halo_kernel_set *k) {
  static const int types[] = {HALO_TYPE_F32, HALO_TYPE_F16, HALO_TYPE_Q8_0, HALO_TYPE_Q4_0};
  for (size_t i = 0; i < 4; i++) {
    const int64_t n_rows = 173, n = 512, n_tokens = 9;
    int64_t row_bytes = 0;
    uint8_t *data = make_weights(types[i], n_rows, n, &row_bytes);
    const halo_matrix w = {data, (size_t)(row_bytes * n_rows), types[i], n_rows, n, row_bytes};
    float *x = malloc((size_t)(n_tokens * n) * sizeof(float));
    fill(x, n_tokens * n, 1.0f);
    float *y1 = calloc((size_t)(n_tokens * n_rows), sizeof(float));
    float *y3 = calloc((size_t)(n_tokens * n_rows), sizeof(float));
    halo_ctx *c1 = NULL, *c3 = NULL;
    char err[HALO_ERR_LEN];
    int ok = halo_ctx_create(1, k->name, &c1, err, sizeof err) == HALO_OK && halo_ctx_create(3, k->name, &c3, err, sizeof err) == HALO_OK;
    halo_matmul_args a = {n_tokens, x, (size_t)(n_tokens * n), 0, n, y1, (size_t)(n_tokens * n_rows), 0, n_rows, 0, n_rows, 0, n};
    ok = ok && halo_matmul(c1, &w, &a, err, sizeof err) == HALO_OK;
    a.y = y3;
    ok = ok && halo_matmul(c3, &w, &a, err, sizeof err) == HALO_OK;
    ok = ok && memcmp(y1, y3, (size_t)(n_tokens * n_rows) * sizeof(float)) == 0;
    check(ok, k->name, "matmul identical for 1 and 3 threads", n);
    halo_ctx_destroy(c1);
    halo_ctx_destroy(c3);
    free(data);
    free(x);
    free(y1);
    free(y3);
  }
}

/* dot_rows_f32 vs generic within NMSE 1e-10, and each row's bits independent of how many rows share the call. */
static void check_dot_rows(const halo_kernel_set *k) {
  static const int64_t sizes[] = {1, 3, 4, 7, 8, 12, 16, 40, 64, 100, 128, 200};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    const int64_t n = sizes[i], n_rows = 11, stride = n + 5;
    float *rows = malloc((size_t)(n_rows * stride) * sizeof(float));
    float q[200], a[11], b[11], one[11];
    fill(rows, n_rows * stride, 1.0f);
    fill(q, n, 1.0f);
    k->dot_rows_f32(n, q, rows, stride, n_rows, a);
    halo_dot_rows_f32_generic(n, q, rows, stride, n_rows, b);
    for (int64_t r = 0; r < n_rows; r++) k->dot_rows_f32(n, q, rows + r * stride, stride, 1, one + r);
    double err = 0, norm = 0;
    for (int64_t r = 0; r < n_rows; r++) {
      err += ((double)a[r] - b[r]) * ((double)a[r] - b[r]);
      norm += (double)b[r] * b[r];
    }
    check(err <= 1e-10 * norm, k->name, "dot_rows_f32 within 1e-10 NMSE of generic", n);
    check(memcmp(a, one, sizeof a) == 0, k->name, "dot_rows_f32 rows bit-identical alone and together", n);
    free(rows);
  }
}

/* exp_sum_f32 within 4 ulp-ish (2e-7 relative) of generic expf, −∞ → 0 exactly, NaN stays NaN. */
static void check_exp_sum(const halo_kernel_set *k) {
  static const int64_t sizes[] = {1, 3, 4, 7, 8, 9, 31, 100, 1000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    const int64_t n = sizes[i];
    float a[1000], b[1000];
    for (int64_t j = 0; j < n; j++) a[j] = b[j] = j % 7 == 3 ? -INFINITY : (float)(-100.0 * uniform() + 2.0);
    const double sa = k->exp_sum_f32(n, a, 1.5f), sb = halo_exp_sum_f32_generic(n, b, 1.5f);
    int ok = fabs(sa - sb) <= 2e-7 * sb;
    for (int64_t j = 0; j < n; j++) {
      ok = ok && fabsf(a[j] - b[j]) <= 2e-7f * b[j] + 1e-37f && (b[j] != 0.0f || a[j] == 0.0f || b[j] < 1e-37f);
      if (j % 7 == 3) ok = ok && a[j] == 0.0f;
    }
    check(ok, k->name, "exp_sum_f32 within 2e-7 of expf, exp(-inf) == 0", n);
  }
  float x[3] = {NAN, 0.0f, -1.0f};
  check(isnan(k->exp_sum_f32(3, x, 0.0f)) && isnan(x[0]) && x[1] == 1.0f, k->name, "exp_sum_f32 keeps NaN", 3);
}

/* weighted_sum_f32 vs generic within NMSE 1e-10; rows weighted 0 hold NaN and must not be read. */
static void check_weighted_sum(const halo_kernel_set *k) {
  static const int64_t sizes[] = {1, 3, 4, 7, 8, 12, 16, 40, 64, 100, 128, 200};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    const int64_t n = sizes[i], n_rows = 37, stride = n + 3;
    float *v = malloc((size_t)(n_rows * stride) * sizeof(float));
    float p[37], a[200], b[200];
    fill(v, n_rows * stride, 1.0f);
    for (int64_t s = 0; s < n_rows; s++) {
      p[s] = s % 5 == 2 ? 0.0f : (float)uniform();
      if (p[s] == 0.0f) v[s * stride] = NAN;
    }
    k->weighted_sum_f32(n, p, n_rows, v, stride, a);
    halo_weighted_sum_f32_generic(n, p, n_rows, v, stride, b);
    double err = 0, norm = 0;
    for (int64_t j = 0; j < n; j++) {
      err += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
      norm += (double)b[j] * b[j];
    }
    check(err <= 1e-10 * norm, k->name, "weighted_sum_f32 within 1e-10 NMSE of generic", n);
    free(v);
  }
}

/* halo_attend within 1e-10 NMSE of the generic set, and identical for 1 and 3 threads. */
static void check_attend(const halo_kernel_set *k) {
  const int64_t n_heads = 8, head_dim = 128, context = 1100, n_positions = 1000;
  float *q = malloc((size_t)(n_heads * head_dim) * sizeof(float));
  float *keys = malloc((size_t)(context * head_dim) * sizeof(float));
  float *values = malloc((size_t)(context * head_dim) * sizeof(float));
  float *out[3];
  uint8_t *valid = malloc((size_t)context);
  fill(q, n_heads * head_dim, 1.0f);
  fill(keys, context * head_dim, 1.0f);
  fill(values, context * head_dim, 1.0f);
  for (int64_t s = 0; s < context; s++) {
    valid[s] = uniform() < 0.8 ? 1 : 0;
    if (!valid[s]) keys[s * head_dim] = values[s * head_dim] = NAN;
  }
  const char *names[3] = {k->name, k->name, "generic"};
  const int threads[3] = {1, 3, 1};
  int ok = 1;
  for (int i = 0; i < 3; i++) {
    out[i] = calloc((size_t)(n_heads * head_dim), sizeof(float));
    halo_ctx *c = NULL;
    char err[HALO_ERR_LEN];
    const halo_attend_args a = {n_heads, head_dim, q, (size_t)(n_heads * head_dim), 0, keys, (size_t)(context * head_dim),
                                values, (size_t)(context * head_dim), valid, (size_t)context, n_positions,
                                1.0 / sqrt((double)head_dim), out[i], (size_t)(n_heads * head_dim), 0};
    ok = ok && halo_ctx_create(threads[i], names[i], &c, err, sizeof err) == HALO_OK;
    ok = ok && halo_attend(c, &a, err, sizeof err) == HALO_OK;
    halo_ctx_destroy(c);
  }
  check(ok && memcmp(out[0], out[1], (size_t)(n_heads * head_dim) * sizeof(float)) == 0, k->name,
        "attend identical for 1 and 3 threads", n_positions);
  double err = 0, norm = 0;
  for (int64_t j = 0; j < n_heads * head_dim; j++) {
    err += ((double)out[0][j] - out[2][j]) * ((double)out[0][j] - out[2][j]);
    norm += (double)out[2][j] * out[2][j];
  }
  check(ok && err <= 1e-10 * norm, k->name, "attend within 1e-10 NMSE of generic", n_positions);
  for (int i = 0; i < 3; i++) free(out[i]);
  free(q);
  free(keys);
  free(values);
  free(valid);
}

struct pool_probe {
  atomic_int next;
  int n_items;
  atomic_int done[64];
  atomic_long by_workers; /* items done by threads other than the caller */
};

static void probe_task(void *arg, int worker_index, int n_workers) {
  (void)n_workers;
  struct pool_probe *probe = (struct pool_probe *)arg;
  for (;;) {
    const int i = atomic_fetch_add(&probe->next, 1);
    if (i >= probe->n_items) return;
    atomic_fetch_add(&probe->done[i], 1);
    if (worker_index != 0) atomic_fetch_add(&probe->by_workers, 1);
  }
}

/*
 * Runs published right after creation, and long series of back-to-back runs, complete every
 * item exactly once whichever workers take part; and workers do take part.
 */
static void check_pool(void) {
  int ok = 1;
  long by_workers = 0;
  for (int round = 0; round < 200 && ok; round++) {
    halo_pool *pool = NULL;
    const int n = 2 + round % 3;
    if (halo_pool_create(n, &pool) != 0) {
      ok = 0;
      break;
    }
    struct pool_probe probe;
    const int runs = round % 50 == 0 ? 20000 : 3;
    for (int r = 0; r < runs && ok; r++) {
      atomic_init(&probe.next, 0);
      probe.n_items = 1 + (round + r) % 64;
      atomic_init(&probe.by_workers, 0);
      for (int i = 0; i < 64; i++) atomic_init(&probe.done[i], 0);
      halo_pool_run(pool, probe_task, &probe, n);
      for (int i = 0; i < 64; i++) ok = ok && atomic_load(&probe.done[i]) == (i < probe.n_items);
      by_workers += atomic_load(&probe.by_workers);
    }
    halo_pool_destroy(pool);
  }
  check(ok, "threadpool", "every run does every item exactly once", 200);
  check(by_workers > 0, "threadpool", "workers take part in runs", by_workers);
}

#ifdef HALO_SELFTEST_WRONG_REFERENCE
/*
 * A deliberately wrong reference, to show that the driver fails when a kernel and its reference
 * disagree: the Q8_0 dot of the generic set, 1% too large. Never built into the normal suite.
 */
static void wrong_dot_q8_0(int64_t n, const uint8_t *w, const void *x, int64_t x_stride_bytes, int n_tokens, float *out) {
  halo_kernels_generic.dot_q8_0(n, w, x, x_stride_bytes, n_tokens, out);
  for (int t = 0; t < n_tokens; t++) out[t] *= 1.01f;
}
#endif

int main(void) {
  const halo_kernel_set *sets[8];
  const int n_sets = halo_available_kernel_sets(sets, 8);
  printf("isa %s, kernel sets:", halo_isa_name());
  for (int i = 0; i < n_sets; i++) printf(" %s", sets[i]->name);
  printf("\n");
  for (int i = 0; i < n_sets; i++) {
    const halo_kernel_set *k = sets[i];
    const halo_kernel_set *g = &halo_kernels_generic;
#ifdef HALO_SELFTEST_WRONG_REFERENCE
    halo_kernel_set wrong = halo_kernels_generic;
    wrong.dot_q8_0 = wrong_dot_q8_0;
    g = &wrong;
#endif
    check_quantizer(k);
    check_dot(k, HALO_TYPE_F32, k->dot_f32, g->dot_f32, "dot_f32");
    check_dot(k, HALO_TYPE_F16, k->dot_f16, g->dot_f16, "dot_f16");
    check_dot(k, HALO_TYPE_Q8_0, k->dot_q8_0, g->dot_q8_0, "dot_q8_0");
    check_dot(k, HALO_TYPE_Q4_0, k->dot_q4_0, g->dot_q4_0, "dot_q4_0");
    check_rows(k);
    check_threads(k);
    check_dot_rows(k);
    check_exp_sum(k);
    check_weighted_sum(k);
    check_attend(k);
  }
  check_pool();
  printf("%d passed, %d failed\n", n_passed, n_failed);
  return n_failed == 0 ? 0 : 1;
}
