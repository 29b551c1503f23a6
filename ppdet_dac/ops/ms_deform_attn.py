"""Per-call dispatch of multi-scale deformable attention: the custom op, or the pure-Paddle reference.

Which path a call takes:

* the reference when it is forced, by ``force_reference(True)`` or the environment variable
  ``PPDET_DAC_MSDA=reference`` (use this for ONNX export: the ONNX converters do not know the op);
* the reference when the op library is not built, or when the tensors live on a GPU and the
  library was built without CUDA;
* the custom op otherwise. float16/bfloat16 inputs are cast to float32 around the op and the output
  is cast back, as AMP users expect; float32/float64 run as they are.

The first call that takes each path logs which one and why, once per process.
"""

import os

import paddle

from ppdet.utils.logger import setup_logger

from . import _library
from .reference import ms_deform_attn_reference

logger = setup_logger(__name__)

__all__ = ["ms_deform_attn", "op_available", "force_reference", "selected_backend", "ENV_VAR"]

ENV_VAR = "PPDET_DAC_MSDA"
_ENV_CHOICES = ("auto", "op", "reference")
_LOW_PRECISION = (paddle.float16, paddle.bfloat16)

_forced_reference = (
    None  # None: follow the environment variable; True/False: set by force_reference
)
_logged = set()


def op_available():
    """True when the compiled op library is present and registered with Paddle in this process."""
    return _library.load() is not None


def force_reference(enabled=True):
    """Force (``True``) or stop forcing (``False``) the reference path; ``None`` defers to the env var.

    Returns the previous setting, so callers can restore it.
    """
    global _forced_reference
    if enabled not in (True, False, None):
        raise ValueError(f"force_reference expects True, False or None, got {enabled!r}")
    previous, _forced_reference = _forced_reference, enabled
    return previous


def _env_choice():
    choice = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in _ENV_CHOICES:
        raise ValueError(
            f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not one of {_ENV_CHOICES}"
        )
    return choice


def _on_gpu(tensor):
    if not paddle.in_dynamic_mode():
        return paddle.is_compiled_with_cuda() and paddle.get_device().startswith("gpu")
    return tensor.place.is_gpu_place()


# Plain-Python dispatch helpers: dy2static must call them as they are (its rewritten copies lose
# this module's globals), so ``ms_deform_attn`` can be traced by ``paddle.jit.to_static`` directly.
@paddle.jit.not_to_static
def selected_backend(value):
    """("op" | "reference", reason) for a call with this ``value`` tensor ([N, S, M, D])."""
    if _forced_reference is True:
        return "reference", "forced by ppdet_dac.ops.force_reference(True)"
    choice = "auto" if _forced_reference is False else _env_choice()
    if choice == "reference":
        return "reference", f"forced by {ENV_VAR}=reference"
    lib = _library.load()
    if lib is None:
        return "reference", f"custom op not available ({_library.load_error()})"
    if _on_gpu(value) and not _library.built_with_cuda():
        return "reference", "tensors are on a GPU but the op library was built without CUDA"
    return "op", f"custom op library {lib}"


@paddle.jit.not_to_static
def _log_once(backend, reason):
    if (backend, reason) not in _logged:
        _logged.add((backend, reason))
        logger.info(f"ms_deform_attn uses the {backend} path: {reason}")


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Multi-scale deformable attention, dispatched per call (signature and sampling convention:
    docs/algorithm.md#7-multi-scale-deformable-attention).

    Args:
        value: [N, S, M, D] float tensor, S = Σ_l H_l·W_l.
        spatial_shapes: int64 [L, 2], (H_l, W_l) per level.
        level_start_index: int64 [L], start of each level in S.
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) normalised to [0, 1].
        attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M·D] tensor of ``value``'s dtype.
    """
    backend, reason = selected_backend(value)
    _log_once(backend, reason)
    if backend == "reference":
        return ms_deform_attn_reference(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    out_dtype = value.dtype
    if out_dtype in _LOW_PRECISION:
        value = value.astype(paddle.float32)
    if sampling_locations.dtype in _LOW_PRECISION:
        sampling_locations = sampling_locations.astype(value.dtype)
    if attention_weights.dtype in _LOW_PRECISION:
        attention_weights = attention_weights.astype(value.dtype)
    out = _library.run_op(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    if out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out
