"""Query affinity counts (ppdet_dac/analysis/queries.py) against hand counts, its CSV / PNG
outputs, checkpoint ordering, the pixel frame of the predictions, and tools/analyze_queries.py
on the demo model."""

import csv
import json
import os
import sys

import numpy as np
import paddle
import pytest

from _common import REPO

from ppdet_dac.analysis.queries import (
    QueryAffinityCounter,
    analyze_checkpoint,
    checkpoint_epochs,
    count_queries_per_gt,
    plot_curves,
    read_csv,
    write_csv,
)

CONFIG = os.path.join(REPO, "configs", "demo", "dac_demo.yml")

# Two GT: A = [0, 0, 10, 10] (class 0) and B = [20, 20, 30, 30] (class 1). Queries and their IoU:
GT = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float64)
GT_LABELS = np.array([0, 1])
PRED = np.array(
    [
        [0, 0, 10, 10],  # q0: IoU(A) = 1
        [0, 0, 10, 8],  # q1: IoU(A) = 80 / 100 = 0.8 exactly (not > 0.8)
        [0, 0, 10, 6.5],  # q2: IoU(A) = 0.65
        [20, 20, 30, 30],  # q3: IoU(B) = 1
        [20, 20, 30, 27.5],  # q4: IoU(B) = 0.75
        [100, 100, 110, 110],  # q5: touches nothing
        [5, 0, 25, 10],  # q6: IoU(A) = 50 / 250 = 0.2, IoU(B) = 0
    ],
    dtype=np.float64,
)
# score of each query for class 0 and class 1
SCORES = np.array(
    [[0.9, 0.1], [0.3, 0.1], [0.6, 0.1], [0.99, 0.2], [0.1, 0.7], [0.9, 0.9], [0.9, 0.9]]
)
# hand counts [threshold, GT] for IoU > 0.6 / 0.7 / 0.8:
#   A: {q0, q1, q2} / {q0, q1} / {q0};   B: {q3, q4} / {q3, q4} / {q3}
HAND = np.array([[3, 2], [2, 2], [1, 1]])
# with the score gate 0.5 on the GT's class: A keeps q0 (0.9), q2 (0.6); B keeps q4 (0.7) only
# (q3 scores 0.99 but for class 0, not B's class)
HAND_GATED = np.array([[2, 1], [1, 1], [1, 0]])


def test_counts_equal_hand_counts():
    counts = count_queries_per_gt(PRED, GT, [0.6, 0.7, 0.8])
    np.testing.assert_array_equal(counts, HAND)
    gated = count_queries_per_gt(PRED, GT, [0.6, 0.7, 0.8], SCORES, GT_LABELS, score_gate=0.5)
    np.testing.assert_array_equal(gated, HAND_GATED)
    # threshold 0.15 also counts q6 for A, 0.25 does not
    np.testing.assert_array_equal(count_queries_per_gt(PRED, GT, [0.15, 0.25]), [[4, 2], [3, 2]])


def test_counter_averages_per_object():
    counter = QueryAffinityCounter([0.6, 0.7, 0.8])
    counter.update("o", PRED, GT)
    # second image: one GT that no query reaches, one GT hit twice above 0.6 (IoU 1 and 0.72)
    gt2 = np.array([[50, 50, 60, 60], [0, 0, 10, 10]], dtype=np.float64)
    pred2 = np.array([[0, 0, 10, 10], [0, 0, 10, 7.2], [200, 200, 201, 201]], dtype=np.float64)
    counter.update("o", pred2, gt2)
    counter.update("c", PRED, GT)
    result = counter.result()
    means, n = result["o"]
    assert n == 4
    # per threshold: (A + B + 0 + second-image hits) / 4
    assert means == pytest.approx(
        {0.6: (3 + 2 + 0 + 2) / 4, 0.7: (2 + 2 + 0 + 2) / 4, 0.8: (1 + 1 + 0 + 1) / 4}
    )
    assert result["c"][1] == 2 and result["c"][0][0.7] == pytest.approx(2.0)


def _rows():
    counter = QueryAffinityCounter([0.6, 0.8])
    counter.update("o", PRED, GT)
    counter.update("c", PRED, GT)
    rows = counter.rows(model="dac", checkpoint="a/1.pdparams", epoch=1)
    later = QueryAffinityCounter([0.6, 0.8])
    later.update("o", PRED[:1], GT)
    later.update("c", PRED[:5], GT)
    return rows + later.rows(model="dac", checkpoint="a/2.pdparams", epoch=2)


def test_csv_content(tmp_path):
    write_csv(_rows(), str(tmp_path / "q.csv"))
    with open(tmp_path / "q.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = {(r["epoch"], r["stream"], r["iou"]): float(r["mean_queries_per_object"]) for r in rows}
    assert len(rows) == 8
    assert table[("1", "o", "0.6")] == pytest.approx((3 + 2) / 2)
    assert table[("1", "o", "0.8")] == pytest.approx((1 + 1) / 2)
    assert table[("2", "o", "0.6")] == pytest.approx((1 + 0) / 2)  # only q0 left
    assert table[("2", "c", "0.6")] == pytest.approx((3 + 2) / 2)  # q0..q4
    assert {r["num_objects"] for r in rows} == {"2"} and {r["score_gate"] for r in rows} == {"off"}
    assert read_csv(str(tmp_path / "q.csv")) == rows
    (tmp_path / "bad.csv").write_text("model,epoch\nx,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column"):
        read_csv(str(tmp_path / "bad.csv"))


def _assert_png(path):
    import matplotlib.image as mpimg

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 0
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.01


def test_png_is_written(tmp_path):
    plot_curves(_rows(), str(tmp_path / "q.png"))
    _assert_png(tmp_path / "q.png")


def test_checkpoint_order(tmp_path):
    for name in (
        "10.pdparams",
        "2.pdparams",
        "epoch_1.pdparams",
        "model_final.pdparams",
        "notes.txt",
        "best.pdparams",
        "2.pdopt",
    ):
        (tmp_path / name).write_bytes(b"")
    order = [(e, os.path.basename(p)) for e, p in checkpoint_epochs(str(tmp_path))]
    assert order == [
        (1, "epoch_1.pdparams"),
        (2, "2.pdparams"),
        (10, "10.pdparams"),
        (11, "model_final.pdparams"),
    ]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        checkpoint_epochs(str(tmp_path / "nowhere"))


class _FakeTransformer(object):
    """Returns, for every image, k copies of each GT box (normalised to the unpadded image)
    followed by far-away queries, in both streams."""

    use_dac = True

    def __init__(self, normalised_gt, num_queries=8, copies=2):
        self.normalised_gt, self.num_queries, self.copies = normalised_gt, num_queries, copies

    def __call__(self, feats, mask, run_c_stream=False):
        boxes = np.tile(
            np.array([[0.95, 0.95, 0.01, 0.01]]), (len(self.normalised_gt), self.num_queries, 1)
        )
        for b, gts in enumerate(self.normalised_gt):
            boxes[b, : len(gts) * self.copies] = np.repeat(gts, self.copies, axis=0)
        boxes = paddle.to_tensor(boxes[None].astype("float32"))
        logits = paddle.zeros([1, boxes.shape[1], self.num_queries, 2])
        return {"logits": logits, "boxes": boxes, "logits_c": logits, "boxes_c": boxes}


class _FakeModel(object):
    def __init__(self, transformer):
        self.transformer = transformer
        self.to_model_ids = paddle.to_tensor(np.array([0, 1], dtype="int64"))

    def backbone(self, inputs):
        return None

    def eval(self):
        return self


def test_predictions_use_the_unpadded_pixel_frame():
    """A box predicted on the GT (normalised by the *unpadded* size) counts above 0.8; had the
    padded size been used, the 96 x 64 image padded to 128 x 128 would shrink it."""
    gt_px = [
        np.array([[10, 20, 40, 60]], dtype="float32"),
        np.array([[0, 0, 32, 32], [16, 16, 48, 32]], dtype="float32"),
    ]
    unpadded = [(96, 64), (64, 128)]  # (h, w)
    norm = []
    for boxes, (h, w) in zip(gt_px, unpadded):
        cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        norm.append(cxcywh / np.array([w, h, w, h]))
    pad_mask = np.zeros((2, 128, 128), dtype="float32")
    for b, (h, w) in enumerate(unpadded):
        pad_mask[b, :h, :w] = 1.0
    batch = {
        "image": paddle.zeros([2, 3, 128, 128]),
        "pad_mask": paddle.to_tensor(pad_mask),
        "gt_bbox": [paddle.to_tensor(g) for g in gt_px],
        "gt_class": [
            paddle.to_tensor(np.array([[1]], dtype="int32")),
            paddle.to_tensor(np.array([[0], [1]], dtype="int32")),
        ],
    }
    model = _FakeModel(_FakeTransformer(norm, copies=2))
    counter = analyze_checkpoint(model, [batch], [0.8, 0.99])
    for stream in ("o", "c"):
        means, n = counter.result()[stream]
        assert n == 3 and means[0.8] == pytest.approx(2.0) and means[0.99] == pytest.approx(2.0)
    limited = analyze_checkpoint(model, [batch], [0.8], max_images=1)
    assert limited.result()["o"][1] == 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny demo split (3 val images) and two random checkpoints of the demo model."""
    import ppdet_dac  # noqa: F401
    from ppdet.core.workspace import create
    from ppdet_dac.data.demo_data import make_demo_data
    from ppdet_dac.engine import load_checked_config

    tmp = tmp_path_factory.mktemp("queries")
    make_demo_data(str(tmp / "data"), num_train=1, num_val=3, num_empty_train=0)
    load_checked_config(CONFIG)
    ckpt = tmp / "ckpt"
    ckpt.mkdir()
    for epoch in (1, 2):
        paddle.seed(epoch)
        model = create("DACDETR")
        paddle.save(model.state_dict(), str(ckpt / f"epoch_{epoch}.pdparams"))
    return tmp


def test_cli_epochs_dir_and_single_checkpoint(demo):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import analyze_queries

    data = ["-o", f"EvalDataset.dataset_dir={demo / 'data'}"]
    common = ["-c", CONFIG, "--iou", "0.3", "0.5", "--max-images", "2"]
    rows = analyze_queries.main(
        common + data + ["--epochs-dir", str(demo / "ckpt"), "--out", str(demo / "curve")]
    )
    with open(demo / "data" / "annotations" / "instances_val.json") as f:
        anno = json.load(f)
    first_two = sorted(img["id"] for img in anno["images"])[:2]
    num_gt = sum(1 for a in anno["annotations"] if a["image_id"] in first_two)
    written = read_csv(str(demo / "curve.csv"))
    assert [(r["epoch"], r["stream"], r["iou"]) for r in written] == [
        (e, s, t) for e in ("1", "2") for s in ("c", "o") for t in ("0.3", "0.5")
    ]
    assert {int(r["num_objects"]) for r in written} == {num_gt}
    assert {r["model"] for r in written} == {"dac_demo"}
    _assert_png(demo / "curve.png")
    assert len(rows) == len(written)

    single = analyze_queries.main(
        common
        + [
            "-o",
            f"weights={demo / 'ckpt' / 'epoch_2'}",
            f"EvalDataset.dataset_dir={demo / 'data'}",
            "--label",
            "one",
            "--extra-csv",
            str(demo / "curve.csv"),
            "--out",
            str(demo / "single"),
        ]
    )
    same = {
        (r["stream"], r["iou"]): r["mean_queries_per_object"] for r in written if r["epoch"] == "2"
    }
    assert {(r["stream"], r["iou"]): r["mean_queries_per_object"] for r in single} == same
    assert len(read_csv(str(demo / "single.csv"))) == 4
    _assert_png(demo / "single.png")
    both = analyze_queries.main(
        [
            "-c",
            CONFIG,
            "--plot-only",
            "--extra-csv",
            str(demo / "curve.csv"),
            str(demo / "single.csv"),
            "--out",
            str(demo / "both"),
        ]
    )
    assert len(both) == len(written) + 4
    _assert_png(demo / "both.png")
