// CUDA kernels of multi-scale deformable attention (Paddle-free; `nvcc -std=c++17 -c` builds it).
//
// Mapping: one warp per work item (n, q, m); lane i handles channels i, i + 32, ... of the head.
// Every lane evaluates the (cheap) sampling geometry itself, so no shared memory is needed.
// Backward: grad_value is scattered with atomicAdd; the per-sample gradients of the location and
// the attention weight are sums over channels, reduced across the warp with shuffles.
#include "msda_cuda.h"

namespace msda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;  // 8 warps per block
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const T* __restrict__ loc,
                               const T* __restrict__ attn, T* __restrict__ out, Dims dm,
                               int64_t items) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t D = dm.channels, M = dm.heads, L = dm.levels, P = dm.points;
  const int64_t Q = dm.queries, S = dm.len_value;
  const int64_t row = M * D;
  for (int64_t item = blockIdx.x * warps_per_block + threadIdx.x / kWarp; item < items;
       item += int64_t(gridDim.x) * warps_per_block) {
    const int64_t m = item % M;
    const int64_t n = item / (Q * M);
    const T* v_nm = value + n * S * row + m * D;
    for (int64_t d = lane; d - lane < D; d += kWarp) {
      const bool active = d < D;
      const T* lp = loc + item * L * P * 2;
      const T* ap = attn + item * L * P;
      T acc = 0;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
        const T* v_l = v_nm + starts[l] * row;
        for (int64_t p = 0; p < P; ++p, lp += 2, ++ap) {
          Corners<T> c;
          if (!bilinear_corners(lp[0], lp[1], h, w, &c) || !active) continue;
          const T a = *ap;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (c.valid[k]) acc += a * c.weight[k] * v_l[c.offset[k] * row + d];
          }
        }
      }
      if (active) out[item * D + d] = acc;
    }
  }
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const T* __restrict__ loc,
                                const T* __restrict__ attn, const T* __restrict__ grad_out,
                                T* __restrict__ grad_value, T* __restrict__ grad_loc,
                                T* __restrict__ grad_attn, Dims dm, int64_t items) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t D = dm.channels, M = dm.heads, L = dm.levels, P = dm.points;
  const int64_t Q = dm.queries, S = dm.len_value;
  const int64_t row = M * D;
  for (int64_t item = blockIdx.x * warps_per_block + threadIdx.x / kWarp; item < items;
       item += int64_t(gridDim.x) * warps_per_block) {
    const int64_t m = item % M;
    const int64_t n = item / (Q * M);
    const int64_t base_nm = n * S * row + m * D;
    const T* go = grad_out + item * D;
    const T* lp = loc + item * L * P * 2;
    const T* ap = attn + item * L * P;
    T* glp = grad_loc + item * L * P * 2;
    T* gap = grad_attn + item * L * P;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const int64_t base_l = base_nm + starts[l] * row;
      for (int64_t p = 0; p < P; ++p, lp += 2, glp += 2, ++ap, ++gap) {
        Corners<T> c;
        const bool inside = bilinear_corners(lp[0], lp[1], h, w, &c);
        T g_attn = 0, g_x = 0, g_y = 0;
        if (inside) {
          const T a = *ap;
          for (int64_t d = lane; d < D; d += kWarp) {
            const T g = go[d];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const int64_t off = base_l + c.offset[k] * row + d;
              const T dot = g * value[off];
              atomicAdd(grad_value + off, a * c.weight[k] * g);
              g_attn += c.weight[k] * dot;
              g_x += c.dw_dx[k] * dot;
              g_y += c.dw_dy[k] * dot;
            }
          }
          // `inside` is the same for every lane of the warp, so the whole warp reduces together.
          g_attn = warp_sum(g_attn);
          g_x = warp_sum(g_x);
          g_y = warp_sum(g_y);
          if (lane == 0) {
            *gap = g_attn;
            glp[0] = a * g_x * static_cast<T>(w);
            glp[1] = a * g_y * static_cast<T>(h);
          }
        } else if (lane == 0) {
          *gap = 0;
          glp[0] = 0;
          glp[1] = 0;
        }
      }
    }
  }
}

int launch_blocks(int64_t items) {
  const int64_t warps_per_block = kThreads / kWarp;
  int64_t blocks = (items + warps_per_block - 1) / warps_per_block;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace

template <typename T>
cudaError_t forward_cuda(const T* value, const int64_t* spatial_shapes,
                         const int64_t* level_start_index, const T* sampling_locations,
                         const T* attention_weights, T* out, const Dims& dims,
                         cudaStream_t stream) {
  const int64_t items = dims.batch * dims.queries * dims.heads;
  if (items == 0 || dims.channels == 0) return cudaSuccess;
  forward_kernel<T><<<launch_blocks(items), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out, dims,
      items);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_cuda(const T* value, const int64_t* spatial_shapes,
                          const int64_t* level_start_index, const T* sampling_locations,
                          const T* attention_weights, const T* grad_out, T* grad_value,
                          T* grad_sampling_locations, T* grad_attention_weights,
                          const Dims& dims, cudaStream_t stream) {
  const int64_t items = dims.batch * dims.queries * dims.heads;
  if (items == 0) return cudaSuccess;
  backward_kernel<T><<<launch_blocks(items), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_out,
      grad_value, grad_sampling_locations, grad_attention_weights, dims, items);
  return cudaGetLastError();
}

template cudaError_t forward_cuda<float>(const float*, const int64_t*, const int64_t*,
                                         const float*, const float*, float*, const Dims&,
                                         cudaStream_t);
template cudaError_t forward_cuda<double>(const double*, const int64_t*, const int64_t*,
                                          const double*, const double*, double*, const Dims&,
                                          cudaStream_t);
template cudaError_t backward_cuda<float>(const float*, const int64_t*, const int64_t*,
                                          const float*, const float*, const float*, float*,
                                          float*, float*, const Dims&, cudaStream_t);
template cudaError_t backward_cuda<double>(const double*, const int64_t*, const int64_t*,
                                           const double*, const double*, const double*, double*,
                                           double*, double*, const Dims&, cudaStream_t);

}  // namespace msda
