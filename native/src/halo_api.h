/*
 * The C API that binding.cc wraps: a kernel context (thread pool + kernel set + scratch), the
 * matrix and attention entry points with full argument validation, and the file mapping.
 * Every function validates its arguments and reports errors through a status and a message;
 * nothing here aborts the process.
 */
#ifndef HALO_API_H
#define HALO_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum halo_status {
  HALO_OK = 0,
  HALO_E_USAGE = 1,       /* an argument is out of range, misaligned or inconsistent */
  HALO_E_UNSUPPORTED = 2, /* a type id or kernel set this build/CPU cannot run */
  HALO_E_NOMEM = 3,
  HALO_E_THREAD = 4,      /* the pool's threads could not be created */
  HALO_E_FILE = 5,        /* open/stat/mmap failed */
} halo_status;

/* Room for any message these functions write. */
#define HALO_ERR_LEN 256

typedef struct halo_ctx halo_ctx;

/* A weight matrix: raw GGUF bytes, (n_rows, row_bytes), n_cols elements per row. */
typedef struct halo_matrix {
  const uint8_t *data;
  size_t data_bytes;
  int type; /* ggml type id: 0 F32, 1 F16, 2 Q4_0, 8 Q8_0 */
  int64_t n_rows;
  int64_t n_cols;
  int64_t row_bytes;
} halo_matrix;

/*
 * For t < n_tokens, r < row_end - row_start:
 *   y[y_offset + t·y_stride + r] = Σ_{c < col_end - col_start} W[row_start + r, col_start + c] · x[x_offset + t·x_stride + c]
 * Lengths and offsets count float elements. y must not overlap x or the weights, and for
 * n_tokens > 1, y_stride >= row_end - row_start (token outputs must not overlap).
 */
typedef struct halo_matmul_args {
  int64_t n_tokens;
  const float *x;
  size_t x_len;
  int64_t x_offset;
  int64_t x_stride;
  float *y;
  size_t y_len;
  int64_t y_offset;
  int64_t y_stride;
  int64_t row_start;
  int64_t row_end;
  int64_t col_start;
  int64_t col_end;
} halo_matmul_args;

/*
 * Attention of one token over one KV group's cache (one KV head and the n_heads query heads
 * that share it). For h < n_heads, d < head_dim:
 *   out[out_offset + h·head_dim + d] = Σ_{s ∈ S} p_{h,s} · values[s·head_dim + d],
 *   p_{h,·} = softmax over s ∈ S of scale · Σ_d q[q_offset + h·head_dim + d] · keys[s·head_dim + d],
 * where S = { s < n_positions : valid[s] == 1 }. Positions outside S get no weight and their
 * keys and values are never read. With S empty, out is 0. Lengths and offsets count elements;
 * out must not overlap q, keys or values.
 */
typedef struct halo_attend_args {
  int64_t n_heads;
  int64_t head_dim;        /* >= 1 */
  const float *q;          /* (n_heads, head_dim) from q_offset */
  size_t q_len;
  int64_t q_offset;
  const float *keys;       /* (context_length, head_dim): keys_len == context_length · head_dim */
  size_t keys_len;
  const float *values;     /* (context_length, head_dim) */
  size_t values_len;
  const uint8_t *valid;    /* (context_length): 1 where the position's key and value were written */
  size_t context_length;
  int64_t n_positions;     /* <= context_length */
  double scale;            /* finite as a float, usually 1/√head_dim */
  float *out;              /* (n_heads, head_dim) from out_offset */
  size_t out_len;
  int64_t out_offset;
} halo_attend_args;

/* n_threads workers (the caller included), kernel set by name or NULL/"" for the best available. */
halo_status halo_ctx_create(int n_threads, const char *kernel_set, halo_ctx **out, char *err, size_t err_len);
void halo_ctx_destroy(halo_ctx *ctx);
int halo_ctx_threads(const halo_ctx *ctx);
const char *halo_ctx_kernel_set(const halo_ctx *ctx);

halo_status halo_matmul(halo_ctx *ctx, const halo_matrix *w, const halo_matmul_args *args, char *err, size_t err_len);

/* See halo_attend_args. Query heads are split across the pool when the work pays for it. */
halo_status halo_attend(halo_ctx *ctx, const halo_attend_args *args, char *err, size_t err_len);

/* out[0..n_cols) = row `row` of w as floats. */
halo_status halo_get_row(halo_ctx *ctx, const halo_matrix *w, int64_t row, float *out, size_t out_len, char *err,
                         size_t err_len);

/* dst = Q8_0 blocks of x[0..n) with the context's kernel set; n % 32 == 0, dst_len >= n / 32 · 34. */
halo_status halo_quantize_row_q8_0(halo_ctx *ctx, const float *x, size_t n, uint8_t *dst, size_t dst_len, char *err,
                                   size_t err_len);

/* A read-only private mapping of the whole file (*addr NULL for an empty file). */
halo_status halo_map_file(const char *path, void **addr, size_t *length, char *err, size_t err_len);
void halo_unmap_file(void *addr, size_t length);

/* Block geometry of a type id: returns 0 and fills both, or -1 for a type this build cannot compute with. */
int halo_type_block(int type, int64_t *block_size, int64_t *block_bytes);

#ifdef __cplusplus
}
#endif

#endif /* HALO_API_H */
