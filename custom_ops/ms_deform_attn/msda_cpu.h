// CPU entry points of multi-scale deformable attention over raw contiguous buffers (Paddle-free).
// Layouts and the sampling convention: msda_common.h. Threads: OpenMP (OMP_NUM_THREADS).
#pragma once

#include <cstdint>

#include "msda_common.h"

namespace msda {

// out [N, Lq, M * D] is fully overwritten.
template <typename T>
void forward_cpu(const T* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                 const T* sampling_locations, const T* attention_weights, T* out, const Dims& dims);

// grad_value [N, S, M, D] must be zero on entry; grad_sampling_locations [N, Lq, M, L, P, 2] and
// grad_attention_weights [N, Lq, M, L, P] are fully overwritten. Deterministic for any thread count.
template <typename T>
void backward_cpu(const T* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                  const T* sampling_locations, const T* attention_weights, const T* grad_out,
                  T* grad_value, T* grad_sampling_locations, T* grad_attention_weights,
                  const Dims& dims);

// Which instruction-set variant the CPU entry points use on this machine ("avx2+fma" or "generic").
const char* cpu_variant();

}  // namespace msda
