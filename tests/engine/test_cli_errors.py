"""User errors end a tool with one line and exit status 2 (``ppdet_dac.utils.cli.run_cli``),
``--debug`` adds the traceback, other exceptions keep theirs; a failed eval leaves no output
folder behind."""

import os
import subprocess
import sys

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup
from ppdet_dac.utils import cli

DEMO = os.path.join(REPO, "configs", "demo", "dac_demo.yml")


def _tool(name, *args, cwd=REPO):
    cmd = [PYTHON, os.path.join(REPO, "tools", name), *map(str, args)]
    return subprocess.run(
        cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300
    )


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


# --- run_cli in this process ----------------------------------------------------------------


def _run(main, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py", *argv])
    codes = []
    cli.run_cli(main, exit=codes.append)
    return codes[0]


def test_user_error_is_one_line_and_status_2(monkeypatch, capsys):
    def main():
        raise ValueError("x.yml: unknown key 'batchsize'\n  did you mean 'batch_size'?")

    assert _run(main, ["-c", "x.yml"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err == "tool.py: error: x.yml: unknown key 'batchsize' did you mean 'batch_size'?\n"


def test_debug_flag_is_taken_out_of_argv_and_adds_the_traceback(monkeypatch, capsys):
    seen = []

    def main():
        seen.append(list(sys.argv))
        raise FileNotFoundError("weights file not found: w.pdparams")

    assert _run(main, ["-c", "x.yml", "--debug"], monkeypatch) == 2
    assert seen == [["tool.py", "-c", "x.yml"]]
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert _lines(err)[-1] == "tool.py: error: weights file not found: w.pdparams"


def test_status_of_main_and_interrupt(monkeypatch, capsys):
    assert _run(lambda: 1, [], monkeypatch) == 1
    assert _run(lambda: object(), [], monkeypatch) == 0  # tools/train.py returns its trainer

    def interrupted():
        raise KeyboardInterrupt

    assert _run(interrupted, [], monkeypatch) == 130
    assert capsys.readouterr().err == "tool.py: interrupted\n"


def test_unexpected_exception_keeps_its_traceback(monkeypatch):
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        _run(main, [], monkeypatch)


# --- the tools ------------------------------------------------------------------------------


def test_train_typo_key_is_one_stderr_line(tmp_path):
    proc = _tool("train.py", "-c", DEMO, "-o", "TrainReader.batchsize=2", cwd=tmp_path)
    assert proc.returncode == 2
    assert _lines(proc.stderr) == [
        f"train.py: error: {DEMO} with -o TrainReader.batchsize=2: unknown key 'batchsize' "
        "in TrainReader; did you mean 'batch_size'?"
    ]
    assert os.listdir(tmp_path) == []


def test_train_typo_key_with_debug_shows_the_traceback(tmp_path):
    proc = _tool("train.py", "-c", DEMO, "-o", "TrainReader.batchsize=2", "--debug", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback (most recent call last):" in proc.stderr
    assert "check_config_file" in proc.stderr  # the frames are there
    assert _lines(proc.stderr)[-1].startswith("train.py: error: ")


@pytest.mark.slow
def test_eval_missing_weights_is_one_line_and_leaves_no_output_folder(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=1, num_train=2, num_val=1)
    weights = tmp_path / "absent" / "model_final.pdparams"
    output = tmp_path / "eval_out"
    proc = _tool(
        "eval.py", "-c", config, "-o", f"weights={weights}", "--output_eval", output, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _lines(proc.stderr)[-1] == f"eval.py: error: weights file not found: {weights}"
    assert "Traceback" not in proc.stderr
    assert not output.exists()
    assert not (tmp_path / "out").exists()  # nor the default one (save_dir/<config name>)


def test_a_loader_workers_error_is_its_own_last_line(monkeypatch, capsys):
    """Paddle's DataLoader re-raises a worker's error with the worker's traceback inside."""

    def main():
        raise ValueError(
            "DataLoader worker(0) caught UnreadableDatasetError with message:\n"
            "Traceback (most recent call last):\n  File \"worker.py\", line 380\n"
            "ppdet_dac.data.dataset.UnreadableDatasetError: data/train: 2 images in a row\n"
        )

    assert _run(main, [], monkeypatch) == 2
    assert capsys.readouterr().err == "tool.py: error: data/train: 2 images in a row\n"
