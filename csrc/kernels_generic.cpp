#define TARQ_ISA_NS generic
#define TARQ_ISA_NAME "generic"
#define TARQ_VEC_DOUBLES 2
#include "kernels_impl.h"
