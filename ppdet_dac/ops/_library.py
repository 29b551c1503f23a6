"""Finding, registering and calling the compiled ``ms_deform_attn`` op library.

The library is built by ``setup.py`` (``pip install --no-build-isolation -e .``) into this package
directory as ``_ms_deform_attn_op*.so``. Registering it with Paddle
(``load_op_meta_info_and_register_op``) makes the op runnable in dygraph, under ``to_static`` and in
a Paddle Inference predictor of the same process.
"""

import ctypes
import glob
import os

import paddle  # noqa: F401  (libpaddle is loaded before the op library that links it)
from ppdet.utils.logger import setup_logger

logger = setup_logger(__name__)

OP_NAME = "ms_deform_attn"
LIB_ENV_VAR = "PPDET_DAC_MSDA_LIB"  # optional explicit path to the op library
_HERE = os.path.dirname(os.path.abspath(__file__))
_LIB_GLOB = "_ms_deform_attn_op*.so"

_state = {"tried": False, "path": None, "error": None}


def library_path():
    """Path of the op library on disk (may not be registered yet), or None when it is not built."""
    explicit = os.environ.get(LIB_ENV_VAR)
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    found = sorted(glob.glob(os.path.join(_HERE, _LIB_GLOB)))
    return found[0] if found else None


def load():
    """Register the op library with Paddle once per process; its path, or None when unavailable."""
    if _state["tried"]:
        return _state["path"]
    _state["tried"] = True
    path = library_path()
    if path is None:
        where = os.environ.get(LIB_ENV_VAR) or os.path.join(_HERE, _LIB_GLOB)
        _state["error"] = (
            f"no op library at {where}; build it with `pip install --no-build-isolation -e .`"
        )
        return None
    try:
        from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

        registered = load_op_meta_info_and_register_op(path)
    except (
        OSError,
        RuntimeError,
        ValueError,
    ) as exc:  # a stale or foreign .so must not kill the import
        _state["error"] = f"could not register {path}: {exc}"
        logger.warning(f"ms_deform_attn op library {path} failed to load: {exc}")
        return None
    if OP_NAME not in registered and not _op_registered():
        _state["error"] = f"{path} does not define the op {OP_NAME!r} (it defines {registered})"
        return None
    _state["path"] = path
    return path


def _op_registered():
    from paddle.base.framework import OpProtoHolder

    return (
        OpProtoHolder.instance().has_op_proto(OP_NAME)
        if hasattr(OpProtoHolder.instance(), "has_op_proto")
        else False
    )


def load_error():
    """Why the op library is not available (a sentence), or None."""
    return _state["error"]


def _build_facts():
    """(built_with_cuda, cpu_variant) read from the registered library, or (False, None)."""
    if "facts" not in _state:
        path = load()
        if path is None:
            _state["facts"] = (False, None)
        else:
            lib = ctypes.CDLL(path)
            lib.ppdet_dac_msda_cpu_variant.restype = ctypes.c_char_p
            _state["facts"] = (
                bool(lib.ppdet_dac_msda_built_with_cuda()),
                lib.ppdet_dac_msda_cpu_variant().decode(),
            )
    return _state["facts"]


def built_with_cuda():
    """Whether the registered library has CUDA kernels (built by CUDAExtension)."""
    return _build_facts()[0]


def cpu_variant():
    """The CPU kernel variant the library runs on this machine ("avx2+fma" / "generic"), or None."""
    return _build_facts()[1]


def run_op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Call the registered op (dygraph or static graph); see ``ms_deform_attn`` for shapes."""
    from paddle import _C_ops

    outs = _C_ops._run_custom_op(
        OP_NAME, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return outs[0] if isinstance(outs, (list, tuple)) else outs
