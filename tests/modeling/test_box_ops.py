"""Box conversions, IoU / GIoU (pairwise and paired) and inverse_sigmoid against hand-computed values."""

import numpy as np
import paddle

from ppdet_dac.modeling.box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    generalized_box_iou,
    inverse_sigmoid,
    paired_box_iou,
    paired_generalized_box_iou,
)

# A = (0,0,2,2); B = (1,1,3,3) overlaps A by 1; C = (3,3,4,4) is disjoint; D = (.5,.5,1.5,1.5) in A
A, B, C, D = [0, 0, 2, 2], [1, 1, 3, 3], [3, 3, 4, 4], [0.5, 0.5, 1.5, 1.5]
# hand-computed: IoU(A,B) = 1/7, enclosing 9 -> GIoU = 1/7 - 2/9; IoU(A,C) = 0, union 5,
# enclosing 16 -> GIoU = -11/16; IoU(A,D) = 1/4 = GIoU (D inside A)
IOU_A = np.array([1.0, 1 / 7, 0.0, 0.25])
UNION_A = np.array([4.0, 7.0, 5.0, 4.0])
GIOU_A = np.array([1.0, 1 / 7 - 2 / 9, -11 / 16, 0.25])


def _t(x, dtype="float64"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


def test_cxcywh_to_xyxy_hand_values():
    cxcywh = _t([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.2, 0.2]])
    xyxy = box_cxcywh_to_xyxy(cxcywh).numpy()
    np.testing.assert_allclose(xyxy, [[0.4, 0.3, 0.6, 0.7], [0.0, 0.8, 0.2, 1.0]], atol=1e-12)


def test_conversion_keeps_leading_dims():
    boxes = _t(np.random.default_rng(0).uniform(0.1, 0.5, (2, 3, 4)))
    out = box_cxcywh_to_xyxy(boxes).numpy()
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out[..., 2] - out[..., 0], boxes.numpy()[..., 2], atol=1e-12)


def test_pairwise_iou_and_giou_hand_values():
    iou, union = box_iou(_t([A]), _t([A, B, C, D]))
    np.testing.assert_allclose(iou.numpy()[0], IOU_A, atol=1e-12)
    np.testing.assert_allclose(union.numpy()[0], UNION_A, atol=1e-12)
    giou = generalized_box_iou(_t([A]), _t([A, B, C, D])).numpy()
    np.testing.assert_allclose(giou[0], GIOU_A, atol=1e-12)
    # symmetric
    np.testing.assert_allclose(
        generalized_box_iou(_t([A, B, C, D]), _t([A])).numpy()[:, 0], GIOU_A, atol=1e-12
    )


def test_paired_equals_hand_values_and_pairwise_diagonal():
    first = _t([A, A, A, A])
    second = _t([A, B, C, D])
    iou, union = paired_box_iou(first, second)
    np.testing.assert_allclose(iou.numpy(), IOU_A, atol=1e-12)
    np.testing.assert_allclose(union.numpy(), UNION_A, atol=1e-12)
    np.testing.assert_allclose(
        paired_generalized_box_iou(first, second).numpy(), GIOU_A, atol=1e-12
    )

    rng = np.random.default_rng(1)
    b1 = box_cxcywh_to_xyxy(_t(rng.uniform(0.1, 0.5, (6, 4))))
    b2 = box_cxcywh_to_xyxy(_t(rng.uniform(0.1, 0.5, (6, 4))))
    np.testing.assert_allclose(
        paired_box_iou(b1, b2)[0].numpy(), np.diag(box_iou(b1, b2)[0].numpy()), atol=1e-12
    )
    np.testing.assert_allclose(
        paired_generalized_box_iou(b1, b2).numpy(),
        np.diag(generalized_box_iou(b1, b2).numpy()),
        atol=1e-12,
    )


def test_inverse_sigmoid_clamps_like_official():
    x = _t([0.5, 0.25, 0.0, 1.0, 1.5, -0.2])
    expected = [0.0, np.log(1 / 3), np.log(1e-5), -np.log(1e-5), -np.log(1e-5), np.log(1e-5)]
    np.testing.assert_allclose(inverse_sigmoid(x).numpy(), expected, rtol=1e-12)
    y = _t([0.3, 0.9])
    np.testing.assert_allclose(
        paddle.nn.functional.sigmoid(inverse_sigmoid(y)).numpy(), [0.3, 0.9], rtol=1e-12
    )
