// Per-ISA entry points of the numeric kernels. `threads` is an upper bound: small calls use
// fewer, and results do not depend on it. Declarations only: each ISA defines its
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
    // Inside the kernels, a piece of a slice (some of its columns: inner of them) steps from one
    // line to the next by the whole slice's inner, kept here; 0 for a whole slice.
    int64_t line_stride = 0;
    int64_t stride() const { return line_stride != 0 ? line_stride : inner; }
    bool whole() const { return line_stride == 0 || line_stride == inner; }
};

// where=: a uint8 array broadcast to the input's shape. For rows (inner == 1) the selection
// of row o starts at row_offset(o) and steps by axis_stride (0 or 1); for any other axis it
// is C-contiguous with the input's shape.
struct Selection {
    static constexpr int max_dims = 64;
    const uint8_t* data = nullptr;
    int64_t axis_stride = 1;
    int outer_ndim = 0;
    int64_t outer_shape[max_dims] = {};
    int64_t outer_strides[max_dims] = {};  // in bytes, 0 where broadcast

    int64_t row_offset(int64_t o) const {
        int64_t off = 0;
        for (int d = outer_ndim - 1; d >= 0; --d) {
            off += (o % outer_shape[d]) * outer_strides[d];
            o /= outer_shape[d];
        }
        return off;
    }
};

enum class Normaliser : int { softmax = 0, log_softmax = 1 };

// Cross-entropy over rows of `classes` logits, fused: one online logsumexp pass per row, then
// (if grad) one pass writing scale * (softmax - smoothed target), weights applied.
template <class T>
struct CrossEntropyArgs {
    int64_t rows = 0, classes = 0;
    const int64_t* target_index = nullptr;  // one class per row, or
    const T* target_prob = nullptr;         // rows x classes probabilities
    const T* weight = nullptr;              // per class, or null
    int64_t ignore_index = -100;
    double smoothing = 0.0;
    double scale_nll = 1.0, scale_smooth = 1.0;  // gradient factors of the two terms
    double* nll = nullptr;     // per row: -w[t] log p[t] (probabilities: the whole loss)
    double* smooth = nullptr;  // per row: -sum_c w[c] log p[c] (class targets with smoothing)
    T* grad = nullptr;         // rows x classes, or null
    int threads = 1;
};

template <class T>
struct KernelSet {
    // y = softmax(beta * x) or log_softmax(beta * x) along the axis; y may equal x.
    // Entries outside `where` (if not null) take no part and read 0 (softmax) or -inf.
    void (*forward)(const T* x, T* y, Layout lay, T beta, Normaliser what, const Selection* where, int threads);
    // out[o, i] = logsumexp(beta * x[o, :, i]).
    void (*logsumexp)(const T* x, T* out, Layout lay, T beta, const Selection* where, int threads);
    // Per reduction (outer x inner): the maximum m of beta * x and S = sum exp(beta * x - m) as
    // s_hi + s_lo; partial results of an array processed in pieces, merged elsewhere.
    void (*partial_stats)(const T* x, T* m, double* s_hi, double* s_lo, Layout lay, T beta, int threads);
    // y = softmax or log_softmax of beta * x from merged (m, S) per reduction. x may not alias y
    // where a reduction holds +inf or NaN.
    void (*normalise)(const T* x, T* y, Layout lay, T beta, const T* m, const double* s_hi, const double* s_lo,
                      Normaliser what, int threads);
    // dx from the output y and its gradient dy; dx may equal dy or y; 0 outside `where`.
    void (*backward)(const T* dy, const T* y, T* dx, Layout lay, T beta, Normaliser what, const Selection* where,
                     int threads);
    void (*cross_entropy)(const T* logits, const CrossEntropyArgs<T>& args);
};

enum class HalfKind : int { f16 = 0, bf16 = 1 };

// float16 and bfloat16 input, computed in float32 registers; y in the input's format, or
// float32 when y_float.
struct HalfKernelSet {
    void (*forward)(const uint16_t* x, void* y, HalfKind kind, bool y_float, Layout lay, float beta, Normaliser what,
                    const Selection* where, int threads);
    void (*logsumexp)(const uint16_t* x, float* out, HalfKind kind, Layout lay, float beta, const Selection* where,
                      int threads);
    // args.grad is unused: the gradient (if grad is not null) is written in the logits' format.
    void (*cross_entropy)(const uint16_t* logits, uint16_t* grad, HalfKind kind, const CrossEntropyArgs<float>& args);
};

struct KernelTable {
    const char* name;
    KernelSet<float> f32;
    KernelSet<double> f64;
    HalfKernelSet half;
};

namespace scalar { extern const KernelTable table; }
#if defined(FASTSOFTMAX_HAVE_X86)
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
#endif

}  // namespace fastsoftmax
