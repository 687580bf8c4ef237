// What the CPU and the operating system together let us run.
#pragma once

namespace fastsoftmax {

struct CpuFeatures {
    bool avx2_fma = false;  // AVX2, FMA and F16C, with YMM state saved by the OS
    bool avx512 = false;    // AVX-512 F, DQ, BW, VL, with ZMM and opmask state saved by the OS
};

CpuFeatures detect_cpu_features();

}  // namespace fastsoftmax
