// Standalone check of the CUDA kernels of multi-scale deformable attention. Needs nvcc and a GPU;
// no Paddle, no Python. Built by `make cuda-build`, run by `make gpu-check`.
//
//   msda_gpu_check [--reduced] [--repeat N] [--seed S] [--cpu-reference-only] [--inject-mismatch]
//
// Default (GPU) mode: for every case below, in float32 and float64, the candidate is the CUDA
// kernels (msda_cuda.cu, device 0) and the reference the CPU kernels of the same sources
// (msda_cpu.cc); both get the same random inputs. The output [N, Lq, M*D] and the three gradients
// (value, sampling locations, attention weights) are compared element by element.
// --cpu-reference-only: the candidate is the CPU kernels and the reference the naive float64
//   transcription of the sampling convention below (no GPU needed). CI runs this mode, so the
//   comparison, determinism and report code of the GPU mode is exercised without a GPU.
// --reduced: the DAC encoder/decoder cases with each level side divided by 4 (seconds on a CPU).
// --inject-mismatch: adds 1e-3 * max(1, max|ref|) to one element of every candidate
//   grad_sampling_locations, so a test can see the check fail and name the tensor.
//
// Thresholds: max|a - b| <= atol * max(1, max|ref|) for all four tensors (the gradient rule of
// tests/ops/test_op.py), atol = 1e-10 (float64) and 5e-5 (float32). The float32 atol is 5x the
// CPU tests' 1e-5, which compare small shapes: at the full DAC encoder shape the float32 CPU
// kernels alone are up to 0.9e-5 * scale from the float64 result (grad_attention_weights), and a
// GPU-vs-CPU comparison carries the rounding of both sides.
// Kinks: where x * W - 0.5 (or y * H - 0.5) is within 8 * eps(dtype) * (|x * W| + 1) of an
// integer, the bilinear map has a kink; its derivative is one-sided and the side taken depends on
// the last bit of that product (FMA contraction, float32 rounding), so that component of
// grad_sampling_locations is left out of the comparison (the report counts them). The other
// tensors are continuous there and are compared everywhere.
// Determinism: the candidate runs twice on the same inputs. out, grad_sampling_locations and
// grad_attention_weights must be bitwise equal (their kernels write each element once);
// grad_value of the CUDA kernel is summed with atomicAdd, so the check reports whether it is
// bitwise reproducible, and how far apart two runs are, without failing on it.
// Timing (cases marked timed): median of --repeat runs after one warm-up, forward and backward
// (backward includes zeroing grad_value), with the achieved bandwidth for two byte counts:
//   gathered:   per sampled corner inside the map one row of D values of `value` (forward), or
//               of `value` read plus `grad_value` read and written (backward), plus every other
//               tensor once;
//   compulsory: every input and output once (a lower bound on memory traffic);
// against the copy bandwidth measured here (bytes read + written by a device-to-device copy, or
// a multi-threaded memcpy for the CPU kernels).
//
// Exit status: 0 every comparison within its threshold; 1 a mismatch, a determinism failure or a
// CUDA error; 2 no usable GPU (one line on stderr saying why: no driver, a driver older than the
// CUDA this program was built with, or no device) or a bad argument.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "msda_common.h"
#include "msda_cpu.h"
#include "msda_cuda.h"

#ifndef MSDA_BUILT_ARCHS
#define MSDA_BUILT_ARCHS unknown
#endif
#define MSDA_STR2(x) #x
#define MSDA_STR(x) MSDA_STR2(x)

namespace {

// ------------------------------------------------------------------------------------------------
// Cases and inputs

struct Level {
  int64_t h, w;
};

enum class Layout {
  kUniform,    // locations uniform in [-spread, 1 + spread], a few exactly on borders / centres
  kEncoder,    // every token a query, sampling near its own pixel (DAC encoder)
  kDecoder,    // boxes anywhere on the image, points inside and around them (DAC decoder)
  kNonFinite,  // uniform, plus NaN / +-inf / +-1e30 on some samples
};

struct Case {
  std::string name;
  std::vector<Level> levels;
  int64_t batch, queries, heads, channels, points;  // queries < 0: one query per token (S)
  Layout layout;
  double spread;
  bool timed;
  bool borders;  // a few locations exactly on map edges / pixel centres (kinks of the bilinear map)
};

std::vector<Level> dac_levels(bool reduced) {
  const std::vector<Level> full = {{100, 152}, {50, 76}, {25, 38}, {13, 19}};  // 800 x 1216 input
  if (!reduced) return full;
  std::vector<Level> out;
  for (const Level& l : full) out.push_back({(l.h + 3) / 4, (l.w + 3) / 4});
  return out;
}

std::vector<Case> make_cases(bool reduced) {
  // DAC-DETR: 8 heads x 32 channels, 4 levels, 4 points; decoder 900 + 200 (denoising) queries.
  return {
      {"dac-encoder", dac_levels(reduced), 2, -1, 8, 32, 4, Layout::kEncoder, 0.0, true, false},
      {"dac-decoder", dac_levels(reduced), 2, reduced ? 300 : 1100, 8, 32, 4, Layout::kDecoder,
       0.0, true, false},
      {"outside-and-borders", {{6, 7}, {3, 4}}, 2, 5, 2, 3, 2, Layout::kUniform, 0.5, false, true},
      {"h1-w1-levels", {{1, 5}, {4, 1}, {1, 1}}, 1, 4, 2, 5, 3, Layout::kUniform, 0.3, false, false},
      {"one-query-odd-d7", {{5, 5}}, 3, 1, 1, 7, 4, Layout::kUniform, 0.2, false, false},
      {"d1", {{3, 3}}, 1, 7, 4, 1, 1, Layout::kUniform, 0.2, false, false},
      {"d16", {{8, 6}, {4, 3}}, 2, 9, 4, 16, 2, Layout::kUniform, 0.2, false, false},
      {"d33-partial-warp", {{8, 6}, {4, 3}}, 2, 9, 3, 33, 2, Layout::kUniform, 0.2, false, false},
      {"d64", {{8, 6}, {4, 3}, {2, 2}, {1, 1}}, 2, 20, 2, 64, 3, Layout::kUniform, 0.2, false,
       false},
      {"non-finite-locations", {{4, 5}, {2, 3}}, 2, 4, 2, 3, 2, Layout::kNonFinite, 0.2, false,
       false},
      {"contention", {{6, 8}, {3, 4}}, 2, 300, 4, 32, 4, Layout::kUniform, 0.0, false, false},
  };
}

// Inputs of one case in one dtype. Layouts: msda_common.h.
template <typename T>
struct Problem {
  msda::Dims dims;
  std::vector<int64_t> shapes, starts;  // [L, 2] (H, W), [L]
  std::vector<T> value;                 // [N, S, M, D]
  std::vector<T> loc;                   // [N, Lq, M, L, P, 2]
  std::vector<T> attn;                  // [N, Lq, M, L, P]
  std::vector<T> grad_out;              // [N, Lq, M * D]
};

// Outputs of one forward + backward.
template <typename T>
struct Result {
  std::vector<T> out, grad_value, grad_loc, grad_attn;
};

// Draws the inputs in float64 (the same numbers for both dtypes), then rounds them to T.
template <typename T>
Problem<T> make_problem(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  Problem<T> pb;
  msda::Dims& dm = pb.dims;
  const int64_t L = static_cast<int64_t>(c.levels.size());
  int64_t total = 0;
  for (const Level& l : c.levels) {
    pb.shapes.push_back(l.h);
    pb.shapes.push_back(l.w);
    pb.starts.push_back(total);
    total += l.h * l.w;
  }
  dm.batch = c.batch;
  dm.len_value = total;
  dm.heads = c.heads;
  dm.channels = c.channels;
  dm.levels = L;
  dm.points = c.points;
  dm.queries = c.queries < 0 ? total : c.queries;
  const int64_t N = dm.batch, Q = dm.queries, M = dm.heads, D = dm.channels, P = dm.points;

  pb.value.resize(static_cast<size_t>(N * total * M * D));
  for (T& v : pb.value) v = static_cast<T>(normal(rng));

  std::vector<double> loc(static_cast<size_t>(N * Q * M * L * P * 2));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t q = 0; q < Q; ++q) {
      double ref_x = 0, ref_y = 0, box_w = 0, box_h = 0;
      if (c.layout == Layout::kEncoder) {  // centre of the token's own pixel
        int64_t l0 = L - 1;
        while (pb.starts[l0] > q) --l0;
        const int64_t pos = q - pb.starts[l0], h = pb.shapes[2 * l0], w = pb.shapes[2 * l0 + 1];
        ref_x = (static_cast<double>(pos % w) + 0.5) / static_cast<double>(w);
        ref_y = (static_cast<double>(pos / w) + 0.5) / static_cast<double>(h);
      } else if (c.layout == Layout::kDecoder) {  // a box anywhere on the image
        ref_x = unit(rng);
        ref_y = unit(rng);
        box_w = 0.05 + 0.45 * unit(rng);
        box_h = 0.05 + 0.45 * unit(rng);
      }
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t l = 0; l < L; ++l) {
          const double h = static_cast<double>(pb.shapes[2 * l]);
          const double w = static_cast<double>(pb.shapes[2 * l + 1]);
          for (int64_t p = 0; p < P; ++p) {
            double* xy = &loc[static_cast<size_t>(((((n * Q + q) * M + m) * L + l) * P + p) * 2)];
            if (c.layout == Layout::kEncoder) {  // ~1.5 px offsets on each level
              xy[0] = ref_x + 1.5 * normal(rng) / w;
              xy[1] = ref_y + 1.5 * normal(rng) / h;
            } else if (c.layout == Layout::kDecoder) {
              xy[0] = ref_x + (unit(rng) - 0.5) * box_w;
              xy[1] = ref_y + (unit(rng) - 0.5) * box_h;
            } else {
              xy[0] = -c.spread + (1.0 + 2.0 * c.spread) * unit(rng);
              xy[1] = -c.spread + (1.0 + 2.0 * c.spread) * unit(rng);
            }
          }
        }
      }
    }
  }
  if (c.borders) {
    // Exact borders and pixel centres (kinks of the bilinear map) on the first samples of each level.
    const int64_t samples = N * Q * M;
    for (int64_t l = 0; l < L; ++l) {
      const double h = static_cast<double>(pb.shapes[2 * l]);
      const double w = static_cast<double>(pb.shapes[2 * l + 1]);
      const double xs[6] = {0.0, 1.0, 0.5 / w, 1.0 - 0.5 / w, 1.0 / w, 0.0};
      const double ys[6] = {0.0, 1.0, 0.5 / h, 1.0 - 0.5 / h, 0.0, 1.0 / h};
      for (int64_t k = 0; k < std::min<int64_t>(samples, 6); ++k) {
        double* xy = &loc[static_cast<size_t>((k * L + l) * P * 2)];
        xy[0] = xs[k];
        xy[1] = ys[k];
      }
    }
  }
  if (c.layout == Layout::kNonFinite) {
    const double bad[5] = {std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(), 1e30, -1e30};
    const size_t points = loc.size() / 2;
    for (size_t i = 0; i < 5; ++i) {
      const size_t a = std::min(points - 1, 7 * i + 1), b = std::min(points - 1, 7 * i + 2);
      loc[2 * a + i % 2] = bad[i];  // one coordinate bad
      loc[2 * b] = bad[i];          // both coordinates bad
      loc[2 * b + 1] = bad[i];
    }
  }
  pb.loc.assign(loc.begin(), loc.end());

  pb.attn.resize(static_cast<size_t>(N * Q * M * L * P));
  const bool softmax = c.layout == Layout::kEncoder || c.layout == Layout::kDecoder;
  for (size_t row = 0; row < pb.attn.size(); row += static_cast<size_t>(L * P)) {
    std::vector<double> a(static_cast<size_t>(L * P));
    double sum = 0;
    for (double& x : a) {
      x = softmax ? std::exp(normal(rng)) : unit(rng);
      sum += x;
    }
    for (size_t i = 0; i < a.size(); ++i) pb.attn[row + i] = static_cast<T>(softmax ? a[i] / sum : a[i]);
  }
  pb.grad_out.resize(static_cast<size_t>(N * Q * M * D));
  for (T& g : pb.grad_out) g = static_cast<T>(normal(rng));
  return pb;
}

// ------------------------------------------------------------------------------------------------
// Backends: a forward + backward on one problem, and their timing

struct Timing {
  double forward_ms, backward_ms;
};

template <typename T>
struct Backend {
  std::string name;
  std::function<Result<T>(const Problem<T>&)> run;
  std::function<Timing(const Problem<T>&, int)> time;  // median of `repeat` runs
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename T>
Result<T> run_cpu(const Problem<T>& pb) {
  const msda::Dims& dm = pb.dims;
  Result<T> r;
  r.out.resize(pb.grad_out.size());
  r.grad_value.assign(pb.value.size(), T(0));
  r.grad_loc.resize(pb.loc.size());
  r.grad_attn.resize(pb.attn.size());
  msda::forward_cpu<T>(pb.value.data(), pb.shapes.data(), pb.starts.data(), pb.loc.data(),
                       pb.attn.data(), r.out.data(), dm);
  msda::backward_cpu<T>(pb.value.data(), pb.shapes.data(), pb.starts.data(), pb.loc.data(),
                        pb.attn.data(), pb.grad_out.data(), r.grad_value.data(), r.grad_loc.data(),
                        r.grad_attn.data(), dm);
  return r;
}

template <typename T>
Timing time_cpu(const Problem<T>& pb, int repeat) {
  Result<T> r = run_cpu(pb);  // warm-up, and the buffers
  std::vector<double> fwd, bwd;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    msda::forward_cpu<T>(pb.value.data(), pb.shapes.data(), pb.starts.data(), pb.loc.data(),
                         pb.attn.data(), r.out.data(), pb.dims);
    auto t1 = std::chrono::steady_clock::now();
    std::fill(r.grad_value.begin(), r.grad_value.end(), T(0));
    msda::backward_cpu<T>(pb.value.data(), pb.shapes.data(), pb.starts.data(), pb.loc.data(),
                          pb.attn.data(), pb.grad_out.data(), r.grad_value.data(),
                          r.grad_loc.data(), r.grad_attn.data(), pb.dims);
    auto t2 = std::chrono::steady_clock::now();
    fwd.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    bwd.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  return {median(fwd), median(bwd)};
}

// The naive float64 reference: a direct transcription of the sampling convention of
// msda_common.h, written independently of bilinear_corners. Location (x, y) on an H x W level
// samples pixel coordinates (x * W - 0.5, y * H - 0.5) bilinearly; corners outside are zero.
template <typename T>
Result<T> run_naive(const Problem<T>& pb) {
  const msda::Dims& dm = pb.dims;
  const int64_t N = dm.batch, Q = dm.queries, M = dm.heads, D = dm.channels, L = dm.levels,
                P = dm.points, S = dm.len_value;
  std::vector<double> out(pb.grad_out.size(), 0.0), gv(pb.value.size(), 0.0),
      gl(pb.loc.size(), 0.0), ga(pb.attn.size(), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t q = 0; q < Q; ++q) {
      for (int64_t m = 0; m < M; ++m) {
        const int64_t item = (n * Q + q) * M + m;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t h = pb.shapes[2 * l], w = pb.shapes[2 * l + 1];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t s = (item * L + l) * P + p;
            const double x = static_cast<double>(pb.loc[2 * s]) * static_cast<double>(w) - 0.5;
            const double y = static_cast<double>(pb.loc[2 * s + 1]) * static_cast<double>(h) - 0.5;
            // Every corner is outside the map (also for NaN / inf): nothing is sampled.
            if (!(x > -1.0 && y > -1.0 && x < static_cast<double>(w) && y < static_cast<double>(h)))
              continue;
            const double x0 = std::floor(x), y0 = std::floor(y);
            const double a = static_cast<double>(pb.attn[s]);
            double g_attn = 0, g_x = 0, g_y = 0;
            for (int dy = 0; dy < 2; ++dy) {
              for (int dx = 0; dx < 2; ++dx) {
                const int64_t cx = static_cast<int64_t>(x0) + dx, cy = static_cast<int64_t>(y0) + dy;
                if (cx < 0 || cy < 0 || cx >= w || cy >= h) continue;
                const double fx = dx ? x - x0 : 1.0 - (x - x0);  // weight along x
                const double fy = dy ? y - y0 : 1.0 - (y - y0);
                const double sx = dx ? 1.0 : -1.0, sy = dy ? 1.0 : -1.0;  // d(fx)/dx, d(fy)/dy
                const int64_t row = ((n * S + pb.starts[l] + cy * w + cx) * M + m) * D;
                double dot = 0;
                for (int64_t d = 0; d < D; ++d) {
                  const double v = static_cast<double>(pb.value[row + d]);
                  const double g = static_cast<double>(pb.grad_out[item * D + d]);
                  out[item * D + d] += a * fx * fy * v;
                  gv[row + d] += a * fx * fy * g;
                  dot += g * v;
                }
                g_attn += fx * fy * dot;
                g_x += sx * fy * dot;
                g_y += fx * sy * dot;
              }
            }
            ga[s] = g_attn;
            gl[2 * s] = a * g_x * static_cast<double>(w);  // dx/d(loc_x) = W
            gl[2 * s + 1] = a * g_y * static_cast<double>(h);
          }
        }
      }
    }
  }
  Result<T> r;
  r.out.assign(out.begin(), out.end());
  r.grad_value.assign(gv.begin(), gv.end());
  r.grad_loc.assign(gl.begin(), gl.end());
  r.grad_attn.assign(ga.begin(), ga.end());
  return r;
}

struct CudaError : std::runtime_error {
  CudaError(const std::string& what, cudaError_t code)
      : std::runtime_error(what + ": " + cudaGetErrorString(code)), code(code) {}
  cudaError_t code;
};

void cuda_check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw CudaError(what, err);
}

// A device buffer of n elements (freed on scope exit).
template <typename U>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : size(n) {
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(n, 1) * sizeof(U)),
               "cudaMalloc");
  }
  DeviceBuffer(const std::vector<U>& host) : DeviceBuffer(host.size()) {
    cuda_check(cudaMemcpy(ptr, host.data(), size * sizeof(U), cudaMemcpyHostToDevice),
               "cudaMemcpy to device");
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::vector<U> to_host() const {
    std::vector<U> host(size);
    cuda_check(cudaMemcpy(host.data(), ptr, size * sizeof(U), cudaMemcpyDeviceToHost),
               "cudaMemcpy to host");
    return host;
  }
  U* ptr = nullptr;
  size_t size;
};

template <typename T>
struct DeviceProblem {
  explicit DeviceProblem(const Problem<T>& pb)
      : shapes(pb.shapes), starts(pb.starts), value(pb.value), loc(pb.loc), attn(pb.attn),
        grad_out(pb.grad_out), out(pb.grad_out.size()), grad_value(pb.value.size()),
        grad_loc(pb.loc.size()), grad_attn(pb.attn.size()) {}
  void forward(const msda::Dims& dm) {
    cuda_check(msda::forward_cuda<T>(value.ptr, shapes.ptr, starts.ptr, loc.ptr, attn.ptr, out.ptr,
                                     dm, nullptr),
               "forward_cuda launch");
  }
  void backward(const msda::Dims& dm) {
    cuda_check(cudaMemsetAsync(grad_value.ptr, 0, grad_value.size * sizeof(T), nullptr),
               "cudaMemsetAsync grad_value");
    cuda_check(msda::backward_cuda<T>(value.ptr, shapes.ptr, starts.ptr, loc.ptr, attn.ptr,
                                      grad_out.ptr, grad_value.ptr, grad_loc.ptr, grad_attn.ptr,
                                      dm, nullptr),
               "backward_cuda launch");
  }
  DeviceBuffer<int64_t> shapes, starts;
  DeviceBuffer<T> value, loc, attn, grad_out, out, grad_value, grad_loc, grad_attn;
};

template <typename T>
Result<T> run_cuda(const Problem<T>& pb) {
  DeviceProblem<T> d(pb);
  d.forward(pb.dims);
  d.backward(pb.dims);
  cuda_check(cudaDeviceSynchronize(), "kernel execution");
  Result<T> r;
  r.out = d.out.to_host();
  r.grad_value = d.grad_value.to_host();
  r.grad_loc = d.grad_loc.to_host();
  r.grad_attn = d.grad_attn.to_host();
  return r;
}

struct Events {
  Events() {
    cuda_check(cudaEventCreate(&start), "cudaEventCreate");
    cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  float elapsed_ms() {
    cuda_check(cudaEventSynchronize(stop), "kernel execution");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms;
  }
  cudaEvent_t start, stop;
};

template <typename T>
Timing time_cuda(const Problem<T>& pb, int repeat) {
  DeviceProblem<T> d(pb);
  d.forward(pb.dims);  // warm-up
  d.backward(pb.dims);
  cuda_check(cudaDeviceSynchronize(), "kernel execution");
  Events ev;
  std::vector<double> fwd, bwd;
  for (int i = 0; i < repeat; ++i) {
    cuda_check(cudaEventRecord(ev.start, nullptr), "cudaEventRecord");
    d.forward(pb.dims);
    cuda_check(cudaEventRecord(ev.stop, nullptr), "cudaEventRecord");
    fwd.push_back(ev.elapsed_ms());
    cuda_check(cudaEventRecord(ev.start, nullptr), "cudaEventRecord");
    d.backward(pb.dims);
    cuda_check(cudaEventRecord(ev.stop, nullptr), "cudaEventRecord");
    bwd.push_back(ev.elapsed_ms());
  }
  return {median(fwd), median(bwd)};
}

// Copy bandwidth in GB/s (bytes read + written), best of 5.
double cuda_copy_bandwidth() {
  const size_t bytes = size_t(256) << 20;
  DeviceBuffer<char> a(bytes), b(bytes);
  cuda_check(cudaMemset(a.ptr, 1, bytes), "cudaMemset");
  Events ev;
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    cuda_check(cudaEventRecord(ev.start, nullptr), "cudaEventRecord");
    cuda_check(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, nullptr),
               "cudaMemcpyAsync");
    cuda_check(cudaEventRecord(ev.stop, nullptr), "cudaEventRecord");
    best = std::max(best, 2.0 * static_cast<double>(bytes) / (ev.elapsed_ms() * 1e6));
  }
  return best;
}

double cpu_copy_bandwidth() {
  const size_t bytes = size_t(64) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 0);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
    {
#ifdef _OPENMP
      const size_t threads = static_cast<size_t>(omp_get_num_threads());
      const size_t t = static_cast<size_t>(omp_get_thread_num());
#else
      const size_t threads = 1, t = 0;
#endif
      const size_t chunk = (bytes + threads - 1) / threads;
      const size_t lo = std::min(bytes, t * chunk), hi = std::min(bytes, lo + chunk);
      std::memcpy(b.data() + lo, a.data() + lo, hi - lo);
    }
    auto t1 = std::chrono::steady_clock::now();
    best = std::max(best, 2.0 * static_cast<double>(bytes) /
                              (std::chrono::duration<double>(t1 - t0).count() * 1e9));
  }
  return best;
}

// ------------------------------------------------------------------------------------------------
// Comparison and report

const char* const kTensors[4] = {"out", "grad_value", "grad_sampling_locations",
                                 "grad_attention_weights"};

template <typename T>
const std::vector<T>& tensor(const Result<T>& r, int k) {
  return k == 0 ? r.out : k == 1 ? r.grad_value : k == 2 ? r.grad_loc : r.grad_attn;
}

struct Comparison {
  std::string dtype, case_name, tensor;
  double max_abs, max_rel, threshold;
  size_t skipped;  // elements left out (grad_sampling_locations components on kinks)
  bool ok;
};

// |a - b| with non-finite values: equal infinities and two NaNs agree, anything else is infinite.
double abs_diff(double a, double b) {
  if (std::isfinite(a) && std::isfinite(b)) return std::fabs(a - b);
  if (a == b || (std::isnan(a) && std::isnan(b))) return 0.0;
  return std::numeric_limits<double>::infinity();
}

// max_abs = max |a - b|; max_rel = max |a - b| / |b| over the elements with |b| >= 1e-3 * scale;
// the threshold is atol * scale, scale = max(1, max |b|).
template <typename T>
Comparison compare(const std::vector<T>& cand, const std::vector<T>& ref, int k, double atol,
                   const std::vector<bool>* skip) {
  Comparison c;
  c.tensor = kTensors[k];
  c.max_abs = c.max_rel = 0;
  c.skipped = 0;
  double scale = 1.0;
  for (T b : ref) {
    if (std::isfinite(static_cast<double>(b))) scale = std::max(scale, std::fabs(static_cast<double>(b)));
  }
  if (cand.size() != ref.size()) {
    c.max_abs = c.max_rel = std::numeric_limits<double>::infinity();
  } else {
    for (size_t i = 0; i < ref.size(); ++i) {
      if (skip != nullptr && (*skip)[i]) {
        ++c.skipped;
        continue;
      }
      const double a = static_cast<double>(cand[i]), b = static_cast<double>(ref[i]);
      const double diff = abs_diff(a, b);
      c.max_abs = std::max(c.max_abs, diff);
      if (std::fabs(b) >= 1e-3 * scale) c.max_rel = std::max(c.max_rel, diff / std::fabs(b));
    }
  }
  c.threshold = atol * scale;
  c.ok = c.max_abs <= c.threshold;  // false for NaN too
  return c;
}

// For each component of sampling_locations [N, Lq, M, L, P, 2]: whether it lies on a kink of the
// bilinear map (see the header), where its derivative is one-sided.
template <typename T>
std::vector<bool> kink_mask(const Problem<T>& pb) {
  const int64_t L = pb.dims.levels, P = pb.dims.points;
  const double eps = std::numeric_limits<T>::epsilon();
  std::vector<bool> mask(pb.loc.size(), false);
  for (size_t i = 0; i < pb.loc.size(); ++i) {
    const int64_t l = static_cast<int64_t>(i / 2 / static_cast<size_t>(P)) % L;
    const double size = static_cast<double>(pb.shapes[2 * l + (i % 2 == 0 ? 1 : 0)]);  // W or H
    const double u = static_cast<double>(pb.loc[i]) * size - 0.5;
    if (u > -1.0 && u < size) mask[i] = std::fabs(u - std::round(u)) <= 8.0 * eps * (std::fabs(u) + 1.0);
  }
  return mask;
}

struct Repeatability {
  std::string dtype, case_name;
  bool others_identical;  // out, grad_sampling_locations, grad_attention_weights
  size_t grad_value_differing;
  double grad_value_max_diff;
};

template <typename T>
Repeatability repeatability(const std::string& dtype, const std::string& name, const Result<T>& a,
                            const Result<T>& b) {
  Repeatability r{dtype, name, true, 0, 0.0};
  for (int k : {0, 2, 3}) {
    const auto& x = tensor(a, k);
    const auto& y = tensor(b, k);
    r.others_identical = r.others_identical && x.size() == y.size() &&
                         std::memcmp(x.data(), y.data(), x.size() * sizeof(T)) == 0;
  }
  for (size_t i = 0; i < a.grad_value.size(); ++i) {
    if (std::memcmp(&a.grad_value[i], &b.grad_value[i], sizeof(T)) != 0) {
      ++r.grad_value_differing;
      r.grad_value_max_diff = std::max(
          r.grad_value_max_diff, abs_diff(static_cast<double>(a.grad_value[i]),
                                          static_cast<double>(b.grad_value[i])));
    }
  }
  return r;
}

struct Bytes {
  double fwd_gathered, fwd_compulsory, bwd_gathered, bwd_compulsory;
};

template <typename T>
Bytes count_bytes(const Problem<T>& pb) {
  const msda::Dims& dm = pb.dims;
  double corners = 0;
  const int64_t L = dm.levels, P = dm.points;
  for (size_t s = 0; s < pb.attn.size(); ++s) {
    const int64_t l = static_cast<int64_t>(s / static_cast<size_t>(P)) % L;
    msda::Corners<T> c;
    if (!msda::bilinear_corners(pb.loc[2 * s], pb.loc[2 * s + 1], pb.shapes[2 * l],
                                pb.shapes[2 * l + 1], &c))
      continue;
    for (int k = 0; k < 4; ++k) corners += c.valid[k] ? 1.0 : 0.0;
  }
  const double e = sizeof(T), D = static_cast<double>(dm.channels);
  const double value = static_cast<double>(pb.value.size()) * e;
  const double loc = static_cast<double>(pb.loc.size()) * e;
  const double attn = static_cast<double>(pb.attn.size()) * e;
  const double out = static_cast<double>(pb.grad_out.size()) * e;
  Bytes b;
  b.fwd_gathered = corners * D * e + loc + attn + out;
  b.fwd_compulsory = value + loc + attn + out;
  // backward: value read; grad_value zeroed, then read and written per corner; loc, attn and
  // grad_out read; grad_sampling_locations and grad_attention_weights written.
  b.bwd_gathered = 3.0 * corners * D * e + value + 2.0 * (loc + attn) + out;
  b.bwd_compulsory = 2.0 * value + 2.0 * (loc + attn) + out;
  return b;
}

struct Options {
  bool reduced = false, cpu_only = false, inject = false;
  int repeat = 10;
  uint64_t seed = 2024;
};

struct Report {
  std::vector<Comparison> comparisons;
  std::vector<Repeatability> repeats;
  bool failed = false;
};

std::string dims_text(const msda::Dims& d) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "N%lld S%lld Lq%lld M%lld D%lld L%lld P%lld",
                static_cast<long long>(d.batch), static_cast<long long>(d.len_value),
                static_cast<long long>(d.queries), static_cast<long long>(d.heads),
                static_cast<long long>(d.channels), static_cast<long long>(d.levels),
                static_cast<long long>(d.points));
  return buf;
}

template <typename T>
void check_dtype(const char* dtype, double atol, const std::vector<Case>& cases,
                 const Backend<T>& candidate, const Backend<T>& reference, const Options& opt,
                 double copy_bw, Report* report) {
  for (const Case& c : cases) {
    const Problem<T> pb = make_problem<T>(c, opt.seed);
    const Result<T> ref = reference.run(pb);
    Result<T> cand = candidate.run(pb);
    const Result<T> again = candidate.run(pb);
    report->repeats.push_back(repeatability(dtype, c.name, cand, again));
    if (!report->repeats.back().others_identical) report->failed = true;
    const std::vector<bool> kinks = kink_mask(pb);
    if (opt.inject) {  // on the first component from the middle on that is not on a kink
      double scale = 1.0;
      for (T v : ref.grad_loc) scale = std::max(scale, std::fabs(static_cast<double>(v)));
      size_t i = cand.grad_loc.size() / 2;
      while (i + 1 < cand.grad_loc.size() && kinks[i]) ++i;
      cand.grad_loc[i] += static_cast<T>(1e-3 * scale);
    }
    for (int k = 0; k < 4; ++k) {
      Comparison cmp = compare(tensor(cand, k), tensor(ref, k), k, atol, k == 2 ? &kinks : nullptr);
      cmp.dtype = dtype;
      cmp.case_name = c.name;
      std::printf("%-8s %-22s %-24s %10.3e %10.3e %10.3e  %s", dtype, c.name.c_str(),
                  cmp.tensor.c_str(), cmp.max_abs, cmp.max_rel, cmp.threshold,
                  cmp.ok ? "ok" : "MISMATCH");
      if (cmp.skipped) std::printf(" (%zu on kinks left out)", cmp.skipped);
      std::printf("\n");
      if (!cmp.ok) report->failed = true;
      report->comparisons.push_back(cmp);
    }
    if (c.timed) {
      const Timing t = candidate.time(pb, opt.repeat);
      const Bytes b = count_bytes(pb);
      const double fg = b.fwd_gathered / (t.forward_ms * 1e6), fc = b.fwd_compulsory / (t.forward_ms * 1e6);
      const double bg = b.bwd_gathered / (t.backward_ms * 1e6), bc = b.bwd_compulsory / (t.backward_ms * 1e6);
      std::printf("  time %s %s (%s): forward %.3f ms, %.1f GB/s gathered (%.0f%% of copy), "
                  "%.1f GB/s compulsory; backward %.3f ms, %.1f GB/s gathered (%.0f%% of copy), "
                  "%.1f GB/s compulsory\n",
                  dtype, c.name.c_str(), dims_text(pb.dims).c_str(), t.forward_ms, fg,
                  100.0 * fg / copy_bw, fc, t.backward_ms, bg, 100.0 * bg / copy_bw, bc);
    }
    std::fflush(stdout);
  }
}

void usage(FILE* f) {
  std::fprintf(f,
               "usage: msda_gpu_check [--reduced] [--repeat N] [--seed S] [--cpu-reference-only] "
               "[--inject-mismatch]\n");
}

bool parse(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reduced") {
      opt->reduced = true;
    } else if (a == "--cpu-reference-only") {
      opt->cpu_only = true;
    } else if (a == "--inject-mismatch") {
      opt->inject = true;
    } else if ((a == "--repeat" || a == "--seed") && i + 1 < argc) {
      char* end = nullptr;
      const long long v = std::strtoll(argv[++i], &end, 10);
      if (*end != '\0' || v < 1) {
        std::fprintf(stderr, "msda_gpu_check: %s needs a positive integer, got '%s'\n", a.c_str(),
                     argv[i]);
        return false;
      }
      if (a == "--repeat") opt->repeat = static_cast<int>(v);
      else opt->seed = static_cast<uint64_t>(v);
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "msda_gpu_check: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return false;
    }
  }
  return true;
}

int run_checks(const Options& opt) {
  const std::vector<Case> cases = make_cases(opt.reduced);
  Backend<float> cand32, ref32;
  Backend<double> cand64, ref64;
  double copy_bw = 0;
  if (opt.cpu_only) {
    cand32 = {"CPU kernels", run_cpu<float>, time_cpu<float>};
    cand64 = {"CPU kernels", run_cpu<double>, time_cpu<double>};
    ref32 = {"naive float64 reference", run_naive<float>, nullptr};
    ref64 = {"naive float64 reference", run_naive<double>, nullptr};
    copy_bw = cpu_copy_bandwidth();
    std::printf("msda_gpu_check --cpu-reference-only: candidate CPU kernels (%s), reference the "
                "naive float64 transcription; copy bandwidth %.1f GB/s (memcpy, all threads)\n",
                msda::cpu_variant(), copy_bw);
  } else {
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    int driver = 0, runtime = 0;
    cuda_check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
    cuda_check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
    cand32 = {"CUDA kernels", run_cuda<float>, time_cuda<float>};
    cand64 = {"CUDA kernels", run_cuda<double>, time_cuda<double>};
    ref32 = {"CPU kernels", run_cpu<float>, nullptr};
    ref64 = {"CPU kernels", run_cpu<double>, nullptr};
    copy_bw = cuda_copy_bandwidth();
    std::printf("msda_gpu_check: GPU 0 %s (sm_%d%d, %d SMs, %.1f GiB), driver %d.%d, runtime "
                "%d.%d, kernels built for sm %s; candidate CUDA kernels, reference CPU kernels "
                "(%s); copy bandwidth %.1f GB/s (device to device)\n",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10,
                MSDA_STR(MSDA_BUILT_ARCHS), msda::cpu_variant(), copy_bw);
  }
  std::printf("%-8s %-22s %-24s %10s %10s %10s  %s\n", "dtype", "case", "tensor", "max_abs",
              "max_rel", "threshold", "result");
  Report report;
  check_dtype<float>("float32", 5e-5, cases, cand32, ref32, opt, copy_bw, &report);
  check_dtype<double>("float64", 1e-10, cases, cand64, ref64, opt, copy_bw, &report);

  for (const char* dtype : {"float32", "float64"}) {
    size_t cases_differing = 0, worst_count = 0;
    double worst = 0;
    std::string broken;
    for (const Repeatability& r : report.repeats) {
      if (r.dtype != dtype) continue;
      if (!r.others_identical) broken += " " + r.case_name;
      if (r.grad_value_differing) {
        ++cases_differing;
        worst = std::max(worst, r.grad_value_max_diff);
        worst_count = std::max(worst_count, r.grad_value_differing);
      }
    }
    if (cases_differing == 0) {
      std::printf("repeat %s: backward bitwise deterministic in every case (2 runs)\n", dtype);
    } else {
      std::printf("repeat %s: backward NOT bitwise deterministic: grad_value differs between 2 "
                  "runs in %zu of %zu cases (up to %zu elements, max |diff| %.3e: atomicAdd "
                  "order); out, grad_sampling_locations, grad_attention_weights %s\n",
                  dtype, cases_differing, cases.size(), worst_count, worst,
                  broken.empty() ? "identical" : "DIFFER (failure, below)");
    }
    if (!broken.empty()) {
      std::printf("repeat %s: FAILURE: out / grad_sampling_locations / grad_attention_weights "
                  "differ between two runs in:%s\n", dtype, broken.c_str());
    }
  }
  size_t bad = 0;
  std::string names;
  for (const Comparison& c : report.comparisons) {
    if (c.ok) continue;
    ++bad;
    if (bad <= 8) names += " " + c.dtype + "/" + c.case_name + "/" + c.tensor;
  }
  if (!report.failed) {
    std::printf("RESULT: PASS: %zu comparisons within their thresholds (%s vs %s)\n",
                report.comparisons.size(), cand32.name.c_str(), ref32.name.c_str());
    return 0;
  }
  std::printf("RESULT: FAIL: %zu of %zu comparisons exceed their thresholds%s%s\n", bad,
              report.comparisons.size(), names.c_str(), bad > 8 ? " ..." : "");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!parse(argc, argv, &opt)) return 2;
  if (!opt.cpu_only) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      int driver = 0;
      if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
      char why[256];
      if (driver == 0) {
        std::snprintf(why, sizeof(why), "no CUDA driver found (cudaGetDeviceCount: %s)",
                      cudaGetErrorString(err));
      } else if (driver < CUDART_VERSION) {
        std::snprintf(why, sizeof(why),
                      "the driver supports CUDA %d.%d, this program was built with CUDA %d.%d "
                      "(build it with this machine's toolkit: make gpu-check NVCC=.../bin/nvcc)",
                      driver / 1000, (driver % 1000) / 10, CUDART_VERSION / 1000,
                      (CUDART_VERSION % 1000) / 10);
      } else {
        std::snprintf(why, sizeof(why), "cudaGetDeviceCount: %s",
                      err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
      }
      std::fprintf(stderr,
                   "msda_gpu_check: no usable CUDA GPU: %s; nothing was checked "
                   "(--cpu-reference-only checks the CPU kernels without a GPU)\n", why);
      return 2;
    }
  }
  try {
    return run_checks(opt);
  } catch (const CudaError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "msda_gpu_check: CUDA error in %s%s\n", e.what(),
                 e.code == cudaErrorNoKernelImageForDevice
                     ? " (the kernels were built for sm " MSDA_STR(MSDA_BUILT_ARCHS)
                       "; rebuild with CUDA_ARCHS naming this GPU's architecture)"
                     : "");
    return 1;
  }
}
