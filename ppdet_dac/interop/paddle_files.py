"""Paddle weight files (``.pdparams`` / ``.pdopt`` / ``.pdstate``) read without running code.

The files are Python pickles, which ``paddle.load`` unpickles without limits (a crafted file runs
code). ``read_file`` unpickles only what ``paddle.save`` writes for a state dict (NumPy arrays,
numbers, strings, lists, dicts, tuples, Paddle's random generator states) and refuses any other
object, naming it; resume (``-r``), ``weights=`` of the tools, export, the dumps and
``pretrain_weights`` (local or downloaded) read through it. Mapping a file onto a model (every
tensor must fit) is ``ppdet_dac/interop/weights.py``. ``load_weights_file`` / ``weights_only`` leave out the token a training checkpoint carries in
each of its files (``TOKEN_KEY``, see ``ppdet_dac/engine/checkpoint.py``).
"""

import os
import pickle

import numpy as np
import paddle

__all__ = ["TOKEN_KEY", "read_file", "weights_only", "load_weights_file"]

TOKEN_KEY = "ppdet_dac_token"
# The objects paddle.save writes for a state dict; read_file refuses every other one.
_SAFE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "tuple"),
        ("collections", "OrderedDict"),
        ("paddle.base.libpaddle", "GeneratorState"),
    }
)
_NAME_TABLE = "StructuredToParameterName@@"


class _RefusedObject(pickle.UnpicklingError):
    pass


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedObject(f"{module}.{name}")


def read_file(path):
    """The object of a ``.pdparams`` / ``.pdopt`` / ``.pdstate`` file, as ``paddle.load`` returns
    it (arrays as Tensors), unpickled without running code: any object besides those a state
    dict needs (``_SAFE_GLOBALS``) is refused with a ValueError naming the file and the object.
    """
    from paddle.framework.io import _parse_load_result
    from paddle.framework.io_utils import _pack_loaded_dict

    with open(path, "rb") as handle:
        try:
            obj = _StateDictUnpickler(handle, encoding="latin1").load()
        except _RefusedObject as err:
            raise ValueError(
                f"{path}: refused: the file asks to build the Python object {err}, which a "
                "weights or checkpoint file does not contain; ppdet_dac reads these files "
                "without running code (a crafted pickle would run it). Only if you trust "
                "this file: re-save it with python -c \"import paddle; paddle.save("
                f"paddle.load('{path}'), 'resaved.pdparams')\""
            ) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            AttributeError,
            ImportError,
            IndexError,
            TypeError,
            ValueError,
        ) as err:
            raise ValueError(
                f"{path}: not a file written by paddle.save ({type(err).__name__}: {err})"
            ) from None
    if not isinstance(obj, dict):
        return _parse_load_result(obj, False)
    obj = _pack_loaded_dict(obj)
    if _NAME_TABLE not in obj:
        return _parse_load_result(obj, False)
    for key in obj.pop(_NAME_TABLE):
        if isinstance(obj.get(key), np.ndarray):
            obj[key] = paddle.to_tensor(obj[key])
    return obj


def weights_only(state, path="weights"):
    """A ``.pdparams`` dict without the checkpoint token; ValueError naming ``path`` when it is
    not a dict."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: v for k, v in state.items() if k != TOKEN_KEY}


def load_weights_file(weights):
    """(the .pdparams path read, its weights without the checkpoint token) for ``weights``: a
    path with or without ``.pdparams``, or a URL (downloaded as ppdet does). Read by
    ``read_file``; FileNotFoundError naming the path when there is no such file."""
    from ppdet.utils.checkpoint import get_weights_path, is_url

    weights = str(weights)
    if is_url(weights):
        weights = get_weights_path(weights)
    candidates = [weights] if weights.endswith(".pdparams") else [weights + ".pdparams", weights]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise FileNotFoundError(f"weights file not found: {candidates[0]}")
    return path, weights_only(read_file(path), path)
