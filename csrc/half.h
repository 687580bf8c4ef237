// Scalar conversions of the 16-bit float formats (IEEE binary16 and bfloat16), bit by bit,
// rounding to nearest even. Plain C++: safe to share between the ISA translation units.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastsoftmax {

struct Half {
    uint16_t bits;
};
struct BFloat16 {
    uint16_t bits;
};

inline float float_from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
inline float widen(BFloat16 v) { return float_from_bits(uint32_t(v.bits) << 16); }
inline float widen(Half v) {
    const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
    const uint32_t exp = (v.bits >> 10) & 0x1fu, mant = v.bits & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
        const float mag = float(mant) * 5.9604644775390625e-08f;
        return float_from_bits(bits_of(mag) | sign);
    }
    if (exp == 31) return float_from_bits(sign | 0x7f800000u | (mant << 13));
    return float_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <class S> S narrow(float v);
template <class S> S narrow(double v);
template <> inline float narrow<float>(float v) { return v; }
template <> inline double narrow<double>(double v) { return v; }
template <> inline BFloat16 narrow<BFloat16>(float v) {
    const uint32_t u = bits_of(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40u)};  // quiet NaN
    return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
template <> inline Half narrow<Half>(float v) {
    uint32_t u = bits_of(v);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return {uint16_t(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u))};
    if (u >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};  // rounds to infinity
    if (u < 0x38800000u) {  // below 2^-14: a multiple of 2^-24, rounded to nearest even
        const float scaled = float_from_bits(u) * 16777216.0f;
        const float rounded = (scaled + 8388608.0f) - 8388608.0f;
        return {uint16_t(sign | uint16_t(rounded))};
    }
    const uint32_t r = u + 0xfffu + ((u >> 13) & 1u) - 0x38000000u;
    return {uint16_t(sign | (r >> 13))};
}

}  // namespace fastsoftmax
