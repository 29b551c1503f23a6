"""DAC one-to-many assigner (official Stage2Assigner) on hand-built score matrices and boxes."""

import numpy as np
import paddle
import pytest

from ppdet_dac.modeling.debug_checks import debug_checks
from ppdet_dac.modeling.matcher import NonFiniteCostError
from ppdet_dac.modeling.one_to_many import OneToManyAssigner


def _pairs(result):
    q_idx, g_idx = result
    assert q_idx.dtype == np.int64 and g_idx.dtype == np.int64
    return list(zip(q_idx.tolist(), g_idx.tolist()))


def _assign(score, seed=0, **kwargs):
    return _pairs(
        OneToManyAssigner(**kwargs).assign_scores(
            np.asarray(score, dtype=np.float64), np.random.default_rng(seed)
        )
    )


def test_threshold_is_inclusive_at_0_4():
    # one GT; q0 is its best (forced anyway); q1 = 0.4 and q3 = 0.41 pass, q2 = 0.3999 does not
    score = [[0.9], [0.4], [0.3999], [0.41], [0.1], [0.2], [0.0], [0.05]]
    # c = 3 -> the GT's top-3 queries by score
    assert _assign(score) == [(0, 0), (3, 0), (1, 0)]
    # a higher threshold drops q1 and q3
    assert _assign(score, threshold=0.5) == [(0, 0)]


def test_forced_best_query_keeps_its_own_argmax_gt():
    # GT 0's best query is q0 (0.3 < 0.4), forced positive, but q0's arg-max is GT 1 (0.35):
    # the positive counts for GT 1, and GT 0 gets nothing (official detectron2 behaviour)
    score = [[0.3, 0.35], [0.1, 0.9], [0.2, 0.1], [0.0, 0.2]]
    assert _assign(score) == [(1, 1), (0, 1)]


def test_forced_best_query_makes_a_lonely_gt_positive():
    # nothing passes 0.4; each GT's best query is forced and has that GT as its arg-max
    score = [[0.30, 0.05], [0.10, 0.12], [0.20, 0.33], [0.25, 0.01]]
    assert _assign(score) == [(0, 0), (2, 1)]


def test_ties_go_to_the_lower_index():
    # GT column max 0.3 at q1 and q3: q1 is forced; arg-max over GTs ties pick GT 0
    score = [[0.1, 0.1], [0.3, 0.3], [0.2, 0.0], [0.3, 0.3]]
    # q1 -> GT 0 (first max); GT 1's forced query is also q1 -> GT 0; c_0 = 1, c_1 = 0
    assert _assign(score) == [(1, 0)]
    # all four pass a threshold 0.05 -> arg-max GT 0 for every query: c_0 = 4, ordered by score,
    # ties by index: q1, q3, q2, q0
    assert _assign(score, threshold=0.05) == [(1, 0), (3, 0), (2, 0), (0, 0)]


def test_a_query_can_serve_two_gts_and_top_k_need_not_be_the_passing_queries():
    # q0, q1 pass for A; q2, q3 pass for B. A's top-2 by score are q0 and q3 (q3's arg-max is B)
    score = [[0.90, 0.10], [0.85, 0.10], [0.20, 0.95], [0.88, 0.97]]
    assert _assign(score) == [(0, 0), (3, 0), (3, 1), (2, 1)]


def test_at_most_max_k_queries_per_gt():
    rng = np.random.default_rng(1)
    score = rng.uniform(0.45, 1.0, (20, 1))  # all 20 pass
    expected = np.argsort(-score[:, 0])[:6]
    assert _assign(score) == [(int(q), 0) for q in expected]
    assert _assign(score, max_k=3) == [(int(q), 0) for q in expected[:3]]
    # fewer queries than max_k
    assert _assign(score[:4]) == [(int(q), 0) for q in np.argsort(-score[:4, 0])]


def test_at_most_75_positives_seeded():
    # 100 GTs, each with exactly one positive query (its own, forced): 100 positives > 75, so
    # exactly 75 survive the subsampling, each keeps one pair (q_g, g)
    num = 100
    score = np.full((num, num), 0.05) + np.eye(num) * 0.3 + np.arange(num)[None, :] * 1e-4
    first = _assign(score, seed=3)
    assert len(first) == 75
    assert all(q == g for q, g in first)
    assert first == _assign(score, seed=3)
    assert first != _assign(score, seed=4)
    # the cap is int(num_queries_cap * positive_fraction)
    assert len(_assign(score, seed=3, num_queries_cap=100, positive_fraction=0.5)) == 50
    assert len(_assign(score, seed=3, num_queries_cap=1000)) == 100


def test_cap_with_many_positives_per_gt():
    rng = np.random.default_rng(2)
    score = rng.uniform(0.5, 1.0, (300, 20))  # every query passes; 300 positives
    results = [_assign(score, seed=s) for s in range(4)]
    top6 = np.argsort(-score, axis=0, kind="stable")[:6].T
    for res in results:
        assert len(res) <= 75
        gts = [g for _, g in res]
        assert max(np.bincount(gts)) <= 6
        for q, g in res:
            assert q in top6[g]
    assert results[0] == _assign(score, seed=0)


def test_below_cap_does_not_depend_on_the_seed():
    rng = np.random.default_rng(3)
    score = rng.uniform(0.0, 0.5, (60, 5))
    assert _assign(score, seed=0) == _assign(score, seed=99)


def _boxes_case(logit_q1, label_class=3, logit_class=3):
    """GT (0.5, 0.5, 0.2, 0.2), class ``label_class``. q0 = the GT box (IoU 1); q1 a concentric
    0.14 x 0.14 box (IoU 0.49 -> 0.7 IoU = 0.343 < 0.4); q2 far away. q1's logit at
    ``logit_class`` is ``logit_q1``; every other logit is -20."""
    boxes = np.array([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.14, 0.14], [0.1, 0.1, 0.05, 0.05]]])
    logits = np.full((1, 3, 6), -20.0)
    logits[0, 1, logit_class] = logit_q1
    return (
        paddle.to_tensor(boxes.astype("float32")),
        paddle.to_tensor(logits.astype("float32")),
        [paddle.to_tensor(np.array([[0.5, 0.5, 0.2, 0.2]], dtype="float32"))],
        [paddle.to_tensor(np.array([label_class], dtype="int64"))],
    )


def test_logit_term_flips_the_decision():
    assigner = OneToManyAssigner()
    rng = np.random.default_rng(0)
    # low logit: score(q1) = 0.343 -> negative, only the forced q0
    assert _pairs(assigner(*_boxes_case(-20.0), rng=rng)[0]) == [(0, 0)]
    # sigma(2) = 0.881 -> score(q1) = 0.343 + 0.264 = 0.607 -> positive, c = 2
    assert _pairs(assigner(*_boxes_case(2.0), rng=rng)[0]) == [(0, 0), (1, 0)]
    # a high logit at another class does not count
    assert _pairs(assigner(*_boxes_case(2.0, logit_class=5), rng=rng)[0]) == [(0, 0)]
    # with the mixing weights moved to IoU only, the logit no longer matters
    iou_only = OneToManyAssigner(iou_weight=1.0, score_weight=0.0)
    assert _pairs(iou_only(*_boxes_case(2.0), rng=rng)[0]) == [(0, 0), (1, 0)]  # 0.49 >= 0.4


def test_score_matrix_matches_numpy():
    rng = np.random.default_rng(4)
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (7, 2)), rng.uniform(0.1, 0.4, (7, 2))], 1)
    gt = np.concatenate([rng.uniform(0.3, 0.7, (3, 2)), rng.uniform(0.1, 0.4, (3, 2))], 1)
    logits = rng.normal(0, 2, (7, 5))
    labels = np.array([4, 0, 4])
    out = OneToManyAssigner().score_matrix(
        paddle.to_tensor(boxes),
        paddle.to_tensor(logits),
        paddle.to_tensor(gt),
        paddle.to_tensor(labels),
    )

    def xyxy(b):
        return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)

    a, g = xyxy(boxes)[:, None], xyxy(gt)[None]
    inter = np.prod(
        np.clip(np.minimum(a[..., 2:], g[..., 2:]) - np.maximum(a[..., :2], g[..., :2]), 0, None),
        -1,
    )
    union = np.prod(a[..., 2:] - a[..., :2], -1) + np.prod(g[..., 2:] - g[..., :2], -1) - inter
    expected = 0.7 * inter / union + 0.3 / (1 + np.exp(-logits[:, labels]))
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def test_batch_with_empty_gt_image():
    b_boxes, b_logits, gt_boxes, gt_labels = _boxes_case(2.0)
    boxes = paddle.concat([b_boxes, b_boxes])
    logits = paddle.concat([b_logits, b_logits])
    out = OneToManyAssigner()(
        boxes,
        logits,
        [paddle.zeros([0, 4]), gt_boxes[0]],
        [paddle.zeros([0], dtype="int64"), gt_labels[0]],
        np.random.default_rng(0),
    )
    assert len(out) == 2
    assert _pairs(out[0]) == []
    assert _pairs(out[1]) == [(0, 0), (1, 0)]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="non-finite"):
        _assign([[0.5], [np.nan]])
    b_boxes, b_logits, gt_boxes, _ = _boxes_case(2.0)
    with debug_checks(), pytest.raises(ValueError, match="gt_labels.*max 6"):
        OneToManyAssigner()(
            b_boxes, b_logits, gt_boxes, [paddle.to_tensor(np.array([6]))], np.random.default_rng(0)
        )
    with pytest.raises(ValueError, match="batch size 1"):
        OneToManyAssigner()(b_boxes, b_logits, gt_boxes * 2, [paddle.zeros([0], "int64")] * 2)


def test_nan_gt_box_names_the_batch_image():
    """Image 1's GT box is NaN: its 3 scores are NaN (IoU), image 0 is clean."""
    b_boxes, b_logits, gt_boxes, gt_labels = _boxes_case(2.0)
    nan_box = paddle.to_tensor(np.array([[0.5, np.nan, 0.2, 0.2]], dtype="float32"))
    with pytest.raises(NonFiniteCostError) as info:
        OneToManyAssigner()(
            paddle.concat([b_boxes, b_boxes]),
            paddle.concat([b_logits, b_logits]),
            [gt_boxes[0], nan_box],
            gt_labels * 2,
            np.random.default_rng(0),
        )
    assert info.value.image == 1
    assert str(info.value) == (
        "image 1 of the batch: one-to-many assignment score has 3 "
        "non-finite entries: its ground-truth boxes are NaN/inf"
    )
