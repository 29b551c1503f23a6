"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Every writer goes through a temporary file in the destination's folder, named
``.<file name>.<8 hex digits>.tmp`` (``TEMPORARY``), which is flushed and fsync'ed, then renamed
over the destination with ``os.replace`` (atomic on one file system). On an error (or
KeyboardInterrupt) the temporary file is deleted and the error propagates; a process killed
while writing leaves it behind (``ppdet_dac.engine.checkpoint.remove_stale_temporaries`` deletes
those of a checkpoint folder). The destination's folder must exist.

* ``atomic_open(path, "w" | "wb")``: a context manager giving the open temporary file
  (``json.dump(value, handle)``, streamed downloads);
* ``write_text`` / ``write_bytes``: a whole str / bytes;
* ``write_with(path, write)``: ``write(temporary path)`` writes the file itself
  (``paddle.save``, ``cv2.imwrite``).
"""

import contextlib
import os
import re
import uuid

__all__ = ["TEMPORARY", "temporary_path", "atomic_open", "write_text", "write_bytes", "write_with"]

# the name of a temporary file of this module: .<file name>.<8 hex digits>.tmp
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def temporary_path(path):
    """A new temporary path next to ``path`` (same folder, so the rename stays atomic)."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")


def _remove(tmp):
    if os.path.exists(tmp):
        os.remove(tmp)


def _fsync(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_with(path, write):
    """Call ``write(tmp)`` to write a temporary file, then move it to ``path``; returns
    ``path``. ``write``'s errors propagate, the temporary file deleted."""
    tmp = temporary_path(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


@contextlib.contextmanager
def atomic_open(path, mode="w", **open_args):
    """``with atomic_open(path, mode) as handle:`` writes ``handle``, a temporary file that
    replaces ``path`` when the block ends without an error (deleted when it raises).
    ``mode`` is "w" or "wb"; ``open_args`` go to ``open`` (e.g. encoding)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', got {mode!r}")
    tmp = temporary_path(path)
    try:
        with open(tmp, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_text(path, text, encoding=None):
    """Write the str ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return path


def write_bytes(path, data):
    """Write the bytes ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return path
