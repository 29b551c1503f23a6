"""Runs over several processes and machines with paddle.distributed.launch (CPU, gloo).

The reference is one launch of 2 processes (1 node x 2). Against it: two launchers on
127.0.0.1 acting as 2 nodes x 1 process (``--master``, ``--nnodes 2``, ``--rank``); a run in
which one rank is killed (SIGKILL) in the middle of an epoch and the same command (``-r auto``)
is run again; and evaluation sharded over 2 ranks against one process. A rank that raises
while the other waits in a collective stops both, with its error in both logs.
"""

import json
import os
import pathlib
import re
import signal
import subprocess

import numpy as np
import pytest

from _engine_helpers import (
    PYTHON,
    REPO,
    child_env,
    free_port,
    launch_cmd,
    load_params,
    make_tiny_setup,
    worker_logs,
)

pytestmark = pytest.mark.slow

PROBE = os.path.join(REPO, "tests", "engine", "_fault_probe.py")
# 8 training images, 1 per process and step: 4 iterations per epoch with 2 ranks, 2 epochs;
# 7 val images in batches of 2 (the official eval batch): 4 batches, the last of one image.
# Evaluation after each epoch, iteration checkpoints after every step.
TRAIN_FLAGS = [
    "--seed",
    "3",
    "-r",
    "auto",
    "--eval",
    "-o",
    "TrainReader.batch_size=1",
    "EvalReader.batch_size=2",
    "snapshot_iter=1",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(str(tmp_path_factory.mktemp("tiny")), epoch=2, num_val=7)


def _train(root, config, name, fault="none", **launch):
    """One launch of the probed tools/train.py with its own save_dir; (returncode, logs)."""
    cmd = launch_cmd(
        root / f"log_{name}",
        PROBE,
        fault,
        "train",
        "-c",
        config,
        *TRAIN_FLAGS,
        f"save_dir={root / name}",
        **launch,
    )
    proc = subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )
    return proc.returncode, worker_logs(root / f"log_{name}")


def _two_nodes(root, config, name, fault):
    """Two launchers (nodes 0 and 1, one process each) started together; their Popen."""
    master = f"127.0.0.1:{free_port()}"
    procs = []
    for node in (0, 1):
        cmd = launch_cmd(
            root / f"log_{name}_{node}",
            PROBE,
            fault,
            "train",
            "-c",
            config,
            *TRAIN_FLAGS,
            f"save_dir={root / name}",
            nproc=1,
            master=master,
            nnodes=2,
            node_rank=node,
        )
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    return procs


def _assert_same_params(path_a, path_b):
    a, b = load_params(path_a), load_params(path_b)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(tiny):
    """The uninterrupted 1 node x 2 processes run; its checkpoint folder."""
    root = pathlib.Path(os.path.dirname(tiny))
    code, logs = _train(root, tiny, "ref")
    assert code == 0, logs[0][-3000:] + logs[1][-3000:]
    return root / "ref" / "tiny"


def test_two_nodes_of_one_process_equal_one_node_of_two(tiny, reference, tmp_path):
    procs = _two_nodes(tmp_path, tiny, "nodes", "none")
    codes = [p.wait(timeout=600) for p in procs]
    logs = [worker_logs(tmp_path / f"log_nodes_{n}")[0] for n in (0, 1)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    # node 0 holds global rank 0, which writes the checkpoints and prints the log
    assert "epoch 1: mean loss" in logs[0]
    _assert_same_params(
        reference / "model_final.pdparams", tmp_path / "nodes" / "tiny" / "model_final.pdparams"
    )
    first = load_params(reference / "0.pdparams")
    final = load_params(reference / "model_final.pdparams")
    assert any(not np.array_equal(first[k], final[k]) for k in final)  # epoch 1 trained


def test_kill_one_rank_mid_epoch_and_rerun_gives_identical_parameters(tiny, reference, tmp_path):
    marker = tmp_path / "killed"
    fault = f"kill:1:6:{marker}"  # rank 1 at iteration 6: epoch 1, after 2 of its 4 batches
    code, logs = _train(tmp_path, tiny, "run", fault)
    assert code != 0 and marker.exists()
    assert "no complete checkpoint" in logs[0]  # -r auto started a fresh run
    assert not (tmp_path / "run" / "tiny" / "model_final.pdstate").exists()
    # the same command again: resumes from the newest complete checkpoint (iter_6, or iter_5
    # when rank 0 was stopped while writing iter_6) in the middle of epoch 1
    code, logs = _train(tmp_path, tiny, "run", fault)
    assert code == 0, logs[0][-3000:]
    resumed = [
        n
        for n in ("iter_5", "iter_6")
        if f"resuming from {tmp_path / 'run' / 'tiny' / n}," in logs[0]
    ]
    assert len(resumed) == 1, logs[0][-3000:]
    done_in_epoch = int(resumed[0][len("iter_") :]) - 4
    assert f"epoch 1: resuming at batch {done_in_epoch} of 4" in logs[0]
    _assert_same_params(
        reference / "model_final.pdparams", tmp_path / "run" / "tiny" / "model_final.pdparams"
    )


def _eval(root, config, name, weights, nproc):
    out = root / name
    args = [
        f"dump:{out}.json",
        "eval",
        "-c",
        config,
        "--output_eval",
        out,
        "-o",
        f"weights={weights}",
        "EvalReader.batch_size=2",
    ]
    if nproc == 1:
        cmd = [PYTHON, PROBE, *map(str, args)]
    else:
        cmd = launch_cmd(root / f"log_{name}", PROBE, *args, nproc=nproc)
    proc = subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )
    log = proc.stdout + proc.stderr if nproc == 1 else worker_logs(root / f"log_{name}")[0]
    assert proc.returncode == 0, log[-3000:]
    with open(f"{out}.json") as handle:
        return json.load(handle)["COCOMetric"]["bbox"], out / "bbox.json", log


def test_sharded_evaluation_equals_one_process(tiny, reference, tmp_path):
    weights = reference / "model_final"
    stats_1, bbox_1, _ = _eval(tmp_path, tiny, "one", weights, 1)
    stats_2, bbox_2, log = _eval(tmp_path, tiny, "two", weights, 2)
    # 4 batches (2, 2, 2, 1 images) dealt to 2 ranks: 2 each, no image twice
    assert "evaluated 7 images (4 batches) on 2 process(es)" in log
    assert "batches per rank [2, 2]" in log
    assert stats_1[0] > 0.0  # a model that finds something: the comparison means something
    np.testing.assert_allclose(stats_2, stats_1, rtol=0, atol=1e-6)
    with open(bbox_1) as a, open(bbox_2) as b:
        dets_1, dets_2 = json.load(a), json.load(b)
    assert len({d["image_id"] for d in dets_1}) == 7
    assert dets_2 == dets_1  # the same detections in the same order


def test_a_failing_rank_stops_every_rank_with_its_error(tiny, tmp_path):
    # rank 1 raises at iteration 2 and its process stays alive (as a rank on another machine
    # whose peers would wait in NCCL until its timeout); rank 0 is waiting in an all-reduce.
    # The wait's limit is a hang guard (the run takes ~10-30 s), not a measure of promptness.
    node0, node1 = _two_nodes(tmp_path, tiny, "fail", "hold:1:2")
    try:
        code = node0.wait(timeout=300)
    finally:
        for proc in (node0, node1):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log0 = worker_logs(tmp_path / "log_fail_0")[0]
    log1 = worker_logs(tmp_path / "log_fail_1")[0]
    error = "ValueError: probe: rank 1 fails at iteration 2"
    assert error in log1
    assert code != 0
    assert "a rank of this run failed: rank 1 on " in log0 and error in log0, log0[-3000:]
    # without the guard, gloo ends rank 0's wait after 30 s with a bare TIMEOUT naming no cause
    # (NCCL would wait 30 minutes): these lines, not the time taken, show the guard stopped it
    assert "Stopping rank 0 as well" in log0


def test_a_data_error_in_sharded_evaluation_stops_every_rank(tiny, reference, tmp_path):
    # one undecodable val image: the rank whose batch holds it tells the other at the gather,
    # and both stop with the same error naming the rank and the file
    import shutil

    data = tmp_path / "data"
    shutil.copytree(os.path.join(os.path.dirname(tiny), "data", "val"), data / "val")
    shutil.copytree(
        os.path.join(os.path.dirname(tiny), "data", "annotations"), data / "annotations"
    )
    bad = data / "val" / "000003.jpg"
    bad.write_bytes(b"garbage")
    cmd = launch_cmd(
        tmp_path / "log",
        PROBE,
        "none",
        "eval",
        "-c",
        tiny,
        "--output_eval",
        tmp_path / "eval",
        "-o",
        f"weights={reference / 'model_final'}",
        "EvalReader.batch_size=2",
        f"EvalDataset.dataset_dir={data}",
        # 'report' (the configs' default) leaves the image out; 'raise' stops
        "EvalDataset.on_decode_error=raise",
    )
    proc = subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )  # a hang guard: a rank left waiting would hang here
    logs = worker_logs(tmp_path / "log")
    assert proc.returncode != 0
    error = re.compile(
        r"EvaluationError: tiny: evaluation failed on 1 of 2 ranks: rank \d: "
        rf"ImageDecodeError: cannot decode image file {re.escape(str(bad))} "
    )
    # both logs name the failing rank and file: neither rank waited out the gather's timeout
    for log in logs:
        assert error.search(log), log[-3000:]
