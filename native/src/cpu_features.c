/*
 * Run-time choice of kernel set: the addon is built with every variant the target
 * architecture has, and this file asks the CPU (and OS) which of them may run here.
 */
#include <stddef.h>
#include <string.h>

#include "kernels.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#endif

#if defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

const char *halo_isa_name(void) {
#if defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#elif defined(__aarch64__)
  return "aarch64";
#elif defined(__arm__)
  return "arm";
#elif defined(__riscv)
  return "riscv";
#else
  return "unknown";
#endif
}

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(HALO_PORTABLE_SCALAR)
static int cpu_has_avx2_fma_f16c(void) {
  __builtin_cpu_init();
  /* libgcc also checks that the OS saves the YMM state (XGETBV) before reporting AVX2. */
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

#if defined(__aarch64__) && !defined(HALO_PORTABLE_SCALAR)
static int cpu_has_dotprod(void) {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
  int value = 0;
  size_t size = sizeof value;
  if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, NULL, 0) != 0) return 0;
  return value != 0;
#else
  return 0;
#endif
}

static int cpu_has_neon(void) {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
#else
  return 1; /* Advanced SIMD is mandatory in AArch64 outside the most exotic Linux configurations. */
#endif
}
#endif

int halo_available_kernel_sets(const halo_kernel_set **sets, int cap) {
  const halo_kernel_set *found[4];
  int n = 0;
  /* HALO_PORTABLE_SCALAR: the build for a CPU without (or without known) SIMD: generic only. */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(HALO_PORTABLE_SCALAR)
  if (cpu_has_avx2_fma_f16c()) found[n++] = &halo_kernels_avx2;
#endif
#if defined(__aarch64__) && !defined(HALO_PORTABLE_SCALAR)
  if (cpu_has_neon()) {
    if (cpu_has_dotprod()) found[n++] = &halo_kernels_neon_dotprod;
    found[n++] = &halo_kernels_neon;
  }
#endif
  found[n++] = &halo_kernels_generic;
  for (int i = 0; i < n && i < cap; i++) sets[i] = found[i];
  return n;
}

const halo_kernel_set *halo_find_kernel_set(const char *name) {
  const halo_kernel_set *sets[4];
  const int n = halo_available_kernel_sets(sets, 4);
  if (name == NULL || name[0] == '\0') return sets[0];
  for (int i = 0; i < n; i++) {
    if (strcmp(sets[i]->name, name) == 0) return sets[i];
  }
  return NULL;
}
