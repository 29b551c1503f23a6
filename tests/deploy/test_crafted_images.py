"""Crafted files that got past the old pixel check (a walk over Pillow's plugins) are refused by
the service, both inference CLIs and training's decode (DACDecode), each in a fresh process whose
peak resident memory stays below 1 GB: nothing is decoded (a 30000 x 30000 image alone would
take 2.7 GB). The files: the zTXt/PCD polyglot PNG (IHDR 30000 x 30000), the Radiance HDR
polyglot (15000 x 15000 and 9000 x 9000, named .png/.jpg as an uploader may), a JPEG whose SOF
and a PNG whose IHDR declare 30000 x 30000, a JPEG with two SOF markers and a TIFF whose first
directory declares 30000 x 30000 (tests/_crafted_images.py)."""

import json
import os
import subprocess
import sys
import time

import pytest

from _crafted_images import (
    TIFF_LONG,
    lying_jpeg,
    lying_png,
    polyglot_hdr,
    polyglot_png,
    several_sof_jpeg,
    tiff_file,
)
from _deploy_helpers import DEMO_CONFIG, REPO, SIZE_OPTS

PEAK_RSS_BOUND = 2**30
HANG_GUARD_S = 600  # a fresh process loads Paddle and the model first: seconds
ANSWER_HANG_GUARD_S = 10  # a refusal from the header takes milliseconds (decoding the polyglot:
# 12 s and 6 GB)
OVER = "30000 x 30000 = 900000000 pixels, over the limit of 40000000 pixels"
REASONS = {
    "a_polyglot.png": OVER,
    "b_radiance_15000.png": "format Radiance HDR is not accepted",
    "c_radiance_9000.jpg": "format Radiance HDR is not accepted",
    "d_sof_lies.jpg": OVER,
    "e_ihdr_lies.png": OVER,
    "f_two_sofs.jpg": "JPEG has several SOF markers",
    "g_ifd_lies.tif": OVER,
}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """{file name: bytes}, also written to a folder of their own: (folder, files)."""
    files = dict(
        zip(
            REASONS,
            [
                polyglot_png(30000, 30000),
                polyglot_hdr(15000, 15000),
                polyglot_hdr(9000, 9000),
                lying_jpeg(30000, 30000),
                lying_png(30000, 30000),
                several_sof_jpeg(30000, 30000),
                tiff_file(30000, 30000, size_type=TIFF_LONG, pixels=bytes(64)),
            ],
        )
    )
    folder = tmp_path_factory.mktemp("crafted")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


# Runs argv[2:] as a child and writes {status, maxrss_kb} of it to argv[1]. The small wrapper
# stands between pytest and the measured process: a child's ru_maxrss counts the memory of the
# process it was spawned from (vfork + exec), here the wrapper's few MB, not pytest's.
MEASURE = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"status": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, f)
"""


def run_measured(args, tmp_path):
    """Run ``python args...`` from the repo root in a fresh process: (exit status, stdout,
    stderr, peak RSS of that process in bytes)."""
    report = tmp_path / "measured.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(report), sys.executable] + list(args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(report.read_text())
    return measured["status"], proc.stdout, proc.stderr, measured["maxrss_kb"] * 1024


def _check_summary(out_dir, folder):
    with open(out_dir / "summary.json") as f:
        summary = json.load(f)
    failed = {os.path.basename(item["file"]): item["error"] for item in summary["failed"]}
    assert summary["succeeded"] == 0 and set(failed) == set(REASONS), summary
    for name, reason in REASONS.items():
        assert reason in failed[name] and name in failed[name], failed[name]


@pytest.mark.slow
def test_deploy_infer_refuses_crafted_files(exported, crafted, tmp_path):
    folder, _ = crafted
    status, stdout, stderr, peak = run_measured(
        [
            os.path.join("deploy", "python", "infer.py"),
            "--model_dir",
            exported.model_dirs["op"],
            "--image_dir",
            str(folder),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        tmp_path,
    )
    assert status == 1, stdout[-3000:] + stderr[-3000:]
    _check_summary(tmp_path / "out", folder)
    print(f"peak RSS {peak / 2**30:.2f} GB")
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**30:.2f} GB"


@pytest.mark.slow
def test_dygraph_infer_refuses_crafted_files(exported, crafted, tmp_path):
    folder, _ = crafted
    status, stdout, stderr, peak = run_measured(
        [
            os.path.join("tools", "infer.py"),
            "-c",
            DEMO_CONFIG,
            "-o",
            f"weights={exported.weights}",
            f"TestDataset.dataset_dir={exported.data_dir}",
            *SIZE_OPTS,
            "--infer_dir",
            str(folder),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        tmp_path,
    )
    assert status == 1, stdout[-3000:] + stderr[-3000:]
    _check_summary(tmp_path / "out", folder)
    print(f"peak RSS {peak / 2**30:.2f} GB")
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**30:.2f} GB"


TRAINING_DECODE = """
import json, sys, time
import ppdet_dac
from ppdet_dac.data.transforms import DACDecode, ImageDecodeError
outcome, seconds = {}, {}
for path in sys.argv[1:]:
    started = time.monotonic()
    try:
        outcome[path] = "decoded %s" % (DACDecode()({"im_file": path})["image"].shape,)
    except ImageDecodeError as err:
        outcome[path] = "refused: " + str(err)
    seconds[path] = time.monotonic() - started
print(json.dumps([outcome, seconds]))
"""


def test_training_decode_refuses_crafted_files(crafted, tmp_path):
    folder, _ = crafted
    paths = [str(folder / name) for name in REASONS]
    status, stdout, stderr, peak = run_measured(["-c", TRAINING_DECODE] + paths, tmp_path)
    assert status == 0, stderr[-3000:]
    outcome, seconds = json.loads(stdout.strip().splitlines()[-1])
    for path, name in zip(paths, REASONS):
        assert outcome[path].startswith("refused: ") and REASONS[name] in outcome[path], outcome[
            path
        ]
        assert path in outcome[path]
        assert seconds[path] < 1.0  # hang guard: a header read takes microseconds
    print(f"peak RSS {peak / 2**30:.2f} GB")
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**30:.2f} GB"


@pytest.mark.slow
def test_service_refuses_crafted_uploads(exported, crafted):
    from test_serving import Server

    _, files = crafted
    server = Server(exported.model_dirs["op"])
    try:
        for name, data in files.items():
            started = time.monotonic()
            _, answer = server.post_image(data)  # PaddleServing: HTTP 200, err_no != 0
            assert time.monotonic() - started < ANSWER_HANG_GUARD_S, name
            assert answer["err_no"] != 0 and REASONS[name] in answer["err_msg"], (name, answer)
        assert server.proc.poll() is None
        peak = server.peak_rss()
    finally:
        server.stop()
    print(f"server peak RSS {peak / 2**30:.2f} GB")
    assert peak < PEAK_RSS_BOUND, f"server peak RSS {peak / 2**30:.2f} GB"
