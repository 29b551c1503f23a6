"""One tiny training run (4 epochs, --eval, max_epoch_checkpoints=2, weights-only epochs) and
what it leaves: the checkpoints kept, the summary line at its end, a console without the
known-harmless third-party notices (ppdet_dac/_notices.py)."""

import os
import re
import subprocess

import pytest

from _engine_helpers import PYTHON, make_tiny_setup, run_train
from ppdet_dac.engine.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow

SUFFIXES = (".pdparams", ".pdopt", ".pdstate")
NOTICES = (
    "Modified FLAGS detected",
    "Currently not a parallel execution environment",
    "When training, we now always track global mean and variance",
    "No ccache found",
    "Unable to use numba in PP-Tracking",
    "FatalError",
    "Traceback",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(checkpoint folder, stdout + stderr) of the run."""
    root = str(tmp_path_factory.mktemp("end"))
    config = make_tiny_setup(root, epoch=4, num_train=4, num_val=1)
    proc = run_train(
        config, "--eval", "-o", "max_epoch_checkpoints=2", "epoch_checkpoint_weights_only=true"
    )
    return os.path.join(root, "out", "tiny"), proc.stdout + proc.stderr


def test_two_weights_only_epochs_and_whole_best_and_final_are_kept(run):
    folder, _ = run
    names = sorted(n for n in os.listdir(folder) if n.endswith(SUFFIXES))
    assert [n for n in names if n[0].isdigit()] == ["1.pdparams", "2.pdparams"]  # 3: model_final
    for name in ("model_final", "best_model"):
        assert [n for n in names if n.startswith(name)] == sorted(name + s for s in SUFFIXES)
    assert latest_checkpoint(folder) == os.path.join(folder, "model_final")


def test_summary_line_names_time_best_epoch_and_weights(run):
    folder, log = run
    bests = re.findall(r"best box AP so far: (\d\.\d{4}) \(epoch (\d)\)", log)
    assert bests, log[-3000:]
    ap, epoch = bests[-1]
    summary = [line.split("INFO: ", 1)[1] for line in log.splitlines() if "training done" in line]
    assert len(summary) == 1
    assert re.fullmatch(
        rf"training done in (\d+ min \d+ s|\d+\.\d s): final weights {re.escape(folder)}/model_final; best box "
        rf"AP {ap} at epoch {epoch}: {re.escape(folder)}/best_model",
        summary[0],
    ), summary[0]


def test_console_has_none_of_the_known_harmless_notices(run):
    _, log = run
    assert "Epoch: [3]" in log  # the run's own log is there
    assert [n for n in NOTICES if n in log] == []


def test_sigterm_ends_a_tool_without_paddles_fatal_error_report():
    """What paddle.distributed.launch sends a rank: the process ends at once, silently."""
    code = (
        "import os, signal, time; import ppdet_dac; from ppdet_dac.utils.cli import run_cli\n"
        "def main():\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
        "run_cli(main)\n"
    )
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -15
    assert "FatalError" not in proc.stderr and "C++ Traceback" not in proc.stderr
