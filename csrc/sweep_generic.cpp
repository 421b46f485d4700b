#define TARQ_ISA_NS generic
#include "sweep_impl.h"
