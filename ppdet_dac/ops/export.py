"""Export helper: register the op library in a process that runs an exported model."""

from . import _library


def register_op_library():
    """Register the compiled ``ms_deform_attn`` op with Paddle in this process.

    Call it (or import ``ppdet_dac.ops`` and call ``op_available()``) before creating a Paddle
    Inference predictor for a model exported with the op. Returns the library path; raises
    ``RuntimeError`` naming the reason when the library is not built or fails to load.
    """
    path = _library.load()
    if path is None:
        raise RuntimeError(f"ms_deform_attn op library is not available: {_library.load_error()}")
    return path
