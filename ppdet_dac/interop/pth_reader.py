"""Read PyTorch ``torch.save`` checkpoints with the standard library and numpy only (no torch).

Two on-disk formats exist:

* zip (torch >= 1.6): ``<prefix>/data.pkl`` is a protocol-2 pickle whose storages are persistent
  ids ``('storage', storage_type, key, location, numel)``; the bytes of storage ``key`` are the
  record ``<prefix>/data/<key>`` (byte order from ``<prefix>/byteorder``, little if absent).
* legacy (torch < 1.6, e.g. torchvision's ``resnet50-19c8e357.pth``): consecutive pickles
  (magic number, protocol version 1001, system info, the object with persistent ids
  ``('storage', storage_type, key, location, numel, view)``, the list of storage keys), then per
  key an int64 element count and the raw bytes.

Tensors are rebuilt from (storage, offset, size, stride) into contiguous numpy arrays. The
unpickler (``pth_unpickler.py``) accepts only the globals a checkpoint needs (tensor rebuilders,
storage types, OrderedDict, argparse.Namespace, a few builtins, numpy scalars and arrays) and
refuses any other with a ``CheckpointError`` naming it, so loading a file never runs code from
it. bfloat16 tensors come back as float32 (numpy has no bfloat16).

Size limits (a crafted file costs little memory): torch stores zip records uncompressed, so the
sizes a zip declares for its records may add up to at most ``MAX_EXPANSION`` times the archive's
size on disk (plus ``SIZE_SLACK``), checked before anything is decompressed; a storage record
must hold exactly the bytes its pickle declares (read up to that size, never more); a legacy
storage must fit in what is left of the file; the arrays built from the storages may add up to
at most ``MAX_VIEW_FACTOR`` times the storages' bytes (views with zero strides). A file that ends
early is reported as truncated.
"""

import argparse
import io
import os
import struct
import tarfile
import zipfile

import numpy as np

from .pth_unpickler import (
    CheckpointError,
    _decode,
    _PendingTensor,
    _Storage,
    _storage_type,
    _StorageView,
    _unpickle,
)

__all__ = ["CheckpointError", "read_pth"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
MAX_EXPANSION = 16  # declared uncompressed bytes of a zip / its size on disk
SIZE_SLACK = 1 << 20  # bytes allowed on top of either limit (headers, small files)
MAX_VIEW_FACTOR = 4  # bytes of the arrays built / bytes of their storages
_ZIP_MAGIC = b"PK\x03\x04"


def _check_expansion(archive, path):
    """CheckpointError when the records of ``archive`` declare more uncompressed bytes than
    ``MAX_EXPANSION`` times the file's size (+ ``SIZE_SLACK``); nothing is decompressed."""
    on_disk = os.path.getsize(path)
    declared = sum(info.file_size for info in archive.infolist())
    if declared > MAX_EXPANSION * on_disk + SIZE_SLACK:
        biggest = max(archive.infolist(), key=lambda info: info.file_size)
        raise CheckpointError(
            f"{path}: the zip archive declares {declared} bytes uncompressed ({biggest.filename}: "
            f"{biggest.file_size}), {declared / max(on_disk, 1):.0f} times its {on_disk} bytes on "
            "disk; torch.save stores tensors uncompressed, so this is no checkpoint (a zip bomb?); "
            "refusing to decompress it"
        )


def _read_record(archive, name, size, path):
    """The ``size`` bytes of zip record ``name``, whose declared size must be ``size``; read
    in a bounded way (never more than ``size`` + 1 bytes)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: storage record '{name}' is missing") from None
    if info.file_size != size:
        return info.file_size, None
    with archive.open(info) as handle:
        raw = handle.read(size + 1)
    return len(raw), raw


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        _check_expansion(archive, path)
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            if any(n.endswith("constants.pkl") for n in names):
                raise CheckpointError(
                    f"{path}: a TorchScript archive (torch.jit.save), not a torch.save checkpoint"
                )
            raise CheckpointError(
                f"{path}: a zip file without '<prefix>/data.pkl'; not a torch.save checkpoint"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path}: unknown byte order '{byteorder}'")
        storages = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and _decode(pid[0]) == "storage"):
                raise CheckpointError(f"{path}: unexpected persistent id {pid!r} in data.pkl")
            storage_type, key, numel = _storage_type(pid[1], path), _decode(pid[2]), pid[4]
            if key not in storages:
                storage = _Storage(storage_type, key, numel)
                nbytes = _storage_nbytes(storage, path)
                held, raw = _read_record(archive, f"{prefix}data/{key}", nbytes, path)
                if raw is None or held != nbytes:
                    raise CheckpointError(
                        f"{path}: storage '{key}' holds {held} bytes, its {storage.numel} "
                        f"{storage_type.name} elements need {nbytes}"
                        + (" (truncated)" if held < nbytes else "")
                    )
                storage.data = _buffer_to_array(raw, storage, byteorder, path)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as handle:  # bounded by _check_expansion
            return _unpickle(io.BytesIO(handle.read()), path, persistent_load), storages


def _storage_nbytes(storage, path):
    if not isinstance(storage.numel, int) or storage.numel < 0:
        raise CheckpointError(
            f"{path}: storage '{storage.key}' declares {storage.numel!r} elements"
        )
    return storage.numel * storage.storage_type.dtype.itemsize


def _buffer_to_array(raw, storage, byteorder, path):
    dtype = storage.storage_type.dtype
    nbytes = storage.numel * dtype.itemsize
    if len(raw) < nbytes:
        raise CheckpointError(
            f"{path}: storage '{storage.key}' holds {len(raw)} bytes, its "
            f"{storage.numel} {storage.storage_type.name} elements need {nbytes} "
            "(truncated)"
        )
    array = np.frombuffer(
        raw, dtype=dtype.newbyteorder("<" if byteorder == "little" else ">"), count=storage.numel
    )
    return array.astype(dtype)  # native byte order, and a writable copy


def _read_legacy(path, handle):
    def no_persistent(pid):
        raise CheckpointError(f"{path}: unexpected persistent id in the legacy header")

    magic = _unpickle(handle, path, no_persistent)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    version = _unpickle(handle, path, no_persistent)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: unsupported legacy protocol version {version!r}")
    sys_info = _unpickle(handle, path, no_persistent)
    byteorder = (
        "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    )
    storages, views = {}, {}

    def persistent_load(pid):
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"{path}: unexpected persistent id {pid!r}")
        kind = _decode(pid[0])
        if kind == "module":  # a pickled nn.Module class: keep the reference only
            return pid[1]
        if kind != "storage" or len(pid) != 6:
            raise CheckpointError(f"{path}: unexpected persistent id {pid!r}")
        storage_type, key = _storage_type(pid[1], path), _decode(pid[2])
        numel, view = pid[4], pid[5]
        if key not in storages:
            storages[key] = _Storage(storage_type, key, numel)
        root = storages[key]
        if view is None:
            return root
        view_key, offset, view_numel = view
        if view_key not in views:
            views[view_key] = _StorageView(root, offset, view_numel)
        return views[view_key]

    file_size = os.fstat(handle.fileno()).st_size
    result = _unpickle(handle, path, persistent_load)
    keys = _unpickle(handle, path, no_persistent)
    for key in keys:
        key = _decode(key)
        if key not in storages:
            raise CheckpointError(f"{path}: storage '{key}' is listed but never referenced")
        storage = storages[key]
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointError(
                f"{path}: truncated: the file ends before the bytes of storage '{key}'"
            )
        numel = struct.unpack("<q" if byteorder == "little" else ">q", header)[0]
        if numel != storage.numel:
            raise CheckpointError(
                f"{path}: storage '{key}' has {numel} elements on disk, {storage.numel} declared"
            )
        nbytes = _storage_nbytes(storage, path)
        left = file_size - handle.tell()
        if nbytes > left:
            raise CheckpointError(
                f"{path}: truncated: storage '{key}' needs {nbytes} bytes, the file has {left} left"
            )
        raw = handle.read(nbytes)
        storage.data = _buffer_to_array(raw, storage, byteorder, path)
    return result, storages


def _materialise(tensor, path, budget):
    storage, offset = tensor.storage, tensor.offset
    if isinstance(storage, _StorageView):
        limit = storage.offset + storage.numel
        offset, storage = offset + storage.offset, storage.root
    else:
        limit = storage.numel
    if storage.data is None:
        raise CheckpointError(f"{path}: the bytes of storage '{storage.key}' are missing")
    size, stride = tensor.size, tensor.stride
    if len(size) != len(stride) or any(s < 0 for s in stride) or any(n < 0 for n in size):
        raise CheckpointError(f"{path}: invalid tensor layout size={size} stride={stride}")
    if all(n > 0 for n in size):
        budget["left"] -= int(np.prod(size, dtype=np.float64)) * storage.data.itemsize
        if budget["left"] < 0:
            raise CheckpointError(
                f"{path}: its tensors (size={size} stride={stride} of storage '{storage.key}' "
                f"and the ones before) add up to more than {MAX_VIEW_FACTOR} times the bytes of "
                "their storages (views with zero strides); refusing to build them"
            )
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset < 0 or last >= limit:
            raise CheckpointError(
                f"{path}: tensor size={size} stride={stride} offset={tensor.offset} reads past "
                f"the end of storage '{storage.key}' ({limit} elements)"
            )
        itemsize = storage.data.itemsize
        array = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=size, strides=[s * itemsize for s in stride]
        ).copy()
    else:
        array = np.zeros(size, dtype=storage.data.dtype)
    if storage.storage_type.name == "BFloat16Storage":  # bfloat16 = upper half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _resolve(obj, path, seen, budget):
    """Replace every pending tensor in the object tree by its numpy array (``budget['left']``:
    bytes the arrays may still take)."""
    if isinstance(obj, _PendingTensor):
        return _materialise(obj, path, budget)
    if id(obj) in seen:
        return obj
    if isinstance(obj, dict):
        seen.add(id(obj))
        for key in list(obj):
            obj[key] = _resolve(obj[key], path, seen, budget)
        return obj
    if isinstance(obj, list):
        seen.add(id(obj))
        obj[:] = [_resolve(item, path, seen, budget) for item in obj]
        return obj
    if isinstance(obj, tuple):
        return (
            type(obj)(_resolve(item, path, seen, budget) for item in obj)
            if type(obj) is tuple
            else obj
        )
    if isinstance(obj, argparse.Namespace):
        seen.add(id(obj))
        for key, value in vars(obj).items():
            setattr(obj, key, _resolve(value, path, seen, budget))
        return obj
    if isinstance(obj, (_Storage, _StorageView)):
        raise CheckpointError(f"{path}: bare storages outside tensors are not supported")
    return obj


def read_pth(path):
    """Load a ``torch.save`` file into Python objects with numpy arrays for tensors.

    Returns whatever was saved (typically a dict such as ``{'model': OrderedDict, 'args':
    Namespace, ...}``). Raises ``FileNotFoundError`` for a missing file and ``CheckpointError``
    (a ``ValueError``) naming the file for anything that is not a readable checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        try:
            result, storages = _read_zip(path)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise CheckpointError(f"{path}: damaged zip archive ({exc})") from None
    else:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(0)
            if head == _ZIP_MAGIC:
                raise CheckpointError(
                    f"{path}: truncated: a zip archive without its central "
                    "directory at the end (an incompletely downloaded or "
                    "copied torch.save checkpoint?)"
                )
            if head[:2] == b"\x80\x02":
                result, storages = _read_legacy(path, handle)
            elif tarfile.is_tarfile(path):
                raise CheckpointError(
                    f"{path}: a tar checkpoint from torch < 0.4; load and "
                    "re-save it with a newer torch first"
                )
            else:
                raise CheckpointError(
                    f"{path}: not a PyTorch checkpoint (neither a torch.save "
                    "zip archive nor a legacy torch.save pickle)"
                )
    stored = sum(st.numel * st.storage_type.dtype.itemsize for st in storages.values())
    return _resolve(result, path, set(), {"left": MAX_VIEW_FACTOR * stored + SIZE_SLACK})
