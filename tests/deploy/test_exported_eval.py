"""Evaluation through the model exported in memory (tools/eval.py --engine inference) against
the dygraph model: the same detections up to the kernels' rounding, in process and through the
tool (the same COCO AP)."""

import json
import os

import numpy as np
import paddle
import pytest

from _deploy_helpers import (
    DEMO_CONFIG,
    REPO,
    global_config_restored,
    reinstate_global_config,
    run_process,
)

SCORE_ATOL, BOX_ATOL = 1e-4, 0.01  # as the oneDNN agreement of the predictor tests


def _assert_twins(reference, candidate):
    """Every reference row (label, score, x1, y1, x2, y2) has a candidate row of its label
    within the tolerances, and the scores agree as sorted lists."""
    assert reference.shape == candidate.shape
    np.testing.assert_allclose(
        np.sort(reference[:, 1]), np.sort(candidate[:, 1]), rtol=0, atol=SCORE_ATOL
    )
    for row in reference:
        twins = candidate[candidate[:, 0] == row[0]]
        score_gap = np.abs(twins[:, 1] - row[1])
        box_gap = np.abs(twins[:, 2:] - row[2:]).max(axis=1)
        assert np.any((score_gap <= SCORE_ATOL) & (box_gap <= BOX_ATOL)), row


@pytest.fixture
def demo_setup(exported):
    """(the demo config as ppdet's global config, the dygraph model with the export's
    weights, a padded batch of two images of different sizes as tensors)."""
    from ppdet.core import workspace

    from ppdet_dac.deploy.infer_config import InferConfig
    from ppdet_dac.deploy.preprocess import Preprocessor

    with global_config_restored():
        reinstate_global_config(exported.cfg)
        model = exported.dygraph_model()  # (restores the global config it found)
        feeds = Preprocessor(InferConfig(exported.model_dirs["op"]).preprocess).batch(
            exported.images
        )
        yield workspace.global_config, model, {k: paddle.to_tensor(v) for k, v in feeds.items()}


def test_exported_model_gives_the_dygraph_detections(demo_setup):
    from ppdet_dac.deploy.exported_eval import ExportedModel

    cfg, model, data = demo_setup
    with paddle.no_grad():
        reference = model(data)
    exported = ExportedModel(cfg, model)
    try:
        folder = exported._folder.name
        assert sorted(os.listdir(folder)) == ["infer_cfg.yml", "model.json", "model.pdiparams"]
        out = exported(data)
        np.testing.assert_array_equal(out["bbox_num"], reference["bbox_num"].numpy())
        _assert_twins(reference["bbox"].numpy(), out["bbox"])
        # the model it was given is unchanged: still the dygraph evaluation's model
        assert not model.exclude_post_process
        with paddle.no_grad():
            again = model(data)
        np.testing.assert_array_equal(again["bbox"].numpy(), reference["bbox"].numpy())
        # an unpadded batch without pad_mask: every pixel counts as image
        one = {k: v[:1] for k, v in data.items()}
        h, w = (int(s) for s in one["im_shape"][0])
        one = {
            "image": one["image"][:, :, :h, :w],
            **{k: one[k] for k in ("im_shape", "scale_factor")},
        }
        with_mask = exported(dict(one, pad_mask=paddle.ones([1, h, w])))
        np.testing.assert_array_equal(exported(one)["bbox"], with_mask["bbox"])
    finally:
        exported.close()
    assert not os.path.exists(folder)


def test_eval_tool_engines_agree(exported, tmp_path):
    """tools/eval.py with --engine inference: the dygraph run's detections and AP, with no
    TestDataset annotation file there (the class names come from EvalDataset's)."""
    runs = {}
    for engine in ("dygraph", "inference"):
        out = tmp_path / engine
        proc = run_process(
            [
                os.path.join(REPO, "tools", "eval.py"),
                "-c",
                DEMO_CONFIG,
                "--engine",
                engine,
                "--output_eval",
                str(out),
                "-o",
                f"weights={exported.weights}",
                f"EvalDataset.dataset_dir={exported.data_dir}",
                f"TestDataset.dataset_dir={tmp_path / 'absent'}",
            ],
            env={"OMP_NUM_THREADS": "1"},
        )
        log = proc.stdout + proc.stderr
        assert ("evaluating with Paddle Inference" in log) == (engine == "inference")
        (line,) = [s for s in log.splitlines() if "box AP " in s]
        detections = json.loads((out / "bbox.json").read_text())
        rows = np.array(
            [[d["image_id"], d["category_id"], d["score"], *d["bbox"]] for d in detections]
        )
        runs[engine] = (line.split("INFO: ")[1], rows)
    (ap_dygraph, dygraph), (ap_inference, inference) = runs["dygraph"], runs["inference"]
    assert ap_inference == ap_dygraph
    for image in np.unique(dygraph[:, 0]):
        _assert_twins(dygraph[dygraph[:, 0] == image, 1:], inference[inference[:, 0] == image, 1:])
