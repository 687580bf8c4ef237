// Per-ISA entry points of the numeric kernels. Declarations only: each ISA defines its
// table in its own translation unit, compiled with its own flags.
#pragma once

#include <cstdint>

namespace fastsoftmax {

// An axis of a C-contiguous array seen as (outer, n, inner): element (o, j, i) sits at
// (o * n + j) * inner + i. inner == 1 is the row case.
struct Layout {
    int64_t outer;
    int64_t n;
    int64_t inner;
};

enum class Normaliser : int { softmax = 0, log_softmax = 1 };

template <class T>
struct KernelSet {
    // y = softmax(beta * x) or log_softmax(beta * x) along the axis; y may equal x.
    void (*forward)(const T* x, T* y, Layout lay, T beta, Normaliser what);
    // out[o, i] = logsumexp(beta * x[o, :, i]).
    void (*logsumexp)(const T* x, T* out, Layout lay, T beta);
    // dx from the output y and its gradient dy; dx may equal dy or y.
    void (*backward)(const T* dy, const T* y, T* dx, Layout lay, T beta, Normaliser what);
};

struct KernelTable {
    const char* name;
    KernelSet<float> f32;
    KernelSet<double> f64;
};

namespace scalar { extern const KernelTable table; }
#if defined(FASTSOFTMAX_HAVE_X86)
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
#endif

}  // namespace fastsoftmax
