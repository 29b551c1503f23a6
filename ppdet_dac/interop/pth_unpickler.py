"""The restricted unpickler of the torch-free .pth reader (``pth_reader.py``) and the stand-ins
it builds for torch's classes, so that loading a file never runs code from it.

A checkpoint pickle names torch's tensor rebuilders and storage types; here they become
``_PendingTensor`` / ``StorageType`` objects that the reader fills from the storage bytes later.
Only the globals a checkpoint needs are accepted (tensor rebuilders, storage types,
OrderedDict, argparse.Namespace, a few builtins, numpy scalars and arrays); any other raises a
``CheckpointError`` naming it.
"""

import argparse
import codecs
import collections
import pickle
import struct

import numpy as np

# numpy's array rebuilder, the function a pickled ndarray names (through the public pickle
# protocol, under whichever module the installed numpy keeps it)
_reconstruct = np.ndarray((0,)).__reduce__()[0]

# Storage class name -> numpy dtype of its elements ("bfloat16" is kept as raw uint16 words).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("float32"),
    "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": np.dtype("uint16"),
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
}


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint; the message names the file and the cause."""


class StorageType:
    """Stand-in for ``torch.<Name>Storage`` classes referenced by the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __repr__(self):
        return f"StorageType({self.name})"


class _Storage:
    """A flat typed buffer; ``data`` (1-D numpy) is filled once the bytes have been read."""

    def __init__(self, storage_type, key, numel):
        self.storage_type, self.key, self.numel = storage_type, key, int(numel)
        self.data = None


class _StorageView:
    """Legacy-format view into a root storage: elements [offset, offset + numel)."""

    def __init__(self, root, offset, numel):
        self.root, self.offset, self.numel = root, int(offset), int(numel)


class _PendingTensor:
    """A tensor whose storage bytes may not be read yet (legacy files put them after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    """Tensor subclasses and tensors with Python attributes: rebuild the plain tensor."""
    return func(*args)


class _TensorClass:
    """Stand-in for torch.Tensor / nn.Parameter when only named as a type."""


def _numpy_scalar(dtype, data=None):
    if dtype.hasobject:
        return data
    return np.frombuffer(data, dtype=dtype, count=1)[0]


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type"): _rebuild_from_type,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Tensor"): _TensorClass,
    ("torch._tensor", "Tensor"): _TensorClass,
    ("torch.nn.parameter", "Parameter"): _TensorClass,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
for _numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x names
    _ALLOWED_GLOBALS[(_numpy_core, "scalar")] = _numpy_scalar
    _ALLOWED_GLOBALS[(_numpy_core, "_reconstruct")] = _reconstruct
# Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(text, 'latin1').
_ALLOWED_GLOBALS[("_codecs", "encode")] = codecs.encode
_MODULE_ALIASES = {"__builtin__": "builtins"}  # Python 2 pickles


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, persistent_load):
        super().__init__(file, encoding="utf-8")
        self._path, self._load_persistent = path, persistent_load

    def persistent_load(self, pid):
        return self._load_persistent(pid)

    def find_class(self, module, name):
        module = _MODULE_ALIASES.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return StorageType(name)
        raise CheckpointError(
            f"{self._path}: the checkpoint references the Python global '{module}.{name}', which "
            "is not a tensor, storage or plain container; refusing to load it (only weights, "
            "optimizer state, OrderedDict and argparse.Namespace are supported)"
        )


def _decode(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_type(pid_type, path):
    if not isinstance(pid_type, StorageType):
        raise CheckpointError(
            f"{path}: unsupported storage type {pid_type!r} "
            f"(supported: {', '.join(sorted(STORAGE_DTYPES))})"
        )
    return pid_type


def _unpickle(handle, path, persistent_load):
    try:
        return _RestrictedUnpickler(handle, path, persistent_load).load()
    except CheckpointError:
        raise
    except EOFError as exc:
        raise CheckpointError(
            f"{path}: truncated: the checkpoint pickle ends early (a corrupt or "
            f"incompletely copied file; EOFError: {exc})"
        ) from None
    except (
        pickle.UnpicklingError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        UnicodeDecodeError,
        struct.error,
    ) as exc:
        if "truncated" in str(exc):
            raise CheckpointError(
                f"{path}: truncated: the checkpoint pickle ends early (a "
                f"corrupt or incompletely copied file; {exc})"
            ) from None
        raise CheckpointError(
            f"{path}: corrupt or unsupported checkpoint pickle ({type(exc).__name__}: {exc})"
        ) from None
