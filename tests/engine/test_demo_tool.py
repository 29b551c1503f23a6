"""tools/demo.py (what `make demo` runs) on the tiny config: it trains, evaluates, draws, and
prints the time of each part with a total that counts from --started_at (make demo's start)."""

import json
import os
import re
import subprocess

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup

DEMO = os.path.join(REPO, "tools", "demo.py")
CLOCK_PROBE = os.path.join(REPO, "tests", "engine", "_demo_clock_probe.py")
PARTS = ["setup", "start-up", "training", "evaluation", "drawing"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(str(tmp_path_factory.mktemp("demo_tool")), epoch=1, num_val=2)


def _demo(tiny, out, *args):
    weights = os.path.join(os.path.dirname(tiny), "out", "tiny", "model_final")
    cmd = [
        PYTHON,
        DEMO,
        "-c",
        tiny,
        "--keep_data",
        "--output_dir",
        str(out),
        *args,
        "-o",
        f"weights={weights}",
    ]
    return subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )


def test_demo_reports_its_parts_and_a_total_from_the_start_of_make(tiny, tmp_path):
    # The demo's clock is injected (tests/engine/_demo_clock_probe.py): --started_at is 30.4 s
    # before the demo process's own start, and its laps read 2.4, 62.8, 76.2, 80.6 s after that
    # start; so the parts are known exactly, whatever the machine's load.
    weights = os.path.join(os.path.dirname(tiny), "out", "tiny", "model_final")
    cmd = [
        PYTHON,
        CLOCK_PROBE,
        "30.4",
        "2.4,62.8,76.2,80.6",
        "-c",
        tiny,
        "--keep_data",
        "--output_dir",
        str(tmp_path),
        "-o",
        f"weights={weights}",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )  # a hang guard: the run takes well under a minute
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    ap = re.search(r"demo COCO AP \(IoU 0.50:0.95\) = (-?[\d.]+), AP50 = (-?[\d.]+)", log)
    assert ap, log[-3000:]
    drawn = re.search(r"drew (\d+) detections .* to (\S+_val_detections\.png)", log)
    assert drawn and os.path.isfile(drawn.group(2))
    assert os.path.dirname(drawn.group(2)) == str(tmp_path)
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    # one clock reading per part after the setup (--keep_data: no data part), none more
    assert probe["readings"] == len(PARTS) - 1
    # the setup part is the time before the process started: the demo takes its start before
    # it imports Paddle, so the imports are counted once, in the start-up part
    assert probe["paddle_imported_at"] is not None
    assert probe["started"] <= probe["paddle_imported_at"]
    expected = {
        "setup": 30.4,
        "start-up": 2.4,
        "training": 60.4,
        "evaluation": 13.4,
        "drawing": 4.4,
    }
    assert list(probe["parts"]) == PARTS
    for name, value in expected.items():
        assert abs(probe["parts"][name] - value) < 1e-4, (name, probe["parts"])
    # the parts are back to back; the total is their exact sum (111.0 s), not the sum of the
    # rounded parts (109 s)
    assert (
        "demo total: 1 min 51 s (setup 30 s, start-up 2 s, training 60 s, evaluation 13 s, "
        "drawing 4 s)"
    ) in log, log[-3000:]


def test_a_start_time_that_is_not_a_time_is_refused_by_name(tiny, tmp_path):
    proc = _demo(tiny, tmp_path, "--started_at", "12345")
    assert proc.returncode == 2
    assert "--started_at 12345.0 is not a time of the last day" in proc.stderr
    assert not os.listdir(tmp_path)
