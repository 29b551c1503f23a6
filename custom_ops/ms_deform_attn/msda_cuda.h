// CUDA launchers of multi-scale deformable attention over raw contiguous device buffers.
// Paddle-free: msda_cuda.cu builds with nvcc alone. Layouts and convention: msda_common.h.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "msda_common.h"

namespace msda {

// All pointers are device pointers (spatial_shapes and level_start_index included).
// out [N, Lq, M * D] is fully overwritten. Returns the launch status.
template <typename T>
cudaError_t forward_cuda(const T* value, const int64_t* spatial_shapes,
                         const int64_t* level_start_index, const T* sampling_locations,
                         const T* attention_weights, T* out, const Dims& dims, cudaStream_t stream);

// grad_value must be zero on entry (it is accumulated with atomicAdd, so the order of additions,
// and the last bits of grad_value, may vary between runs); grad_sampling_locations and
// grad_attention_weights are fully overwritten (deterministic).
template <typename T>
cudaError_t backward_cuda(const T* value, const int64_t* spatial_shapes,
                          const int64_t* level_start_index, const T* sampling_locations,
                          const T* attention_weights, const T* grad_out, T* grad_value,
                          T* grad_sampling_locations, T* grad_attention_weights, const Dims& dims,
                          cudaStream_t stream);

}  // namespace msda
