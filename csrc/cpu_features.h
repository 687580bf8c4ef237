// What the CPU and the operating system together let us run.
#pragma once

namespace fastsoftmax {

struct CpuFeatures {
    bool avx2_fma = false;  // AVX2, FMA and F16C, with YMM state saved by the OS
    bool avx512 = false;    // AVX-512 F, DQ, BW, VL, with ZMM and opmask state saved by the OS
};

CpuFeatures detect_cpu_features();

// What tunes the kernels to the CPU (never what they compute), read once.
struct CpuTuning {
    // The backward passes hint the lines of the next row (or slice) while they write this one.
    // On AMD's cores the hardware prefetchers already follow the three streams and those hints
    // only add traffic (Zen 4, kernel, softmax_backward out of cache, ns/el: (4096, 1024)
    // 0.56 -> 0.48, (256, 1024) 0.42 -> 0.37, (64, 1000, 49) over axis 1 0.93 -> 0.75), where on
    // Intel's they were measured to pay. Hints further along a long row stay (without them,
    // (1, 16M) 0.78 -> 0.81).
    bool backward_hints = true;
};

const CpuTuning& cpu_tuning();

}  // namespace fastsoftmax
