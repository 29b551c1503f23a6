// CPU entry points: the portable build of the kernels plus a run-time switch to the AVX2 + FMA build.
#include "msda_cpu.h"

#define MSDA_CPU_NS generic
#include "msda_cpu_impl.h"
#undef MSDA_CPU_NS

namespace msda {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx2 {
template <typename T>
void forward(const T*, const int64_t*, const int64_t*, const T*, const T*, T*, const Dims&);
template <typename T>
void backward(const T*, const int64_t*, const int64_t*, const T*, const T*, const T*, T*, T*, T*,
              const Dims&);
}  // namespace avx2

static bool use_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
static bool use_avx2() { return false; }
#endif

const char* cpu_variant() { return use_avx2() ? "avx2+fma" : "generic"; }

template <typename T>
void forward_cpu(const T* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                 const T* sampling_locations, const T* attention_weights, T* out, const Dims& dims) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (use_avx2()) {
    avx2::forward<T>(value, spatial_shapes, level_start_index, sampling_locations,
                     attention_weights, out, dims);
    return;
  }
#endif
  generic::forward<T>(value, spatial_shapes, level_start_index, sampling_locations,
                      attention_weights, out, dims);
}

template <typename T>
void backward_cpu(const T* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                  const T* sampling_locations, const T* attention_weights, const T* grad_out,
                  T* grad_value, T* grad_sampling_locations, T* grad_attention_weights,
                  const Dims& dims) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (use_avx2()) {
    avx2::backward<T>(value, spatial_shapes, level_start_index, sampling_locations,
                      attention_weights, grad_out, grad_value, grad_sampling_locations,
                      grad_attention_weights, dims);
    return;
  }
#endif
  generic::backward<T>(value, spatial_shapes, level_start_index, sampling_locations,
                       attention_weights, grad_out, grad_value, grad_sampling_locations,
                       grad_attention_weights, dims);
}

template void forward_cpu<float>(const float*, const int64_t*, const int64_t*, const float*,
                                 const float*, float*, const Dims&);
template void forward_cpu<double>(const double*, const int64_t*, const int64_t*, const double*,
                                  const double*, double*, const Dims&);
template void backward_cpu<float>(const float*, const int64_t*, const int64_t*, const float*,
                                  const float*, const float*, float*, float*, float*, const Dims&);
template void backward_cpu<double>(const double*, const int64_t*, const int64_t*, const double*,
                                   const double*, const double*, double*, double*, double*,
                                   const Dims&);

}  // namespace msda
