# halo's native matrix kernels. Build with `node-gyp rebuild` in this folder (or
# `node-gyp rebuild --directory native` from the package root); the output is
# build/Release/halo_kernels.node, which src/kernels/native.ts loads.
#
# ISA-specific files get their -m/-march flags through their own static libraries, because gyp
# flags apply per target; the rest of the addon is built for the baseline ISA and picks a kernel
# set at run time (src/cpu_features.c), so one binary runs on any CPU of its architecture.
{
  "variables": {
    # -ffp-contract=off: the compiler never fuses a*b+c on its own, so every variant's results
    # are reproducible and tile kernels match their one-token use bit for bit.
    "halo_c_flags": ["-O3", "-fPIC", "-ffp-contract=off", "-fvisibility=hidden", "-Wall", "-Wextra"],
  },
  "targets": [
    {
      "target_name": "halo_kernels",
      "sources": [
        "src/binding.cc",
        "src/halo_api.c",
        "src/attention.c",
        "src/threadpool.c",
        "src/cpu_features.c",
        "src/kernels_generic.c",
        "src/mmap_file.c",
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags": ["<@(halo_c_flags)"],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=gnu++17", "-fexceptions"],
      "libraries": ["-lpthread", "-lm"],
      "conditions": [
        ["target_arch=='x64'", {"dependencies": ["halo_kernels_avx2"]}],
        ["target_arch=='arm64'", {"dependencies": ["halo_kernels_neon", "halo_kernels_neon_dotprod"]}],
      ],
    },
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "halo_kernels_avx2",
          "type": "static_library",
          "sources": ["src/x86/kernels_avx2.c"],
          "cflags": ["<@(halo_c_flags)", "-std=gnu11", "-mavx2", "-mfma", "-mf16c"],
        },
      ],
    }],
    ["target_arch=='arm64'", {
      "targets": [
        {
          "target_name": "halo_kernels_neon",
          "type": "static_library",
          "sources": ["src/arm/kernels_neon.c"],
          "cflags": ["<@(halo_c_flags)", "-std=gnu11", "-march=armv8-a"],
        },
        {
          "target_name": "halo_kernels_neon_dotprod",
          "type": "static_library",
          "sources": ["src/arm/kernels_neon_dotprod.c"],
          "cflags": ["<@(halo_c_flags)", "-std=gnu11", "-march=armv8.2-a+dotprod"],
        },
      ],
    }],
  ],
}
