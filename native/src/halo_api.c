/*
 * The kernel context and the matrix driver: validate, quantize the activations once (for
 * quantized weights), then split the output rows into chunks that the pool's workers claim
 * one at a time (or, for small weights and many tokens, the tokens into blocks). A call uses
 * only as many workers as its work pays for (halo_ctx_workers, HALO_MIN_WORK_PER_WORKER in
 * ctx.h); small ones run on the calling thread alone. Each chunk walks its rows once per tile of HALO_TILE_TOKENS tokens, so for
 * prefill a chunk's weights stay in cache across the token tiles and stream from memory once.
 *
 * A row's result depends only on the kernel set, never on the worker or chunk that computed
 * it, so outputs are bit-identical for every thread count.
 */
#include "halo_api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "kernels.h"
#include "threadpool.h"

/*
 * Chunks per worker, to balance uneven cores; and the largest chunk, in rows and in weight bytes:
 * in prefill a chunk's weights are re-read once per token tile and must stay in L2 meanwhile.
 */
#define HALO_CHUNKS_PER_WORKER 8
#define HALO_MAX_CHUNK_ROWS 64
#define HALO_MAX_CHUNK_BYTES (128 * 1024)
/*
 * Token blocks per worker when the tokens are split (small weights, many tokens): a few, so a
 * worker that starts late still finds some (1 and 4 measured alike, 8 up to 15% slower).
 */
#define HALO_TOKEN_BLOCKS_PER_WORKER 4
/*
 * With several tokens, each row chunk writes its rows of every token's output: chunks of fewer
 * than a cache line of floats make workers write the same lines (false sharing), which cost
 * more than the split saved (measured: a 64x64 F32 matmul of 128 tokens took 238 µs on 2
 * threads with 4-row chunks into an unaligned y, 164 µs on 1, 66 µs with a 64-byte-aligned y).
 */
#define HALO_MIN_CHUNK_ROWS_BATCHED 16
/*
 * Quantizing a float to Q8_0 costs about as much as this many multiply-adds of a matvec
 * (measured with AVX2: ~1.1 ns per element against ~0.15-0.25 ns per multiply-add).
 */
#define HALO_QUANTIZE_WORK_PER_ELEMENT 6

halo_status halo_fail(halo_status status, char *err, size_t err_len, const char *format, ...) {
  if (err != NULL && err_len > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_len, format, args);
    va_end(args);
  }
  return status;
}

int halo_type_block(int type, int64_t *block_size, int64_t *block_bytes) {
  switch (type) {
    case HALO_TYPE_F32: *block_size = 1; *block_bytes = 4; return 0;
    case HALO_TYPE_F16: *block_size = 1; *block_bytes = 2; return 0;
    case HALO_TYPE_Q4_0: *block_size = QK4_0; *block_bytes = (int64_t)sizeof(block_q4_0); return 0;
    case HALO_TYPE_Q8_0: *block_size = QK8_0; *block_bytes = (int64_t)sizeof(block_q8_0); return 0;
    default: return -1;
  }
}

halo_status halo_ctx_create(int n_threads, const char *kernel_set, halo_ctx **out, char *err, size_t err_len) {
  *out = NULL;
  if (n_threads < 1 || n_threads > 1024) {
    return halo_fail(HALO_E_USAGE, err, err_len, "nThreads must be an integer in [1, 1024], got %d", n_threads);
  }
  const halo_kernel_set *kernels = halo_find_kernel_set(kernel_set);
  if (kernels == NULL) {
    return halo_fail(HALO_E_UNSUPPORTED, err, err_len, "kernel set '%s' is not available on this CPU or build", kernel_set);
  }
  halo_ctx *ctx = (halo_ctx *)calloc(1, sizeof *ctx);
  if (ctx == NULL) return halo_fail(HALO_E_NOMEM, err, err_len, "out of memory creating the kernel context");
  const int rc = halo_pool_create(n_threads, &ctx->pool);
  if (rc != 0) {
    free(ctx);
    return halo_fail(HALO_E_THREAD, err, err_len, "could not start %d worker threads: %s", n_threads - 1, strerror(rc));
  }
  ctx->kernels = kernels;
  *out = ctx;
  return HALO_OK;
}

void halo_ctx_destroy(halo_ctx *ctx) {
  if (ctx == NULL) return;
  halo_pool_destroy(ctx->pool);
  free(ctx->scratch);
  free(ctx);
}

int halo_ctx_threads(const halo_ctx *ctx) { return halo_pool_size(ctx->pool); }

const char *halo_ctx_kernel_set(const halo_ctx *ctx) { return ctx->kernels->name; }

uint8_t *halo_ctx_scratch(halo_ctx *ctx, size_t bytes) {
  if (bytes <= ctx->scratch_bytes) return ctx->scratch;
  size_t grown = ctx->scratch_bytes * 2 > bytes ? ctx->scratch_bytes * 2 : bytes;
  grown = (grown + 63) & ~(size_t)63;
  void *p = NULL;
  if (posix_memalign(&p, 64, grown) != 0) return NULL;
  free(ctx->scratch);
  ctx->scratch = (uint8_t *)p;
  ctx->scratch_bytes = grown;
  return ctx->scratch;
}

/* ---- validation ------------------------------------------------------------------------ */

int halo_checked_mul_add(int64_t a, int64_t b, int64_t c, int64_t *out) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return -1;
  return __builtin_add_overflow(product, c, out) ? -1 : 0;
}

static halo_status check_matrix(const halo_matrix *w, int64_t *block_size, int64_t *block_bytes, char *err,
                                size_t err_len) {
  if (halo_type_block(w->type, block_size, block_bytes) != 0) {
    return halo_fail(HALO_E_UNSUPPORTED, err, err_len, "type id %d is not one of F32 (0), F16 (1), Q4_0 (2), Q8_0 (8)",
                w->type);
  }
  if (w->n_rows < 0 || w->n_cols < 0 || w->row_bytes < 0) {
    return halo_fail(HALO_E_USAGE, err, err_len, "matrix dimensions must be >= 0");
  }
  if (w->n_cols % *block_size != 0 || w->n_cols / *block_size * *block_bytes != w->row_bytes) {
    return halo_fail(HALO_E_USAGE, err, err_len, "rowBytes %lld does not match %lld columns of type id %d",
                (long long)w->row_bytes, (long long)w->n_cols, w->type);
  }
  int64_t total;
  if (halo_checked_mul_add(w->n_rows, w->row_bytes, 0, &total) != 0 || (uint64_t)total > (uint64_t)w->data_bytes) {
    return halo_fail(HALO_E_USAGE, err, err_len, "weights hold %zu bytes, need %lld rows x %lld bytes", w->data_bytes,
                (long long)w->n_rows, (long long)w->row_bytes);
  }
  return HALO_OK;
}

/* Checks that [offset, offset + (count-1)·stride + width) lies inside [0, len); count >= 1. */
static int span_fits(int64_t offset, int64_t stride, int64_t count, int64_t width, size_t len, int64_t *end) {
  if (offset < 0 || stride < 0 || width < 0) return 0;
  int64_t last_start;
  if (halo_checked_mul_add(count - 1, stride, offset, &last_start) != 0) return 0;
  if (__builtin_add_overflow(last_start, width, end)) return 0;
  return (uint64_t)*end <= (uint64_t)len;
}

int halo_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes) {
  const uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
  return a_bytes > 0 && b_bytes > 0 && a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

static halo_status check_matmul(const halo_matrix *w, const halo_matmul_args *a, int64_t block_size, char *err,
                                size_t err_len) {
  if (!(0 <= a->row_start && a->row_start <= a->row_end && a->row_end <= w->n_rows)) {
    return halo_fail(HALO_E_USAGE, err, err_len, "rows [%lld, %lld) outside [0, %lld)", (long long)a->row_start,
                (long long)a->row_end, (long long)w->n_rows);
  }
  if (!(0 <= a->col_start && a->col_start <= a->col_end && a->col_end <= w->n_cols) ||
      a->col_start % block_size != 0 || a->col_end % block_size != 0) {
    return halo_fail(HALO_E_USAGE, err, err_len, "columns [%lld, %lld) not %lld-aligned inside [0, %lld)",
                (long long)a->col_start, (long long)a->col_end, (long long)block_size, (long long)w->n_cols);
  }
  if (a->n_tokens < 0) return halo_fail(HALO_E_USAGE, err, err_len, "nTokens must be >= 0");
  if (a->n_tokens == 0) return HALO_OK;
  const int64_t n_in = a->col_end - a->col_start, n_out = a->row_end - a->row_start;
  int64_t x_end, y_end;
  if (!span_fits(a->x_offset, a->x_stride, a->n_tokens, n_in, a->x_len, &x_end)) {
    return halo_fail(HALO_E_USAGE, err, err_len,
                "x (length %zu) too short for %lld tokens of %lld columns at offset %lld, stride %lld", a->x_len,
                (long long)a->n_tokens, (long long)n_in, (long long)a->x_offset, (long long)a->x_stride);
  }
  if (!span_fits(a->y_offset, a->y_stride, a->n_tokens, n_out, a->y_len, &y_end)) {
    return halo_fail(HALO_E_USAGE, err, err_len,
                "y (length %zu) too short for %lld tokens of %lld rows at offset %lld, stride %lld", a->y_len,
                (long long)a->n_tokens, (long long)n_out, (long long)a->y_offset, (long long)a->y_stride);
  }
  if (a->n_tokens > 1 && a->y_stride < n_out) {
    return halo_fail(HALO_E_USAGE, err, err_len, "yStride %lld is less than the %lld rows written per token",
                (long long)a->y_stride, (long long)n_out);
  }
  const float *y_begin = a->y + a->y_offset;
  const size_t y_bytes = (size_t)(y_end - a->y_offset) * sizeof(float);
  if (n_out > 0 && halo_ranges_overlap(y_begin, y_bytes, a->x + a->x_offset, (size_t)(x_end - a->x_offset) * sizeof(float))) {
    return halo_fail(HALO_E_USAGE, err, err_len, "y overlaps x: the output must be a separate buffer");
  }
  if (n_out > 0 && halo_ranges_overlap(y_begin, y_bytes, w->data, (size_t)(w->n_rows * w->row_bytes))) {
    return halo_fail(HALO_E_USAGE, err, err_len, "y overlaps the weights");
  }
  return HALO_OK;
}

/* ---- the driver ------------------------------------------------------------------------ */

typedef struct matmul_job {
  halo_dot_fn dot;
  const uint8_t *w;           /* first weight byte of (row_start, col_start) */
  int64_t row_bytes;
  int64_t n_in;               /* elements per dot */
  const uint8_t *x;           /* first activation row (floats or Q8_0 blocks) */
  int64_t x_stride_bytes;
  int64_t n_tokens;
  float *y;                   /* y[t·y_stride + r] for output row r */
  int64_t y_stride;
  int64_t n_out;
  /* Work items: (row chunk, token block) pairs, row chunk fastest. */
  int64_t chunk_rows;
  int64_t n_row_chunks;
  int64_t block_tokens;       /* a multiple of HALO_TILE_TOKENS, or n_tokens */
  int64_t n_items;
  atomic_int_fast64_t next_item;
} matmul_job;

/* Rows [r0, r1) for tokens [t_begin, t_end), one tile of tokens at a time. */
static void matmul_chunk(const matmul_job *job, int64_t r0, int64_t r1, int64_t t_begin, int64_t t_end) {
  for (int64_t t0 = t_begin; t0 < t_end; t0 += HALO_TILE_TOKENS) {
    const int64_t left = t_end - t0;
    const int n_tile = left < HALO_TILE_TOKENS ? (int)left : HALO_TILE_TOKENS;
    const uint8_t *x_tile = job->x + t0 * job->x_stride_bytes;
    float *y_tile = job->y + t0 * job->y_stride;
    for (int64_t r = r0; r < r1; r++) {
      float out[HALO_TILE_TOKENS];
      job->dot(job->n_in, job->w + r * job->row_bytes, x_tile, job->x_stride_bytes, n_tile, out);
      for (int t = 0; t < n_tile; t++) y_tile[t * job->y_stride + r] = out[t];
    }
  }
}

static void matmul_worker(void *arg, int worker_index, int n_workers) {
  (void)worker_index;
  (void)n_workers;
  matmul_job *job = (matmul_job *)arg;
  for (;;) {
    const int64_t item = atomic_fetch_add_explicit(&job->next_item, 1, memory_order_relaxed);
    if (item >= job->n_items) return;
    const int64_t r0 = item % job->n_row_chunks * job->chunk_rows;
    const int64_t r1 = r0 + job->chunk_rows < job->n_out ? r0 + job->chunk_rows : job->n_out;
    const int64_t t0 = item / job->n_row_chunks * job->block_tokens;
    const int64_t t1 = t0 + job->block_tokens < job->n_tokens ? t0 + job->block_tokens : job->n_tokens;
    matmul_chunk(job, r0, r1, t0, t1);
  }
}

typedef struct quantize_job {
  halo_quantize_fn quantize;
  const float *x;
  int64_t x_stride;
  int64_t n_in;
  uint8_t *dst;
  int64_t dst_stride_bytes;
  int64_t n_tokens;
  atomic_int_fast64_t next_token;
} quantize_job;

static void quantize_worker(void *arg, int worker_index, int n_workers) {
  (void)worker_index;
  (void)n_workers;
  quantize_job *job = (quantize_job *)arg;
  for (;;) {
    const int64_t t = atomic_fetch_add_explicit(&job->next_token, 1, memory_order_relaxed);
    if (t >= job->n_tokens) return;
    job->quantize(job->x + t * job->x_stride, job->dst + t * job->dst_stride_bytes, job->n_in);
  }
}

static halo_dot_fn dot_for(const halo_kernel_set *k, int type) {
  switch (type) {
    case HALO_TYPE_F32: return k->dot_f32;
    case HALO_TYPE_F16: return k->dot_f16;
    case HALO_TYPE_Q4_0: return k->dot_q4_0;
    case HALO_TYPE_Q8_0: return k->dot_q8_0;
    default: return NULL;
  }
}

int halo_ctx_workers(const halo_ctx *ctx, int64_t work, int64_t max_parts) {
  int64_t n = work / HALO_MIN_WORK_PER_WORKER;
  const int64_t size = halo_pool_size(ctx->pool);
  if (n > size) n = size;
  if (n > max_parts) n = max_parts;
  return n < 1 ? 1 : (int)n;
}

halo_status halo_matmul(halo_ctx *ctx, const halo_matrix *w, const halo_matmul_args *a, char *err, size_t err_len) {
  int64_t block_size = 0, block_bytes = 0;
  halo_status status = check_matrix(w, &block_size, &block_bytes, err, err_len);
  if (status != HALO_OK) return status;
  status = check_matmul(w, a, block_size, err, err_len);
  if (status != HALO_OK) return status;
  const int64_t n_out = a->row_end - a->row_start, n_in = a->col_end - a->col_start;
  if (a->n_tokens == 0 || n_out == 0) return HALO_OK;
  float *y = a->y + a->y_offset;
  if (n_in == 0) {
    for (int64_t t = 0; t < a->n_tokens; t++) memset(y + t * a->y_stride, 0, (size_t)n_out * sizeof(float));
    return HALO_OK;
  }
  int64_t macs;
  if (halo_checked_mul_add(n_out * n_in, a->n_tokens, 0, &macs) != 0) macs = INT64_MAX;
  matmul_job job = {
      .dot = dot_for(ctx->kernels, w->type),
      .w = w->data + a->row_start * w->row_bytes + a->col_start / block_size * block_bytes,
      .row_bytes = w->row_bytes,
      .n_in = n_in,
      .n_tokens = a->n_tokens,
      .y = y,
      .y_stride = a->y_stride,
      .n_out = n_out,
  };
  if (w->type == HALO_TYPE_Q8_0 || w->type == HALO_TYPE_Q4_0) {
    const int64_t q_row_bytes = n_in / QK8_0 * (int64_t)sizeof(block_q8_0);
    int64_t q_bytes;
    if (halo_checked_mul_add(q_row_bytes, a->n_tokens, 0, &q_bytes) != 0) {
      return halo_fail(HALO_E_NOMEM, err, err_len, "activation scratch size overflows");
    }
    uint8_t *q = halo_ctx_scratch(ctx, (size_t)q_bytes);
    if (q == NULL) return halo_fail(HALO_E_NOMEM, err, err_len, "out of memory for %lld bytes of activations", (long long)q_bytes);
    quantize_job qjob = {
        .quantize = ctx->kernels->quantize_row_q8_0,
        .x = a->x + a->x_offset,
        .x_stride = a->x_stride,
        .n_in = n_in,
        .dst = q,
        .dst_stride_bytes = q_row_bytes,
        .n_tokens = a->n_tokens,
    };
    atomic_init(&qjob.next_token, 0);
    int64_t q_work;
    if (halo_checked_mul_add(n_in * HALO_QUANTIZE_WORK_PER_ELEMENT, a->n_tokens, 0, &q_work) != 0) q_work = INT64_MAX;
    halo_pool_run(ctx->pool, quantize_worker, (void *)&qjob, halo_ctx_workers(ctx, q_work, a->n_tokens));
    job.x = q;
    job.x_stride_bytes = q_row_bytes;
  } else {
    job.x = (const uint8_t *)(a->x + a->x_offset);
    job.x_stride_bytes = a->x_stride * (int64_t)sizeof(float);
  }
  const int n_workers = halo_ctx_workers(ctx, macs, n_out * a->n_tokens);
  const int64_t segment_bytes = n_in / block_size * block_bytes;
  const int64_t max_rows = HALO_MAX_CHUNK_BYTES / segment_bytes < HALO_MAX_CHUNK_ROWS ? HALO_MAX_CHUNK_BYTES / segment_bytes
                                                                                       : HALO_MAX_CHUNK_ROWS;
  const int64_t n_tiles = (a->n_tokens + HALO_TILE_TOKENS - 1) / HALO_TILE_TOKENS;
  if (n_out * segment_bytes <= HALO_MAX_CHUNK_BYTES && n_tiles >= HALO_TOKEN_BLOCKS_PER_WORKER * n_workers) {
    /*
     * Few weights and many tokens (prefill on a small model): split the tokens. Every worker
     * reads all the weights (they fit in its cache) and writes whole output rows of its own
     * tokens, where splitting the rows would make workers write the same cache lines.
     */
    job.chunk_rows = n_out;
    const int64_t n_blocks = HALO_TOKEN_BLOCKS_PER_WORKER * n_workers;
    job.block_tokens = (n_tiles + n_blocks - 1) / n_blocks * HALO_TILE_TOKENS;
  } else {
    int64_t chunk_rows = (n_out + n_workers * HALO_CHUNKS_PER_WORKER - 1) / (n_workers * HALO_CHUNKS_PER_WORKER);
    if (a->n_tokens > 1 && chunk_rows < HALO_MIN_CHUNK_ROWS_BATCHED) chunk_rows = HALO_MIN_CHUNK_ROWS_BATCHED;
    if (chunk_rows > max_rows) chunk_rows = max_rows;
    job.chunk_rows = chunk_rows < 1 ? 1 : chunk_rows;
    job.block_tokens = a->n_tokens;
  }
  job.n_row_chunks = (n_out + job.chunk_rows - 1) / job.chunk_rows;
  job.n_items = job.n_row_chunks * ((a->n_tokens + job.block_tokens - 1) / job.block_tokens);
  atomic_init(&job.next_item, 0);
  halo_pool_run(ctx->pool, matmul_worker, &job, n_workers < job.n_items ? n_workers : (int)job.n_items);
  return HALO_OK;
}

halo_status halo_get_row(halo_ctx *ctx, const halo_matrix *w, int64_t row, float *out, size_t out_len, char *err,
                         size_t err_len) {
  int64_t block_size = 0, block_bytes = 0;
  const halo_status status = check_matrix(w, &block_size, &block_bytes, err, err_len);
  if (status != HALO_OK) return status;
  if (row < 0 || row >= w->n_rows) {
    return halo_fail(HALO_E_USAGE, err, err_len, "row %lld outside [0, %lld)", (long long)row, (long long)w->n_rows);
  }
  if ((uint64_t)w->n_cols > (uint64_t)out_len) {
    return halo_fail(HALO_E_USAGE, err, err_len, "out (length %zu) shorter than the %lld columns", out_len,
                (long long)w->n_cols);
  }
  if (halo_ranges_overlap(out, (size_t)w->n_cols * sizeof(float), w->data, (size_t)(w->n_rows * w->row_bytes))) {
    return halo_fail(HALO_E_USAGE, err, err_len, "out overlaps the weights");
  }
  const uint8_t *src = w->data + row * w->row_bytes;
  const halo_kernel_set *k = ctx->kernels;
  switch (w->type) {
    case HALO_TYPE_F32: k->to_f32_f32(src, out, w->n_cols); break;
    case HALO_TYPE_F16: k->to_f32_f16(src, out, w->n_cols); break;
    case HALO_TYPE_Q4_0: k->to_f32_q4_0(src, out, w->n_cols); break;
    case HALO_TYPE_Q8_0: k->to_f32_q8_0(src, out, w->n_cols); break;
    default: break; /* check_matrix rejected every other type */
  }
  return HALO_OK;
}

halo_status halo_quantize_row_q8_0(halo_ctx *ctx, const float *x, size_t n, uint8_t *dst, size_t dst_len, char *err,
                                   size_t err_len) {
  if (n % QK8_0 != 0) return halo_fail(HALO_E_USAGE, err, err_len, "x length %zu is not a multiple of %d", n, QK8_0);
  const size_t need = n / QK8_0 * sizeof(block_q8_0);
  if (dst_len < need) return halo_fail(HALO_E_USAGE, err, err_len, "dst holds %zu bytes, need %zu", dst_len, need);
  if (halo_ranges_overlap(x, n * sizeof(float), dst, need)) return halo_fail(HALO_E_USAGE, err, err_len, "dst overlaps x");
  ctx->kernels->quantize_row_q8_0(x, dst, (int64_t)n);
  return HALO_OK;
}
