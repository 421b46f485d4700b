#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace tarq {

const Kernels& pick_kernels() {
    static const Kernels* chosen = [] {
        const char* force = std::getenv("TARQ_ISA");  // "generic" pins the portable path (tests, debugging)
        if (force && std::strcmp(force, "generic") == 0) return &generic::kernels;
#if defined(TARQ_HAVE_AVX2_TU) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::kernels;
#endif
        return &generic::kernels;
    }();
    return *chosen;
}

}  // namespace tarq
