"""A data error stops the tool with its own message within seconds, never a hang: ppdet's readers
(Train/Eval/Test, with and without workers) raise the reader's exception in the caller's thread;
tools/train.py --eval and tools/eval.py with an undecodable val image (``on_decode_error:
raise``; with the configs' ``report`` evaluation names the image, leaves it out and finishes) and tools/train.py with a train file without 'annotations' exit non-zero naming the
file; the epoch trained before the failed evaluation keeps its checkpoint. (tools/infer.py skips
such files before its reader: tests/deploy/test_visualize_cli.py.)"""

import json
import os
import subprocess
import textwrap

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup

# Without the fix, each of these runs waits forever: the timeout below fails the test. A tool
# run here takes ~5-20 s on 2 cores (start, model, a few batches): the limit is a hang guard,
# well over 10x a run, so a busy machine does not fail it.
TIMEOUT_S = 300
# A reader raises its error within about a second of meeting the bad image (workers included);
# a wait for a worker's timeout or a hang takes minutes or forever.
PROMPT_S = 90

READER_PROBE = textwrap.dedent("""
    import json, sys, time
    import ppdet_dac
    from ppdet.core.workspace import create
    from ppdet_dac.engine import load_checked_config
    config, bad, good, out = sys.argv[1:5]
    load_checked_config(config)
    results = {}
    def attempt(name, reader):
        tic = time.time()
        try:
            for _ in reader:
                pass
        except Exception as err:
            results[name] = [type(err).__name__, str(err), time.time() - tic]
        else:
            results[name] = None
    for workers in (0, 2):
        attempt(f"eval/{workers}", create("EvalReader")(create("EvalDataset")(), workers))
    test_set = create("TestDataset")()
    test_set.set_images([good, bad])
    attempt("test/0", create("TestReader")(test_set, 0))
    json.dump(results, open(out, "w"))
""")


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """The tiny setup with val image 000002.jpg replaced by 7 bytes that are no image."""
    root = tmp_path_factory.mktemp("broken")
    config = make_tiny_setup(str(root), epoch=1, num_train=4, num_val=2)
    bad = root / "data" / "val" / "000002.jpg"
    bad.write_bytes(b"garbage")
    return config, str(bad), root


@pytest.fixture(scope="module")
def broken_raise(broken):
    """``broken`` with the evaluation set on ``on_decode_error: raise`` (the configs' default
    'report' leaves undecodable images out when the dataset loads)."""
    config, bad, root = broken
    text = open(config).read()
    line = next(l for l in text.splitlines() if l.startswith("EvalDataset:"))
    os.makedirs(os.path.join(str(root), "raise"), exist_ok=True)
    strict = os.path.join(str(root), "raise", "tiny.yml")  # same config name: output/tiny
    with open(strict, "w") as handle:
        handle.write(text.replace(line, line[:-1] + ", on_decode_error: raise}"))
    return strict, bad, root


def _run(args, cwd):
    return subprocess.run(
        [PYTHON, *args],
        cwd=str(cwd),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def _last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def test_reader_errors_reach_the_caller(broken_raise, tmp_path):
    config, bad, root = broken_raise
    good = str(root / "data" / "val" / "000001.jpg")
    out = tmp_path / "results.json"
    proc = _run(["-c", READER_PROBE, config, bad, good, str(out)], REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in ("eval/0", "eval/2", "test/0"):
        assert results[name] is not None, name  # the error came through
        kind, message, seconds = results[name]
        assert kind == "ImageDecodeError", (name, kind, message)
        assert f"cannot decode image file {bad} (7 bytes)" in message, name
        assert seconds < PROMPT_S, name


@pytest.mark.slow
def test_train_eval_with_an_undecodable_val_image(broken_raise, tmp_path):
    config, bad, root = broken_raise
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    proc = _run(
        [os.path.join(REPO, "tools", "train.py"), "-c", config, "--eval", "-o", f"save_dir={out}"],
        cwd,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _last_line(proc) == (
        f"train.py: error: cannot decode image file {bad} (7 bytes): "
        "not a readable JPEG/PNG/BMP/TIFF image"
    )
    log = proc.stdout + proc.stderr
    # the trained epoch is kept: its checkpoint is complete and resumable
    from ppdet_dac.engine.checkpoint import read_checkpoint

    state = read_checkpoint(str(out / "tiny" / "model_final"))[0]
    assert (state["epochs_done"], state["global_iter"]) == (1, 2)
    assert (
        f"the evaluation after epoch 0 failed (below); the epoch's checkpoint "
        f"{out / 'tiny' / 'model_final'} is written" in log
    )
    assert not (out / "tiny" / "best_model.pdstate").exists()
    assert os.listdir(cwd) == []
    # epoch 1 puts the demo schedule's milestone (3) after the end: one warning line
    warnings = [line for line in log.splitlines() if "does not fit epoch: 1" in line]
    assert len(warnings) == 1 and "PiecewiseDecay milestones [3]" in warnings[0]

    # tools/eval.py on the same data and these weights
    proc = _run(
        [
            os.path.join(REPO, "tools", "eval.py"),
            "-c",
            config,
            "-o",
            f"weights={out / 'tiny' / 'model_final'}",
        ],
        cwd,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _last_line(proc).endswith(
        f"cannot decode image file {bad} (7 bytes): not a readable JPEG/PNG/BMP/TIFF image"
    )
    assert os.listdir(cwd) == []


@pytest.mark.slow
def test_train_file_without_annotations(broken, tmp_path):
    config, _, root = broken
    anno = root / "data" / "annotations" / "instances_train.json"
    content = json.loads(anno.read_text())
    del content["annotations"]
    images_only = root / "data" / "annotations" / "images_only.json"
    images_only.write_text(json.dumps(content))
    proc = _run(
        [
            os.path.join(REPO, "tools", "train.py"),
            "-c",
            config,
            "-o",
            f"save_dir={tmp_path / 'out'}",
            "TrainDataset.anno_path=annotations/images_only.json",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _last_line(proc) == (
        f"train.py: error: {images_only}: no 'annotations' in this file, which the TrainDataset "
        "reads; training and evaluation need the box annotations (a file of images alone is "
        "for TestDataset)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_reports_an_undecodable_image_and_finishes(broken, tmp_path):
    """on_decode_error: report (the configs' default): tools/eval.py names the file, leaves it
    out of the metric and finishes with exit status 0."""
    config, bad, _ = broken
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    proc = _run(
        [os.path.join(REPO, "tools", "train.py"), "-c", config, "-o", f"save_dir={out}"], cwd
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(
        [
            os.path.join(REPO, "tools", "eval.py"),
            "-c",
            config,
            "-o",
            f"weights={out / 'tiny' / 'model_final'}",
            f"output_eval={tmp_path / 'eval'}",
        ],
        cwd,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert f"{bad} (image id 2) cannot be decoded: left out of the evaluation" in log
    assert "1 of 2 images cannot be decoded and are left out" in log
    assert "evaluated 1 images" in log
    assert os.listdir(cwd) == []
