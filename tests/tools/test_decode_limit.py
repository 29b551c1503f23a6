"""OpenCV's own pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS, ppdet_dac/_decode_limit.py) is set before
cv2 is loaded in every entry point that decodes images, from --max_pixels when given: even a
header our check misreads cannot decode more than the limit. ``import ppdet_dac`` sets it (its
``__init__`` runs the guard first), so each entry point imports ppdet_dac before anything that
loads cv2."""

import ast
import os
import re
import subprocess
import sys

import pytest

from _common import REPO
from ppdet_dac import _decode_limit
from ppdet_dac.data import image_io

ENTRY_POINTS = [
    "tools/train.py",
    "tools/eval.py",
    "tools/infer.py",
    "tools/demo.py",
    "tools/dump_outputs.py",
    "tools/analyze_queries.py",
    "deploy/python/infer.py",
    "deploy/serving/server.py",
]
GUARD = re.compile(r"^(import|from) ppdet_dac\b")  # runs ppdet_dac/__init__.py: the guard
# an import of any of these loads cv2 (directly or through ppdet / ppdet_dac)
LOADS_CV2 = re.compile(r"^(import|from) (cv2|ppdet|ppdet_dac|paddle)\b")
# imported before ppdet_dac by the tools (CPU thread count): must load nothing of the above
THREADS_HELPER = "tools/_threads.py"


def _imported_modules(path):
    """Names of the modules the file at ``path`` imports (any depth of its syntax tree)."""
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


# Runs an entry point in this process as `python SCRIPT ARGS --help` would (its imports, then
# argparse's help and exit), then decodes, bypassing our header check, a 1-bit PNG of LIMIT
# pixels and one just over it with cv2 directly.
PROBE = r"""
import os, runpy, struct, sys, zlib
script, limit = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
sys.argv = [script] + sys.argv[3:]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
import cv2
import numpy as np

def png(width, height):
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data)))
    raw = zlib.compress(bytes(1 + (width + 7) // 8) * height)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0,
            0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))

# libpng refuses widths over 10^6: larger limits as rows of 5000 (the limit a multiple of it)
side = 1 if limit < 10 ** 6 else 5000
for name, width in (("under", limit // side), ("over", limit // side + 1)):
    try:
        im = cv2.imdecode(np.frombuffer(png(width, side), np.uint8), cv2.IMREAD_COLOR)
        print(name, width * side, "decoded", im.shape)
    except cv2.error as err:
        print(name, width * side, "refused", str(err).strip().splitlines()[-1])
print("variable", os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])
"""


def _probe(script, limit, *args):
    env = {k: v for k, v in os.environ.items() if k != _decode_limit.VARIABLE}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, script, str(limit)] + list(args) + ["--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_entry_point_sets_the_limit_before_loading_cv2():
    for script in ENTRY_POINTS:
        with open(os.path.join(REPO, script)) as f:
            lines = f.read().splitlines()
        loads = [i for i, line in enumerate(lines) if LOADS_CV2.match(line)]
        assert loads and GUARD.match(lines[loads[0]]), (
            f"{script}: line {loads[0] + 1 if loads else '?'} loads cv2 before ppdet_dac's guard"
        )
    # what runs before ppdet_dac's guard loads none of it
    for path in (THREADS_HELPER, "ppdet_dac/_decode_limit.py"):
        assert _imported_modules(path) <= {"os", "sys", "logging"}, path
    with open(os.path.join(REPO, "ppdet_dac", "__init__.py")) as f:
        init = [line for line in f.read().splitlines() if line.strip()]
    guard = init.index("set_decode_limit(sys.argv[1:], warn_if_late=False)")
    before = [ln for ln in init[:guard] if ln.startswith(("import ", "from "))]
    assert before == ["import sys", "from ._decode_limit import set_decode_limit"], before


@pytest.mark.parametrize(
    "script, args, limit",
    [
        ("deploy/serving/server.py", ["--max_pixels=2500"], 2500),
        ("tools/train.py", [], image_io.DEFAULT_MAX_PIXELS),
    ],
)
def test_opencv_refuses_more_than_the_limit_in_a_fresh_entry_point(script, args, limit):
    out = _probe(script, limit, *args)
    side = 1 if limit < 10**6 else 5000
    assert f"under {limit} decoded ({side}, {limit // side}, 3)" in out, out
    assert f"over {limit + side} refused" in out and "CV_IO_MAX_IMAGE_PIXELS" in out, out
    assert f"variable {limit}" in out, out


def test_a_users_own_setting_is_kept_and_a_larger_limit_refused():
    env = dict(os.environ, **{_decode_limit.VARIABLE: "5000"})
    code = (
        "import sys; sys.argv[1:] = ['--max_pixels', '9000']; "
        "import ppdet_dac, os; from ppdet_dac.data.image_io import check_max_pixels; "
        "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS']); print(check_max_pixels(5000)); "
        "check_max_pixels(9000, '--max_pixels')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.stdout.split() == ["5000", "5000"], proc.stdout + proc.stderr[-2000:]
    assert (
        "ValueError: --max_pixels = 9000 is above OpenCV's own decode limit in this process, "
        "OPENCV_IO_MAX_IMAGE_PIXELS = 5000" in proc.stderr
    )


def test_command_line_value_and_default():
    assert _decode_limit.DEFAULT_MAX_PIXELS == image_io.DEFAULT_MAX_PIXELS
    assert _decode_limit.MAX_PIXELS_CEILING == image_io.MAX_PIXELS_CEILING
    cases = {
        ("--max_pixels", "123"): 123,
        ("--max_pixels=77", "-c", "x.yml"): 77,
        ("--max_pixels", "5", "--max_pixels", "6"): 6,
        ("--max_pixels", "0"): None,
        ("--max_pixels", "many"): None,
        ("--max_pixels",): None,
        ("-o", "a=1"): None,
    }
    for argv, expected in cases.items():
        assert _decode_limit.cli_max_pixels(list(argv)) == expected, argv


def test_too_late_sets_nothing_and_warns(monkeypatch, caplog):
    """In a process that has loaded cv2 already (this one) the variable would only reach child
    processes: it is left alone, with a warning."""
    monkeypatch.delenv(_decode_limit.VARIABLE, raising=False)
    with caplog.at_level("WARNING", logger="ppdet_dac.decode_limit"):
        assert _decode_limit.set_decode_limit(["--max_pixels", "5000"]) is None
    assert _decode_limit.VARIABLE not in os.environ
    assert [r.getMessage() for r in caplog.records] == [
        "cv2 was imported before OPENCV_IO_MAX_IMAGE_PIXELS could be set: OpenCV's own pixel "
        "limit in this process is its default, 2^30 (import _decode_limit before anything else)"
    ]
