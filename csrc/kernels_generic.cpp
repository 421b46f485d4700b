#define TARQ_ISA_NS generic
#define TARQ_ISA_NAME "generic"
#include "kernels_impl.h"
