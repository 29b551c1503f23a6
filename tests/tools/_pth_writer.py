"""Write files in PyTorch's ``torch.save`` formats with the standard library (tests only).

Numpy arrays in the saved object become tensors; arrays that are the same Python object share
one storage (like tied weights). ``Strided`` places a tensor at an offset / with strides inside an
explicit flat storage, ``BFloat16`` stores float32 values as bfloat16. Both the zip format
(torch >= 1.6) and the legacy pickle-stream format (torch < 1.6) can be written.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class Global:
    """A reference to ``module.name`` pickled as a GLOBAL opcode without importing the module."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise RuntimeError("placeholder only")


class Strided:
    """A tensor view: ``shape``/``stride`` (in elements) at ``offset`` into the flat ``storage``."""

    def __init__(self, storage, offset, shape, stride):
        if not (storage.ndim == 1 and storage.flags.c_contiguous):
            raise ValueError("Strided needs a flat contiguous storage array")
        self.storage = storage  # the same array object -> the same storage in the file
        self.offset, self.shape, self.stride = offset, tuple(shape), tuple(stride)


class BFloat16:
    """float32 values saved as a bfloat16 tensor (the upper 16 bits of each value)."""

    def __init__(self, values):
        values = np.ascontiguousarray(values, dtype=np.float32)
        self.words = (values.view(np.uint32) >> 16).astype(np.uint16)

    @property
    def expected(self):
        return (self.words.astype(np.uint32) << 16).view(np.float32)


class FromType:
    """A tensor saved through ``torch._tensor._rebuild_from_type_v2`` (what torch writes for
    tensor subclasses or tensors carrying Python attributes)."""

    def __init__(self, array, type_module="torch.nn.parameter", type_name="Parameter"):
        self.array, self.type = array, Global(type_module, type_name)


class PlainNumpy:
    """A numpy array pickled as numpy pickles it (not as a tensor), e.g. inside ``args``."""

    def __init__(self, array):
        self.array = array

    def __reduce__(self):
        return self.array.__reduce__()


class _StorageRef:
    def __init__(self, key, name, flat):
        self.key, self.name, self.flat = key, name, flat


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        return (
            Global("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict()),
        )


def _contiguous_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


class _Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages = collections.OrderedDict()  # id(flat array) -> _StorageRef

    def _storage(self, flat, name):
        if id(flat) not in self.storages:
            self.storages[id(flat)] = _StorageRef(str(len(self.storages)), name, flat)
        return self.storages[id(flat)]

    def persistent_id(self, obj):
        if not isinstance(obj, _StorageRef):
            return None
        pid = ("storage", Global("torch", obj.name), obj.key, "cpu", int(obj.flat.size))
        return pid + (None,) if self.legacy else pid

    def save_global_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    def save_array(self, array):
        flat = np.ascontiguousarray(array).reshape(-1)
        # Keep the same storage for the same array object (tied weights).
        key_array = self._flat_for.setdefault(id(array), (array, flat))[1]
        storage = self._storage(key_array, _STORAGE_NAMES[array.dtype])
        self.save(_Tensor(storage, 0, tuple(array.shape), _contiguous_strides(array.shape)))

    def save_strided(self, view):
        storage = self._storage(view.storage, _STORAGE_NAMES[view.storage.dtype])
        self.save(_Tensor(storage, view.offset, view.shape, view.stride))

    def save_bfloat16(self, value):
        storage = self._storage(value.words.reshape(-1), "BFloat16Storage")
        self.save(
            _Tensor(storage, 0, tuple(value.words.shape), _contiguous_strides(value.words.shape))
        )

    def save_from_type(self, value):
        flat = np.ascontiguousarray(value.array).reshape(-1)
        self._flat_for.setdefault(id(value), (value, flat))
        storage = self._storage(flat, _STORAGE_NAMES[flat.dtype])
        args = (
            storage,
            0,
            tuple(value.array.shape),
            _contiguous_strides(value.array.shape),
            False,
            collections.OrderedDict(),
        )
        self.save_reduce(
            Global("torch._tensor", "_rebuild_from_type_v2"),
            (Global("torch._utils", "_rebuild_tensor_v2"), value.type, args, {}),
            obj=value,
        )

    dispatch[Global] = save_global_ref
    dispatch[FromType] = save_from_type
    dispatch[np.ndarray] = save_array
    dispatch[Strided] = save_strided
    dispatch[BFloat16] = save_bfloat16

    def dump(self, obj):
        self._flat_for = {}
        super().dump(obj)


def _raw(flat):
    return np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes()


def save_zip(obj, path, prefix="archive"):
    """torch >= 1.6 layout: <prefix>/data.pkl, <prefix>/data/<key>, byteorder, version."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy=False)
    pickler.dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", buffer.getvalue())
        archive.writestr(f"{prefix}/byteorder", b"little")
        for ref in pickler.storages.values():
            archive.writestr(f"{prefix}/data/{ref.key}", _raw(ref.flat))
        archive.writestr(f"{prefix}/version", b"3\n")


def save_legacy(obj, path):
    """torch < 1.6 layout: magic, protocol, sys info, object, storage keys, then raw storages."""
    buffer = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buffer, protocol=2)
    pickle.dump(1001, buffer, protocol=2)
    pickle.dump(
        {
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 8},
        },
        buffer,
        protocol=2,
    )
    pickler = _Pickler(buffer, legacy=True)
    pickler.dump(obj)
    refs = list(pickler.storages.values())
    pickle.dump([ref.key for ref in refs], buffer, protocol=2)
    for ref in refs:
        buffer.write(struct.pack("<q", ref.flat.size))
        buffer.write(_raw(ref.flat))
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def read_key_list(path):
    """The official key list: [(key, shape, alias_of or None)] from official_state_dict_keys.txt."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            shape = tuple(int(v) for v in fields[1].strip("[]").split(",") if v.strip())
            alias = fields[3].lstrip("= ").strip() if len(fields) > 3 else ""
            alias = alias or None
            rows.append((fields[0], shape, alias))
    return rows


def synthetic_state_dict(rows, seed=0):
    """Random float32 arrays for every key; aliased keys get the very same array object."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for key, shape, alias in rows:
        state[key] = state[alias] if alias else rng.standard_normal(shape).astype(np.float32)
    return state


class _Declared:
    size = 0

    def __init__(self, numel):
        self.size = numel


def declared_tensor_pickle(numel, shape=None, stride=None, storage="FloatStorage"):
    """The bytes of a zip checkpoint's data.pkl holding {'w': tensor} over storage '0', which
    declares ``numel`` elements of ``storage`` (no data is made: for crafted files whose records
    are written separately); the tensor is ``shape`` / ``stride`` (default: the whole storage)."""
    shape = (numel,) if shape is None else tuple(shape)
    stride = _contiguous_strides(shape) if stride is None else tuple(stride)
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy=False)
    pickler.dump({"w": _Tensor(_StorageRef("0", storage, _Declared(numel)), 0, shape, stride)})
    return buffer.getvalue()
