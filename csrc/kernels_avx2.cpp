// Same source as the portable kernels, compiled with -mavx2 -mfma (CMakeLists.txt); only called when
// the CPU reports both features (pick_kernels in dispatch.cpp).
#define TARQ_ISA_NS avx2
#define TARQ_ISA_NAME "avx2+fma"
#define TARQ_VEC_DOUBLES 4
#include "kernels_impl.h"
