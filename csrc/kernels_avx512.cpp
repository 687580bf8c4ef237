// AVX-512 (F, DQ, BW, VL) kernels; this file alone is compiled with those flags.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu_features.h"
#include "fpenv.h"
#include "half.h"
#include "kernels.h"

namespace fastsoftmax {
namespace avx512 {

struct VF {
    using T = float;
    using R = __m512;
    using M = __mmask16;
    static constexpr int W = 16;
    static R set1(T v) { return _mm512_set1_ps(v); }
    static R load(const T* p) { return _mm512_loadu_ps(p); }
    static R loadp(const T* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
    static void store(T* p, R v) { _mm512_storeu_ps(p, v); }
    static void storep(T* p, R v, M m) { _mm512_mask_storeu_ps(p, m, v); }
    static void stream(T* p, R v) { _mm512_stream_ps(p, v); }  // p aligned to 64 bytes
    static M tail(int64_t k) { return M((1u << k) - 1u); }
    static M mand(M a, M b) { return M(a & b); }
    // 16-bit formats, widened and narrowed in registers (round to nearest even).
    static __m256i bits16(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
    static __m256i bits16(const void* p, M m) { return _mm256_maskz_loadu_epi16(m, p); }
    static R from_f16(__m256i h) { return _mm512_cvtph_ps(h); }
    static R from_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
    static __m256i to_f16(R v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static __m256i to_bf16(R v) {
        const __m512i u = _mm512_castps_si512(v);
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
        const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
        return _mm512_cvtepi32_epi16(r);
    }
    static R load(const Half* p) { return from_f16(bits16(p)); }
    static R loadp(const Half* p, M m) { return from_f16(bits16(p, m)); }
    static R load(const BFloat16* p) { return from_bf16(bits16(p)); }
    static R loadp(const BFloat16* p, M m) { return from_bf16(bits16(p, m)); }
    static void store(Half* p, R v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_f16(v)); }
    static void storep(Half* p, R v, M m) { _mm256_mask_storeu_epi16(p, m, to_f16(v)); }
    static void store(BFloat16* p, R v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(v)); }
    static void storep(BFloat16* p, R v, M m) { _mm256_mask_storeu_epi16(p, m, to_bf16(v)); }
    static R add(R a, R b) { return _mm512_add_ps(a, b); }
    // a + b where m, else a: as b * 1 + a, on the multiply-add units (see sub_exact)
    static R add_where(M m, R a, R b) { return _mm512_mask3_fmadd_ps(b, _mm512_set1_ps(1), a, m); }
    static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
    static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static R fms(R a, R b, R c) { return _mm512_fmsub_ps(a, b, c); }
    static R fnma(R a, R b, R c) { return _mm512_fnmadd_ps(a, b, c); }
    static R max(R a, R b) { return _mm512_max_ps(a, b); }
    static R select(M m, R a, R b) { return _mm512_mask_blend_ps(m, b, a); }
    static M eq(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
    static R scalef(R a, R k) { return _mm512_scalef_ps(a, k); }
    static R scalef_normal(R a, R k) { return _mm512_scalef_ps(a, k); }
    static constexpr bool has_scalef = true;  // one instruction a product
    static T hmax(R a) { return _mm512_reduce_max_ps(a); }
    static M sel_load(const uint8_t* p) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        return _mm_test_epi8_mask(b, b);
    }
    static M sel_loadp(const uint8_t* p, int64_t k) {
        const __m128i b = _mm_maskz_loadu_epi8(__mmask16((1u << k) - 1u), p);
        return _mm_test_epi8_mask(b, b);
    }
    static T first(R a) { return _mm512_cvtss_f32(a); }
    struct Acc { __m512d lo, hi; };
    static Acc acc_zero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
    static void acc_add(Acc& a, R v) {
        a.lo = _mm512_add_pd(a.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        a.hi = _mm512_add_pd(a.hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    }
    // In double, the wide type of float (long double would round trip through the x87 unit).
    static double acc_sum(const Acc& a) { return _mm512_reduce_add_pd(_mm512_add_pd(a.lo, a.hi)); }
    static double acc_lane(const Acc& a, int k) {
        alignas(64) double v[16];
        _mm512_store_pd(v, a.lo);
        _mm512_store_pd(v + 8, a.hi);
        return v[k];
    }
    static void acc_lanes(const Acc& a, double* out) {  // every acc_lane
        alignas(64) double v[16];
        _mm512_store_pd(v, a.lo);
        _mm512_store_pd(v + 8, a.hi);
        for (int k = 0; k < W; ++k) out[k] = v[k];
    }
    // Several short rows at once, one per lane (softmax_short_rows).
    static R floor(R a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static M le(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
    static bool all(M m) { return m == M(0xffff); }
    static bool finite(R a) { return _mm512_fpclass_ps_mask(a, 0x99) == 0; }  // no NaN or infinity in any lane
    static R gather(const T* p, const int32_t* idx) {
        return _mm512_i32gather_ps(_mm512_load_si512(idx), p, 4);
    }
    static R permute(R v, const int32_t* idx) { return _mm512_permutexvar_ps(_mm512_load_si512(idx), v); }  // v[idx[i]]
    // Lane i: a[idx[i]] for idx[i] < 16, else b[idx[i] - 16].
    static R permute2(R a, const int32_t* idx, R b) {
        return _mm512_permutex2var_ps(a, _mm512_loadu_si512(idx), b);
    }
    // t[j] lane l = a[l] lane j, for j < count: pairs of lanes, then of pairs, then 128-bit
    // blocks twice (64 shuffles for all 16).
    static void transpose16(const R* a, R* t, int count) {
        R b[16], c[16], d[16];
        for (int l = 0; l < 16; l += 2) {
            b[l] = _mm512_unpacklo_ps(a[l], a[l + 1]);
            b[l + 1] = _mm512_unpackhi_ps(a[l], a[l + 1]);
        }
        // c[4 g + k]: in 128-bit block q, entry 4 q + k of rows 4 g to 4 g + 3
        for (int l = 0; l < 16; l += 4)
            for (int h = 0; h < 2; ++h) {
                const __m512d lo = _mm512_castps_pd(b[l + h]), hi = _mm512_castps_pd(b[l + 2 + h]);
                c[l + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
                c[l + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
            }
        // d[8 g + 4 h + k]: blocks h and h + 2 of c[8 g + k] and of c[8 g + 4 + k]
        for (int g = 0; g < 2; ++g)
            for (int k = 0; k < 4; ++k) {
                d[8 * g + k] = _mm512_shuffle_f32x4(c[8 * g + k], c[8 * g + 4 + k], 0x88);
                d[8 * g + 4 + k] = _mm512_shuffle_f32x4(c[8 * g + k], c[8 * g + 4 + k], 0xdd);
            }
        for (int j = 0; j < count; ++j) {
            const int k = j % 4, h = (j / 4) & 1;
            const R lo = d[4 * h + k], hi = d[8 + 4 * h + k];
            t[j] = j >= 8 ? _mm512_shuffle_f32x4(lo, hi, 0xdd) : _mm512_shuffle_f32x4(lo, hi, 0x88);
        }
    }
    // A group of 16 rows of n entries (row l at x + l n) into lanes (entry j of every row at
    // out + 16 j, j < n), and back (into rows at y + l n): transpose16 for each 16 columns,
    // the rows' pieces loaded and stored under a mask of the columns there are.
    static constexpr bool has_transpose16 = true;
    static void rows_to_lanes(const T* x, int64_t n, T* out) {
        for (int64_t c = 0; c < n; c += 16) {
            const int k = int(std::min<int64_t>(16, n - c));
            const M m = tail(k);
            R a[16], t[16];
            for (int l = 0; l < 16; ++l) a[l] = _mm512_maskz_loadu_ps(m, x + l * n + c);
            transpose16(a, t, k);
            for (int j = 0; j < k; ++j) _mm512_storeu_ps(out + 16 * (c + j), t[j]);
        }
    }
    static void lanes_to_rows(const T* in, int64_t n, T* y) {
        for (int64_t c = 0; c < n; c += 16) {
            const int k = int(std::min<int64_t>(16, n - c));
            const M m = tail(k);
            R a[16], t[16];
            for (int j = 0; j < 16; ++j) a[j] = j < k ? _mm512_loadu_ps(in + 16 * (c + j)) : _mm512_setzero_ps();
            transpose16(a, t, 16);
            for (int l = 0; l < 16; ++l) _mm512_mask_storeu_ps(y + l * n + c, m, t[l]);
        }
    }
    // Lanes 0-7 from lo and 8-15 from hi, rounded to float (the layout of Acc).
    static R narrow2(__m512d lo, __m512d hi) {
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
    }
};

struct VD {
    using T = double;
    using R = __m512d;
    using M = __mmask8;
    static constexpr int W = 8;
    static R set1(T v) { return _mm512_set1_pd(v); }
    static R load(const T* p) { return _mm512_loadu_pd(p); }
    static R loadp(const T* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
    static void store(T* p, R v) { _mm512_storeu_pd(p, v); }
    static void storep(T* p, R v, M m) { _mm512_mask_storeu_pd(p, m, v); }
    static void stream(T* p, R v) { _mm512_stream_pd(p, v); }
    static M tail(int64_t k) { return M((1u << k) - 1u); }
    static M mand(M a, M b) { return M(a & b); }
    static R add(R a, R b) { return _mm512_add_pd(a, b); }
    static R add_where(M m, R a, R b) { return _mm512_mask3_fmadd_pd(b, _mm512_set1_pd(1), a, m); }
    static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
    static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
    static R fms(R a, R b, R c) { return _mm512_fmsub_pd(a, b, c); }
    static R fnma(R a, R b, R c) { return _mm512_fnmadd_pd(a, b, c); }
    static R max(R a, R b) { return _mm512_max_pd(a, b); }
    static R select(M m, R a, R b) { return _mm512_mask_blend_pd(m, b, a); }
    static M eq(R a, R b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
    static R scalef(R a, R k) { return _mm512_scalef_pd(a, k); }
    static R scalef_normal(R a, R k) { return _mm512_scalef_pd(a, k); }
    static constexpr bool has_scalef = true;
    static T hmax(R a) { return _mm512_reduce_max_pd(a); }
    static M sel_load(const uint8_t* p) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
        return M(_mm_test_epi8_mask(b, b));
    }
    static M sel_loadp(const uint8_t* p, int64_t k) {
        const __m128i b = _mm_maskz_loadu_epi8(__mmask16((1u << k) - 1u), p);
        return M(_mm_test_epi8_mask(b, b));
    }
    static T first(R a) { return _mm512_cvtsd_f64(a); }
    struct Acc { R s, c; };  // sum and the rounding errors of its additions (two-sum)
    static Acc acc_zero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
    static void acc_add(Acc& a, R v) {
        R t = _mm512_add_pd(a.s, v), vv = _mm512_sub_pd(t, a.s);
        R err = _mm512_add_pd(_mm512_sub_pd(a.s, _mm512_sub_pd(t, vv)), _mm512_sub_pd(v, vv));
        a.c = _mm512_add_pd(a.c, err);
        a.s = t;
    }
    static long double acc_lane(const Acc& a, int k) {
        alignas(64) double s[8], c[8];
        _mm512_store_pd(s, a.s);
        _mm512_store_pd(c, a.c);
        return std::isfinite(s[k]) ? (long double)s[k] + c[k] : (long double)s[k];  // no inf - inf
    }
    static void acc_lanes(const Acc& a, long double* out) {  // every acc_lane
        alignas(64) double s[8], c[8];
        _mm512_store_pd(s, a.s);
        _mm512_store_pd(c, a.c);
        for (int k = 0; k < W; ++k) out[k] = std::isfinite(s[k]) ? (long double)s[k] + c[k] : (long double)s[k];
    }
    static long double acc_sum(const Acc& a) {
        long double t = 0;
        for (int k = 0; k < W; ++k) t += acc_lane(a, k);
        return t;
    }
    // Several short rows at once, one per lane (softmax_short_rows).
    static R floor(R a) { return _mm512_roundscale_pd(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static M le(R a, R b) { return _mm512_cmp_pd_mask(a, b, _CMP_LE_OQ); }
    static bool all(M m) { return m == M(0xff); }
    static bool finite(R a) { return _mm512_fpclass_pd_mask(a, 0x99) == 0; }
    static R gather(const T* p, const int32_t* idx) {
        return _mm512_i32gather_pd(_mm256_load_si256(reinterpret_cast<const __m256i*>(idx)), p, 8);
    }
    static R permute(R v, const int32_t* idx) {  // v[idx[i]]
        return _mm512_permutexvar_pd(_mm512_cvtepu32_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(idx))), v);
    }
    // Lane i: a[idx[i]] for idx[i] < 8, else b[idx[i] - 8].
    static R permute2(R a, const int64_t* idx, R b) {
        return _mm512_permutex2var_pd(a, _mm512_loadu_si512(idx), b);
    }
    static R div(R a, R b) { return _mm512_div_pd(a, b); }
    // 1 / a within 2^-14 (quotient refines it).
    static R recip_estimate(R a) { return _mm512_rcp14_pd(a); }
    static constexpr int newton_steps = 1;
    // s = 2^k r with r in [sqrt(1/2), sqrt(2)), for s > 0.
    static R split_exp(R s, R& k) {
        R r = _mm512_getmant_pd(s, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
        k = _mm512_getexp_pd(s);
        const __mmask8 big = _mm512_cmp_pd_mask(r, _mm512_set1_pd(1.4142135623730951), _CMP_GT_OQ);
        k = _mm512_mask_add_pd(k, big, k, _mm512_set1_pd(1.0));
        return _mm512_mask_mul_pd(r, big, r, _mm512_set1_pd(0.5));
    }
    // scale / (s + c) per lane as head and tail: h = scale / s, then the remainder
    // scale - h s (exact) less h c, divided by s.
    static void inv_split(const Acc& a, double scale, R& hi, R& lo) {
        const R k = _mm512_set1_pd(scale);
        hi = _mm512_div_pd(k, a.s);
        lo = _mm512_div_pd(_mm512_fnmadd_pd(hi, a.c, _mm512_fnmadd_pd(hi, a.s, k)), a.s);
    }
};

// Orders the streaming stores of this thread before everything after it.
static inline void stream_fence() { _mm_sfence(); }
constexpr bool can_stream = true;

#include "softmax_impl.inc"

extern const KernelTable table = {"avx512", kernel_set<VF>(), kernel_set<VD>(), half_set<VF>()};

}  // namespace avx512
}  // namespace fastsoftmax
