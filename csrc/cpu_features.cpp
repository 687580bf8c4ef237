#include "cpu_features.h"

#if defined(FASTSOFTMAX_HAVE_X86)
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#include <cstdint>
#endif

namespace fastsoftmax {

#if defined(FASTSOFTMAX_HAVE_X86)
namespace {

void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(_MSC_VER)
    int v[4];
    __cpuidex(v, int(leaf), int(sub));
    for (int i = 0; i < 4; ++i) r[i] = unsigned(v[i]);
#else
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}

uint64_t xgetbv0() {
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t(hi) << 32) | lo;
#endif
}

}  // namespace

CpuFeatures detect_cpu_features() {
    CpuFeatures f;
    unsigned r[4];
    cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    if (max_leaf < 7) return f;
    cpuid(1, 0, r);
    const bool osxsave = r[2] & (1u << 27);
    const bool fma = r[2] & (1u << 12);
    const bool f16c = r[2] & (1u << 29);
    const bool avx = r[2] & (1u << 28);
    if (!osxsave || !avx) return f;
    // XCR0: bits 1-2 = XMM/YMM state; bits 5-7 = opmask, ZMM0-15 upper halves, ZMM16-31.
    const uint64_t xcr0 = xgetbv0();
    const bool os_ymm = (xcr0 & 0x6) == 0x6;
    const bool os_zmm = (xcr0 & 0xE6) == 0xE6;
    cpuid(7, 0, r);
    const unsigned ebx = r[1];
    const bool avx2 = ebx & (1u << 5);
    const bool avx512f = ebx & (1u << 16), avx512dq = ebx & (1u << 17);
    const bool avx512bw = ebx & (1u << 30), avx512vl = ebx & (1u << 31);
    f.avx2_fma = os_ymm && avx2 && fma && f16c;
    f.avx512 = f.avx2_fma && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
    return f;
}

namespace {
CpuTuning detect_tuning() {
    CpuTuning t;
    unsigned r[4];
    cpuid(0, 0, r);
    // The vendor string, "AuthenticAMD", in EBX, EDX, ECX.
    const bool amd = r[1] == 0x68747541u && r[3] == 0x69746e65u && r[2] == 0x444d4163u;
    // The family (base + extended): 0x17 and later are the Zen cores.
    cpuid(1, 0, r);
    const unsigned base = (r[0] >> 8) & 0xf, family = base == 0xf ? base + ((r[0] >> 20) & 0xff) : base;
    if (amd && family >= 0x17) {
        t.backward_hints = false;
        t.stored_row_bytes = int64_t(2) << 20;
    }
    return t;
}
}  // namespace

#else

CpuFeatures detect_cpu_features() { return {}; }

namespace {
CpuTuning detect_tuning() { return {}; }
}  // namespace

#endif

const CpuTuning& cpu_tuning() {
    static const CpuTuning t = detect_tuning();
    return t;
}

}  // namespace fastsoftmax
