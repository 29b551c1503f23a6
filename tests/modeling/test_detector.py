"""Tiny DAC-DETR on CPU: loss keys and invariants, the DAC C-stream's properties, predict path."""

import re

import numpy as np
import paddle
import pytest

from _common import build_tiny_detector, make_batch
from ppdet_dac.modeling.matcher import NonFiniteCostError

BOX_KEY = re.compile(r"loss_(bbox|giou)")


def _losses(model, batch):
    model.train()
    return model(batch)


def _expected_keys(num_layers, use_dac):
    keys = set()
    branches = ["_one2one"] + ([""] if use_dac else [])
    for lid in range(num_layers):
        sfx = "" if lid == num_layers - 1 else f"_{lid}"
        for br in branches:
            for name in ("ce", "bbox", "giou"):
                keys.add(f"loss_{name}{sfx}{br}")
                keys.add(f"loss_{name}_dn{sfx}{br}")
    keys.update({"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"})
    return keys


@pytest.mark.parametrize("use_dac", [True, False])
def test_loss_keys_and_finite(use_dac):
    model = build_tiny_detector(use_dac=use_dac)
    losses = _losses(model, make_batch([2, 1]))
    terms = {k: v for k, v in losses.items() if k != "loss"}
    assert set(terms) == _expected_keys(2, use_dac)
    values = np.array([float(v) for v in terms.values()])
    assert np.isfinite(values).all()
    np.testing.assert_allclose(float(losses["loss"]), values.sum(), rtol=1e-5)


def test_seventy_five_weighted_terms_with_six_layers():
    model = build_tiny_detector(use_dac=True, num_decoder_layers=6)
    losses = _losses(model, make_batch([1, 2]))
    terms = sorted(k for k in losses if k != "loss")
    assert len(terms) == 75
    assert set(terms) == _expected_keys(6, True)


def test_no_gt_gives_zero_box_losses_and_positive_class_loss():
    model = build_tiny_detector()
    losses = _losses(model, make_batch([0, 0]))
    for key, value in losses.items():
        if BOX_KEY.match(key):
            assert float(value) == 0.0, key
    assert float(losses["loss_ce_one2one"]) > 0
    assert float(losses["loss_ce"]) > 0
    assert float(losses["loss_ce_enc"]) > 0


def test_one_gt_gives_positive_losses():
    model = build_tiny_detector()
    losses = _losses(model, make_batch([1]))
    nonpositive = [k for k, v in losses.items() if not float(v) > 0]
    assert nonpositive == []


def test_overfits_one_image():
    model = build_tiny_detector(num_queries=20)
    batch = make_batch([2], seed=3)
    opt = paddle.optimizer.AdamW(
        learning_rate=3e-3,
        parameters=model.parameters(),
        grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0),
    )
    model.train()
    history = []
    for _ in range(30):
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
        history.append(float(loss))
    assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5])


def _transformer_outputs(model, batch, **kwargs):
    model.train()
    model.inputs = batch
    feats = model.backbone(batch)
    labels, boxes = model.targets()
    return model.transformer(feats, batch["pad_mask"] < 0.5, labels, boxes, **kwargs)


def test_layer0_c_and_o_streams_are_identical():
    model = build_tiny_detector()
    out = _transformer_outputs(model, make_batch([2, 1]))
    np.testing.assert_array_equal(out["logits"][0].numpy(), out["logits_c"][0].numpy())
    np.testing.assert_array_equal(out["boxes"][0].numpy(), out["boxes_c"][0].numpy())
    assert not np.allclose(out["logits"][1].numpy(), out["logits_c"][1].numpy())


def test_c_stream_never_calls_self_attention():
    model = build_tiny_detector(num_decoder_layers=3)
    calls = []
    for layer in model.transformer.decoder.layers:
        layer.self_attn.register_forward_post_hook(lambda *args: calls.append(1))
    _transformer_outputs(model, make_batch([1]), run_c_stream=False)
    without_c = len(calls)
    _transformer_outputs(model, make_batch([1]), run_c_stream=True)
    assert without_c == 3
    assert len(calls) - without_c == 3


def test_dn_queries_do_not_change_matching_queries_in_c_stream():
    from ppdet_dac.modeling.denoising import DNNoise

    model = build_tiny_detector()
    batch = make_batch([2, 1])
    outs = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        num_gt, groups = 3, 10 // 2  # G = floor(10 / max_gt=2)
        rows = 2 * groups * num_gt
        p = rng.uniform(size=rows)
        noise = DNNoise.replay(
            p,
            rng.integers(0, 5, int((p < 0.25).sum())),
            rng.integers(0, 2, (rows, 4)),
            rng.uniform(size=(rows, 4)),
        )
        outs.append(_transformer_outputs(model, batch, dn_noise=noise))
    pad = outs[0]["dn_meta"]["pad_size"]
    assert not np.allclose(
        outs[0]["boxes_c"][:, :, :pad].numpy(), outs[1]["boxes_c"][:, :, :pad].numpy()
    )
    for key in ("logits_c", "boxes_c", "logits", "boxes"):
        np.testing.assert_allclose(
            outs[0][key][:, :, pad:].numpy(), outs[1][key][:, :, pad:].numpy(), rtol=1e-5, atol=1e-6
        )


def test_eval_output_identical_with_and_without_dac():
    dac = build_tiny_detector(use_dac=True)
    base = build_tiny_detector(use_dac=False)
    base.set_state_dict(dac.state_dict())
    batch = make_batch([1, 1])
    dac.eval()
    base.eval()
    a, b = dac(batch), base(batch)
    np.testing.assert_array_equal(a["bbox_num"].numpy(), b["bbox_num"].numpy())
    np.testing.assert_array_equal(a["bbox"].numpy(), b["bbox"].numpy())
    assert a["bbox"].shape[1] == 6


def test_c_branch_loss_reaches_shared_modules():
    model = build_tiny_detector()
    losses = _losses(model, make_batch([2, 1]))
    c_terms = [
        v
        for k, v in losses.items()
        if k != "loss" and not k.endswith("_one2one") and not k.endswith("_enc")
    ]
    paddle.add_n(c_terms).backward()
    layer = model.transformer.decoder.layers[1]
    for name, param in [
        ("cross_attn.value_proj", layer.cross_attn.value_proj.weight),
        ("cross_attn.sampling_offsets", layer.cross_attn.sampling_offsets.weight),
        ("ffn.linear1", layer.ffn.linear1.weight),
        ("class_head", model.transformer.class_heads[1].weight),
        ("box_head", model.transformer.box_heads[1].layers[-1].weight),
    ]:
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    # layer 1's self-attention is O-stream only: the C-branch loss cannot reach it
    sa = layer.self_attn.q_proj.weight
    assert sa.grad is None or float(sa.grad.abs().sum()) == 0


def test_predict_labels_scores_sorted():
    model = build_tiny_detector()
    model.eval()
    out = model(make_batch([1, 1], size=96))
    bbox, num = out["bbox"].numpy(), out["bbox_num"].numpy()
    assert num.sum() == bbox.shape[0]
    first = bbox[: num[0]]
    assert np.all(np.diff(first[:, 1]) <= 0)
    assert set(np.unique(first[:, 0]).astype(int)) <= set(range(5))
    assert np.all((first[:, 1] > 0) & (first[:, 1] < 1))


# -- DAC on plain one-stage Deformable-DETR (two_stage: false) ------------------------------------
def _one_stage(use_dac=True, **kwargs):
    return build_tiny_detector(use_dac=use_dac, two_stage=False, num_denoising=0, **kwargs)


@pytest.mark.parametrize("use_dac", [True, False])
def test_one_stage_loss_keys(use_dac):
    losses = _losses(_one_stage(use_dac), make_batch([2, 1]))
    expected = {k for k in _expected_keys(2, use_dac) if "_dn" not in k and "_enc" not in k}
    assert set(losses) - {"loss"} == expected
    assert all(np.isfinite(float(v)) for v in losses.values())


def test_one_stage_streams_share_fixed_reference_points_and_one_head():
    model = _one_stage(num_decoder_layers=3)
    transformer = model.transformer
    assert all(h is transformer.class_head for h in transformer.class_heads)
    assert all(h is transformer.box_head for h in transformer.box_heads)
    names = [n for n, _ in model.named_parameters()]
    assert sum(n.startswith("transformer.class_head.") for n in names) == 2  # weight, bias
    out = _transformer_outputs(model, make_batch([2, 1]))
    np.testing.assert_array_equal(out["logits"][0].numpy(), out["logits_c"][0].numpy())
    np.testing.assert_array_equal(out["boxes"][0].numpy(), out["boxes_c"][0].numpy())
    # no refinement: at init (box head's last layer 0, bias (0, 0, -2, -2)) every layer's box is
    # (reference point, sigmoid(-2), sigmoid(-2)), in both streams
    query_pos = transformer.query_embed.weight[:, :32]
    points = paddle.nn.functional.sigmoid(transformer.reference_points(query_pos)).numpy()
    side = 1.0 / (1.0 + np.exp(2.0))
    for key in ("boxes", "boxes_c"):
        boxes = out[key].numpy()  # [L, B, Q, 4]
        np.testing.assert_allclose(
            boxes[..., :2], np.broadcast_to(points, boxes[..., :2].shape), atol=1e-6
        )
        np.testing.assert_allclose(boxes[..., 2:], side, atol=1e-6)


def test_one_stage_eval_identical_with_and_without_dac():
    model = _one_stage()
    batch = {k: v for k, v in make_batch([1]).items() if not k.startswith("gt")}
    model.eval()
    with_dac = model(batch)
    model.transformer.use_dac = False
    without = model(batch)
    np.testing.assert_array_equal(with_dac["bbox"].numpy(), without["bbox"].numpy())


def test_one_stage_refuses_denoising():
    with pytest.raises(ValueError, match="num_denoising"):
        build_tiny_detector(two_stage=False, num_denoising=10)


@pytest.mark.parametrize("im_id_as_list", [False, True])
def test_non_finite_matching_cost_names_the_im_id(im_id_as_list):
    """A NaN GT box in batch image 1 stops the step with the im_id of that image and of the
    batch (the reader gives 'im_id' as a [B, 1] tensor, or as a list per image)."""
    model = build_tiny_detector()
    batch = make_batch([2, 1])
    batch["gt_bbox"][1] = paddle.to_tensor(np.array([[0.5, np.nan, 0.2, 0.2]], dtype="float32"))
    ids = np.array([[17], [42]], dtype="int64")
    batch["im_id"] = [paddle.to_tensor(i) for i in ids] if im_id_as_list else paddle.to_tensor(ids)
    with pytest.raises(NonFiniteCostError) as info:
        _losses(model, batch)
    assert info.value.image == 1
    assert str(info.value).startswith("image 1 of the batch: matching cost has ")
    assert str(info.value).endswith(
        "non-finite entries: its ground-truth boxes are NaN/inf; "
        "it is im_id 42 (the batch's im_ids: [17, 42])"
    )
