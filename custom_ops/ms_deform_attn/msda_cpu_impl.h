// CPU kernel bodies of multi-scale deformable attention (Paddle-free). Included by
// msda_cpu_generic.cc and msda_cpu_avx2.cc, each defining MSDA_CPU_NS to a different namespace and
// compiling the same code for a different instruction set; msda_cpu.cc picks one at run time.
//
// Parallelism (OpenMP, static schedule):
//   forward:  one work item per (n, q, m); each writes its own output row of D values.
//   backward: one work item per (n, m); it owns grad_value[n, :, m, :] exclusively, and writes the
//             rows of grad_sampling_locations / grad_attention_weights of its (n, q, m), so there
//             are no races, and each grad_value element is summed in a fixed order (q, l, p, corner)
//             whatever the number of threads: the result is bitwise reproducible.
#ifndef MSDA_CPU_NS
#error "define MSDA_CPU_NS before including msda_cpu_impl.h"
#endif

#include <cstdint>
#include <cstring>

#include "msda_common.h"

namespace msda {
namespace MSDA_CPU_NS {

// kD > 0: channel count known at compile time (fully unrolled, vectorised); kD == 0: runtime D.
template <typename T, int kD>
void forward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,
                    const T* attn, T* out, const Dims& dm) {
  const int64_t D = kD > 0 ? kD : dm.channels;
  const int64_t M = dm.heads, L = dm.levels, P = dm.points, Q = dm.queries, S = dm.len_value;
  const int64_t row = M * D;  // elements between consecutive positions of value
  const int64_t items = dm.batch * Q * M;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t m = item % M;
    const int64_t n = item / (Q * M);
    const T* v_nm = value + n * S * row + m * D;
    const T* lp = loc + item * L * P * 2;
    const T* ap = attn + item * L * P;
    T* o = out + item * D;
    T local[kD > 0 ? kD : 1];
    T* acc = kD > 0 ? local : o;
    for (int64_t d = 0; d < D; ++d) acc[d] = static_cast<T>(0);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const T* v_l = v_nm + starts[l] * row;
      for (int64_t p = 0; p < P; ++p, lp += 2, ++ap) {
        Corners<T> c;
        if (!bilinear_corners(lp[0], lp[1], h, w, &c)) continue;
        const T a = *ap;
        for (int k = 0; k < 4; ++k) {
          if (!c.valid[k]) continue;
          const T* r = v_l + c.offset[k] * row;
          const T cw = a * c.weight[k];
          for (int64_t d = 0; d < D; ++d) acc[d] += cw * r[d];
        }
      }
    }
    if (kD > 0) {
      for (int64_t d = 0; d < D; ++d) o[d] = acc[d];
    }
  }
}

// grad_value must be zero on entry; grad_loc and grad_attn are fully overwritten.
template <typename T, int kD>
void backward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,
                     const T* attn, const T* grad_out, T* grad_value, T* grad_loc, T* grad_attn,
                     const Dims& dm) {
  const int64_t D = kD > 0 ? kD : dm.channels;
  const int64_t M = dm.heads, L = dm.levels, P = dm.points, Q = dm.queries, S = dm.len_value;
  const int64_t row = M * D;
  const int64_t pairs = dm.batch * M;
#pragma omp parallel for schedule(static)
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t n = pair / M, m = pair % M;
    const T* v_nm = value + n * S * row + m * D;
    T* gv_nm = grad_value + n * S * row + m * D;
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t item = (n * Q + q) * M + m;
      const T* go = grad_out + item * D;
      const T* lp = loc + item * L * P * 2;
      const T* ap = attn + item * L * P;
      T* glp = grad_loc + item * L * P * 2;
      T* gap = grad_attn + item * L * P;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
        const int64_t offset_l = starts[l] * row;
        for (int64_t p = 0; p < P; ++p, lp += 2, glp += 2, ++ap, ++gap) {
          Corners<T> c;
          if (!bilinear_corners(lp[0], lp[1], h, w, &c)) {
            glp[0] = glp[1] = *gap = static_cast<T>(0);
            continue;
          }
          const T a = *ap;
          T g_attn = 0, g_x = 0, g_y = 0;
          for (int k = 0; k < 4; ++k) {
            if (!c.valid[k]) continue;
            const int64_t off = offset_l + c.offset[k] * row;
            const T* r = v_nm + off;
            T* gr = gv_nm + off;
            const T cw = a * c.weight[k];
            T dot = 0;
            for (int64_t d = 0; d < D; ++d) {
              dot += go[d] * r[d];
              gr[d] += cw * go[d];
            }
            g_attn += c.weight[k] * dot;
            g_x += c.dw_dx[k] * dot;
            g_y += c.dw_dy[k] * dot;
          }
          *gap = g_attn;
          glp[0] = a * g_x * static_cast<T>(w);
          glp[1] = a * g_y * static_cast<T>(h);
        }
      }
    }
  }
}

template <typename T>
void forward(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,
             const T* attn, T* out, const Dims& dm) {
  switch (dm.channels) {
    case 16: forward_kernel<T, 16>(value, shapes, starts, loc, attn, out, dm); break;
    case 32: forward_kernel<T, 32>(value, shapes, starts, loc, attn, out, dm); break;
    case 64: forward_kernel<T, 64>(value, shapes, starts, loc, attn, out, dm); break;
    default: forward_kernel<T, 0>(value, shapes, starts, loc, attn, out, dm); break;
  }
}

template <typename T>
void backward(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,
              const T* attn, const T* grad_out, T* grad_value, T* grad_loc, T* grad_attn,
              const Dims& dm) {
  switch (dm.channels) {
    case 16: backward_kernel<T, 16>(value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, dm); break;
    case 32: backward_kernel<T, 32>(value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, dm); break;
    case 64: backward_kernel<T, 64>(value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, dm); break;
    default: backward_kernel<T, 0>(value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, dm); break;
  }
}

}  // namespace MSDA_CPU_NS
}  // namespace msda
