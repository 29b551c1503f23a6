// The CPU kernels compiled for AVX2 + FMA (chosen at run time by msda_cpu.cc when supported).
#include <cstdint>
#include <cstring>

#include "msda_common.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define MSDA_CPU_NS avx2
#include "msda_cpu_impl.h"
#undef MSDA_CPU_NS
#pragma GCC pop_options

namespace msda {
namespace avx2 {
template void forward<float>(const float*, const int64_t*, const int64_t*, const float*, const float*, float*, const Dims&);
template void forward<double>(const double*, const int64_t*, const int64_t*, const double*, const double*, double*, const Dims&);
template void backward<float>(const float*, const int64_t*, const int64_t*, const float*, const float*, const float*, float*, float*, float*, const Dims&);
template void backward<double>(const double*, const int64_t*, const int64_t*, const double*, const double*, const double*, double*, double*, double*, const Dims&);
}  // namespace avx2
}  // namespace msda
#endif
