"""Contrastive denoising (CDN) queries, as DAC-DETR builds them (``models/dn_components.py``).

During training, noised copies of the ground-truth boxes are prepended to the matching queries.
This module builds those copies, their content vectors and the self-attention mask that keeps
them from leaking answers to the matching queries.

Layout of the ``pad_size = 2 * max_gt * G`` denoising slots of every image::

    group 0                         group 1                        ...   group G-1
    [max_gt positive | max_gt neg.] [max_gt positive | max_gt neg.] ...

Image ``b`` with ``n_b`` GT boxes fills slots ``0 .. n_b-1`` of each half; the remaining
``max_gt - n_b`` slots of each half are padding: zero content vector and zero box logit (the
box (0.5, 0.5, 0.5, 0.5) after a sigmoid), exactly as the official code leaves them.

Row order of the random draws (checked against the official code): the official code tiles the
batch's concatenated GT list ``2 * G`` times, so a random draw over "rows" has ``P = 2 * G * N``
entries (``N`` = number of GT in the whole batch) and row ``c * N + j`` is copy ``c`` of GT ``j``
(GT of image 0 first, then image 1, ...). Copy ``2g`` is the positive of group ``g``, copy
``2g + 1`` its negative (the official ``positive_idx`` / ``negative_idx``).
"""

import numpy as np
import paddle

from ppdet.utils.logger import setup_logger

from .box_ops import inverse_sigmoid
from .debug_checks import host_ints

logger = setup_logger(__name__)

__all__ = ['DNNoise', 'build_cdn_queries']


class DNNoise(object):
    """Source of the four random draws of contrastive denoising, in the official order.

    1. ``label_noise_p(num_rows, dtype)`` -> [P] float, uniform in [0, 1); a row's label is
       replaced when ``p < label_noise_ratio * 0.5``.
    2. ``new_label(num_chosen, num_classes)`` -> [K] int64, uniform in [0, num_classes); the new
       labels of the chosen rows, in row order.
    3. ``rand_sign(num_rows, dtype)`` -> [P, 4] float of 0/1 (mapped to -1/+1 by the caller).
    4. ``rand_part_raw(num_rows, dtype)`` -> [P, 4] float, uniform in [0, 1) (negatives get +1
       later).

    ``dtype`` ('float32' or 'float64') is the dtype of the model's boxes (``build_cdn_queries``
    passes the dtype of ``label_enc``); the default source draws in that dtype.

    Draws 1-2 happen only when ``label_noise_ratio > 0`` and draws 3-4 only when
    ``box_noise_scale > 0``, as in the official code. This default source draws from Paddle's
    global generator, so ``paddle.seed`` makes it repeatable. ``DNNoise.replay(...)`` returns a
    source that hands back fixed arrays instead (for tests and for replaying another run).
    """

    def label_noise_p(self, num_rows, dtype='float32'):
        """[num_rows] ``dtype`` uniform in [0, 1)."""
        return paddle.rand([num_rows], dtype=dtype)

    def new_label(self, num_chosen, num_classes):
        """[num_chosen] int64 uniform in [0, num_classes)."""
        if num_chosen == 0:
            return paddle.zeros([0], dtype='int64')
        return paddle.randint(0, num_classes, [num_chosen], dtype='int64')

    def rand_sign(self, num_rows, dtype='float32'):
        """[num_rows, 4] ``dtype`` with values 0 or 1."""
        return paddle.randint(0, 2, [num_rows, 4], dtype='int64').astype(dtype)

    def rand_part_raw(self, num_rows, dtype='float32'):
        """[num_rows, 4] ``dtype`` uniform in [0, 1)."""
        return paddle.rand([num_rows, 4], dtype=dtype)

    @classmethod
    def replay(cls, label_noise_p, new_label, rand_sign, rand_part_raw):
        """A noise source returning the given numpy arrays instead of random draws.

        Args:
            label_noise_p: [P] floats in [0, 1).
            new_label: [K] ints in [0, num_classes), K = number of rows with
                ``p < label_noise_ratio * 0.5``.
            rand_sign: [P, 4] of 0/1.
            rand_part_raw: [P, 4] floats in [0, 1).

        Each array is checked when it is asked for; a wrong shape or value raises ValueError
        naming the array. Arrays for draws that are not made (label_noise_ratio or
        box_noise_scale <= 0) are never checked.
        """
        return _ReplayDNNoise(label_noise_p, new_label, rand_sign, rand_part_raw)


class _ReplayDNNoise(DNNoise):
    """DNNoise that hands back fixed arrays; see ``DNNoise.replay``."""

    def __init__(self, label_noise_p, new_label, rand_sign, rand_part_raw):
        self._arrays = {
            'label_noise_p': np.asarray(label_noise_p),
            'new_label': np.asarray(new_label),
            'rand_sign': np.asarray(rand_sign),
            'rand_part_raw': np.asarray(rand_part_raw),
        }

    def _get(self, name, shape):
        arr = self._arrays[name]
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(
                "DNNoise.replay: array '{}' has shape {}, but this batch needs shape {}".format(
                    name, tuple(arr.shape), tuple(shape)
                )
            )
        return arr

    def label_noise_p(self, num_rows, dtype='float32'):
        arr = self._get('label_noise_p', (num_rows,))
        return paddle.to_tensor(arr.astype(dtype))

    def new_label(self, num_chosen, num_classes):
        arr = self._get('new_label', (num_chosen,))
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                "DNNoise.replay: array 'new_label' has values in [{}, {}], outside "
                "[0, num_classes={})".format(arr.min(), arr.max(), num_classes)
            )
        return paddle.to_tensor(arr.astype('int64'))

    def rand_sign(self, num_rows, dtype='float32'):
        arr = self._get('rand_sign', (num_rows, 4))
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(
                "DNNoise.replay: array 'rand_sign' must hold only 0 and 1, got values {}".format(
                    np.unique(arr)[:8].tolist()
                )
            )
        return paddle.to_tensor(arr.astype(dtype))

    def rand_part_raw(self, num_rows, dtype='float32'):
        arr = self._get('rand_part_raw', (num_rows, 4))
        return paddle.to_tensor(arr.astype(dtype))


def _as_label_vector(labels, b):
    labels = paddle.to_tensor(labels) if not isinstance(labels, paddle.Tensor) else labels
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape([-1])
    if labels.ndim != 1:
        raise ValueError(
            "gt_labels[{}] must have shape [n] (or [n, 1]), got {}".format(b, list(labels.shape))
        )
    return labels.astype('int64')


def _as_box_matrix(boxes, b, n, dtype):
    boxes = paddle.to_tensor(boxes) if not isinstance(boxes, paddle.Tensor) else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != n:
        raise ValueError(
            "gt_boxes[{}] must have shape [{}, 4] to match gt_labels[{}], got {}".format(
                b, n, b, list(boxes.shape)
            )
        )
    return boxes.astype(dtype)


def _dtype_name(tensor):
    """'float32' / 'float64' for a paddle tensor (numpy's name of its dtype)."""
    return str(tensor.dtype).replace('paddle.', '')


def _empty_meta(batch_size):
    empty = [np.zeros([0], dtype='int64') for _ in range(batch_size)]
    return {
        'pad_size': 0,
        'num_dn_group': 1,
        'single_pad': 0,
        'max_gt': 0,
        'positive_idx': empty,
        'gt_idx': [e.copy() for e in empty],
    }


def cdn_attention_mask(pad_size, single_pad, num_queries):
    """Self-attention mask of the decoder input ``[pad_size DN queries | num_queries queries]``.

    Returns ``attn_blocked`` (masks.py): a [pad_size + num_queries, pad_size + num_queries]
    bool tensor, True = BLOCKED
    (row = query, column = key): matching queries cannot see any DN query; a DN query cannot
    see DN queries of another group (groups are ``single_pad`` slots wide); DN queries see the
    matching queries and every slot of their own group, padding slots included.
    Paddle's ``nn.MultiHeadAttention`` wants the opposite convention (True = attend): pass
    ``attn_allowed_from_blocked(attn_blocked)`` there.
    """
    tgt = pad_size + num_queries
    idx = paddle.arange(tgt, dtype='int64')
    is_dn = idx < pad_size
    row_dn, col_dn = is_dn.unsqueeze(1), is_dn.unsqueeze(0)
    blocked = paddle.logical_and(paddle.logical_not(row_dn), col_dn)
    if pad_size > 0:
        group = idx // single_pad
        other_group = group.unsqueeze(1) != group.unsqueeze(0)
        blocked = paddle.logical_or(
            blocked, paddle.logical_and(paddle.logical_and(row_dn, col_dn), other_group)
        )
    return blocked


def build_cdn_queries(
    gt_labels,
    gt_boxes,
    label_enc,
    num_queries=900,
    num_classes=91,
    dn_number=100,
    label_noise_ratio=0.5,
    box_noise_scale=0.4,
    noise=None,
):
    """Build the contrastive-denoising queries of one training batch.

    Args:
        gt_labels: list of B int tensors [n_b] (or [n_b, 1]): class ids as the model sees them.
        gt_boxes: list of B float tensors [n_b, 4]: normalised (cx, cy, w, h).
        label_enc: ``paddle.nn.Embedding(num_classes + 1, D)``; the content of a DN query is
            ``label_enc(noised label)``, so gradients reach its weight. Its weight's dtype is the
            dtype of every float tensor built here (boxes, noise draws), float32 or float64.
        num_queries: Q, number of matching queries that follow the DN queries.
        num_classes: noised labels are drawn from [0, num_classes).
        dn_number: budget of positive DN queries per image; G = max(dn_number // max_gt, 1).
            (The official code, whose configs all use 100, only applies this rule when
            dn_number >= 50; below that it makes 2 * dn_number groups. We always apply it.)
        label_noise_ratio: a copy's label is replaced with probability label_noise_ratio / 2.
        box_noise_scale: corner noise scale (0.4 in DAC-DETR).
        noise: a ``DNNoise`` (default: a new one drawing from Paddle's global generator).

    Returns:
        dn_content: [B, pad_size, D] content vectors (zero in padding slots), or None.
        dn_ref_unact: [B, pad_size, 4] inverse-sigmoid of the noised cxcywh boxes (zero in
            padding slots), or None.
        attn_blocked: [pad_size + Q, pad_size + Q] bool, True = blocked (see
            ``cdn_attention_mask``).
        dn_meta: dict with
            'pad_size' (int), 'num_dn_group' (G), 'single_pad' (2 * max_gt, slots per group),
            'max_gt' (int),
            'positive_idx': list of B int64 numpy arrays [G * n_b]: positive slot indices of
                image b, group-major (group 0's n_b slots, then group 1's, ...),
            'gt_idx': list of B int64 numpy arrays [G * n_b]: which GT of image b each of those
                slots copies (``tile(arange(n_b), G)``).

    When the whole batch has no GT, no DN queries are made: content and ref are None,
    attn_blocked is [Q, Q] all False and dn_meta has pad_size 0, num_dn_group 1 and empty index arrays. (The
    official code returns [B, 0, ...] tensors here and then skips the sigmoid of the initial
    reference, docs/algorithm.md#11-batch-without-ground-truth, which the caller fixes.)
    """
    if len(gt_labels) != len(gt_boxes):
        raise ValueError(
            "gt_labels has {} images but gt_boxes has {}".format(len(gt_labels), len(gt_boxes))
        )
    if dn_number < 0:
        raise ValueError("dn_number must be >= 0, got {}".format(dn_number))
    num_rows_enc = label_enc.weight.shape[0]
    if num_rows_enc < num_classes:
        raise ValueError(
            "label_enc has {} rows but noised labels go up to num_classes - 1 = {}".format(
                num_rows_enc, num_classes - 1
            )
        )
    noise = DNNoise() if noise is None else noise
    dtype = _dtype_name(label_enc.weight)

    batch_size = len(gt_labels)
    labels_list, boxes_list, known_num = [], [], []
    for b in range(batch_size):
        lab = _as_label_vector(gt_labels[b], b)
        n = int(lab.shape[0])
        boxes_list.append(_as_box_matrix(gt_boxes[b], b, n, dtype))
        labels_list.append(lab)
        known_num.append(n)

    # G follows this process's own images, as in the official code (its prepare_for_cdn sees
    # only the local targets): ranks of a distributed run may build different numbers of DN
    # queries. Nothing collective depends on that number; the DN loss normaliser is the
    # rank-averaged #GT times this rank's own G (criterion.py).
    max_gt = max(known_num) if known_num else 0
    if max_gt == 0 or sum(known_num) == 0:
        return (
            None,
            None,
            paddle.zeros([num_queries, num_queries], dtype='bool'),
            _empty_meta(batch_size),
        )

    num_group = max(dn_number // max_gt, 1)
    if dn_number < max_gt:
        logger.debug("CDN: max_gt=%d exceeds dn_number=%d, using a single group", max_gt, dn_number)
    single_pad = 2 * max_gt
    pad_size = single_pad * num_group
    num_gt = sum(known_num)
    num_copies = 2 * num_group
    num_rows = num_copies * num_gt

    labels = paddle.concat([l for l in labels_list if l.shape[0] > 0])
    boxes = paddle.concat([bx for bx in boxes_list if bx.shape[0] > 0])
    labels_np = host_ints(labels)  # a host copy only with debug checks (debug_checks.py)
    if labels_np is not None and (labels_np.min() < 0 or labels_np.max() >= num_rows_enc):
        raise ValueError(
            "gt_labels hold class ids in [{}, {}], outside label_enc's [0, {})".format(
                labels_np.min(), labels_np.max(), num_rows_enc
            )
        )

    # rows: copy c of GT j is row c * num_gt + j (official `repeat(2 * dn_number, 1)`)
    known_labels = paddle.tile(labels, [num_copies])
    known_boxes = paddle.tile(boxes, [num_copies, 1])

    if label_noise_ratio > 0:
        p = noise.label_noise_p(num_rows, dtype)
        chosen = paddle.nonzero(p < label_noise_ratio * 0.5).reshape([-1])
        new_label = noise.new_label(int(chosen.shape[0]), num_classes)
        if chosen.shape[0] > 0:
            known_labels = paddle.scatter(known_labels, chosen, new_label, overwrite=True)

    noised_boxes = known_boxes
    if box_noise_scale > 0:
        cxcy, wh = known_boxes[:, :2], known_boxes[:, 2:]
        corners = paddle.concat([cxcy - wh / 2, cxcy + wh / 2], axis=1)
        diff = paddle.concat([wh / 2, wh / 2], axis=1)
        sign = noise.rand_sign(num_rows, dtype) * 2.0 - 1.0
        part = noise.rand_part_raw(num_rows, dtype)
        # copy 2g + 1 (a negative) sits in rows [(2g + 1) * num_gt, (2g + 2) * num_gt)
        is_negative = (np.arange(num_copies) % 2 == 1).repeat(num_gt).astype(dtype)
        part = part + paddle.to_tensor(is_negative).unsqueeze(1)
        part = part * sign
        corners = corners + part * diff * box_noise_scale
        corners = corners.clip(min=0.0, max=1.0)
        noised_boxes = paddle.concat(
            [(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], axis=1
        )

    content = label_enc(known_labels)  # [P, D]
    ref_unact = inverse_sigmoid(noised_boxes)  # [P, 4]

    # destination slot of every row: image b, slot c * max_gt + (index of the GT in its image)
    bid = np.concatenate([np.full([n], b, dtype='int64') for b, n in enumerate(known_num)])
    within = np.concatenate([np.arange(n, dtype='int64') for n in known_num])
    copy_id = np.arange(num_copies, dtype='int64').repeat(num_gt)
    slot = np.tile(within, num_copies) + copy_id * max_gt
    flat_slot = paddle.to_tensor(np.tile(bid, num_copies) * pad_size + slot)

    hidden = content.shape[1]
    dn_content = paddle.scatter(
        paddle.zeros([batch_size * pad_size, hidden], dtype=content.dtype),
        flat_slot,
        content,
        overwrite=True,
    ).reshape([batch_size, pad_size, hidden])
    dn_ref_unact = paddle.scatter(
        paddle.zeros([batch_size * pad_size, 4], dtype=ref_unact.dtype),
        flat_slot,
        ref_unact,
        overwrite=True,
    ).reshape([batch_size, pad_size, 4])

    attn_blocked = cdn_attention_mask(pad_size, single_pad, num_queries)

    positive_idx, gt_idx = [], []
    for n in known_num:
        pos = (
            np.arange(num_group, dtype='int64')[:, None] * single_pad
            + np.arange(n, dtype='int64')[None, :]
        ).reshape([-1])
        positive_idx.append(pos)
        gt_idx.append(np.tile(np.arange(n, dtype='int64'), num_group))

    dn_meta = {
        'pad_size': pad_size,
        'num_dn_group': num_group,
        'single_pad': single_pad,
        'max_gt': max_gt,
        'positive_idx': positive_idx,
        'gt_idx': gt_idx,
    }
    return dn_content, dn_ref_unact, attn_blocked, dn_meta
