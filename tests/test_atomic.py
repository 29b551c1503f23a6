"""ppdet_dac.utils.atomic: a failed write leaves the old file and no temporary; it is the only
place in the package and its tools that renames a temporary file into place."""

import json
import os
import re

import pytest

from _common import REPO

from ppdet_dac.utils.atomic import TEMPORARY, atomic_open, write_bytes, write_text, write_with


def _listing(folder):
    return sorted(os.listdir(folder))


def test_each_writer_replaces_the_file_whole(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    assert write_text(path, "text") == path and path.read_text() == "text"
    write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with atomic_open(path, "w") as handle:
        json.dump({"a": [1, 2]}, handle)
        assert path.read_bytes() == b"\x00\x01"  # not yet in place inside the block
        assert TEMPORARY.match(os.path.basename(handle.name)), handle.name
        assert os.path.dirname(handle.name) == str(tmp_path)
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    write_with(path, lambda tmp: open(tmp, "w").close())
    assert path.read_text() == "" and _listing(tmp_path) == ["out.json"]


@pytest.mark.parametrize("how", ["block", "function"])
def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, how):
    path = tmp_path / "out.json"
    path.write_text("old")

    def half_then_fail(handle):
        handle.write('{"half": ')
        raise KeyboardInterrupt  # not only Exception: a stopped write is cleaned up too

    with pytest.raises(KeyboardInterrupt):
        if how == "block":
            with atomic_open(path, "w") as handle:
                half_then_fail(handle)
        else:
            write_with(path, lambda tmp: half_then_fail(open(tmp, "w")))
    assert path.read_text() == "old" and _listing(tmp_path) == ["out.json"]


def test_only_whole_file_modes():
    with pytest.raises(ValueError, match="mode 'w' or 'wb', got 'a'"):
        with atomic_open("unused", "a"):
            pass


def test_no_other_module_renames_a_temporary_into_place():
    """Every atomic write of ppdet_dac/, deploy/ and tools/ goes through ppdet_dac.utils.atomic
    (one place that flushes, fsyncs and cleans up)."""
    helper = os.path.join(REPO, "ppdet_dac", "utils", "atomic.py")
    found = []
    for room in ("ppdet_dac", "deploy", "tools"):
        for folder, _, files in os.walk(os.path.join(REPO, room)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and path != helper:
                    for number, line in enumerate(open(path, encoding="utf-8"), 1):
                        if re.search(r"os\.(replace|rename)\(|mkstemp|NamedTemporaryFile", line):
                            found.append(f"{os.path.relpath(path, REPO)}:{number}")
    assert found == [], f"write through ppdet_dac.utils.atomic instead: {found}"


def test_utils_import_nothing_of_the_package():
    """Every room imports ppdet_dac.utils, so it imports no room back (no cycle)."""
    folder = os.path.join(REPO, "ppdet_dac", "utils")
    found = [
        f"{name}: {line.strip()}"
        for name in sorted(os.listdir(folder))
        if name.endswith(".py")
        for line in open(os.path.join(folder, name), encoding="utf-8")
        if re.match(r"\s*(from|import)\s+(ppdet_dac\b|\.)", line)
    ]
    assert found == []
