"""Query affinity: how many decoder queries sit on each object (``tools/analyze_queries.py``).

For every ground-truth object, count the queries of a decoder stream (O-decoder, and the
C-decoder of a DAC model) whose last-layer box has IoU > t with it, optionally only the queries
whose score for the object's class is >= a gate; average over all objects of a dataset split.
DAC-DETR's paper plots this per epoch for t = 0.6 / 0.7 / 0.8
(docs/algorithm.md#12-queries-per-object): the C-decoder, which has no self-attention, gathers
several queries per object, the one-to-one O-decoder about one.

The counting (``count_queries_per_gt``, ``QueryAffinityCounter``) is plain numpy; the model
side (``collect_predictions``) and the outputs (``write_csv``, ``plot_curves``) build on it.
"""

import csv
import os
import re

import numpy as np
from ppdet.utils.logger import setup_logger

from ppdet_dac.engine.checkpoint import ITER_PREFIX, NOT_RESUMABLE
from ppdet_dac.interop.paddle_files import read_file

logger = setup_logger(__name__)

__all__ = [
    "STREAMS",
    "CSV_FIELDS",
    "box_iou_xyxy",
    "count_queries_per_gt",
    "QueryAffinityCounter",
    "checkpoint_epochs",
    "write_csv",
    "read_csv",
    "plot_curves",
    "collect_predictions",
    "build_eval_loader",
    "analyze_checkpoint",
]

STREAMS = {"o": "O-decoder", "c": "C-decoder"}
CSV_FIELDS = (
    "model",
    "checkpoint",
    "epoch",
    "stream",
    "iou",
    "score_gate",
    "mean_queries_per_object",
    "num_objects",
)
FINAL_NAME = "model_final"


def box_iou_xyxy(boxes1, boxes2):
    """Pairwise IoU of [N, 4] and [M, 4] xyxy boxes -> [N, M] float64 (0 where the union is 0)."""
    a = np.asarray(boxes1, dtype=np.float64).reshape([-1, 4])
    b = np.asarray(boxes2, dtype=np.float64).reshape([-1, 4])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def count_queries_per_gt(
    pred_boxes, gt_boxes, thresholds, pred_scores=None, gt_labels=None, score_gate=None
):
    """Per GT, the number of queries with IoU strictly greater than each threshold.

    pred_boxes: [Q, 4] xyxy; gt_boxes: [n, 4] xyxy (same coordinate frame);
    thresholds: T IoU thresholds; score_gate: None (off) or a minimum score: a query counts
    for GT g only when pred_scores[q, gt_labels[g]] >= score_gate (pred_scores: [Q, C]
    probabilities, gt_labels: [n] class ids of the same class space).
    Returns int64 [T, n].
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape([-1])
    iou = box_iou_xyxy(gt_boxes, pred_boxes)  # [n, Q]
    hits = iou[None] > thresholds[:, None, None]  # [T, n, Q]
    if score_gate is not None:
        if pred_scores is None or gt_labels is None:
            raise ValueError("score_gate needs pred_scores and gt_labels")
        scores = np.asarray(pred_scores, dtype=np.float64)
        labels = np.asarray(gt_labels, dtype=np.int64).reshape([-1])
        if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
            raise ValueError(
                f"gt_labels must lie in [0, {scores.shape[1]}), got "
                f"[{labels.min()}, {labels.max()}]"
            )
        hits = hits & (scores[:, labels].T >= score_gate)[None]
    return hits.sum(axis=2).astype(np.int64)


class QueryAffinityCounter(object):
    """Accumulates per-GT query counts over images, per stream and IoU threshold."""

    def __init__(self, thresholds, score_gate=None):
        self.thresholds = [float(t) for t in thresholds]
        if not self.thresholds:
            raise ValueError("at least one IoU threshold is needed")
        self.score_gate = score_gate
        self.totals = {}
        self.num_objects = {}

    def update(self, stream, pred_boxes, gt_boxes, pred_scores=None, gt_labels=None):
        """Add one image of ``stream``: boxes as in ``count_queries_per_gt``."""
        counts = count_queries_per_gt(
            pred_boxes, gt_boxes, self.thresholds, pred_scores, gt_labels, self.score_gate
        )
        self.totals[stream] = self.totals.get(stream, 0) + counts.sum(axis=1)
        self.num_objects[stream] = self.num_objects.get(stream, 0) + counts.shape[1]

    def result(self):
        """{stream: ({threshold: mean queries per object}, number of objects)}; the mean is NaN
        when no object was seen."""
        out = {}
        for stream, total in self.totals.items():
            n = self.num_objects[stream]
            means = (
                np.asarray(total, dtype=np.float64) / n
                if n
                else np.full(len(self.thresholds), np.nan)
            )
            out[stream] = (dict(zip(self.thresholds, means.tolist())), n)
        return out

    def rows(self, model="", checkpoint="", epoch=""):
        """CSV rows (dicts with CSV_FIELDS) of the current result."""
        gate = "off" if self.score_gate is None else f"{self.score_gate:g}"
        rows = []
        for stream, (means, n) in sorted(self.result().items()):
            for t, mean in means.items():
                rows.append(
                    {
                        "model": model,
                        "checkpoint": checkpoint,
                        "epoch": epoch,
                        "stream": stream,
                        "iou": f"{t:g}",
                        "score_gate": gate,
                        "mean_queries_per_object": f"{mean:.6f}",
                        "num_objects": n,
                    }
                )
        return rows


def checkpoint_epochs(folder):
    """The ``.pdparams`` files of ``folder`` as (epoch, path), sorted by epoch, epochs counted
    from 0 as in the training log and the checkpoint names (ppdet's ``Epoch: [0]``,
    ``0.pdparams``).

    The epoch is the last number in the file name (``3.pdparams``, ``epoch_3.pdparams``);
    ``model_final.pdparams`` (ppdet's name for the last epoch) is the epoch its ``.pdstate``
    records (a ppdet_dac checkpoint), else the one after the highest number. ``best_model`` and
    the iteration checkpoints ``iter_<n>`` are left out (logged); other files without a number
    are skipped with a warning. Raises FileNotFoundError when the folder is missing or holds no
    usable checkpoint.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    numbered, final, left_out = [], None, []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext != ".pdparams":
            continue
        path = os.path.join(folder, name)
        digits = re.findall(r"\d+", stem)
        if stem == FINAL_NAME:
            final = path
        elif stem in NOT_RESUMABLE or stem.startswith(ITER_PREFIX):
            left_out.append(name)
        elif digits:
            numbered.append((int(digits[-1]), path))
        else:
            logger.warning(f"{path}: no epoch number in the file name; skipped")
    if left_out:
        logger.info(f"{folder}: {', '.join(left_out)} left out (not an epoch's checkpoint)")
    numbered.sort()
    epochs = [e for e, _ in numbered]
    if final is not None:
        epochs.append(_final_epoch(final, epochs))
        numbered.append((epochs[-1], final))
    if len(set(epochs)) != len(epochs):
        dup = sorted({e for e in epochs if epochs.count(e) > 1})
        raise ValueError(f"{folder}: several checkpoints for epoch(s) {dup}")
    if not numbered:
        raise FileNotFoundError(f"{folder}: no .pdparams checkpoints")
    return sorted(numbered)


def _final_epoch(path, epochs):
    """The epoch of ``model_final.pdparams``: from its ``.pdstate`` when there is one."""
    state_path = path[: -len(".pdparams")] + ".pdstate"
    if os.path.isfile(state_path):
        state = read_file(state_path)
        if isinstance(state, dict) and "epochs_done" in state and not state.get("epoch_step"):
            return int(state["epochs_done"]) - 1
    return epochs[-1] + 1 if epochs else 0


def write_csv(rows, path):
    """Write rows (dicts with CSV_FIELDS) to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    logger.info(f"wrote {len(rows)} rows to {path}")


def read_csv(path):
    """Rows written by ``write_csv``; ValueError naming the file when columns are missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(CSV_FIELDS)}")
        return list(reader)


def plot_curves(rows, path, title="Queries per object above an IoU threshold"):
    """One panel per IoU threshold: mean queries per object against epoch, one line per
    (model, stream). Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no rows to plot")
    thresholds = sorted({float(r["iou"]) for r in rows})
    fig, axes = plt.subplots(
        1, len(thresholds), figsize=(4.2 * len(thresholds), 3.6), squeeze=False
    )
    series = sorted({(r["model"], r["stream"]) for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    model_names = sorted({m for m, _ in series})
    for ax, t in zip(axes[0], thresholds):
        for model, stream in series:
            pts = [
                (
                    int(r["epoch"]) if str(r["epoch"]) != "" else 0,
                    float(r["mean_queries_per_object"]),
                )
                for r in rows
                if r["model"] == model and r["stream"] == stream and float(r["iou"]) == t
            ]
            pts.sort()
            color = colors[model_names.index(model) % len(colors)]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o" if stream == "o" else "s",
                linestyle="-" if stream == "o" else "--",
                color=color,
                label=f"{model} {STREAMS.get(stream, stream)}",
            )
        ax.set_title(f"IoU > {t:g}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("queries per object")
    axes[0][-1].legend(fontsize=8)
    gates = sorted({r["score_gate"] for r in rows})
    fig.suptitle(title + ("" if gates == ["off"] else f" (score gate {', '.join(gates)})"))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    logger.info(f"wrote {path}")


# -- model side --------------------------------------------------------------------------------
def build_eval_loader(cfg, split="eval", batch_size=1):
    """A loader over the ``split`` ('eval' or 'train') dataset of ``cfg`` with the (deterministic)
    EvalReader transforms, yielding the GT boxes (xyxy pixels of the resized image) too."""
    from ppdet.core.workspace import create

    names = {"eval": "EvalDataset", "train": "TrainDataset"}
    if split not in names:
        raise ValueError(f"split must be one of {sorted(names)}, got {split!r}")
    dataset = create(names[split])()
    dataset.data_fields = ["image", "gt_bbox", "gt_class", "is_crowd"]
    cfg["EvalReader"]["collate_batch"] = False
    cfg["EvalReader"]["batch_size"] = batch_size
    return create("EvalReader")(dataset, cfg.get("worker_num", 0)), dataset


def collect_predictions(model, data):
    """Last-layer predictions of one loader batch, per image, in the GT's pixel frame.

    Returns a list (per image) of dicts: 'gt_boxes' [n, 4] xyxy, 'gt_labels' [n] (model class
    ids), and per stream ('o', and 'c' for a DAC model) '<s>_boxes' [Q, 4] xyxy and
    '<s>_scores' [Q, C] sigmoid probabilities.
    """
    import paddle
    import paddle.nn.functional as F

    model.eval()
    pad_mask = (
        data["pad_mask"] < 0.5
        if data.get("pad_mask") is not None
        else paddle.zeros([data["image"].shape[0]] + list(data["image"].shape[2:]), dtype="bool")
    )
    streams = ["o", "c"] if model.transformer.use_dac else ["o"]
    with paddle.no_grad():
        feats = model.backbone({"image": data["image"]})
        out = model.transformer(feats, pad_mask, run_c_stream="c" in streams)
    valid = ~pad_mask.numpy()
    keys = {"o": ("logits", "boxes"), "c": ("logits_c", "boxes_c")}
    images = []
    for b in range(valid.shape[0]):
        h = float(valid[b].any(axis=1).sum())
        w = float(valid[b].any(axis=0).sum())
        scale = np.array([w, h, w, h], dtype=np.float64)
        gt_class = data["gt_class"][b].numpy().reshape([-1]).astype("int64")
        item = {
            "gt_boxes": data["gt_bbox"][b].numpy().reshape([-1, 4]).astype(np.float64),
            "gt_labels": model.to_model_ids.numpy()[gt_class],
        }
        for s in streams:
            logits, boxes = out[keys[s][0]][-1, b], out[keys[s][1]][-1, b]
            cxcywh = boxes.numpy().astype(np.float64)
            xyxy = (
                np.concatenate(
                    [cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1
                )
                * scale
            )
            item[f"{s}_boxes"] = xyxy
            item[f"{s}_scores"] = F.sigmoid(logits).numpy()
        images.append(item)
    return images, streams


def analyze_checkpoint(model, loader, thresholds, score_gate=None, max_images=None, desc=None):
    """Run ``model`` over ``loader`` and return the filled ``QueryAffinityCounter``."""
    from tqdm import tqdm

    counter = QueryAffinityCounter(thresholds, score_gate)
    seen = 0
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    if max_images is not None:
        total = min(total, max_images) if total is not None else max_images
    with tqdm(total=total, desc=desc, unit="img") as bar:
        for data in loader:
            images, streams = collect_predictions(model, data)
            for item in images:
                if max_images is not None and seen >= max_images:
                    break
                for s in streams:
                    counter.update(
                        s,
                        item[f"{s}_boxes"],
                        item["gt_boxes"],
                        item[f"{s}_scores"],
                        item["gt_labels"],
                    )
                seen += 1
                bar.update(1)
            if max_images is not None and seen >= max_images:
                break
    return counter
