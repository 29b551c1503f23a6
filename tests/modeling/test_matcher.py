"""Hungarian matcher: cost against a numpy formula, assignment against brute force, edge cases."""

import itertools

import numpy as np
import paddle
import pytest

from ppdet_dac.modeling.debug_checks import debug_checks
from ppdet_dac.modeling.matcher import DACHungarianMatcher, NonFiniteCostError


def _np_cost(logits, boxes, labels, gt_boxes, w_class=2.0, w_bbox=5.0, w_giou=2.0):
    """Official cost (models/matcher.py), written out in numpy float64 -> [Q, n]."""
    p = 1 / (1 + np.exp(-logits[:, labels]))
    focal = (0.25 * (1 - p) ** 2 * -np.log(p + 1e-8)) - (0.75 * p**2 * -np.log(1 - p + 1e-8))
    l1 = np.abs(boxes[:, None, :] - gt_boxes[None, :, :]).sum(-1)

    def xyxy(b):
        return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)

    a, g = xyxy(boxes)[:, None], xyxy(gt_boxes)[None]
    inter = np.prod(
        np.clip(np.minimum(a[..., 2:], g[..., 2:]) - np.maximum(a[..., :2], g[..., :2]), 0, None),
        -1,
    )
    area_a = np.prod(a[..., 2:] - a[..., :2], -1)
    area_g = np.prod(g[..., 2:] - g[..., :2], -1)
    union = area_a + area_g - inter
    hull = np.prod(np.maximum(a[..., 2:], g[..., 2:]) - np.minimum(a[..., :2], g[..., :2]), -1)
    giou = inter / union - (hull - union) / hull
    return w_bbox * l1 + w_class * focal - w_giou * giou


def _random_case(rng, num_q, counts, num_classes=4):
    logits = rng.normal(0, 2, (len(counts), num_q, num_classes))
    boxes = np.concatenate(
        [
            rng.uniform(0.2, 0.8, (len(counts), num_q, 2)),
            rng.uniform(0.05, 0.4, (len(counts), num_q, 2)),
        ],
        -1,
    )
    labels = [rng.integers(0, num_classes, n) for n in counts]
    gt_boxes = [
        np.concatenate([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))], 1)
        for n in counts
    ]
    return logits, boxes, labels, gt_boxes


def _run(matcher, logits, boxes, labels, gt_boxes):
    return matcher(
        paddle.to_tensor(logits.astype("float32")),
        paddle.to_tensor(boxes.astype("float32")),
        [paddle.to_tensor(l.astype("int64")) for l in labels],
        [paddle.to_tensor(b.astype("float32")) for b in gt_boxes],
    )


def _brute_force_min(cost):
    """Minimal total cost of a one-to-one assignment of min(Q, n) pairs, by enumeration."""
    num_q, num_gt = cost.shape
    if num_q >= num_gt:
        return min(
            cost[list(qs), range(num_gt)].sum()
            for qs in itertools.permutations(range(num_q), num_gt)
        )
    return min(
        cost[range(num_q), list(gs)].sum() for gs in itertools.permutations(range(num_gt), num_q)
    )


def test_cost_matrix_matches_numpy_formula():
    rng = np.random.default_rng(0)
    logits, boxes, labels, gt_boxes = _random_case(rng, 7, [5])
    matcher = DACHungarianMatcher(cost_class=1.5, cost_bbox=4.0, cost_giou=3.0)
    cost = matcher.cost_matrix(
        paddle.to_tensor(logits[0]),
        paddle.to_tensor(boxes[0]),
        paddle.to_tensor(labels[0]),
        paddle.to_tensor(gt_boxes[0]),
    )
    expected = _np_cost(logits[0], boxes[0], labels[0], gt_boxes[0], 1.5, 4.0, 3.0)
    np.testing.assert_allclose(cost, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "num_q,counts,seed",
    [(5, [3, 5, 1], 1), (4, [4, 2], 2), (6, [2, 3], 3), (2, [4, 3], 4), (3, [0, 3], 5)],
)
def test_assignment_is_optimal_by_brute_force(num_q, counts, seed):
    rng = np.random.default_rng(seed)
    logits, boxes, labels, gt_boxes = _random_case(rng, num_q, counts)
    indices = _run(DACHungarianMatcher(), logits, boxes, labels, gt_boxes)
    assert len(indices) == len(counts)
    for i, (q_idx, g_idx) in enumerate(indices):
        assert q_idx.dtype == np.int64 and g_idx.dtype == np.int64
        k = min(num_q, counts[i])
        assert len(q_idx) == len(g_idx) == k
        assert len(set(q_idx.tolist())) == k and len(set(g_idx.tolist())) == k
        if k == 0:
            continue
        assert (np.diff(q_idx) > 0).all()
        cost = _np_cost(logits[i], boxes[i], labels[i], gt_boxes[i])
        np.testing.assert_allclose(cost[q_idx, g_idx].sum(), _brute_force_min(cost), rtol=1e-5)


def test_obvious_assignment_follows_boxes_and_classes():
    # query 0 sits on GT 1 (class 2), query 2 on GT 0 (class 0); query 1 is far from both
    gt_boxes = np.array([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]])
    boxes = np.array([[[0.7, 0.7, 0.2, 0.2], [0.5, 0.1, 0.05, 0.05], [0.2, 0.2, 0.1, 0.1]]])
    logits = np.full((1, 3, 3), -4.0)
    logits[0, 0, 2] = logits[0, 2, 0] = 4.0
    ((q_idx, g_idx),) = _run(DACHungarianMatcher(), logits, boxes, [np.array([0, 2])], [gt_boxes])
    np.testing.assert_array_equal(q_idx, [0, 2])
    np.testing.assert_array_equal(g_idx, [1, 0])


def test_class_agnostic_labels_all_zero():
    rng = np.random.default_rng(7)
    logits, boxes, _, gt_boxes = _random_case(rng, 6, [3], num_classes=2)
    labels = [np.zeros(3, dtype=np.int64)]
    ((q_idx, g_idx),) = _run(DACHungarianMatcher(), logits, boxes, labels, gt_boxes)
    cost = _np_cost(logits[0], boxes[0], labels[0], gt_boxes[0])
    np.testing.assert_allclose(cost[q_idx, g_idx].sum(), _brute_force_min(cost), rtol=1e-5)


def test_empty_gt_gives_empty_int64_arrays():
    rng = np.random.default_rng(8)
    logits, boxes, _, _ = _random_case(rng, 4, [0])
    ((q_idx, g_idx),) = DACHungarianMatcher()(
        paddle.to_tensor(logits.astype("float32")),
        paddle.to_tensor(boxes.astype("float32")),
        [paddle.zeros([0], dtype="int64")],
        [paddle.zeros([0, 4])],
    )
    assert q_idx.shape == (0,) and g_idx.shape == (0,)
    assert q_idx.dtype == np.int64 and g_idx.dtype == np.int64


def test_bad_inputs_raise_naming_the_value():
    rng = np.random.default_rng(9)
    logits, boxes, labels, gt_boxes = _random_case(rng, 4, [2], num_classes=3)
    with debug_checks(), pytest.raises(ValueError, match="gt_labels.*max 3"):
        _run(DACHungarianMatcher(), logits, boxes, [np.array([0, 3])], gt_boxes)
    logits[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="image 0.*non-finite"):
        _run(DACHungarianMatcher(), logits, boxes, [np.array([0, 1])], gt_boxes)
    with pytest.raises(ValueError, match="all 0"):
        DACHungarianMatcher(0, 0, 0)


@pytest.mark.parametrize("where", ["gt", "logits"])
def test_non_finite_cost_names_the_batch_image_and_the_cause(where):
    """A NaN in image 1's GT box (or its logits) -> NonFiniteCostError for image 1 that says
    which side is NaN; image 0 is clean."""
    rng = np.random.default_rng(10)
    logits, boxes, labels, gt_boxes = _random_case(rng, 4, [2, 3])
    if where == "gt":
        gt_boxes[1][2, 0] = np.nan
    else:
        logits[1, 3, labels[1][0]] = np.nan
    with pytest.raises(NonFiniteCostError) as info:
        _run(DACHungarianMatcher(), logits, boxes, labels, gt_boxes)
    assert info.value.image == 1
    # a NaN GT coordinate spoils that GT's column (4 queries), a NaN logit one query's row
    # for the GTs of that class
    expected = 4 if where == "gt" else int((labels[1] == labels[1][0]).sum())
    cause = (
        "its ground-truth boxes are NaN/inf"
        if where == "gt"
        else "the predicted logits or boxes are NaN/inf (diverged training?)"
    )
    assert str(info.value) == (
        f"image 1 of the batch: matching cost has {expected} non-finite entries: {cause}"
    )


def test_registered_with_ppdet():
    from ppdet.core.workspace import create, global_config

    assert "DACHungarianMatcher" in global_config
    matcher = create("DACHungarianMatcher")
    assert isinstance(matcher, DACHungarianMatcher) and matcher.cost_bbox == 5.0


def test_extreme_logits_give_finite_cost_and_optimal_matching():
    rng = np.random.default_rng(10)
    logits, boxes, labels, gt_boxes = _random_case(rng, 5, [3])
    logits = np.where(logits > 0, 50.0, -50.0)
    ((q_idx, g_idx),) = _run(DACHungarianMatcher(), logits, boxes, labels, gt_boxes)
    cost = DACHungarianMatcher().cost_matrix(
        paddle.to_tensor(logits[0].astype("float32")),
        paddle.to_tensor(boxes[0].astype("float32")),
        paddle.to_tensor(labels[0]),
        paddle.to_tensor(gt_boxes[0].astype("float32")),
    )
    assert np.isfinite(cost).all()
    # p rounds to exactly 0 or 1 in float32: the class cost is +-(-log 1e-8) weighted by alpha
    p = logits[0][:, labels[0]] > 0
    expected_class = np.where(p, -0.75 * -np.log(1e-8), 0.25 * -np.log(1e-8))
    geometric = _np_cost(np.zeros_like(logits[0]), boxes[0], labels[0], gt_boxes[0], w_class=0.0)
    np.testing.assert_allclose(cost, geometric + 2.0 * expected_class, rtol=1e-5)
    assert len(q_idx) == 3
    np.testing.assert_allclose(cost[q_idx, g_idx].sum(), _brute_force_min(cost), rtol=1e-6)
