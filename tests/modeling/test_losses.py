"""Focal loss, IA-BCE, rank weights and box losses against numpy hand computations."""

import numpy as np
import paddle
import pytest

from ppdet_dac.modeling.debug_checks import debug_checks
from ppdet_dac.modeling.losses import (
    giou_box_loss,
    ia_bce_loss,
    l1_box_loss,
    rank_weights,
    sigmoid_focal_loss,
)


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _t(x, dtype="float64", grad=False):
    t = paddle.to_tensor(np.asarray(x, dtype=dtype))
    t.stop_gradient = not grad
    return t


def _i(x):
    return paddle.to_tensor(np.asarray(x, dtype=np.int64))


# ---- sigmoid focal loss -----------------------------------------------------------------------
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 1.5)])
def test_focal_loss_matches_numpy(alpha, gamma):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 5, 4))
    y = np.zeros_like(x)
    y[0, 1, 2] = y[1, 4, 0] = y[1, 0, 3] = 1
    p = _sig(x)
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    # the official mean(1).sum()/N times Q equals the total sum / N
    official = loss.mean(1).sum() / 3.0 * x.shape[1]
    out = sigmoid_focal_loss(_t(x), _t(y), 3.0, alpha=alpha, gamma=gamma)
    np.testing.assert_allclose(float(out), loss.sum() / 3.0, rtol=1e-10)
    np.testing.assert_allclose(float(out), official, rtol=1e-10)


# ---- IA-BCE -----------------------------------------------------------------------------------
def _np_ia_bce(x, b, q, c, ious, n, w=None, x_for_t=None):
    """Official IA_BCE_loss in numpy. ``x_for_t`` freezes the (detached) quality at other logits."""
    p = _sig(x)
    p_t = _sig(x if x_for_t is None else x_for_t)
    t = np.clip(p_t[b, q, c] ** 0.25 * ious**0.75, 0.01, None)
    if w is not None:
        t = t * w
    pos_w = np.zeros_like(x)
    neg_w = p**2
    pos_w[b, q, c] = t  # numpy fancy assignment: the last duplicate wins
    neg_w[b, q, c] = 1 - t
    return (-pos_w * np.log(p) - neg_w * np.log(1 - p)).sum() / n


def _case(seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (2, 4, 3))
    b = np.array([0, 0, 1, 1, 1])
    q = np.array([1, 3, 0, 2, 3])
    c = np.array([2, 0, 1, 1, 0])
    ious = np.array([0.8, 0.3, 0.0, 0.55, 0.9])
    w = np.array([1.0, np.exp(-1 / 1.5), 1.0, np.exp(-2 / 1.5), 1.0])
    return x, b, q, c, ious, w


@pytest.mark.parametrize("weighted", [False, True])
def test_ia_bce_matches_numpy(weighted):
    x, b, q, c, ious, w = _case()
    w = w if weighted else None
    out = ia_bce_loss(_t(x), _i(b), _i(q), _i(c), _t(ious), 2.5, None if w is None else _t(w))
    np.testing.assert_allclose(float(out), _np_ia_bce(x, b, q, c, ious, 2.5, w), rtol=1e-10)


def test_ia_bce_hand_computed_single_entry():
    # one logit 0 (p = 1/2) matched with IoU 1, one unmatched logit 0, B = Q = 1, C = 2, N = 2:
    # t = 0.5^0.25; matched: -(t log .5) - (1 - t) log .5 = log 2; unmatched: -0.25 log .5
    out = ia_bce_loss(_t(np.zeros((1, 1, 2))), _i([0]), _i([0]), _i([1]), _t([1.0]), 2.0)
    np.testing.assert_allclose(float(out), (np.log(2) + 0.25 * np.log(2)) / 2, rtol=1e-12)


def test_ia_bce_quality_is_clamped_at_one_percent():
    # IoU 0 -> t = 0.01: matched entry loss -0.01 log p - 0.99 log(1-p)
    x = np.array([[[1.0]]])
    out = ia_bce_loss(_t(x), _i([0]), _i([0]), _i([0]), _t([0.0]), 1.0)
    p = _sig(1.0)
    np.testing.assert_allclose(float(out), -0.01 * np.log(p) - 0.99 * np.log(1 - p), rtol=1e-12)


def test_ia_bce_duplicate_entry_last_wins():
    x, _, _, _, _, _ = _case(1)
    b, q, c = np.array([0, 1, 0]), np.array([2, 1, 2]), np.array([1, 0, 1])
    ious = np.array([0.9, 0.5, 0.2])
    out = ia_bce_loss(_t(x), _i(b), _i(q), _i(c), _t(ious), 1.0)
    last_wins = _np_ia_bce(x, b[1:], q[1:], c[1:], ious[1:], 1.0)  # entries 1, 2
    first_wins = _np_ia_bce(x, b[:2], q[:2], c[:2], ious[:2], 1.0)  # entries 0, 1
    np.testing.assert_allclose(float(out), last_wins, rtol=1e-10)
    assert abs(last_wins - first_wins) > 1e-3  # the duplicate really changes the value


def test_ia_bce_empty_matches_is_all_negative():
    x = np.random.default_rng(2).normal(0, 2, (2, 3, 4))
    empty = _i(np.zeros(0))
    out = ia_bce_loss(_t(x), empty, empty, empty, _t(np.zeros(0)), 4.0, None)
    p = _sig(x)
    np.testing.assert_allclose(float(out), (-(p**2) * np.log(1 - p)).sum() / 4.0, rtol=1e-10)


def test_ia_bce_gradient_equals_finite_differences_float64():
    x, b, q, c, ious, w = _case(3)
    logits = _t(x, grad=True)
    loss = ia_bce_loss(logits, _i(b), _i(q), _i(c), _t(ious), 2.0, _t(w))
    loss.backward()
    grad = logits.grad.numpy()
    # t is detached: differentiate with the quality frozen at the base logits; p^2 is not detached
    eps = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += eps
        lo[idx] -= eps
        fd[idx] = (
            _np_ia_bce(hi, b, q, c, ious, 2.0, w, x_for_t=x)
            - _np_ia_bce(lo, b, q, c, ious, 2.0, w, x_for_t=x)
        ) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_ia_bce_no_gradient_into_ious_or_weights():
    x, b, q, c, ious, w = _case(4)
    logits, ious_t, w_t = _t(x, grad=True), _t(ious, grad=True), _t(w, grad=True)
    ia_bce_loss(logits, _i(b), _i(q), _i(c), ious_t, 1.0, w_t).backward()
    assert ious_t.grad is None and w_t.grad is None
    assert logits.grad is not None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_matches", [True, False])
def test_ia_bce_finite_for_extreme_logits(dtype, with_matches):
    x = np.full((2, 4, 3), 50.0)
    x[:, ::2] = -50.0
    x[1, 1, 2] = -50.0
    b, q, c = (
        (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), np.array([1, 1, 2, 0]))
        if with_matches
        else (np.zeros(0),) * 3
    )
    ious = np.array([0.5, 0.0, 1.0, 0.7])[: len(b)]
    logits = _t(x, dtype=dtype, grad=True)
    loss = ia_bce_loss(logits, _i(b), _i(q), _i(c), _t(ious, dtype=dtype), 1.0)
    loss.backward()
    assert np.isfinite(float(loss))
    assert np.isfinite(logits.grad.numpy()).all()
    # reference with stable logs: log p = -softplus(-x), log(1-p) = -softplus(x)
    p = _sig(x)
    log_p, log_1mp = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    pos_w, neg_w = np.zeros_like(x), p**2
    if with_matches:
        t = np.clip(p[b.astype(int), q.astype(int), c.astype(int)] ** 0.25 * ious**0.75, 0.01, None)
        pos_w[b.astype(int), q.astype(int), c.astype(int)] = t
        neg_w[b.astype(int), q.astype(int), c.astype(int)] = 1 - t
    expected = (-pos_w * log_p - neg_w * log_1mp).sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("source", ["host", "tensor"])
def test_ia_bce_rejects_out_of_range_index(source):
    """Host index vectors are always checked; tensors with the debug checks on (their values
    need a host copy, debug_checks.py)."""
    x = np.zeros((1, 2, 3))
    labels = np.array([3]) if source == "host" else _i([3])
    with (
        debug_checks(source == "tensor"),
        pytest.raises(ValueError, match="labels out of range.*max 3"),
    ):
        ia_bce_loss(_t(x), _i([0]), _i([1]), labels, _t([0.5]), 1.0)


# ---- rank weights -----------------------------------------------------------------------------
def test_rank_weights_hand_computed():
    # group 7: qualities .3 .6 .5 -> ranks 2 0 1 (the official example); group 2: .2 .9 -> 1 0;
    # group 5 alone -> 0; groups interleaved on purpose
    quality = [0.3, 0.2, 0.6, 0.4, 0.9, 0.5]
    groups = [7, 2, 7, 5, 2, 7]
    ranks = np.array([2, 1, 0, 0, 0, 1])
    out = rank_weights(_t(quality, "float32"), _i(groups), tau=1.5)
    assert out.dtype == paddle.float32
    np.testing.assert_allclose(out.numpy(), np.exp(-ranks / 1.5), rtol=1e-6)
    np.testing.assert_allclose(
        rank_weights(_t(quality), _i(groups), tau=2.0).numpy(), np.exp(-ranks / 2.0), rtol=1e-12
    )


def test_rank_weights_ties_keep_input_order():
    quality = [0.01, 0.5, 0.01, 0.01, 0.5]
    groups = [0, 0, 0, 1, 1]
    ranks = np.array([1, 0, 2, 1, 0])
    np.testing.assert_allclose(
        rank_weights(_t(quality), _i(groups)).numpy(), np.exp(-ranks / 1.5), rtol=1e-12
    )


def test_rank_weights_random_against_counting_rule():
    rng = np.random.default_rng(5)
    quality = np.round(rng.uniform(0, 1, 40), 1)  # rounding makes ties
    groups = rng.integers(0, 6, 40)
    ranks = np.array(
        [
            ((groups == groups[i]) & (quality > quality[i])).sum()
            + ((groups[:i] == groups[i]) & (quality[:i] == quality[i])).sum()
            for i in range(40)
        ]
    )
    np.testing.assert_allclose(
        rank_weights(_t(quality), _i(groups)).numpy(), np.exp(-ranks / 1.5), rtol=1e-12
    )


def test_rank_weights_empty():
    out = rank_weights(_t(np.zeros(0), "float32"), _i(np.zeros(0)))
    assert out.shape == [0]


# ---- box losses -------------------------------------------------------------------------------
def _np_giou_cxcywh(a, g):
    a = np.concatenate([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], 1)
    g = np.concatenate([g[:, :2] - g[:, 2:] / 2, g[:, :2] + g[:, 2:] / 2], 1)
    inter = np.prod(
        np.clip(np.minimum(a[:, 2:], g[:, 2:]) - np.maximum(a[:, :2], g[:, :2]), 0, None), 1
    )
    union = np.prod(a[:, 2:] - a[:, :2], 1) + np.prod(g[:, 2:] - g[:, :2], 1) - inter
    hull = np.prod(np.maximum(a[:, 2:], g[:, 2:]) - np.minimum(a[:, :2], g[:, :2]), 1)
    return inter / union - (hull - union) / hull


@pytest.mark.parametrize("weighted", [False, True])
def test_box_losses_match_numpy(weighted):
    rng = np.random.default_rng(6)
    src = np.concatenate([rng.uniform(0.3, 0.7, (5, 2)), rng.uniform(0.1, 0.3, (5, 2))], 1)
    tgt = np.concatenate([rng.uniform(0.3, 0.7, (5, 2)), rng.uniform(0.1, 0.3, (5, 2))], 1)
    w = rng.uniform(0.2, 1.0, 5) if weighted else np.ones(5)
    w_t = _t(w) if weighted else None
    np.testing.assert_allclose(
        float(l1_box_loss(_t(src), _t(tgt), 3.0, w_t)),
        (w * np.abs(src - tgt).sum(1)).sum() / 3.0,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        float(giou_box_loss(_t(src), _t(tgt), 3.0, w_t)),
        (w * (1 - _np_giou_cxcywh(src, tgt))).sum() / 3.0,
        rtol=1e-10,
    )


def test_giou_loss_hand_values():
    # identical boxes -> 0; (0.5,0.5,1,1) vs (1.5,0.5,1,1) touch: IoU 0, hull 2, union 2 -> 1
    src = _t([[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
    tgt = _t([[0.5, 0.5, 1.0, 1.0], [1.5, 0.5, 1.0, 1.0]])
    np.testing.assert_allclose(float(giou_box_loss(src, tgt, 1.0)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(float(l1_box_loss(src, tgt, 2.0)), 0.5, rtol=1e-12)


@pytest.mark.parametrize("loss_fn", [l1_box_loss, giou_box_loss])
def test_box_losses_empty_keep_gradient_path(loss_fn):
    src = _t(np.zeros((0, 4)), "float32", grad=True)
    out = loss_fn(src, _t(np.zeros((0, 4)), "float32"), 2.0, None)
    assert float(out) == 0.0 and not out.stop_gradient
    out.backward()
    assert src.grad is not None and src.grad.shape == [0, 4]


def test_box_losses_gradient_finite_and_weighted():
    src = _t([[0.5, 0.5, 0.2, 0.2], [0.4, 0.6, 0.3, 0.1]], grad=True)
    tgt = _t([[0.55, 0.5, 0.2, 0.25], [0.4, 0.6, 0.3, 0.1]])
    w = _t([0.5, 1.0])
    (l1_box_loss(src, tgt, 1.0, w) + giou_box_loss(src, tgt, 1.0, w)).backward()
    grad = src.grad.numpy()
    assert np.isfinite(grad).all()
    # L1 part of the first box: sign(src - tgt) * 0.5 on the cx and h coordinates
    l1_only = _t([[0.5, 0.5, 0.2, 0.2]], grad=True)
    l1_box_loss(l1_only, _t([[0.55, 0.5, 0.2, 0.25]]), 1.0, _t([0.5])).backward()
    np.testing.assert_allclose(l1_only.grad.numpy(), [[-0.5, 0.0, 0.0, -0.5]], atol=1e-12)
