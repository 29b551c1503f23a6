// Multi-scale deformable attention: sizes and bilinear sampling geometry shared by the CPU and
// CUDA kernels. Free of Paddle headers, so the kernels build with a plain C++ compiler or nvcc.
//
// Layouts (all contiguous, row-major):
//   value              [N, S, M, D]        S = sum_l H_l * W_l, levels stored one after another
//   spatial_shapes     int64 [L, 2]        (H_l, W_l)
//   level_start_index  int64 [L]           offset of level l in S
//   sampling_locations [N, Lq, M, L, P, 2] (x, y) normalised to [0, 1]
//   attention_weights  [N, Lq, M, L, P]
//   output             [N, Lq, M * D]
// Sampling convention: pixel coordinates (x * W - 0.5, y * H - 0.5); corners outside the map are 0.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSDA_HOST_DEVICE inline
#endif

namespace msda {

struct Dims {
  int64_t batch;      // N
  int64_t len_value;  // S
  int64_t heads;      // M
  int64_t channels;   // D
  int64_t levels;     // L
  int64_t points;     // P
  int64_t queries;    // Lq
};

// The four bilinear corners of one sample: weights, d(weight)/d(w_im), d(weight)/d(h_im), and the
// offset (in positions, y * W + x) of each corner inside its level; valid[k] is false for a corner
// outside the map. Corner order: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
template <typename T>
struct Corners {
  T weight[4];
  T dw_dx[4];
  T dw_dy[4];
  int64_t offset[4];
  bool valid[4];
};

// Fills `c` for a sample at normalised (x, y) on an H x W map. Returns false when no corner can be
// inside the map (then `c` is untouched); NaN locations also return false.
template <typename T>
MSDA_HOST_DEVICE bool bilinear_corners(T x, T y, int64_t height, int64_t width, Corners<T>* c) {
  const T h_im = y * static_cast<T>(height) - static_cast<T>(0.5);
  const T w_im = x * static_cast<T>(width) - static_cast<T>(0.5);
  if (!(h_im > static_cast<T>(-1) && w_im > static_cast<T>(-1) &&
        h_im < static_cast<T>(height) && w_im < static_cast<T>(width))) {
    return false;
  }
  // h_im, w_im are in (-1, H) x (-1, W): floor fits an int64 and the corners lie in [-1, H].
  const T h_floor = h_im < static_cast<T>(0) ? static_cast<T>(-1) : static_cast<T>(static_cast<int64_t>(h_im));
  const T w_floor = w_im < static_cast<T>(0) ? static_cast<T>(-1) : static_cast<T>(static_cast<int64_t>(w_im));
  const int64_t y0 = static_cast<int64_t>(h_floor);
  const int64_t x0 = static_cast<int64_t>(w_floor);
  const T ly = h_im - h_floor, lx = w_im - w_floor;
  const T hy = static_cast<T>(1) - ly, hx = static_cast<T>(1) - lx;
  c->weight[0] = hy * hx;
  c->weight[1] = hy * lx;
  c->weight[2] = ly * hx;
  c->weight[3] = ly * lx;
  c->dw_dx[0] = -hy;
  c->dw_dx[1] = hy;
  c->dw_dx[2] = -ly;
  c->dw_dx[3] = ly;
  c->dw_dy[0] = -hx;
  c->dw_dy[1] = -lx;
  c->dw_dy[2] = hx;
  c->dw_dy[3] = lx;
  const bool y0_in = y0 >= 0, y1_in = y0 + 1 < height;
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < width;
  c->valid[0] = y0_in && x0_in;
  c->valid[1] = y0_in && x1_in;
  c->valid[2] = y1_in && x0_in;
  c->valid[3] = y1_in && x1_in;
  c->offset[0] = y0 * width + x0;
  c->offset[1] = c->offset[0] + 1;
  c->offset[2] = c->offset[0] + width;
  c->offset[3] = c->offset[2] + 1;
  return true;
}

}  // namespace msda
