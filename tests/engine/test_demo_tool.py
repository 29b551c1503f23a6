"""tools/demo.py (what `make demo` runs) on the tiny config: it trains, evaluates, draws, and
prints the time of each part with a total that counts from --started_at (make demo's start)."""
import os
import re
import subprocess
import time

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup

DEMO = os.path.join(REPO, "tools", "demo.py")
PARTS = ["setup", "start-up", "training", "evaluation", "drawing"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(str(tmp_path_factory.mktemp("demo_tool")), epoch=1, num_val=2)


def _demo(tiny, out, *args):
    weights = os.path.join(os.path.dirname(tiny), "out", "tiny", "model_final")
    cmd = [PYTHON, DEMO, "-c", tiny, "--keep_data", "--output_dir", str(out), *args,
           "-o", f"weights={weights}"]
    return subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=600)


def test_demo_reports_its_parts_and_a_total_from_the_start_of_make(tiny, tmp_path):
    setup_seconds = 30.0
    started = time.time() - setup_seconds
    proc = _demo(tiny, tmp_path, "--started_at", f"{started:.3f}")
    wall = time.time() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    ap = re.search(r"demo COCO AP \(IoU 0.50:0.95\) = (-?[\d.]+), AP50 = (-?[\d.]+)", log)
    assert ap, log[-3000:]
    drawn = re.search(r"drew (\d+) detections .* to (\S+_val_detections\.png)", log)
    assert drawn and os.path.isfile(drawn.group(2))
    assert os.path.dirname(drawn.group(2)) == str(tmp_path)
    total = re.search(r"demo total: (\d+) min (\d\d) s \((.*)\)", log)
    assert total, log[-3000:]
    parts = {name: float(value) for name, value in
             re.findall(r"([a-z-]+) (\d+) s", total.group(3))}
    assert list(parts) == PARTS            # --keep_data: no data part
    total_s = int(total.group(1)) * 60 + int(total.group(2))
    # the parts are back to back: they add up to the total (each is rounded to 1 s)
    assert abs(sum(parts.values()) - total_s) <= len(parts)
    # the setup part is the time before the process started (the interpreter's own start-up
    # only): the imports and the rest are counted once, in the later parts
    assert setup_seconds - 1 <= parts["setup"] <= setup_seconds + 2
    assert wall - 3 <= total_s <= wall + 1
    assert parts["training"] > 0


def test_a_start_time_that_is_not_a_time_is_refused_by_name(tiny, tmp_path):
    proc = _demo(tiny, tmp_path, "--started_at", "12345")
    assert proc.returncode == 2
    assert "--started_at 12345.0 is not a time of the last day" in proc.stderr
    assert not os.listdir(tmp_path)
