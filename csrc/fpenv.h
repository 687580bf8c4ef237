// Flush subnormal results and inputs to zero while a kernel runs, and put the caller's
// floating-point state (MXCSR: modes and sticky flags) back afterwards. Without it every
// entry far below the maximum (a -inf mask, say) underflows through a microcode assist that
// costs about a hundred cycles. Outputs below the smallest normal number become 0.
#pragma once

#if defined(FASTSOFTMAX_HAVE_X86)
#include <xmmintrin.h>
#endif

namespace fastsoftmax {

class FlushSubnormals {
public:
#if defined(FASTSOFTMAX_HAVE_X86)
    FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ | DAZ
    ~FlushSubnormals() { _mm_setcsr(saved_); }

private:
    unsigned saved_;
#else
    FlushSubnormals() {}
#endif
public:
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

}  // namespace fastsoftmax
