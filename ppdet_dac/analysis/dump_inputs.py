"""The inputs of a dump (``ppdet_dac.analysis.dump``, ``tools/dump_outputs.py``), read and
checked: the preprocessed input tensor, its padding mask and forced top-k indices (.npy), the
targets (T.json) and the denoising draws to replay (N.npz), and random draws in that layout."""

import json
import os

import numpy as np

from ppdet_dac.modeling.denoising import DNNoise

__all__ = [
    "DN_NOISE_KEYS",
    "load_input",
    "load_targets",
    "load_dn_noise",
    "make_dn_noise",
    "num_dn_rows",
]

DN_NOISE_KEYS = ("dn_label_noise_p", "dn_new_label", "dn_rand_sign", "dn_rand_part_raw")


def _load_npy(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    return np.load(path, allow_pickle=False)


def load_input(image_path, mask_path=None, topk_path=None, num_queries=None):
    """Read and check the input tensor [B, 3, H, W], the mask [B, H, W] (True = padding; all
    False when ``mask_path`` is None) and the optional forced top-k indices [B, num_queries]."""
    image = _load_npy(image_path, "input")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(
            f"{image_path}: input must have shape [B, 3, H, W], got {list(image.shape)}"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{image_path}: input must be a float array, got dtype {image.dtype}")
    b, _, h, w = image.shape
    if mask_path is None:
        mask = np.zeros([b, h, w], dtype=bool)
    else:
        mask = _load_npy(mask_path, "mask")
        if list(mask.shape) != [b, h, w]:
            raise ValueError(
                f"{mask_path}: mask must have shape {[b, h, w]} to match the input, "
                f"got {list(mask.shape)}"
            )
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError(
                    f"{mask_path}: mask must be bool (True = padding) or 0/1, got "
                    f"values {np.unique(mask)[:5].tolist()}"
                )
            mask = mask.astype(bool)
        if mask.all(axis=(1, 2)).any():
            raise ValueError(
                f"{mask_path}: image {int(np.argmax(mask.all(axis=(1, 2))))} is all padding"
            )
    topk = None
    if topk_path is not None:
        topk = _load_npy(topk_path, "top-k indices")
        if not np.issubdtype(topk.dtype, np.integer):
            raise ValueError(f"{topk_path}: top-k indices must be integers, got dtype {topk.dtype}")
        want = [b, num_queries] if num_queries is not None else [b, topk.shape[-1]]
        if list(topk.shape) != want:
            raise ValueError(
                f"{topk_path}: top-k indices must have shape {want} "
                f"([B, num_queries]), got {list(topk.shape)}"
            )
        topk = topk.astype("int64")
    return image, mask, topk


def load_targets(path, batch_size, num_classes, dtype="float32"):
    """T.json: a list, per image, of {"boxes": [[cx, cy, w, h], ...] normalised, "labels": [...]}
    with labels in the model's class space. Returns (labels list of int64 [n], boxes list of
    ``dtype`` [n, 4]) as numpy arrays; float64 keeps the JSON values without float32 rounding."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"targets file not found: {path}")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, list) or len(data) != batch_size:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ValueError(
            f"{path}: expected a list of {batch_size} images (one per input image), got {got}"
        )
    labels, boxes = [], []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"boxes", "labels"}:
            keys = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(
                f"{path}: image {i} must be a dict with keys 'boxes' and 'labels', got {keys}"
            )
        box = np.asarray(item["boxes"], dtype=dtype)
        box = box.reshape([0, 4]) if box.size == 0 else box
        lab = np.asarray(item["labels"], dtype="int64").reshape([-1])
        if box.ndim != 2 or box.shape[1] != 4 or box.shape[0] != lab.shape[0]:
            raise ValueError(
                f"{path}: image {i}: 'boxes' must be [n, 4] with n = len(labels) = "
                f"{lab.shape[0]}, got shape {list(box.shape)}"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise ValueError(
                f"{path}: image {i}: labels must lie in [0, {num_classes}), got "
                f"[{lab.min()}, {lab.max()}]"
            )
        if box.size and (box.min() < 0 or box.max() > 1 or (box[:, 2:] <= 0).any()):
            raise ValueError(
                f"{path}: image {i}: boxes must be normalised cxcywh in [0, 1] with "
                "positive width and height"
            )
        labels.append(lab)
        boxes.append(box)
    return labels, boxes


def num_dn_rows(gt_counts, num_denoising):
    """P = 2·G·T rows of the denoising draws for a batch with ``gt_counts`` GT per image
    (G = max(num_denoising // max_gt, 1), T = total GT); 0 without GT or denoising."""
    max_gt, total = max(gt_counts, default=0), sum(gt_counts)
    if max_gt == 0 or num_denoising <= 0:
        return 0
    return 2 * max(num_denoising // max_gt, 1) * total


def make_dn_noise(gt_counts, num_denoising, num_classes, label_noise_ratio=0.5, seed=0):
    """Random denoising draws for a batch, in the layout ``load_dn_noise`` reads (N.npz)."""
    rng = np.random.default_rng(seed)
    rows = num_dn_rows(gt_counts, num_denoising)
    p = rng.random(rows).astype("float32")
    chosen = int((p < label_noise_ratio * 0.5).sum())
    return {
        "dn_label_noise_p": p,
        "dn_new_label": rng.integers(0, num_classes, chosen).astype("int64"),
        "dn_rand_sign": rng.integers(0, 2, (rows, 4)).astype("float32"),
        "dn_rand_part_raw": rng.random((rows, 4)).astype("float32"),
    }


def load_dn_noise(path, gt_counts, num_denoising, num_classes, label_noise_ratio=0.5):
    """Read N.npz (the four CDN draws, docs/algorithm.md#4-contrastive-denoising) and check it
    against the batch; returns a ``DNNoise`` that replays it. Errors name the file, the key and
    the expected shape."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"denoising noise file not found: {path}")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    missing = [k for k in DN_NOISE_KEYS if k not in arrays]
    extra = sorted(set(arrays) - set(DN_NOISE_KEYS))
    if missing or extra:
        raise ValueError(
            f"{path}: expected keys {list(DN_NOISE_KEYS)}; missing {missing}, unexpected {extra}"
        )
    rows = num_dn_rows(gt_counts, num_denoising)
    p = arrays["dn_label_noise_p"]
    chosen = int((p < label_noise_ratio * 0.5).sum()) if p.shape == (rows,) else None
    expected = {
        "dn_label_noise_p": (rows,),
        "dn_rand_sign": (rows, 4),
        "dn_rand_part_raw": (rows, 4),
        "dn_new_label": (chosen,),
    }
    for key in DN_NOISE_KEYS:
        if chosen is None and key == "dn_new_label":
            continue
        if arrays[key].shape != expected[key]:
            raise ValueError(
                f"{path}: '{key}' has shape {list(arrays[key].shape)}, expected "
                f"{list(expected[key])} (P = 2·G·T = {rows} rows for GT counts {list(gt_counts)}, "
                f"num_denoising {num_denoising}"
                + (
                    f"; {chosen} rows with p < {label_noise_ratio * 0.5}"
                    if chosen is not None
                    else ""
                )
                + ")"
            )
    for key in ("dn_label_noise_p", "dn_rand_part_raw"):
        a = arrays[key]
        if a.size and (a.min() < 0 or a.max() >= 1):
            raise ValueError(f"{path}: '{key}' must lie in [0, 1), got [{a.min()}, {a.max()}]")
    sign = arrays["dn_rand_sign"]
    if sign.size and not np.isin(sign, (0, 1)).all():
        raise ValueError(
            f"{path}: 'dn_rand_sign' must hold only 0 and 1 (before the mapping to "
            f"+-1), got values {np.unique(sign)[:5].tolist()}"
        )
    new = arrays["dn_new_label"]
    if new.size and (new.min() < 0 or new.max() >= num_classes):
        raise ValueError(
            f"{path}: 'dn_new_label' must lie in [0, {num_classes}), got [{new.min()}, {new.max()}]"
        )
    return DNNoise.replay(
        arrays["dn_label_noise_p"],
        arrays["dn_new_label"],
        arrays["dn_rand_sign"],
        arrays["dn_rand_part_raw"],
    )
