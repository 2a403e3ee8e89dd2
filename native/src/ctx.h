/*
 * The kernel context's insides, shared by the drivers (halo_api.c for matrices, attention.c
 * for attention). Not part of the C API: binding.cc and other callers see only halo_api.h.
 */
#ifndef HALO_CTX_H
#define HALO_CTX_H

#include <stddef.h>
#include <stdint.h>

#include "halo_api.h"
#include "kernels.h"
#include "threadpool.h"

struct halo_ctx {
  halo_pool *pool;
  const halo_kernel_set *kernels;
  /*
   * Per-call working memory (Q8_0 activations for matmul, attention scores), reused across
   * calls; grows to the largest size seen, so a steady stream of calls allocates nothing.
   */
  uint8_t *scratch;
  size_t scratch_bytes;
};

/*
 * The least work, in multiply-adds (or their equivalent), that pays for one more worker: a
 * call with work W runs on min(pool size, W / this) workers, so 2 threads need 2^18 and a
 * smaller call runs on the caller alone.
 *
 * A pool run costs ~0.3 µs when the workers are polling (back-to-back calls of a forward pass)
 * but 15-40 µs when they have gone to sleep (a futex wake-up under a hypervisor). One thread
 * does ~4-7 multiply-adds per ns on these kernels, so 2^17 is ~20-35 µs of work: about one
 * wake-up. Measured on a 2-vCPU AMD EPYC VM (AVX2), 2 threads against 1 (matvec with F32/Q4_0
 * weights, matmul of 8-256 tokens on 64x64 weights):
 *   total work    workers polling    workers asleep
 *   32 K          0.3-1.6x           0.1-0.2x
 *   65 K          0.4-1.7x           0.3-0.5x
 *   131 K         0.9-1.9x           0.5-0.6x
 *   262 K         0.9-1.7x           0.7-1.1x
 *   524 K-1 M     1.2-2.0x           0.9-1.6x
 * So 2 workers from 2^18, where they win when polling and about break even when woken.
 * stories260K (64x64 weights) does not care about the exact value: its decode matvecs (4 K) and attention
 * (≤ 16 K) stay on one thread, its 256-token matmuls (≥ 1 M) split.
 */
#define HALO_MIN_WORK_PER_WORKER ((int64_t)1 << 17)

/* Workers (1 .. pool size, at most max_parts) for `work` multiply-adds split into max_parts independent parts. */
int halo_ctx_workers(const halo_ctx *ctx, int64_t work, int64_t max_parts);

/* At least `bytes` of 64-byte-aligned scratch, or NULL when out of memory. */
uint8_t *halo_ctx_scratch(halo_ctx *ctx, size_t bytes);

/* Writes the message and returns status. */
halo_status halo_fail(halo_status status, char *err, size_t err_len, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* a·b + c into *out without signed overflow; all inputs must be >= 0. Returns 0, or -1 on overflow. */
int halo_checked_mul_add(int64_t a, int64_t b, int64_t c, int64_t *out);

/* Whether two byte ranges share a byte (empty ranges never do). */
int halo_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes);

#endif /* HALO_CTX_H */
