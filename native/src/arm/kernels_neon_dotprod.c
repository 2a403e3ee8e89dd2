/*
 * AArch64 fast paths for CPUs with the ARMv8.2-A dot product extension (SDOT): one vdotq_s32
 * per 16 int8 pairs for the quantized dots. Compiled with -march=armv8.2-a+dotprod and only
 * called after cpu_features.c has seen HWCAP_ASIMDDP. Float kernels and the quantizer are the
 * plain NEON ones.
 */
#include <arm_neon.h>

#include "../kernels.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "kernels_neon_dotprod.c must be compiled with -march=armv8.2-a+dotprod"
#endif

static inline __attribute__((always_inline)) int32x4_t block_dot_i8(int8x16_t w0, int8x16_t w1, int8x16_t x0,
                                                                   int8x16_t x1) {
  return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
}

#include "neon_tiles.h"

HALO_NEON_DISPATCH(dot_q8_0_neon_dotprod, dot_q8_0_neon_tile)
HALO_NEON_DISPATCH(dot_q4_0_neon_dotprod, dot_q4_0_neon_tile)

const halo_kernel_set halo_kernels_neon_dotprod = {
    .name = "neon-dotprod",
    .quantize_row_q8_0 = halo_quantize_row_q8_0_neon,
    .dot_f32 = halo_dot_f32_neon,
    .dot_f16 = halo_dot_f16_neon,
    .dot_q8_0 = dot_q8_0_neon_dotprod,
    .dot_q4_0 = dot_q4_0_neon_dotprod,
    .to_f32_f32 = halo_to_f32_f32_generic,
    .to_f32_f16 = halo_to_f32_f16_neon,
    .to_f32_q8_0 = halo_to_f32_q8_0_generic,
    .to_f32_q4_0 = halo_to_f32_q4_0_generic,
    .dot_rows_f32 = halo_dot_rows_f32_neon,
    .exp_sum_f32 = halo_exp_sum_f32_neon,
    .weighted_sum_f32 = halo_weighted_sum_f32_neon,
};
