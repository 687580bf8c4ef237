// What the CPU and the operating system together let us run.
#pragma once

#include <cstdint>

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
    // Rows up to this size take the softmax's stored path (see forward_line). On the Xeon
    // (2 MB L2) the online path, which takes each exponential twice, was faster beyond 768 KB.
    // On Zen 4 (1 MB L2, 32 MB L3), where the exponentials cost more and L3 is quick, the
    // stored path is ahead further (kernel, out of cache, one thread, ns/el, 768 KB -> 2 MB:
    // float32 (4, 262144) 0.74 -> 0.68, (2, 524288) 0.72 -> 0.68; float64 (4, 131072) 1.89 ->
    // 1.49, (2, 262144) 1.80 -> 1.48; two threads, float64 (4, 262144) 0.96 -> 0.86, float32
    // (8, 524288) 0.37 -> 0.38); beyond 2 MB two threads' three row-sized arrays each leave
    // L3 (float32 (8, 1M) at 4 MB: 0.43 -> 0.53).
    int64_t stored_row_bytes = int64_t(3) << 18;
};

const CpuTuning& cpu_tuning();

}  // namespace fastsoftmax
