// Portable kernels: one lane, no intrinsics. The reference path and the path on CPUs
// without AVX2 (including non-x86 ones).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu_features.h"
#include "fpenv.h"
#include "half.h"
#include "kernels.h"

namespace fastsoftmax {
namespace scalar {

template <class F, class Bits, int MantBits, int Bias>
struct Lane {
    using T = F;
    using R = F;
    using M = bool;
    static constexpr int W = 1;
    static R set1(T v) { return v; }
    static R load(const T* p) { return *p; }
    static R loadp(const T* p, M m) { return m ? *p : T(0); }
    static void store(T* p, R v) { *p = v; }
    static void storep(T* p, R v, M m) { if (m) *p = v; }
    static void stream(T* p, R v) { *p = v; }  // never called: can_stream is false
    static M tail(int64_t k) { return k > 0; }
    template <class S> static R load(const S* p) { return R(widen(*p)); }
    template <class S> static R loadp(const S* p, M m) { return m ? R(widen(*p)) : R(0); }
    template <class S> static void store(S* p, R v) { *p = narrow<S>(v); }
    template <class S> static void storep(S* p, R v, M m) { if (m) *p = narrow<S>(v); }
    static M mand(M a, M b) { return a && b; }
    static R add(R a, R b) { return a + b; }
    static R add_where(M m, R a, R b) { return m ? a + b : a; }
    static bool finite(R a) { return std::isfinite(a); }
    static R sub(R a, R b) { return a - b; }
    static R mul(R a, R b) { return a * b; }
    static R fma(R a, R b, R c) { return std::fma(a, b, c); }
    static R fms(R a, R b, R c) { return std::fma(a, b, -c); }
    static R fnma(R a, R b, R c) { return std::fma(-a, b, c); }
    static R max(R a, R b) { return a > b ? a : b; }  // b when either is NaN, as on x86
    static R select(M m, R a, R b) { return m ? a : b; }
    static M eq(R a, R b) { return a == b; }
    static T pow2(Bits k) {
        Bits u = (k + Bias) << MantBits;
        T v;
        std::memcpy(&v, &u, sizeof v);
        return v;
    }
    static R scalef(R a, R k) {
        if (std::isnan(k)) return a + k;
        const T lim = T(2 * Bias);
        T kc = std::min(std::max(k, -lim + 2), lim);
        Bits ki = Bits(typename std::make_signed<Bits>::type(kc));
        Bits k1 = Bits(typename std::make_signed<Bits>::type(ki) >> 1);
        return a * pow2(k1) * pow2(ki - k1);
    }
    static R scalef_normal(R a, R k) { return scalef(a, k); }
    // Scaled apart, e and its error (scalef splits 2^k in two factors, for k out of range).
    static constexpr bool has_scalef = true;
    static T hmax(R a) { return a; }
    static M sel_load(const uint8_t* p) { return *p != 0; }
    static M sel_loadp(const uint8_t* p, int64_t k) { return k > 0 && *p != 0; }
    static T first(R a) { return a; }
    // Sum and the rounding errors of its additions (two-sum); for float the error term stays 0
    // in practice, as double holds every float term exactly.
    struct Acc { double s, c; };
    static Acc acc_zero() { return {0.0, 0.0}; }
    static void acc_add(Acc& a, R v) {
        const double x = double(v), t = a.s + x, vv = t - a.s;
        a.c += (a.s - (t - vv)) + (x - vv);
        a.s = t;
    }
    static long double acc_sum(const Acc& a) { return std::isfinite(a.s) ? (long double)a.s + a.c : (long double)a.s; }
    static long double acc_lane(const Acc& a, int) { return acc_sum(a); }
    template <class O> static void acc_lanes(const Acc& a, O* out) { out[0] = O(acc_sum(a)); }  // O: WideOf<T>
};

using VF = Lane<float, uint32_t, 23, 127>;
using VD = Lane<double, uint64_t, 52, 1023>;

// Portable code has no streaming stores: outputs are always written plainly.
static inline void stream_fence() {}
constexpr bool can_stream = false;

#include "softmax_impl.inc"

extern const KernelTable table = {"scalar", kernel_set<VF>(), kernel_set<VD>(), half_set<VF>()};

}  // namespace scalar
}  // namespace fastsoftmax
