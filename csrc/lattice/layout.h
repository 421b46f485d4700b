// Block layouts of the quantized ggml types (ggml-common.h) as tarq stores them: integer codes per element in the
// type's own convention (tarq.ggml: Q4_0 q in [-8, 7], Q4_K L in [0, 15], ...) plus a "param record" per block =
// the block's non-code fields in block order (python/tarq/ggml/base.py BlockType.param_dtype).
#pragma once
#include <cstdint>

#include "../fp16.h"

namespace tarq {
namespace lattice {

enum TypeId : int { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q2_K = 10, Q3_K = 11,
                    Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ4_NL = 20 };

enum FitMode : int { kPlain = 0, kWeighted = 1 };  // the solver's group fit: ggml's search without / with importance

struct TypeInfo {
    int id;
    int block;        // elements per block
    int type_size;    // bytes per block
    int param_bytes;  // bytes of the param record
    int code_min, code_max;
    bool offset;      // value = fl32(fl32(a q) + b)
    bool codebook;    // value = fl32(a * kvalues[q])
    int max_group;    // widest solver parameter group (Q4_0/Q5_0/Q8_0: 128)
};

// One contiguous run of param bytes inside the block: param[p .. p+len) <-> block[b .. b+len).
struct Segment { int p, b, len; };

TARQ_HD inline bool type_info(int id, TypeInfo* t) {
    switch (id) {
        case Q4_0: *t = {Q4_0, 32, 18, 2, -8, 7, false, false, 128}; return true;
        case Q4_1: *t = {Q4_1, 32, 20, 4, 0, 15, true, false, 32}; return true;
        case Q5_0: *t = {Q5_0, 32, 22, 2, -16, 15, false, false, 128}; return true;
        case Q5_1: *t = {Q5_1, 32, 24, 4, 0, 31, true, false, 32}; return true;
        case Q8_0: *t = {Q8_0, 32, 34, 2, -128, 127, false, false, 128}; return true;
        case IQ4_NL: *t = {IQ4_NL, 32, 18, 2, 0, 15, false, true, 32}; return true;
        case Q2_K: *t = {Q2_K, 256, 84, 20, 0, 3, true, false, 256}; return true;
        case Q3_K: *t = {Q3_K, 256, 110, 14, -4, 3, false, false, 256}; return true;
        case Q4_K: *t = {Q4_K, 256, 144, 16, 0, 15, true, false, 256}; return true;
        case Q5_K: *t = {Q5_K, 256, 176, 16, 0, 31, true, false, 256}; return true;
        case Q6_K: *t = {Q6_K, 256, 210, 18, -32, 31, false, false, 256}; return true;
        default: return false;
    }
}

// Where the param record lives inside the block (at most 2 runs); returns the number of runs.
TARQ_HD inline int param_segments(int id, Segment* s) {
    switch (id) {
        case Q4_0: case Q5_0: case Q8_0: case IQ4_NL: s[0] = {0, 0, 2}; return 1;
        case Q4_1: case Q5_1: s[0] = {0, 0, 4}; return 1;
        case Q2_K: s[0] = {0, 0, 16}; s[1] = {16, 80, 4}; return 2;            // scales[16] ... d, dmin
        case Q3_K: s[0] = {0, 96, 14}; return 1;                               // scales[12], d
        case Q4_K: case Q5_K: s[0] = {0, 0, 16}; return 1;                     // d, dmin, scales[12]
        case Q6_K: s[0] = {0, 192, 18}; return 1;                              // scales[16], d
        default: return 0;
    }
}

TARQ_HD inline float load_half(const uint8_t* p) {
    return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

TARQ_HD inline void store_half(uint8_t* p, float v) {
    const uint16_t h = f32_to_f16(v);
    p[0] = static_cast<uint8_t>(h & 0xff);
    p[1] = static_cast<uint8_t>(h >> 8);
}

// get_scale_min_k4: 6-bit scale and min j (0..7) of Q4_K / Q5_K from the 12 scale bytes
TARQ_HD inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

TARQ_HD inline void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* q) {
    for (int j = 0; j < 4; ++j) {
        q[j] = static_cast<uint8_t>(ls[j] | ((ls[j + 4] >> 4) << 6));
        q[j + 4] = static_cast<uint8_t>(lm[j] | ((lm[j + 4] >> 4) << 6));
        q[j + 8] = static_cast<uint8_t>((ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4));
    }
}

// Q3_K's 16 six-bit scales (stored as sc + 32): low nibbles in bytes 0..7, 2-bit high parts in bytes 8..11
TARQ_HD inline int q3k_scale(const uint8_t* s, int j) {
    const int low = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | (high << 4)) - 32;
}

TARQ_HD inline void q3k_pack_scales(const int* l /* 16 values in [0, 63] */, uint8_t* s) {
    for (int i = 0; i < 12; ++i) s[i] = 0;
    for (int j = 0; j < 16; ++j) {
        if (j < 8) s[j] = static_cast<uint8_t>(l[j] & 0xF);
        else s[j - 8] = static_cast<uint8_t>(s[j - 8] | ((l[j] & 0xF) << 4));
        s[8 + j % 4] = static_cast<uint8_t>(s[8 + j % 4] | ((l[j] >> 4) << (2 * (j / 4))));
    }
}

// The codes of one block written into its bytes (the param record is copied by the caller).
TARQ_HD inline void store_codes(int id, const int8_t* q, uint8_t* blk) {
    switch (id) {
        case Q4_0: case Q4_1: case IQ4_NL: {
            const int off = id == Q4_0 ? 8 : 0, base = id == Q4_1 ? 4 : 2;
            for (int j = 0; j < 16; ++j) blk[base + j] = static_cast<uint8_t>((q[j] + off) | ((q[j + 16] + off) << 4));
            return;
        }
        case Q5_0: case Q5_1: {
            const int off = id == Q5_0 ? 16 : 0, qh_at = id == Q5_0 ? 2 : 4;
            uint32_t qh = 0;
            for (int j = 0; j < 16; ++j) {
                const int u0 = q[j] + off, u1 = q[j + 16] + off;
                blk[qh_at + 4 + j] = static_cast<uint8_t>((u0 & 0xF) | ((u1 & 0xF) << 4));
                qh |= static_cast<uint32_t>((u0 >> 4) & 1) << j;
                qh |= static_cast<uint32_t>((u1 >> 4) & 1) << (j + 16);
            }
            for (int k = 0; k < 4; ++k) blk[qh_at + k] = static_cast<uint8_t>(qh >> (8 * k));
            return;
        }
        case Q8_0:
            for (int j = 0; j < 32; ++j) blk[2 + j] = static_cast<uint8_t>(q[j]);
            return;
        case Q2_K: case Q3_K: {
            const int qs_at = id == Q2_K ? 16 : 32, off = id == Q3_K ? 4 : 0;
            for (int h = 0; h < 2; ++h)
                for (int l = 0; l < 32; ++l) {
                    int v = 0;
                    for (int k = 0; k < 4; ++k) v |= ((q[128 * h + 32 * k + l] + off) & 3) << (2 * k);
                    blk[qs_at + 32 * h + l] = static_cast<uint8_t>(v);
                }
            if (id == Q3_K)
                for (int l = 0; l < 32; ++l) {
                    int v = 0;
                    for (int k = 0; k < 8; ++k) v |= (((q[32 * k + l] + 4) >> 2) & 1) << k;
                    blk[l] = static_cast<uint8_t>(v);
                }
            return;
        }
        case Q4_K: case Q5_K: {
            const int qs_at = id == Q4_K ? 16 : 48;
            for (int c = 0; c < 4; ++c)
                for (int l = 0; l < 32; ++l)
                    blk[qs_at + 32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
            if (id == Q5_K)
                for (int l = 0; l < 32; ++l) {
                    int v = 0;
                    for (int c = 0; c < 4; ++c) v |= ((q[64 * c + l] >> 4) << (2 * c)) | ((q[64 * c + 32 + l] >> 4) << (2 * c + 1));
                    blk[16 + l] = static_cast<uint8_t>(v);
                }
            return;
        }
        case Q6_K:
            for (int h = 0; h < 2; ++h)
                for (int l = 0; l < 32; ++l) {
                    const int b = 128 * h + l;
                    const int L0 = q[b] + 32, L1 = q[b + 32] + 32, L2 = q[b + 64] + 32, L3 = q[b + 96] + 32;
                    blk[64 * h + l] = static_cast<uint8_t>((L0 & 0xF) | ((L2 & 0xF) << 4));
                    blk[64 * h + l + 32] = static_cast<uint8_t>((L1 & 0xF) | ((L3 & 0xF) << 4));
                    blk[128 + 32 * h + l] = static_cast<uint8_t>((L0 >> 4) | ((L1 >> 4) << 2) | ((L2 >> 4) << 4) | ((L3 >> 4) << 6));
                }
            return;
        default:
            return;
    }
}

}  // namespace lattice
}  // namespace tarq
