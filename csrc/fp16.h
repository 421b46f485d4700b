// IEEE binary16 <-> binary32 conversion, round-to-nearest-even, written out so the lattice scales
// are bit-identical to numpy/torch float16 (subnormals, overflow to inf, NaN kept quiet).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TARQ_HD __host__ __device__
#else
#define TARQ_HD
#endif

namespace tarq {

TARQ_HD inline uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t x;
    std::memcpy(&x, &f, 4);
    return x;
#endif
}

TARQ_HD inline float bits_f32(uint32_t x) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(x);
#else
    float f;
    std::memcpy(&f, &x, 4);
    return f;
#endif
}

TARQ_HD inline uint16_t f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {  // inf or NaN (keep a quiet NaN with the top mantissa bits)
        return sign | (x > 0x7f800000u ? static_cast<uint16_t>(0x7e00u | ((x >> 13) & 0x3ffu)) : 0x7c00u);
    }
    const int32_t e = static_cast<int32_t>(x >> 23) - 127 + 15;  // rebiased exponent
    uint32_t mant = x & 0x7fffffu;
    if (e >= 31) return sign | 0x7c00u;  // too large even before rounding
    if (e <= 0) {  // half subnormal (or zero): value = M * 2^-24 with M = (1.mant) >> shift
        if (x < 0x00800000u) return sign;  // f32 zero/subnormal: far below 2^-25
        const uint32_t shift = static_cast<uint32_t>(14 - e);  // >= 14
        if (shift > 24) return sign;                           // < 2^-25 rounds to zero
        const uint32_t M = mant | 0x800000u;
        uint32_t h = M >> shift;
        const uint32_t rem = M & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) ++h;  // may carry into the smallest normal: correct
        return sign | static_cast<uint16_t>(h);
    }
    uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carry may reach 0x7c00 = inf: correct
    return sign | static_cast<uint16_t>(h);
}

TARQ_HD inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (e == 0x1fu) {
        x = sign | 0x7f800000u | (mant << 13);
    } else if (e != 0) {
        x = sign | ((e - 15 + 127) << 23) | (mant << 13);
    } else if (mant == 0) {
        x = sign;
    } else {  // subnormal: normalise
        int32_t ee = -1;
        do { mant <<= 1; ++ee; } while (!(mant & 0x400u));
        x = sign | (static_cast<uint32_t>(127 - 15 - ee) << 23) | ((mant & 0x3ffu) << 13);
    }
    return bits_f32(x);
}

}  // namespace tarq
