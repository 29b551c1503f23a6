"""DACNMSPostProcess: scaling, class-wise NMS decisions, top-300, numpy reference, export."""

import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppdet_dac.modeling.post_process import DACNMSPostProcess


def _logit(p):
    return float(np.log(p / (1.0 - p)))


def _run(pp, logits, boxes, im_shape, scale_factor):
    bbox, num = pp(
        paddle.to_tensor(np.asarray(logits, 'float32')),
        paddle.to_tensor(np.asarray(boxes, 'float32')),
        paddle.to_tensor(np.asarray(im_shape, 'float32')),
        paddle.to_tensor(np.asarray(scale_factor, 'float32')),
    )
    return bbox.numpy(), num.numpy()


def _cxcywh_from_px(x1, y1, x2, y2, size):
    return [(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size]


# ---------------------------------------------------------------- numpy reference (official)
def _iou32(box, others):
    """float32 IoU of one xyxy box with [K, 4] boxes, as torchvision computes it (no +1)."""
    zero = np.float32(0)
    iw = np.maximum(zero, np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]))
    ih = np.maximum(zero, np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]))
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter)


def _reference(prob, boxes, im_shape, scale_factor, top_k, thr, max_det):
    """Per image: top-k (query, class) pairs, greedy NMS per class, first max_det by score."""
    bsz, nq, nc = prob.shape
    rows, nums = [], []
    thr32 = np.float32(thr)
    for b in range(bsz):
        origin = np.floor(im_shape[b] / scale_factor[b] + np.float32(0.5))
        h, w = origin[0], origin[1]
        cx, cy, bw, bh = [boxes[b][:, k] for k in range(4)]
        half = np.float32(0.5)
        xyxy = np.stack([cx - half * bw, cy - half * bh, cx + half * bw, cy + half * bh], axis=1)
        xyxy = xyxy * np.array([w, h, w, h], dtype='float32')
        scores = prob[b].reshape(-1)
        cand = np.argsort(-scores, kind='stable')[:top_k]  # ties: lower pair index first
        kept = []
        for c in range(nc):
            kept_boxes = np.zeros([0, 4], 'float32')
            for pair in cand[cand % nc == c]:
                box = xyxy[pair // nc]
                if kept_boxes.shape[0] == 0 or not np.any(_iou32(box, kept_boxes) > thr32):
                    kept.append(pair)
                    kept_boxes = np.concatenate([kept_boxes, box[None]])
        kept = sorted(kept, key=lambda i: (-scores[i], i))[:max_det]
        for pair in kept:
            rows.append([pair % nc, scores[pair]] + list(xyxy[pair // nc]))
        nums.append(len(kept))
    return np.array(rows, 'float32').reshape([-1, 6]), np.array(nums, 'int32')


def _clustered_inputs(rng, bsz, nq, nc, num_clusters, jitter):
    """Queries around a few centres so that many same-class IoUs fall near 0.8."""
    centres = np.concatenate(
        [
            rng.uniform(0.25, 0.75, [bsz, num_clusters, 2]),
            rng.uniform(0.1, 0.3, [bsz, num_clusters, 2]),
        ],
        axis=2,
    )
    pick = rng.randint(0, num_clusters, [bsz, nq])
    boxes = np.take_along_axis(centres, pick[..., None], axis=1)
    boxes = boxes + rng.uniform(-jitter, jitter, boxes.shape)
    logits = rng.normal(0, 2, [bsz, nq, nc])
    return logits.astype('float32'), boxes.astype('float32')


# ---------------------------------------------------------------- hand-computed cases
def test_boxes_scaled_to_original_image_and_tie_order():
    pp = DACNMSPostProcess()
    # resized 400 x 500, scale (0.7, 0.3): original h = floor(571.43 + 0.5) = 571,
    # w = floor(1666.67 + 0.5) = 1667
    logits = [[[-10.0, 1.5, -10.0]]]
    boxes = [[[0.5, 0.25, 0.5, 0.25]]]  # xyxy (0.25, 0.125, 0.75, 0.375)
    bbox, num = _run(pp, logits, boxes, [[400, 500]], [[0.7, 0.3]])
    assert num.tolist() == [3]
    np.testing.assert_array_equal(bbox[:, 0], [1, 0, 2])  # equal scores: lower class first
    np.testing.assert_allclose(
        bbox[:, 1],
        [1 / (1 + np.exp(-1.5)), 1 / (1 + np.exp(10.0)), 1 / (1 + np.exp(10.0))],
        rtol=1e-6,
    )
    for row in bbox:
        np.testing.assert_allclose(row[2:], [416.75, 71.375, 1250.25, 214.125], rtol=1e-6)


def _two_boxes(iou_case):
    """Two boxes in a 128 x 128 image (scale 1); returns cxcywh rows and the exact IoU."""
    a = (32, 16, 96, 96)  # 64 x 80, area 5120
    b = {
        'above': (32, 16, 96, 84),  # 64 x 68 inside a: IoU 4352 / 5120 = 0.85
        'below': (32, 16, 96, 79),  # 64 x 63 inside a: IoU 4032 / 5120 = 0.7875
        'equal': (32, 16, 96, 80),  # 64 x 64 inside a: IoU 4096 / 5120 = 0.8
    }[iou_case]
    iou = (b[3] - b[1]) / 80.0
    return [_cxcywh_from_px(*a, 128), _cxcywh_from_px(*b, 128)], iou


@pytest.mark.parametrize('case', ['above', 'below', 'equal'])
def test_same_class_pair(case):
    pp = DACNMSPostProcess()
    boxes, iou = _two_boxes(case)
    logits = [[[_logit(0.9)], [_logit(0.7)]]]
    bbox, num = _run(pp, logits, [boxes], [[128, 128]], [[1, 1]])
    a_px = [32, 16, 96, 96]
    if iou > 0.8:
        assert num.tolist() == [1]
        np.testing.assert_allclose(bbox[0, 2:], a_px, atol=1e-4)
        np.testing.assert_allclose(bbox[0, 1], 0.9, rtol=1e-6)
    else:
        # 'equal': float32 IoU == float32(0.8) is not > 0.8f (torchvision CUDA semantics)
        assert num.tolist() == [2]
        np.testing.assert_allclose(bbox[:, 1], [0.9, 0.7], rtol=1e-6)
        np.testing.assert_allclose(bbox[0, 2:], a_px, atol=1e-4)


def test_overlapping_boxes_of_different_classes_both_kept():
    pp = DACNMSPostProcess()
    boxes, iou = _two_boxes('above')
    assert iou > 0.8
    logits = [[[_logit(0.95), -30.0], [-30.0, _logit(0.88)]]]
    bbox, num = _run(pp, logits, [boxes], [[128, 128]], [[1, 1]])
    # per class the low-score copy of the other box is suppressed; the two real ones stay
    assert num.tolist() == [2]
    np.testing.assert_array_equal(bbox[:, 0], [0, 1])
    np.testing.assert_allclose(bbox[:, 1], [0.95, 0.88], rtol=1e-6)
    np.testing.assert_allclose(bbox[0, 2:], [32, 16, 96, 96], atol=1e-4)
    np.testing.assert_allclose(bbox[1, 2:], [32, 16, 96, 84], atol=1e-4)


def test_at_most_max_detections_sorted_by_score():
    rng = np.random.RandomState(0)
    bsz, nq, nc = 2, 400, 91
    logits = rng.normal(0, 2, [bsz, nq, nc]).astype('float32')
    boxes = np.concatenate(
        [rng.uniform(0.1, 0.9, [bsz, nq, 2]), rng.uniform(0.02, 0.2, [bsz, nq, 2])], axis=2
    ).astype('float32')
    im_shape = np.array([[640, 480], [512, 512]], 'float32')
    scale = np.array([[1.0, 1.0], [0.5, 0.5]], 'float32')
    pp = DACNMSPostProcess()
    bbox, num = _run(pp, logits, boxes, im_shape, scale)
    prob = F.sigmoid(paddle.to_tensor(logits)).numpy()
    ref_all, ref_num_all = _reference(prob, boxes, im_shape, scale, 10000, 0.8, 10**9)
    assert np.all(ref_num_all > 300)  # enough survivors for the cap to matter
    np.testing.assert_array_equal(num, np.minimum(ref_num_all, 300))
    start = 0
    for n in num:
        scores = bbox[start : start + n, 1]
        assert np.all(np.diff(scores) <= 0)
        start += n
    assert bbox.shape == (int(num.sum()), 6)


@pytest.mark.parametrize(
    'bsz,nq,nc,top_k,max_det,seed',
    [
        (2, 60, 4, 100, 20, 1),
        (2, 60, 4, 30, 300, 4),  # fewer survivors than max_det: the candidate cut shows
        (3, 40, 3, 10000, 300, 2),
        (2, 150, 91, 10000, 300, 3),
    ],
)
def test_matches_numpy_reference(bsz, nq, nc, top_k, max_det, seed):
    rng = np.random.RandomState(seed)
    logits, boxes = _clustered_inputs(rng, bsz, nq, nc, num_clusters=6, jitter=0.02)
    im_shape = rng.uniform(300, 800, [bsz, 2]).astype('float32')
    scale = rng.uniform(0.5, 1.5, [bsz, 2]).astype('float32')
    pp = DACNMSPostProcess(num_top_candidates=top_k, nms_iou_threshold=0.8, max_detections=max_det)
    bbox, num = _run(pp, logits, boxes, im_shape, scale)
    prob = F.sigmoid(paddle.to_tensor(logits)).numpy()
    ref, ref_num = _reference(prob, boxes, im_shape, scale, top_k, 0.8, max_det)
    np.testing.assert_array_equal(num, ref_num)
    np.testing.assert_array_equal(bbox[:, :2], ref[:, :2])
    np.testing.assert_allclose(bbox[:, 2:], ref[:, 2:], rtol=1e-6, atol=1e-4)
    # NMS really removed candidates in these clustered inputs
    _, survivors = _reference(prob, boxes, im_shape, scale, top_k, 0.8, 10**9)
    assert np.all(survivors < min(top_k, nq * nc))


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match='max_detections'):
        DACNMSPostProcess(max_detections=0)
    with pytest.raises(ValueError, match='nms_iou_threshold'):
        DACNMSPostProcess(nms_iou_threshold=1.5)
    with pytest.raises(ValueError, match='num_top_candidates'):
        DACNMSPostProcess(num_top_candidates=2.5)


# ---------------------------------------------------------------- export
class _Exported(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.post_process = DACNMSPostProcess()
        self.gain = self.create_parameter(
            [1], default_initializer=paddle.nn.initializer.Constant(1.0)
        )

    def forward(self, logits, boxes, im_shape, scale_factor):
        return self.post_process(logits * self.gain, boxes, im_shape, scale_factor)


def test_export_and_inference_match_dygraph(tmp_path):
    nq, nc = 120, 91  # 10920 pairs > 10000: the candidate cut is exercised
    model = _Exported()
    model.eval()
    spec = [
        paddle.static.InputSpec([None, nq, nc], 'float32', 'logits'),
        paddle.static.InputSpec([None, nq, 4], 'float32', 'boxes'),
        paddle.static.InputSpec([None, 2], 'float32', 'im_shape'),
        paddle.static.InputSpec([None, 2], 'float32', 'scale_factor'),
    ]
    prefix = str(tmp_path / 'model')
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), prefix)
    assert os.path.exists(prefix + '.json') and os.path.exists(prefix + '.pdiparams')

    config = paddle.inference.Config(prefix + '.json', prefix + '.pdiparams')
    config.disable_gpu()
    # oneDNN's sigmoid differs from the dygraph kernel by up to 1 ulp; without it the
    # exported graph must reproduce dygraph bit for bit
    config.disable_mkldnn()
    predictor = paddle.inference.create_predictor(config)

    rng = np.random.RandomState(4)
    for bsz in (1, 2):
        logits, boxes = _clustered_inputs(rng, bsz, nq, nc, num_clusters=8, jitter=0.03)
        im_shape = np.tile(np.array([[400, 500]], 'float32'), [bsz, 1])
        scale = np.tile(np.array([[0.7, 0.3]], 'float32'), [bsz, 1])
        feeds = [logits, boxes, im_shape, scale]
        for name, value in zip(predictor.get_input_names(), feeds):
            predictor.get_input_handle(name).copy_from_cpu(value)
        predictor.run()
        outs = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
        ref_bbox, ref_num = model(*[paddle.to_tensor(x) for x in feeds])
        np.testing.assert_array_equal(outs[1], ref_num.numpy())
        np.testing.assert_array_equal(outs[0], ref_bbox.numpy())
        assert outs[0].shape[0] == int(ref_num.numpy().sum()) > 0
