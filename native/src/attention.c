/*
 * The attention driver (halo_attend in halo_api.h): validate, then for each query head
 *   1. the scores of each run of consecutive valid positions with the kernel set's
 *      dot_rows_f32 (a score never depends on the run it falls in);
 *   2. a softmax with the set's exp_sum_f32 (exponentials in float, summed in double);
 *   3. out = the weighted sum of value rows with the set's weighted_sum_f32.
 * Invalid positions are skipped in step 1 and weighted 0, so step 3 never reads them either.
 *
 * Heads are independent and each has its own row of scores, so the pool's workers claim them
 * one at a time when the work pays for it (halo_ctx_workers), and a head's result is the same
 * on whichever worker computes it: bit-identical for every thread count.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "ctx.h"

/*
 * What the softmax step costs per position, in multiply-adds of the dot and sum kernels, for
 * the work estimate (measured with AVX2: ~1 ns per position against ~0.2 ns per multiply-add;
 * the generic set's expf is ~5 ns).
 */
#define HALO_EXP_WORK 8

typedef struct attend_job {
  const halo_kernel_set *kernels;
  int64_t n_heads;
  int64_t head_dim;
  const float *q;      /* (n_heads, head_dim) */
  const float *keys;   /* (n_positions.., head_dim) */
  const float *values; /* (n_positions.., head_dim) */
  const uint8_t *valid;
  int64_t n_positions;
  float scale;
  float *out;          /* (n_heads, head_dim) */
  float *scores;       /* (n_heads, n_positions) scratch */
  atomic_int_fast64_t next_head;
} attend_job;

static void attend_head(const attend_job *job, int64_t h) {
  const int64_t n = job->n_positions, head_dim = job->head_dim;
  const float *q = job->q + h * head_dim;
  float *scores = job->scores + h * n;
  float *out = job->out + h * head_dim;
  /* 1. scale · q·k_s over each run of valid positions; −∞ (weight 0) for the others. */
  float max = -INFINITY;
  int64_t n_valid = 0;
  for (int64_t s = 0; s < n;) {
    if (job->valid[s] != 1) {
      scores[s++] = -INFINITY;
      continue;
    }
    int64_t end = s + 1;
    while (end < n && job->valid[end] == 1) end++;
    job->kernels->dot_rows_f32(head_dim, q, job->keys + s * head_dim, head_dim, end - s, scores + s);
    for (int64_t i = s; i < end; i++) {
      scores[i] *= job->scale;
      if (scores[i] > max) max = scores[i];
    }
    n_valid += end - s;
    s = end;
  }
  if (n_valid == 0) {
    memset(out, 0, (size_t)head_dim * sizeof(float));
    return;
  }
  /* 2. p_s = exp(score_s − max) / Σ exp(score − max); exp(−∞) = 0 for the invalid positions. */
  const float inverse = (float)(1.0 / job->kernels->exp_sum_f32(n, scores, max));
  for (int64_t s = 0; s < n; s++) scores[s] *= inverse;
  /* 3. out = Σ p_s · v_s (rows with p_s == 0, invalid ones included, are skipped). */
  job->kernels->weighted_sum_f32(head_dim, scores, n, job->values, head_dim, out);
}

static void attend_worker(void *arg, int worker_index, int n_workers) {
  (void)worker_index;
  (void)n_workers;
  attend_job *job = (attend_job *)arg;
  for (;;) {
    const int64_t h = atomic_fetch_add_explicit(&job->next_head, 1, memory_order_relaxed);
    if (h >= job->n_heads) return;
    attend_head(job, h);
  }
}

/* Checks that [offset, offset + width) lies inside [0, len). */
static int fits(int64_t offset, int64_t width, size_t len) {
  int64_t end;
  if (offset < 0 || width < 0 || __builtin_add_overflow(offset, width, &end)) return 0;
  return (uint64_t)end <= (uint64_t)len;
}

static halo_status check_attend(const halo_attend_args *a, char *err, size_t err_len) {
  if (a->n_heads < 0) return halo_fail(HALO_E_USAGE, err, err_len, "nQueryHeads must be >= 0, got %lld", (long long)a->n_heads);
  if (a->head_dim < 1) return halo_fail(HALO_E_USAGE, err, err_len, "headDim must be >= 1, got %lld", (long long)a->head_dim);
  if (a->n_positions < 0 || (uint64_t)a->n_positions > (uint64_t)a->context_length) {
    return halo_fail(HALO_E_USAGE, err, err_len, "nPositions %lld outside [0, contextLength %zu] (valid.length)",
                     (long long)a->n_positions, a->context_length);
  }
  int64_t slab;
  if (a->context_length > (size_t)INT64_MAX ||
      halo_checked_mul_add((int64_t)a->context_length, a->head_dim, 0, &slab) != 0 ||
      (uint64_t)slab != (uint64_t)a->keys_len || (uint64_t)slab != (uint64_t)a->values_len) {
    return halo_fail(HALO_E_USAGE, err, err_len,
                     "keys hold %zu and values %zu floats, expected contextLength %zu (valid.length) x headDim %lld",
                     a->keys_len, a->values_len, a->context_length, (long long)a->head_dim);
  }
  int64_t width;
  if (halo_checked_mul_add(a->n_heads, a->head_dim, 0, &width) != 0 || !fits(a->q_offset, width, a->q_len)) {
    return halo_fail(HALO_E_USAGE, err, err_len, "q (length %zu) too short for %lld heads of %lld at offset %lld",
                     a->q_len, (long long)a->n_heads, (long long)a->head_dim, (long long)a->q_offset);
  }
  if (!fits(a->out_offset, width, a->out_len)) {
    return halo_fail(HALO_E_USAGE, err, err_len, "out (length %zu) too short for %lld heads of %lld at offset %lld",
                     a->out_len, (long long)a->n_heads, (long long)a->head_dim, (long long)a->out_offset);
  }
  if (!isfinite(a->scale) || !isfinite((float)a->scale)) {
    return halo_fail(HALO_E_USAGE, err, err_len, "scale must be finite as a float, got %g", a->scale);
  }
  const float *out = a->out + a->out_offset;
  const size_t out_bytes = (size_t)width * sizeof(float);
  if (halo_ranges_overlap(out, out_bytes, a->q + a->q_offset, out_bytes)) {
    return halo_fail(HALO_E_USAGE, err, err_len, "out overlaps q: the output must be a separate range");
  }
  if (halo_ranges_overlap(out, out_bytes, a->keys, a->keys_len * sizeof(float)) ||
      halo_ranges_overlap(out, out_bytes, a->values, a->values_len * sizeof(float))) {
    return halo_fail(HALO_E_USAGE, err, err_len, "out overlaps the keys or values");
  }
  return HALO_OK;
}

halo_status halo_attend(halo_ctx *ctx, const halo_attend_args *a, char *err, size_t err_len) {
  const halo_status status = check_attend(a, err, err_len);
  if (status != HALO_OK) return status;
  if (a->n_heads == 0) return HALO_OK;
  float *out = a->out + a->out_offset;
  if (a->n_positions == 0) {
    memset(out, 0, (size_t)(a->n_heads * a->head_dim) * sizeof(float));
    return HALO_OK;
  }
  int64_t n_scores;
  if (halo_checked_mul_add(a->n_heads, a->n_positions, 0, &n_scores) != 0 || (uint64_t)n_scores > SIZE_MAX / sizeof(float)) {
    return halo_fail(HALO_E_NOMEM, err, err_len, "attention scratch size overflows");
  }
  float *scores = (float *)halo_ctx_scratch(ctx, (size_t)n_scores * sizeof(float));
  if (scores == NULL) {
    return halo_fail(HALO_E_NOMEM, err, err_len, "out of memory for %lld attention scores", (long long)n_scores);
  }
  attend_job job = {
      .kernels = ctx->kernels,
      .n_heads = a->n_heads,
      .head_dim = a->head_dim,
      .q = a->q + a->q_offset,
      .keys = a->keys,
      .values = a->values,
      .valid = a->valid,
      .n_positions = a->n_positions,
      .scale = (float)a->scale,
      .out = out,
      .scores = scores,
  };
  atomic_init(&job.next_head, 0);
  /* Work: per head and position, a dot and a weighted sum of head_dim, and an exp. */
  int64_t work;
  if (halo_checked_mul_add(n_scores, 2 * a->head_dim + HALO_EXP_WORK, 0, &work) != 0) work = INT64_MAX;
  halo_pool_run(ctx->pool, attend_worker, (void *)&job, halo_ctx_workers(ctx, work, a->n_heads));
  return HALO_OK;
}
