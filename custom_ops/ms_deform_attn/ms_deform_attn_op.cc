// Paddle glue of the multi-scale deformable attention op `ms_deform_attn`: input checks, shape and
// dtype inference, and dispatch to the CPU kernels (msda_cpu.h) or, in CUDA builds only, to the
// CUDA launchers (msda_cuda.h). The kernels themselves are Paddle-free.
//
//   ms_deform_attn(Value [N, S, M, D], SpatialShapes int64 [L, 2], LevelStartIndex int64 [L],
//                  SamplingLocations [N, Lq, M, L, P, 2], AttentionWeights [N, Lq, M, L, P])
//     -> Out [N, Lq, M * D]        (float32 or float64; all float inputs share one dtype)
//   grad: Value@GRAD, SamplingLocations@GRAD, AttentionWeights@GRAD.
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "paddle/extension.h"

#include "msda_common.h"
#include "msda_cpu.h"
#ifdef PADDLE_WITH_CUDA
#include "msda_cuda.h"
#endif

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// A static-graph dimension may be unknown (-1): only compare known sizes.
bool same_dim(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

void check_rank(const std::vector<int64_t>& shape, size_t rank, const char* name,
                const char* layout) {
  PD_CHECK(shape.size() == rank, "ms_deform_attn: ", name, " must have rank ", rank, " ", layout,
           ", got shape ", shape_str(shape));
}

// Checks ranks and the sizes shared between inputs. Works on static shapes (unknown = -1).
void check_shapes(const std::vector<int64_t>& value, const std::vector<int64_t>& shapes,
                  const std::vector<int64_t>& starts, const std::vector<int64_t>& loc,
                  const std::vector<int64_t>& attn) {
  check_rank(value, 4, "value", "[N, S, M, D]");
  check_rank(shapes, 2, "spatial_shapes", "[L, 2]");
  check_rank(starts, 1, "level_start_index", "[L]");
  check_rank(loc, 6, "sampling_locations", "[N, Lq, M, L, P, 2]");
  check_rank(attn, 5, "attention_weights", "[N, Lq, M, L, P]");
  PD_CHECK(same_dim(shapes[1], 2), "ms_deform_attn: spatial_shapes must be [L, 2] (H, W), got ",
           shape_str(shapes));
  PD_CHECK(same_dim(loc[5], 2), "ms_deform_attn: sampling_locations must end in 2 (x, y), got ",
           shape_str(loc));
  PD_CHECK(same_dim(loc[0], value[0]), "ms_deform_attn: batch of sampling_locations ",
           shape_str(loc), " does not match value ", shape_str(value));
  PD_CHECK(same_dim(loc[2], value[2]), "ms_deform_attn: heads of sampling_locations ",
           shape_str(loc), " do not match value ", shape_str(value), " (dim 2)");
  PD_CHECK(same_dim(loc[3], shapes[0]), "ms_deform_attn: levels of sampling_locations ",
           shape_str(loc), " (dim 3) do not match spatial_shapes ", shape_str(shapes));
  PD_CHECK(same_dim(starts[0], shapes[0]), "ms_deform_attn: level_start_index ",
           shape_str(starts), " does not match spatial_shapes ", shape_str(shapes));
  for (int i = 0; i < 5; ++i) {
    PD_CHECK(same_dim(attn[i], loc[i]), "ms_deform_attn: attention_weights ", shape_str(attn),
             " does not match sampling_locations ", shape_str(loc), " in dim ", i);
  }
}

void check_float_dtypes(paddle::DataType value, paddle::DataType loc, paddle::DataType attn) {
  PD_CHECK(value == paddle::DataType::FLOAT32 || value == paddle::DataType::FLOAT64,
           "ms_deform_attn: value must be float32 or float64 (cast float16/bfloat16 to float32 "
           "first), got ", value);
  PD_CHECK(loc == value, "ms_deform_attn: sampling_locations dtype ", loc,
           " differs from value dtype ", value);
  PD_CHECK(attn == value, "ms_deform_attn: attention_weights dtype ", attn,
           " differs from value dtype ", value);
}

void check_index_dtypes(paddle::DataType shapes, paddle::DataType starts) {
  PD_CHECK(shapes == paddle::DataType::INT64, "ms_deform_attn: spatial_shapes must be int64, got ",
           shapes);
  PD_CHECK(starts == paddle::DataType::INT64,
           "ms_deform_attn: level_start_index must be int64, got ", starts);
}

paddle::Tensor contiguous(const paddle::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

// Full run-time check of the inputs (shapes, dtypes, places, the level table against S).
// Returns the sizes; `shapes_host` / `starts_host` receive CPU copies of the level table.
msda::Dims check_inputs(const paddle::Tensor& value, const paddle::Tensor& shapes,
                        const paddle::Tensor& starts, const paddle::Tensor& loc,
                        const paddle::Tensor& attn, paddle::Tensor* shapes_host,
                        paddle::Tensor* starts_host) {
  PD_CHECK(value.initialized() && shapes.initialized() && starts.initialized() &&
               loc.initialized() && attn.initialized(),
           "ms_deform_attn: an input tensor is not initialized");
  check_shapes(value.shape(), shapes.shape(), starts.shape(), loc.shape(), attn.shape());
  check_float_dtypes(value.dtype(), loc.dtype(), attn.dtype());
  check_index_dtypes(shapes.dtype(), starts.dtype());
  PD_CHECK(loc.place() == value.place() && attn.place() == value.place(),
           "ms_deform_attn: value, sampling_locations and attention_weights must be on one device");
  PD_CHECK(value.is_cpu() || value.is_gpu(), "ms_deform_attn: value must be on CPU or GPU, got ",
           value.place());

  msda::Dims dm;
  dm.batch = value.shape()[0];
  dm.len_value = value.shape()[1];
  dm.heads = value.shape()[2];
  dm.channels = value.shape()[3];
  dm.queries = loc.shape()[1];
  dm.levels = loc.shape()[3];
  dm.points = loc.shape()[4];
  PD_CHECK(dm.levels >= 1, "ms_deform_attn: need at least one level, spatial_shapes is ",
           shape_str(shapes.shape()));

  *shapes_host = shapes.is_cpu() ? contiguous(shapes) : shapes.copy_to(paddle::CPUPlace(), true);
  *starts_host = starts.is_cpu() ? contiguous(starts) : starts.copy_to(paddle::CPUPlace(), true);
  const int64_t* hw = shapes_host->data<int64_t>();
  const int64_t* st = starts_host->data<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < dm.levels; ++l) {
    PD_CHECK(hw[2 * l] >= 1 && hw[2 * l + 1] >= 1, "ms_deform_attn: spatial_shapes[", l,
             "] = (", hw[2 * l], ", ", hw[2 * l + 1], ") must be positive (H, W)");
    PD_CHECK(st[l] == total, "ms_deform_attn: level_start_index[", l, "] = ", st[l],
             " but the levels before it hold ", total, " positions (sum of H*W)");
    total += hw[2 * l] * hw[2 * l + 1];
  }
  PD_CHECK(total == dm.len_value, "ms_deform_attn: sum of H*W over spatial_shapes is ", total,
           " but value has ", dm.len_value, " positions (dim 1 of ", shape_str(value.shape()),
           ")");
  return dm;
}

// The level table on the device of `value` (a no-op for CPU).
paddle::Tensor on_device(const paddle::Tensor& host, const paddle::Tensor& original,
                         const paddle::Tensor& value) {
  if (value.is_cpu()) return host;
  if (original.place() == value.place()) return contiguous(original);
  return host.copy_to(value.place(), false);
}

}  // namespace

std::vector<paddle::Tensor> MsDeformAttnForward(const paddle::Tensor& value_in,
                                                const paddle::Tensor& shapes_in,
                                                const paddle::Tensor& starts_in,
                                                const paddle::Tensor& loc_in,
                                                const paddle::Tensor& attn_in) {
  paddle::Tensor shapes_host, starts_host;
  const msda::Dims dm =
      check_inputs(value_in, shapes_in, starts_in, loc_in, attn_in, &shapes_host, &starts_host);
  const paddle::Tensor value = contiguous(value_in);
  const paddle::Tensor loc = contiguous(loc_in);
  const paddle::Tensor attn = contiguous(attn_in);
  paddle::Tensor out = paddle::empty({dm.batch, dm.queries, dm.heads * dm.channels},
                                     value.dtype(), value.place());
  if (value.is_cpu()) {
    PD_DISPATCH_FLOATING_TYPES(value.type(), "ms_deform_attn_forward_cpu", ([&] {
      msda::forward_cpu<data_t>(value.data<data_t>(), shapes_host.data<int64_t>(),
                                starts_host.data<int64_t>(), loc.data<data_t>(),
                                attn.data<data_t>(), out.data<data_t>(), dm);
    }));
    return {out};
  }
#ifdef PADDLE_WITH_CUDA
  const paddle::Tensor shapes = on_device(shapes_host, shapes_in, value);
  const paddle::Tensor starts = on_device(starts_host, starts_in, value);
  PD_DISPATCH_FLOATING_TYPES(value.type(), "ms_deform_attn_forward_cuda", ([&] {
    const cudaError_t err = msda::forward_cuda<data_t>(
        value.data<data_t>(), shapes.data<int64_t>(), starts.data<int64_t>(), loc.data<data_t>(),
        attn.data<data_t>(), out.data<data_t>(), dm, value.stream());
    PD_CHECK(err == cudaSuccess, "ms_deform_attn: CUDA forward launch failed: ",
             cudaGetErrorString(err));
  }));
  return {out};
#else
  PD_THROW("ms_deform_attn: value is on ", value.place(),
           " but this op library was built without CUDA (CPU only)");
#endif
}

std::vector<paddle::Tensor> MsDeformAttnBackward(const paddle::Tensor& value_in,
                                                 const paddle::Tensor& shapes_in,
                                                 const paddle::Tensor& starts_in,
                                                 const paddle::Tensor& loc_in,
                                                 const paddle::Tensor& attn_in,
                                                 const paddle::Tensor& grad_out_in) {
  paddle::Tensor shapes_host, starts_host;
  const msda::Dims dm =
      check_inputs(value_in, shapes_in, starts_in, loc_in, attn_in, &shapes_host, &starts_host);
  const std::vector<int64_t> out_shape = {dm.batch, dm.queries, dm.heads * dm.channels};
  PD_CHECK(grad_out_in.shape() == out_shape, "ms_deform_attn: output gradient has shape ",
           shape_str(grad_out_in.shape()), ", expected ", shape_str(out_shape));
  PD_CHECK(grad_out_in.dtype() == value_in.dtype() && grad_out_in.place() == value_in.place(),
           "ms_deform_attn: output gradient dtype/device differs from value");
  const paddle::Tensor value = contiguous(value_in);
  const paddle::Tensor loc = contiguous(loc_in);
  const paddle::Tensor attn = contiguous(attn_in);
  const paddle::Tensor grad_out = contiguous(grad_out_in);
  paddle::Tensor grad_value = paddle::zeros(value.shape(), value.dtype(), value.place());
  paddle::Tensor grad_loc = paddle::empty(loc.shape(), loc.dtype(), loc.place());
  paddle::Tensor grad_attn = paddle::empty(attn.shape(), attn.dtype(), attn.place());
  if (value.is_cpu()) {
    PD_DISPATCH_FLOATING_TYPES(value.type(), "ms_deform_attn_backward_cpu", ([&] {
      msda::backward_cpu<data_t>(value.data<data_t>(), shapes_host.data<int64_t>(),
                                 starts_host.data<int64_t>(), loc.data<data_t>(),
                                 attn.data<data_t>(), grad_out.data<data_t>(),
                                 grad_value.data<data_t>(), grad_loc.data<data_t>(),
                                 grad_attn.data<data_t>(), dm);
    }));
    return {grad_value, grad_loc, grad_attn};
  }
#ifdef PADDLE_WITH_CUDA
  const paddle::Tensor shapes = on_device(shapes_host, shapes_in, value);
  const paddle::Tensor starts = on_device(starts_host, starts_in, value);
  PD_DISPATCH_FLOATING_TYPES(value.type(), "ms_deform_attn_backward_cuda", ([&] {
    const cudaError_t err = msda::backward_cuda<data_t>(
        value.data<data_t>(), shapes.data<int64_t>(), starts.data<int64_t>(), loc.data<data_t>(),
        attn.data<data_t>(), grad_out.data<data_t>(), grad_value.data<data_t>(),
        grad_loc.data<data_t>(), grad_attn.data<data_t>(), dm, value.stream());
    PD_CHECK(err == cudaSuccess, "ms_deform_attn: CUDA backward launch failed: ",
             cudaGetErrorString(err));
  }));
  return {grad_value, grad_loc, grad_attn};
#else
  PD_THROW("ms_deform_attn: value is on ", value.place(),
           " but this op library was built without CUDA (CPU only)");
#endif
}

std::vector<std::vector<int64_t>> MsDeformAttnInferShape(const std::vector<int64_t>& value,
                                                         const std::vector<int64_t>& shapes,
                                                         const std::vector<int64_t>& starts,
                                                         const std::vector<int64_t>& loc,
                                                         const std::vector<int64_t>& attn) {
  check_shapes(value, shapes, starts, loc, attn);
  const int64_t channels = (value[2] < 0 || value[3] < 0) ? -1 : value[2] * value[3];
  return {{value[0] >= 0 ? value[0] : loc[0], loc[1], channels}};
}

std::vector<paddle::DataType> MsDeformAttnInferDtype(const paddle::DataType& value,
                                                     const paddle::DataType& shapes,
                                                     const paddle::DataType& starts,
                                                     const paddle::DataType& loc,
                                                     const paddle::DataType& attn) {
  check_float_dtypes(value, loc, attn);
  check_index_dtypes(shapes, starts);
  return {value};
}

std::vector<std::vector<int64_t>> MsDeformAttnGradInferShape(
    const std::vector<int64_t>& value, const std::vector<int64_t>& /*shapes*/,
    const std::vector<int64_t>& /*starts*/, const std::vector<int64_t>& loc,
    const std::vector<int64_t>& attn, const std::vector<int64_t>& /*grad_out*/) {
  return {value, loc, attn};
}

std::vector<paddle::DataType> MsDeformAttnGradInferDtype(
    const paddle::DataType& value, const paddle::DataType& /*shapes*/,
    const paddle::DataType& /*starts*/, const paddle::DataType& loc, const paddle::DataType& attn,
    const paddle::DataType& /*grad_out*/) {
  return {value, loc, attn};
}

PD_BUILD_OP(ms_deform_attn)
    .Inputs({"Value", "SpatialShapes", "LevelStartIndex", "SamplingLocations",
             "AttentionWeights"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(MsDeformAttnForward))
    .SetInferShapeFn(PD_INFER_SHAPE(MsDeformAttnInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(MsDeformAttnInferDtype));

PD_BUILD_GRAD_OP(ms_deform_attn)
    .Inputs({"Value", "SpatialShapes", "LevelStartIndex", "SamplingLocations", "AttentionWeights",
             paddle::Grad("Out")})
    .Outputs({paddle::Grad("Value"), paddle::Grad("SamplingLocations"),
              paddle::Grad("AttentionWeights")})
    .SetKernelFn(PD_KERNEL(MsDeformAttnBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(MsDeformAttnGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(MsDeformAttnGradInferDtype));

// Build facts for Python (read with ctypes by ppdet_dac/ops/_library.py).
extern "C" int ppdet_dac_msda_built_with_cuda() {
#ifdef PADDLE_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

extern "C" const char* ppdet_dac_msda_cpu_variant() { return msda::cpu_variant(); }
