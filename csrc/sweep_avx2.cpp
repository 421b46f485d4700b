// Same source as the portable sweep, compiled with -mavx2 -mfma -ffp-contract=off (CMakeLists.txt).
#define TARQ_ISA_NS avx2
#include "sweep_impl.h"
