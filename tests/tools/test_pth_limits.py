"""The torch-free .pth reader on crafted and damaged files: a zip bomb is refused before anything
is decompressed (small peak memory), a storage record must hold exactly the bytes its pickle
declares, zero-stride views cannot blow up, and a truncated file is called truncated."""

import os
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

import _pth_writer as writer

from ppdet_dac.interop import CheckpointError, read_pth

BOMB_BYTES = (1 << 30) + (1 << 20)  # what the bomb's storage record decompresses to
# read_pth in a fresh interpreter; PEAK_MIB is the peak resident memory read_pth adds to what
# the imports hold (ppdet_dac brings Paddle): writing 5 to /proc/self/clear_refs resets the
# peak (VmHWM) to the current size (VmRSS) just before the read
PEAK_PROBE = """
import sys
from ppdet_dac.interop import pth_reader as reader

def status_kib(field):
    with open("/proc/self/status") as handle:
        return int([line for line in handle if line.startswith(field)][0].split()[1])

before = status_kib("VmRSS:")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
try:
    reader.read_pth(sys.argv[1])
    print("LOADED")
except reader.CheckpointError as err:
    print("ERROR", err)
print("PEAK_MIB", (status_kib("VmHWM:") - before) / 1024)
"""


def _zip(path, pickle_bytes, record=None, compress=zipfile.ZIP_STORED):
    """A zip checkpoint: archive/data.pkl = ``pickle_bytes``, archive/data/0 = ``record``
    (bytes, or an int: that many zero bytes, written in chunks)."""
    with zipfile.ZipFile(path, "w", compress, compresslevel=9 if compress else None) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", b"little")
        if isinstance(record, int):
            with archive.open("archive/data/0", "w", force_zip64=True) as handle:
                chunk = bytes(16 << 20)
                for start in range(0, record, len(chunk)):
                    handle.write(chunk[: record - start])
        elif record is not None:
            archive.writestr("archive/data/0", record)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """About 1 MB on disk whose storage record inflates to BOMB_BYTES zeros; its pickle
    declares a float32 storage of exactly that size (so only the size limit refuses it)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.pth"
    _zip(path, writer.declared_tensor_pickle(BOMB_BYTES // 4), BOMB_BYTES, zipfile.ZIP_DEFLATED)
    return path


def test_zip_bomb_is_refused_before_decompression_with_small_peak_memory(bomb):
    assert os.path.getsize(bomb) < 2 << 20
    with zipfile.ZipFile(bomb) as archive:  # a real bomb: the record's CRC is that of the data
        info = archive.getinfo("archive/data/0")
        assert info.file_size == BOMB_BYTES and info.CRC == zlib.crc32(bytes(BOMB_BYTES))
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, str(bomb)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.partition(" ")[::2] for line in proc.stdout.splitlines())
    assert "LOADED" not in lines
    assert lines["ERROR"].startswith(f"{bomb}: the zip archive declares ")
    assert f"(archive/data/0: {BOMB_BYTES})" in lines["ERROR"]
    assert "refusing to decompress it" in lines["ERROR"]
    # the bomb's content alone would be 1 GiB; a refusal before decompression costs numpy's import
    assert float(lines["PEAK_MIB"]) < BOMB_BYTES / 2**20 / 4, lines["PEAK_MIB"]


def test_zip_bomb_refusal_reads_no_record(bomb, monkeypatch):
    opened = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: opened.append(name) or original(self, name, *a, **k),
    )
    with pytest.raises(CheckpointError, match="zip bomb"):
        read_pth(bomb)
    assert opened == []


@pytest.mark.parametrize("extra", [-4, 4, 1 << 16])
def test_storage_record_must_hold_exactly_the_declared_bytes(tmp_path, extra):
    path = tmp_path / "mismatch.pth"
    _zip(path, writer.declared_tensor_pickle(16), np.ones(16 + extra // 4, np.float32).tobytes())
    with pytest.raises(CheckpointError) as info:
        read_pth(path)
    assert str(info.value) == (
        f"{path}: storage '0' holds {64 + extra} bytes, its 16 FloatStorage elements need 64"
        + (" (truncated)" if extra < 0 else "")
    )


def test_a_fitting_crafted_file_still_loads(tmp_path):
    """The crafted-file helper itself writes readable files (the refusals above are the limits)."""
    path = tmp_path / "fits.pth"
    values = np.arange(16, dtype=np.float32)
    _zip(path, writer.declared_tensor_pickle(16, shape=(4, 4)), values.tobytes())
    np.testing.assert_array_equal(read_pth(path)["w"], values.reshape(4, 4))


def test_zero_stride_view_cannot_blow_up(tmp_path):
    """One float32 element viewed as 4096 x 4096 (64 MiB): refused, the storage is 4 bytes."""
    path = tmp_path / "view.pth"
    _zip(
        path,
        writer.declared_tensor_pickle(1, shape=(4096, 4096), stride=(0, 0)),
        np.ones(1, np.float32).tobytes(),
    )
    with pytest.raises(
        CheckpointError,
        match=r"size=\(4096, 4096\) stride=\(0, 0\) of storage "
        r"'0' .* more than 4 times the bytes",
    ):
        read_pth(path)


def _legacy_bytes(tmp_path):
    path = tmp_path / "full.pth"
    writer.save_legacy({"w": np.arange(1000, dtype=np.float32)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["zip_half", "zip_tail", "legacy_pickle", "legacy_storage"])
def test_truncated_file_is_called_truncated(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind.startswith("zip"):
        full = tmp_path / "full.pth"
        writer.save_zip({"w": np.arange(1000, dtype=np.float32)}, full)
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "zip_half" else data[:-30])
    else:
        data = _legacy_bytes(tmp_path)
        cut = 60 if kind == "legacy_pickle" else len(data) - 100
        path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as info:
        read_pth(path)
    message = str(info.value)
    assert message.startswith(f"{path}: truncated"), message
    assert "not a PyTorch checkpoint" not in message
