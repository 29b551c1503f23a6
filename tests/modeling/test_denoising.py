"""Contrastive denoising queries: groups, layout, mask, exact noise, randomness, empty batches."""

import numpy as np
import paddle
import pytest

from ppdet_dac.modeling.debug_checks import debug_checks
from ppdet_dac.modeling.denoising import DNNoise, build_cdn_queries

HIDDEN = 8
NUM_CLASSES = 91
SCALE = 0.4


def _label_enc(seed=0):
    paddle.seed(seed)
    return paddle.nn.Embedding(NUM_CLASSES + 1, HIDDEN)


def _gt(counts, seed=0):
    """Random GT: labels [n] int64 in [0, 91), boxes [n, 4] cxcywh well inside the image."""
    rng = np.random.RandomState(seed)
    labels, boxes = [], []
    for n in counts:
        labels.append(rng.randint(0, NUM_CLASSES, size=[n]).astype('int64'))
        cxcy = rng.uniform(0.3, 0.7, size=[n, 2])
        wh = rng.uniform(0.05, 0.3, size=[n, 2])
        boxes.append(np.concatenate([cxcy, wh], axis=1).astype('float32'))
    return labels, boxes


def _to_tensors(labels, boxes):
    return [paddle.to_tensor(l) for l in labels], [paddle.to_tensor(b) for b in boxes]


def _np_inverse_sigmoid(x, eps=1e-5):
    x = np.clip(x, 0.0, 1.0)
    return np.log(np.clip(x, eps, None) / np.clip(1.0 - x, eps, None))


def _official_num_groups(dn_number, max_gt):
    """The official rule (dn_components.py:38-50) for dn_number >= 50: 2*dn // (2*max_gt), min 1."""
    doubled = dn_number * 2
    groups = doubled // (max_gt * 2)
    return groups if groups > 0 else 1


@pytest.mark.parametrize('max_gt', [1, 2, 3, 7, 33, 50, 99, 100, 101, 250])
def test_group_count_and_sizes(max_gt):
    labels, boxes = _gt([max_gt, 1], seed=max_gt)
    enc = _label_enc()
    content, ref, mask, meta = build_cdn_queries(*_to_tensors(labels, boxes), enc, num_queries=7)
    groups = _official_num_groups(100, max_gt)
    assert meta['num_dn_group'] == groups
    assert meta['max_gt'] == max_gt
    assert meta['single_pad'] == 2 * max_gt
    assert meta['pad_size'] == 2 * max_gt * groups
    assert list(content.shape) == [2, 2 * max_gt * groups, HIDDEN]
    assert list(ref.shape) == [2, 2 * max_gt * groups, 4]
    assert list(mask.shape) == [2 * max_gt * groups + 7] * 2


def test_group_count_hand_values():
    # floor(100 / max_gt), at least 1
    for max_gt, expected in [(1, 100), (3, 33), (7, 14), (40, 2), (51, 1), (100, 1), (180, 1)]:
        labels, boxes = _gt([max_gt], seed=1)
        meta = build_cdn_queries(*_to_tensors(labels, boxes), _label_enc(), num_queries=3)[3]
        assert meta['num_dn_group'] == expected, max_gt


def test_query_layout_without_noise():
    counts = [3, 0, 1]
    labels, boxes = _gt(counts, seed=3)
    enc = _label_enc(1)
    content, ref, mask, meta = build_cdn_queries(
        *_to_tensors(labels, boxes),
        enc,
        num_queries=5,
        dn_number=7,
        label_noise_ratio=0.0,
        box_noise_scale=0.0,
    )
    max_gt, groups = 3, 7 // 3
    assert meta['num_dn_group'] == groups and meta['pad_size'] == 2 * max_gt * groups
    weight = enc.weight.numpy()
    content, ref = content.numpy(), ref.numpy()
    filled = np.zeros(content.shape[:2], dtype=bool)
    for b, n in enumerate(counts):
        for g in range(groups):
            for half in (0, 1):  # 0: positive slots, 1: negative slots
                for j in range(n):
                    slot = g * 2 * max_gt + half * max_gt + j
                    np.testing.assert_array_equal(content[b, slot], weight[labels[b][j]])
                    np.testing.assert_allclose(
                        ref[b, slot], _np_inverse_sigmoid(boxes[b][j]), rtol=1e-6, atol=1e-6
                    )
                    filled[b, slot] = True
    # every other slot is padding: zero content and zero box logit (box 0.5, 0.5, 0.5, 0.5)
    assert filled.sum() == 2 * groups * sum(counts)
    assert np.all(content[~filled] == 0.0)
    assert np.all(ref[~filled] == 0.0)
    # positive slot indices (group-major) and the GT each of them copies
    for b, n in enumerate(counts):
        expected_pos = [g * 2 * max_gt + j for g in range(groups) for j in range(n)]
        expected_gt = [j for g in range(groups) for j in range(n)]
        np.testing.assert_array_equal(meta['positive_idx'][b], expected_pos)
        np.testing.assert_array_equal(meta['gt_idx'][b], expected_gt)
        assert meta['positive_idx'][b].dtype == np.int64
        for slot, j in zip(meta['positive_idx'][b], meta['gt_idx'][b]):
            np.testing.assert_array_equal(content[b, slot], weight[labels[b][j]])


def _official_mask(pad_size, single_pad, num_groups, num_queries):
    """The official loop (dn_components.py:115-127), with its first/last-group branches;
    ``single_pad`` here is the group width (the official local variable times 2)."""
    tgt = pad_size + num_queries
    mask = np.zeros([tgt, tgt], dtype=bool)
    mask[pad_size:, :pad_size] = True
    for i in range(num_groups):
        rows = slice(single_pad * i, single_pad * (i + 1))
        if i == 0:
            mask[rows, single_pad * (i + 1) : pad_size] = True
        if i == num_groups - 1:
            mask[rows, : single_pad * i] = True
        else:
            mask[rows, single_pad * (i + 1) : pad_size] = True
            mask[rows, : single_pad * i] = True
    return mask


@pytest.mark.parametrize('counts,dn_number', [([2, 1], 100), ([3, 3, 0], 10), ([5], 5), ([4], 3)])
def test_attention_mask_rules(counts, dn_number):
    labels, boxes = _gt(counts, seed=4)
    num_queries = 6
    _, _, mask, meta = build_cdn_queries(
        *_to_tensors(labels, boxes), _label_enc(), num_queries=num_queries, dn_number=dn_number
    )
    mask = mask.numpy()
    assert mask.dtype == np.bool_
    pad, width = meta['pad_size'], meta['single_pad']
    tgt = pad + num_queries
    assert mask.shape == (tgt, tgt)
    for i in range(tgt):
        for j in range(tgt):
            if i >= pad:  # matching query: blocked from every DN query, sees matching queries
                expected = j < pad
            elif j >= pad:  # DN query looking at a matching query: allowed
                expected = False
            else:  # DN to DN: only inside the same group
                expected = (i // width) != (j // width)
            assert mask[i, j] == expected, (i, j)
    np.testing.assert_array_equal(
        mask, _official_mask(pad, width, meta['num_dn_group'], num_queries)
    )


def _replay_arrays(num_rows, label_ratio, seed):
    rng = np.random.RandomState(seed)
    p = rng.uniform(0.0, 1.0, size=[num_rows]).astype('float32')
    chosen = int((p < label_ratio * 0.5).sum())
    new_label = rng.randint(0, NUM_CLASSES, size=[chosen]).astype('int64')
    sign = rng.randint(0, 2, size=[num_rows, 4]).astype('float32')
    part = rng.uniform(0.0, 1.0, size=[num_rows, 4]).astype('float32')
    return p, new_label, sign, part


def _expected_noised_boxes(boxes_cat, num_copies, sign01, part_raw, dtype='float32'):
    """Hand computation of the official box noise in ``dtype``, rows = copies of the GT list."""
    num_gt = boxes_cat.shape[0]
    known = np.tile(boxes_cat, [num_copies, 1]).astype(dtype)
    cxcy, wh = known[:, :2], known[:, 2:]
    corners = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
    half = np.concatenate([wh / 2, wh / 2], axis=1)
    negative = np.repeat(np.arange(num_copies) % 2 == 1, num_gt)
    part = part_raw.astype(dtype) + negative[:, None].astype(dtype)
    part = part * (sign01.astype(dtype) * 2.0 - 1.0).astype(dtype)
    moved = corners + part * half * np.asarray(SCALE, dtype)
    clipped = np.clip(moved, 0.0, 1.0)
    noised = np.concatenate(
        [(clipped[:, :2] + clipped[:, 2:]) / 2, clipped[:, 2:] - clipped[:, :2]], axis=1
    )
    return noised, corners, moved, half, negative


def test_replay_box_noise_exact():
    counts = [2, 1]
    labels, boxes = _gt(counts, seed=5)
    boxes[0][0] = [0.05, 0.5, 0.08, 0.2]  # close to the left border: negatives get clamped
    dn_number = 4  # max_gt 2 -> 2 groups
    groups, num_gt = 2, sum(counts)
    num_rows = 2 * groups * num_gt
    p, new_label, sign, part = _replay_arrays(num_rows, 0.5, seed=6)
    noise = DNNoise.replay(p, new_label, sign, part)
    _, ref, _, meta = build_cdn_queries(
        *_to_tensors(labels, boxes),
        _label_enc(),
        num_queries=4,
        dn_number=dn_number,
        box_noise_scale=SCALE,
        noise=noise,
    )
    assert meta['num_dn_group'] == groups
    boxes_cat = np.concatenate(boxes)
    noised, corners, moved, half, negative = _expected_noised_boxes(
        boxes_cat, 2 * groups, sign, part
    )
    ref = ref.numpy()
    bid = np.concatenate([np.full([n], b) for b, n in enumerate(counts)])
    within = np.concatenate([np.arange(n) for n in counts])
    for r in range(num_rows):
        copy, j = divmod(r, num_gt)
        slot = copy * meta['max_gt'] + within[j]
        np.testing.assert_allclose(
            ref[bid[j], slot], _np_inverse_sigmoid(noised[r]), rtol=1e-5, atol=1e-5
        )
        # back from the module's logits to corners: positives stay within the corner-noise
        # bound, negatives move at least that far (unless clamped at the image border)
        box = 1.0 / (1.0 + np.exp(-ref[bid[j], slot].astype('float64')))
        got = np.concatenate([box[:2] - box[2:] / 2, box[:2] + box[2:] / 2])
        offset = np.abs(got - corners[r])
        bound = SCALE * half[r]
        unclamped = (moved[r] > 0.0) & (moved[r] < 1.0)
        if negative[r]:
            assert np.all(offset[unclamped] >= bound[unclamped] - 1e-5), r
            assert np.all(offset <= 2 * bound + 1e-5), r
        else:
            assert np.all(offset <= bound + 1e-5), r
    # the border box's negatives were really clamped in this draw
    assert np.any(~((moved > 0.0) & (moved < 1.0)) & negative[:, None])


def test_float64_queries_stay_float64():
    """A float64 label_enc makes every float tensor float64: float64 boxes are not rounded to
    float32 and the float32 draws are widened exactly (official formula, numpy float64)."""
    counts = [2, 1]
    labels, boxes = _gt(counts, seed=5)
    boxes64 = [
        np.random.RandomState(b).uniform(0.3, 0.6, size=[n, 4]) for b, n in enumerate(counts)
    ]
    num_rows = 2 * 2 * sum(counts)
    p, new_label, sign, part = _replay_arrays(num_rows, 0.5, seed=6)
    enc = _label_enc()
    enc.to(dtype='float64')
    content, ref, _, meta = build_cdn_queries(
        [paddle.to_tensor(l) for l in labels],
        [paddle.to_tensor(b) for b in boxes64],
        enc,
        num_queries=4,
        dn_number=4,
        box_noise_scale=SCALE,
        noise=DNNoise.replay(p, new_label, sign, part),
    )
    assert content.dtype == paddle.float64 and ref.dtype == paddle.float64
    noised = _expected_noised_boxes(np.concatenate(boxes64), 4, sign, part, 'float64')[0]
    num_gt = sum(counts)
    bid = np.concatenate([np.full([n], b) for b, n in enumerate(counts)])
    within = np.concatenate([np.arange(n) for n in counts])
    ref = ref.numpy()
    for r in range(num_rows):
        copy, j = divmod(r, num_gt)
        np.testing.assert_allclose(
            ref[bid[j], copy * meta['max_gt'] + within[j]],
            _np_inverse_sigmoid(noised[r]),
            rtol=1e-12,
            atol=1e-12,
        )
    # float32 rounding of the boxes would be visible at this tolerance
    rounded = _expected_noised_boxes(
        np.concatenate(boxes64).astype('float32'), 4, sign, part, 'float64'
    )[0]
    assert np.abs(_np_inverse_sigmoid(rounded) - _np_inverse_sigmoid(noised)).max() > 1e-9


def test_replay_label_noise_rows():
    counts = [3, 2]
    labels, boxes = _gt(counts, seed=7)
    groups, num_gt = 100 // 3, 5
    num_rows = 2 * groups * num_gt
    p, _, sign, part = _replay_arrays(num_rows, 0.5, seed=8)
    p[:4] = [0.25, np.nextafter(np.float32(0.25), np.float32(0)), 0.0, 0.9]
    chosen = np.nonzero(p < 0.25)[0]
    new_label = np.random.RandomState(9).randint(0, NUM_CLASSES, size=[chosen.size])
    enc = _label_enc(2)
    content, _, _, meta = build_cdn_queries(
        *_to_tensors(labels, boxes),
        enc,
        num_queries=3,
        noise=DNNoise.replay(p, new_label, sign, part),
    )
    assert meta['num_dn_group'] == groups
    expected = np.tile(np.concatenate(labels), 2 * groups)
    expected[chosen] = new_label
    assert 1 in chosen and 2 in chosen and 0 not in chosen and 3 not in chosen
    weight, content = enc.weight.numpy(), content.numpy()
    bid = np.concatenate([np.full([n], b) for b, n in enumerate(counts)])
    within = np.concatenate([np.arange(n) for n in counts])
    for r in range(num_rows):
        copy, j = divmod(r, num_gt)
        np.testing.assert_array_equal(content[bid[j], copy * 3 + within[j]], weight[expected[r]])


def test_replay_rejects_wrong_shapes():
    labels, boxes = _gt([2], seed=10)
    args = _to_tensors(labels, boxes)
    num_rows = 2 * 50 * 2
    p, new_label, sign, part = _replay_arrays(num_rows, 0.5, seed=11)
    cases = [
        ('label_noise_p', DNNoise.replay(p[:-1], new_label, sign, part)),
        ('new_label', DNNoise.replay(p, np.concatenate([new_label, [1]]), sign, part)),
        ('rand_sign', DNNoise.replay(p, new_label, sign[:, :3], part)),
        ('rand_part_raw', DNNoise.replay(p, new_label, sign, part[:-2])),
    ]
    for name, noise in cases:
        with pytest.raises(ValueError, match=name):
            build_cdn_queries(*args, _label_enc(), num_queries=3, noise=noise)
    # right shapes work
    build_cdn_queries(
        *args, _label_enc(), num_queries=3, noise=DNNoise.replay(p, new_label, sign, part)
    )


def test_same_seed_same_queries():
    labels, boxes = _gt([4, 2], seed=12)
    enc = _label_enc(3)
    outs = []
    for seed in (2024, 2024, 7):
        paddle.seed(seed)
        content, ref, _, _ = build_cdn_queries(*_to_tensors(labels, boxes), enc, num_queries=3)
        outs.append((content.numpy(), ref.numpy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][1], outs[2][1])


def test_no_gt_gives_no_dn_queries():
    enc = _label_enc()
    labels = [paddle.zeros([0], dtype='int64'), paddle.zeros([0], dtype='int64')]
    boxes = [paddle.zeros([0, 4], dtype='float32'), paddle.zeros([0, 4], dtype='float32')]
    content, ref, mask, meta = build_cdn_queries(labels, boxes, enc, num_queries=9)
    assert content is None and ref is None
    assert list(mask.shape) == [9, 9] and not mask.numpy().any()
    assert meta['pad_size'] == 0 and meta['num_dn_group'] == 1
    assert [len(x) for x in meta['positive_idx']] == [0, 0]
    assert [len(x) for x in meta['gt_idx']] == [0, 0]


def test_content_is_differentiable_wrt_label_enc():
    counts = [2, 1]
    labels, boxes = _gt(counts, seed=13)
    groups, num_gt = 50, 3
    num_rows = 2 * groups * num_gt
    p, new_label, sign, part = _replay_arrays(num_rows, 0.5, seed=14)
    enc = _label_enc(4)
    content, _, _, _ = build_cdn_queries(
        *_to_tensors(labels, boxes),
        enc,
        num_queries=3,
        noise=DNNoise.replay(p, new_label, sign, part),
    )
    content.sum().backward()
    final = np.tile(np.concatenate(labels), 2 * groups)
    final[np.nonzero(p < 0.25)[0]] = new_label
    uses = np.bincount(final, minlength=NUM_CLASSES + 1).astype('float32')
    np.testing.assert_allclose(enc.weight.grad.numpy(), np.repeat(uses[:, None], HIDDEN, 1))


def test_labels_of_shape_n_by_1_and_bad_inputs():
    labels, boxes = _gt([2], seed=15)
    enc = _label_enc()
    paddle.seed(5)
    a = build_cdn_queries(
        [paddle.to_tensor(labels[0][:, None])], [paddle.to_tensor(boxes[0])], enc, num_queries=2
    )[0]
    paddle.seed(5)
    b = build_cdn_queries(
        [paddle.to_tensor(labels[0])], [paddle.to_tensor(boxes[0])], enc, num_queries=2
    )[0]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match=r'gt_boxes\[0\]'):
        build_cdn_queries([paddle.to_tensor(labels[0])], [paddle.to_tensor(boxes[0][:1])], enc)
    with debug_checks(), pytest.raises(ValueError, match='gt_labels'):
        build_cdn_queries([paddle.to_tensor(np.array([3, 95]))], [paddle.to_tensor(boxes[0])], enc)
