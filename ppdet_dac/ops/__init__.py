"""Multi-scale deformable attention: custom C++/CUDA op with a pure-Paddle reference.

Public API:

* ``ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)``
  -> [N, Lq, M·D]: dispatches per call to the custom op or to the reference (see ``ms_deform_attn.py``).
* ``ms_deform_attn_reference(...)``: the same computation with ``F.grid_sample`` (export-friendly).
* ``op_available()``: whether the compiled op is present and registered.
* ``force_reference(enabled)``: force the reference (e.g. for ONNX export); env var ``PPDET_DAC_MSDA=reference``
  does the same.
* ``register_op_library()``: register the op library in this process (needed before running a Paddle
  Inference predictor on a model exported with the op); returns the library path.

``python -m ppdet_dac.ops.selfcheck`` compares the op on the GPU with the op on the CPU (CUDA
builds of Paddle; on CPU it says that CUDA is absent), see ``selfcheck.py``.
"""

from .reference import ms_deform_attn_reference
from .ms_deform_attn import ENV_VAR, force_reference, ms_deform_attn, op_available, selected_backend
from .export import register_op_library

__all__ = [
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "op_available",
    "force_reference",
    "selected_backend",
    "register_op_library",
    "ENV_VAR",
]
