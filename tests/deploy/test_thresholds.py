"""Inference-time thresholds on an exported model: --nms_threshold gives what an export at that
threshold gives (re-run on the graph's NMS candidates), --score_threshold drops rows, the
coco_raw label map, exports without the candidates; the graph's own outputs stay the
evaluation's."""

import os
import shutil
import types

import numpy as np
import pytest
import yaml

from _deploy_helpers import DEMO_CONFIG, EXPORT_MAX_SIZE, EXPORT_SIZE, global_config_restored

STRICT = 0.2  # the demo exports at 0.8; on the random demo weights 0.2 changes the top 100


@pytest.fixture(scope="module")
def strict_export(exported, tmp_path_factory):
    """The session's weights exported with nms_iou_threshold STRICT (the global config is put
    back afterwards)."""
    from ppdet_dac.engine import load_checked_config
    from ppdet_dac.deploy.export import export_model

    with global_config_restored():
        cfg = load_checked_config(
            DEMO_CONFIG,
            {
                "TestDataset": {"dataset_dir": exported.data_dir},
                "eval_size": EXPORT_SIZE,
                "eval_max_size": EXPORT_MAX_SIZE,
                "DACNMSPostProcess": {"nms_iou_threshold": STRICT},
            },
        )
        out = export_model(
            cfg, exported.weights, str(tmp_path_factory.mktemp("strict") / "model"), "op"
        )
    with open(os.path.join(out, "infer_cfg.yml")) as f:
        assert yaml.safe_load(f)["NMS"]["nms_threshold"] == STRICT
    return out


def test_nms_threshold_equals_an_export_at_that_threshold(exported, strict_export):
    """The 0.8 export run with nms_threshold 0.2 gives bit for bit the 0.2 export's detections
    (one image at a time and a padded batch of two), which differ from the 0.8 ones; the
    graph's own outputs are untouched."""
    from ppdet_dac.deploy.predictor import Predictor

    loose = Predictor(exported.model_dirs["op"])
    rerun = Predictor(exported.model_dirs["op"], nms_threshold=STRICT)
    reference = Predictor(strict_export)
    batches = [[p] for p in exported.images] + [exported.images]
    for images in batches:
        feeds = reference.preprocessor.batch(images)
        expected = reference.run(feeds)
        got = rerun.run(feeds)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
        default = loose.run(feeds)
        assert default[0].shape != got[0].shape or not np.array_equal(default[0], got[0])
        np.testing.assert_array_equal(
            rerun.run_model(feeds)["bbox"], loose.run_model(feeds)["bbox"]
        )
    # the exported threshold itself is the graph's own selection
    same = Predictor(exported.model_dirs["op"], nms_threshold=0.8)
    for a, b in zip(same.predict(exported.images), loose.predict(exported.images)):
        np.testing.assert_array_equal(a, b)


def test_score_threshold_drops_the_lower_rows(exported):
    from ppdet_dac.deploy.predictor import Predictor

    full = Predictor(exported.model_dirs["op"]).predict(exported.images)
    cut = float(np.median(np.concatenate(full)[:, 1]))
    filtered = Predictor(exported.model_dirs["op"], score_threshold=cut).predict(exported.images)
    for all_rows, rows in zip(full, filtered):
        assert 0 < len(rows) < len(all_rows)
        np.testing.assert_array_equal(rows, all_rows[all_rows[:, 1] >= cut])


def test_reselect_maps_coco_raw_labels_as_the_model_does():
    """reselect's label_map step gives what DACDETR._to_dataset_labels gives on the same
    selection: 91 raw COCO ids, unmapped ones dropped after the top-k cut, counts per image."""
    import paddle

    from ppdet_dac.data.coco_ids import COCO_RAW_CATEGORY_IDS
    from ppdet_dac.deploy.postprocess import reselect
    from ppdet_dac.modeling.detector import DACDETR
    from ppdet_dac.modeling.post_process import DACNMSPostProcess

    rng = np.random.default_rng(5)
    to_dataset = np.full(91, -1, np.int64)
    to_dataset[np.asarray(COCO_RAW_CATEGORY_IDS)] = np.arange(len(COCO_RAW_CATEGORY_IDS))
    logits = paddle.to_tensor(rng.normal(-2, 1.5, (2, 50, 91)).astype(np.float32))
    boxes = paddle.to_tensor(rng.uniform(0.1, 0.6, (2, 50, 4)).astype(np.float32))
    im_shape = paddle.to_tensor(np.array([[480, 640], [512, 384]], np.float32))
    scale = paddle.to_tensor(np.array([[0.75, 0.75], [1.0, 1.0]], np.float32))
    post = DACNMSPostProcess(2000, 0.6, 120)
    nms_boxes, nms_scores = post.candidates(logits, boxes, im_shape, scale)
    model = types.SimpleNamespace(
        class_id_mode="coco_raw", to_dataset_ids=paddle.to_tensor(to_dataset)
    )
    expected = DACDETR._to_dataset_labels(model, *post.select(nms_boxes, nms_scores))
    nms = {
        "nms_top_k": 2000,
        "keep_top_k": 120,
        "nms_threshold": 0.8,
        "label_map": to_dataset.tolist(),
    }
    bbox, bbox_num = reselect(nms_boxes.numpy(), nms_scores.numpy(), nms, 0.6)
    assert bbox_num.sum() < 240 and (bbox[:, 0] >= 0).all()  # some rows were dropped
    np.testing.assert_array_equal(bbox_num, expected["bbox_num"].numpy())
    np.testing.assert_array_equal(bbox, expected["bbox"].numpy())


def test_export_without_candidates_refuses_nms_threshold(exported, tmp_path):
    """An infer_cfg.yml without output_names / NMS (as exports made before them): the first two
    outputs serve as before; nms_threshold is refused naming the file."""
    from ppdet_dac.deploy.predictor import Predictor

    old = tmp_path / "old"
    shutil.copytree(exported.model_dirs["op"], old)
    with open(old / "infer_cfg.yml") as f:
        cfg = yaml.safe_load(f)
    del cfg["output_names"], cfg["NMS"]
    with open(old / "infer_cfg.yml", "w") as f:
        yaml.safe_dump(cfg, f)
    current = Predictor(exported.model_dirs["op"]).predict(exported.images[:1])[0]
    np.testing.assert_array_equal(Predictor(str(old)).predict(exported.images[:1])[0], current)
    with pytest.raises(
        ValueError, match=f"{old / 'infer_cfg.yml'}: this export has no NMS candidates output"
    ):
        Predictor(str(old), nms_threshold=0.5)
    with pytest.raises(ValueError, match="nms_threshold must be in"):
        Predictor(exported.model_dirs["op"], nms_threshold=1.5)
