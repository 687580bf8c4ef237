// AVX2 + FMA (+ F16C) kernels; this file alone is compiled with -mavx2 -mfma -mf16c.
#include <immintrin.h>

#include <algorithm>
#include <bitset>
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
namespace avx2 {

struct VF {
    using T = float;
    using R = __m256;
    using M = __m256;  // all-ones lanes are selected
    static constexpr int W = 8;
    static R set1(T v) { return _mm256_set1_ps(v); }
    static R load(const T* p) { return _mm256_loadu_ps(p); }
    static R loadp(const T* p, M m) { return _mm256_maskload_ps(p, _mm256_castps_si256(m)); }
    static void store(T* p, R v) { _mm256_storeu_ps(p, v); }
    static void storep(T* p, R v, M m) { _mm256_maskstore_ps(p, _mm256_castps_si256(m), v); }
    static void stream(T* p, R v) { _mm256_stream_ps(p, v); }  // p aligned to 32 bytes
    static M tail(int64_t k) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(k)), lane));
    }
    static M mand(M a, M b) { return _mm256_and_ps(a, b); }
    // 16-bit formats (F16C for binary16; bfloat16 by shifts), round to nearest even.
    static int lanes(M m) { return int(std::bitset<8>(unsigned(_mm256_movemask_ps(m))).count()); }
    static __m128i bits16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
    static __m128i bits16(const void* p, M m) {
        alignas(16) uint16_t b[8] = {};
        std::memcpy(b, p, size_t(lanes(m)) * 2);
        return _mm_load_si128(reinterpret_cast<const __m128i*>(b));
    }
    static void put16(void* p, __m128i h) { _mm_storeu_si128(static_cast<__m128i*>(p), h); }
    static void put16(void* p, __m128i h, M m) {
        alignas(16) uint16_t b[8];
        _mm_store_si128(reinterpret_cast<__m128i*>(b), h);
        std::memcpy(p, b, size_t(lanes(m)) * 2);
    }
    static R from_f16(__m128i h) { return _mm256_cvtph_ps(h); }
    static R from_bf16(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
    static __m128i to_f16(R v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static __m128i to_bf16(R v) {
        const __m256i u = _mm256_castps_si256(v);
        const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        r = _mm256_blendv_epi8(r, _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40)), nan);
        // pack the low halves of the eight 32-bit lanes
        const __m256i packed = _mm256_packus_epi32(r, r);
        return _mm_unpacklo_epi64(_mm256_castsi256_si128(packed), _mm256_extracti128_si256(packed, 1));
    }
    static R load(const Half* p) { return from_f16(bits16(p)); }
    static R loadp(const Half* p, M m) { return from_f16(bits16(p, m)); }
    static R load(const BFloat16* p) { return from_bf16(bits16(p)); }
    static R loadp(const BFloat16* p, M m) { return from_bf16(bits16(p, m)); }
    static void store(Half* p, R v) { put16(p, to_f16(v)); }
    static void storep(Half* p, R v, M m) { put16(p, to_f16(v), m); }
    static void store(BFloat16* p, R v) { put16(p, to_bf16(v)); }
    static void storep(BFloat16* p, R v, M m) { put16(p, to_bf16(v), m); }
    static R add(R a, R b) { return _mm256_add_ps(a, b); }
    static R add_where(M m, R a, R b) { return _mm256_add_ps(a, _mm256_and_ps(m, b)); }  // a + b where m, else a
    static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
    static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static R fms(R a, R b, R c) { return _mm256_fmsub_ps(a, b, c); }
    static R fnma(R a, R b, R c) { return _mm256_fnmadd_ps(a, b, c); }
    static R max(R a, R b) { return _mm256_max_ps(a, b); }
    static R select(M m, R a, R b) { return _mm256_blendv_ps(b, a, m); }
    static M eq(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
    // a * 2^k for integral k (kernels run with subnormals flushed): k is clamped to [-127, 127],
    // and 2^-127 is given as 0, so a result below the smallest normal number is 0 as it would
    // be flushed; NaN in k gives NaN through a (both come from the same NaN).
    static R scalef(R a, R k) { return _mm256_mul_ps(a, pow2(k)); }
    static R scalef_normal(R a, R k) { return _mm256_mul_ps(a, pow2_normal(k)); }
    // The factors themselves, for several products by the same 2^k (no scalef instruction
    // here: each factor costs two or four operations).
    static constexpr bool has_scalef = false;
    static R pow2(R k) {
        return pow2_normal(_mm256_min_ps(_mm256_max_ps(k, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f)));
    }
    // 2^k for integral k with 2^k a normal number: the bits of k + 127 moved into the exponent
    // field (k + 2^23 + 127 holds k + 127 in its low mantissa bits).
    static R pow2_normal(R k) {
        const __m256i bits = _mm256_castps_si256(_mm256_add_ps(k, _mm256_set1_ps(8388608.0f + 127.0f)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23));
    }
    static T hmax(R a) {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        return _mm_cvtss_f32(m);
    }
    static T first(R a) { return _mm256_cvtss_f32(a); }
    static M sel_from(__m128i b) {
        return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(b), _mm256_setzero_si256()));
    }
    static M sel_load(const uint8_t* p) { return sel_from(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
    static M sel_loadp(const uint8_t* p, int64_t k) {
        uint64_t v = 0;
        std::memcpy(&v, p, size_t(k));
        return sel_from(_mm_cvtsi64_si128(int64_t(v)));
    }
    struct Acc { __m256d lo, hi; };
    static Acc acc_zero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
    static void acc_add(Acc& a, R v) {
        a.lo = _mm256_add_pd(a.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a.hi = _mm256_add_pd(a.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    // In double, the wide type of float (long double would round trip through the x87 unit).
    static double acc_sum(const Acc& a) {
        __m256d s = _mm256_add_pd(a.lo, a.hi);
        __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
        return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    }
    static double acc_lane(const Acc& a, int k) {
        alignas(32) double v[8];
        _mm256_store_pd(v, a.lo);
        _mm256_store_pd(v + 4, a.hi);
        return v[k];
    }
    static void acc_lanes(const Acc& a, double* out) {  // every acc_lane
        alignas(32) double v[8];
        _mm256_store_pd(v, a.lo);
        _mm256_store_pd(v + 4, a.hi);
        for (int k = 0; k < W; ++k) out[k] = v[k];
    }
    // Several short rows at once, one per lane (softmax_short_rows).
    static R floor(R a) { return _mm256_floor_ps(a); }
    static M le(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
    static bool all(M m) { return _mm256_movemask_ps(m) == 0xff; }
    static bool finite(R a) {  // no NaN or infinity in any lane: a - a is 0 exactly where a is finite
        return _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(a, a), _mm256_setzero_ps(), _CMP_NEQ_UQ)) == 0;
    }
    static R gather(const T* p, const int32_t* idx) {
        return _mm256_i32gather_ps(p, _mm256_load_si256(reinterpret_cast<const __m256i*>(idx)), 4);
    }
    static R permute(R v, const int32_t* idx) {  // v[idx[i]]
        return _mm256_permutevar8x32_ps(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(idx)));
    }
    // Lanes 0-3 from lo and 4-7 from hi, rounded to float (the layout of Acc).
    static R narrow2(__m256d lo, __m256d hi) {
        return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
    }
};

struct VD {
    using T = double;
    using R = __m256d;
    using M = __m256d;
    static constexpr int W = 4;
    static R set1(T v) { return _mm256_set1_pd(v); }
    static R load(const T* p) { return _mm256_loadu_pd(p); }
    static R loadp(const T* p, M m) { return _mm256_maskload_pd(p, _mm256_castpd_si256(m)); }
    static void store(T* p, R v) { _mm256_storeu_pd(p, v); }
    static void storep(T* p, R v, M m) { _mm256_maskstore_pd(p, _mm256_castpd_si256(m), v); }
    static void stream(T* p, R v) { _mm256_stream_pd(p, v); }
    static M tail(int64_t k) {
        const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
        return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(k), lane));
    }
    static M mand(M a, M b) { return _mm256_and_pd(a, b); }
    static R add(R a, R b) { return _mm256_add_pd(a, b); }
    static R add_where(M m, R a, R b) { return _mm256_add_pd(a, _mm256_and_pd(m, b)); }
    static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
    static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
    static R fms(R a, R b, R c) { return _mm256_fmsub_pd(a, b, c); }
    static R fnma(R a, R b, R c) { return _mm256_fnmadd_pd(a, b, c); }
    static R max(R a, R b) { return _mm256_max_pd(a, b); }
    static R select(M m, R a, R b) { return _mm256_blendv_pd(b, a, m); }
    static M eq(R a, R b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
    // a * 2^k for integral k, as VF::scalef: k clamped to [-1023, 1023], 2^-1023 given as 0.
    static R scalef(R a, R k) { return _mm256_mul_pd(a, pow2(k)); }
    static R scalef_normal(R a, R k) { return _mm256_mul_pd(a, pow2_normal(k)); }
    static constexpr bool has_scalef = false;
    static R pow2(R k) {
        return pow2_normal(_mm256_min_pd(_mm256_max_pd(k, _mm256_set1_pd(-1023.0)), _mm256_set1_pd(1023.0)));
    }
    // a * 2^k for integral k with 2^k a normal number (see VF::scalef_normal; 2^52 + 1023).
    static R pow2_normal(R k) {
        const __m256i bits = _mm256_castpd_si256(_mm256_add_pd(k, _mm256_set1_pd(4503599627370496.0 + 1023.0)));
        return _mm256_castsi256_pd(_mm256_slli_epi64(bits, 52));
    }
    static T hmax(R a) {
        __m128d m = _mm_max_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
        return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
    }
    static T first(R a) { return _mm256_cvtsd_f64(a); }
    static M sel_from(__m128i b) {
        return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_cvtepu8_epi64(b), _mm256_setzero_si256()));
    }
    static M sel_load(const uint8_t* p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return sel_from(_mm_cvtsi32_si128(v));
    }
    static M sel_loadp(const uint8_t* p, int64_t k) {
        int32_t v = 0;
        std::memcpy(&v, p, size_t(k));
        return sel_from(_mm_cvtsi32_si128(v));
    }
    struct Acc { R s, c; };  // sum and the rounding errors of its additions (two-sum)
    static Acc acc_zero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
    static void acc_add(Acc& a, R v) {
        R t = _mm256_add_pd(a.s, v), vv = _mm256_sub_pd(t, a.s);
        R err = _mm256_add_pd(_mm256_sub_pd(a.s, _mm256_sub_pd(t, vv)), _mm256_sub_pd(v, vv));
        a.c = _mm256_add_pd(a.c, err);
        a.s = t;
    }
    static long double acc_lane(const Acc& a, int k) {
        alignas(32) double s[4], c[4];
        _mm256_store_pd(s, a.s);
        _mm256_store_pd(c, a.c);
        return std::isfinite(s[k]) ? (long double)s[k] + c[k] : (long double)s[k];  // no inf - inf
    }
    static void acc_lanes(const Acc& a, long double* out) {  // every acc_lane
        alignas(32) double s[4], c[4];
        _mm256_store_pd(s, a.s);
        _mm256_store_pd(c, a.c);
        for (int k = 0; k < W; ++k) out[k] = std::isfinite(s[k]) ? (long double)s[k] + c[k] : (long double)s[k];
    }
    static long double acc_sum(const Acc& a) {
        long double t = 0;
        for (int k = 0; k < W; ++k) t += acc_lane(a, k);
        return t;
    }
    // Several short rows at once, one per lane (softmax_short_rows).
    static R floor(R a) { return _mm256_floor_pd(a); }
    static M le(R a, R b) { return _mm256_cmp_pd(a, b, _CMP_LE_OQ); }
    static bool all(M m) { return _mm256_movemask_pd(m) == 0xf; }
    static bool finite(R a) {
        return _mm256_movemask_pd(_mm256_cmp_pd(_mm256_sub_pd(a, a), _mm256_setzero_pd(), _CMP_NEQ_UQ)) == 0;
    }
    static R gather(const T* p, const int32_t* idx) {
        return _mm256_i32gather_pd(p, _mm_load_si128(reinterpret_cast<const __m128i*>(idx)), 8);
    }
    static R permute(R v, const int32_t* idx) {  // v[idx[i]]: the float lanes 2 idx[i] and 2 idx[i] + 1
        const __m256i k2 = _mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm_load_si128(reinterpret_cast<const __m128i*>(idx))), 1);
        const __m256i lanes = _mm256_or_si256(k2, _mm256_slli_epi64(_mm256_add_epi64(k2, _mm256_set1_epi64x(1)), 32));
        return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), lanes));
    }
    static R div(R a, R b) { return _mm256_div_pd(a, b); }
    // No reciprocal estimate in double here: quotient divides (converting through float's
    // estimate and refining it measured slower than the 4-lane division).
    static constexpr int newton_steps = -1;
    // s = 2^k r with r in [sqrt(1/2), sqrt(2)), for finite s > 0 (NaN: see log_ratio).
    static R split_exp(R s, R& k) {
        const __m256i bits = _mm256_castpd_si256(s);
        R r = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffffLL)),
                                                  _mm256_set1_epi64x(0x3ff0000000000000LL)));
        // the biased exponent e as a double: the bits of 2^52 + e, less 2^52 + 1023
        const __m256i biased = _mm256_srli_epi64(bits, 52);
        k = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(biased, _mm256_set1_epi64x(0x4330000000000000LL))),
                          _mm256_set1_pd(4503599627370496.0 + 1023.0));
        const R big = _mm256_cmp_pd(r, _mm256_set1_pd(1.4142135623730951), _CMP_GT_OQ);
        k = _mm256_add_pd(k, _mm256_and_pd(big, _mm256_set1_pd(1.0)));
        return _mm256_blendv_pd(r, _mm256_mul_pd(r, _mm256_set1_pd(0.5)), big);
    }
    // scale / (s + c) per lane as head and tail (see the AVX-512 version).
    static void inv_split(const Acc& a, double scale, R& hi, R& lo) {
        const R k = _mm256_set1_pd(scale);
        hi = _mm256_div_pd(k, a.s);
        lo = _mm256_div_pd(_mm256_fnmadd_pd(hi, a.c, _mm256_fnmadd_pd(hi, a.s, k)), a.s);
    }
};

// Orders the streaming stores of this thread before everything after it.
static inline void stream_fence() { _mm_sfence(); }
constexpr bool can_stream = true;

#include "softmax_impl.inc"

extern const KernelTable table = {"avx2", kernel_set<VF>(), kernel_set<VD>(), half_set<VF>()};

}  // namespace avx2
}  // namespace fastsoftmax
