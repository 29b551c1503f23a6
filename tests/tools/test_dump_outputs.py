"""tools/dump_outputs.py on the demo model with random weights: keys and shapes, forced top-k,
float64, replayed denoising noise, loss bookkeeping, and the input checks."""

import json
import os
import sys

import numpy as np
import paddle
import pytest

from _common import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import dump_outputs  # noqa: E402

from ppdet_dac.analysis.dump_inputs import make_dn_noise, num_dn_rows  # noqa: E402
from ppdet_dac.modeling.criterion import DEFAULT_WEIGHTS  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "demo", "dac_demo.yml")
# demo model: 3 decoder layers, 100 queries, 3 classes, 30 denoising queries
NUM_LAYERS, NUM_QUERIES, NUM_CLASSES, NUM_DENOISING = 3, 100, 3, 30
B, H, W = 2, 96, 128
# tokens of a 96 x 128 input: strides 8, 16, 32 and the extra stride-64 level
NUM_TOKENS = 12 * 16 + 6 * 8 + 3 * 4 + 2 * 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Random demo weights (heads perturbed so that no output is trivially constant), an input
    batch with padding in image 1, targets and two noise files."""
    import ppdet_dac  # noqa: F401
    from ppdet.core.workspace import create
    from ppdet_dac.engine import load_checked_config

    tmp = tmp_path_factory.mktemp("dump")
    load_checked_config(CONFIG)
    paddle.seed(0)
    model = create("DACDETR")
    rng = np.random.default_rng(0)
    state = {}
    for name, value in model.state_dict().items():
        arr = value.numpy()
        if "heads" in name:
            arr = arr + 0.05 * rng.standard_normal(arr.shape).astype(arr.dtype)
        state[name] = paddle.to_tensor(arr)
    paddle.save(state, str(tmp / "w.pdparams"))
    np.save(tmp / "x.npy", rng.standard_normal((B, 3, H, W)).astype("float32"))
    mask = np.zeros((B, H, W), dtype=bool)
    mask[1, 80:, :] = True
    mask[1, :, 112:] = True
    np.save(tmp / "m.npy", mask)
    targets = [
        {"boxes": [[0.3, 0.4, 0.2, 0.3], [0.6, 0.6, 0.3, 0.2]], "labels": [0, 2]},
        {"boxes": [[0.5, 0.5, 0.4, 0.4]], "labels": [1]},
    ]
    (tmp / "t.json").write_text(json.dumps(targets))
    for seed in (1, 2):
        np.savez(
            tmp / f"n{seed}.npz", **make_dn_noise([2, 1], NUM_DENOISING, NUM_CLASSES, seed=seed)
        )
    return tmp


def _dump(files, *extra, out="o.npz", weights="w"):
    argv = [
        "-c",
        CONFIG,
        "-o",
        f"weights={files / weights}",
        "--input",
        str(files / "x.npy"),
        "--mask",
        str(files / "m.npy"),
        "--out",
        str(files / out),
    ] + [str(e) for e in extra]
    dump_outputs.main(argv)
    with np.load(files / out) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def eval32(files):
    return _dump(files)


def test_eval_keys_and_shapes(eval32):
    shapes = {
        "pred_logits": (B, NUM_QUERIES, NUM_CLASSES),
        "pred_boxes": (B, NUM_QUERIES, 4),
        "dec_logits": (NUM_LAYERS, B, NUM_QUERIES, NUM_CLASSES),
        "dec_boxes": (NUM_LAYERS, B, NUM_QUERIES, 4),
        "dec_logits_cdecoder": (NUM_LAYERS, B, NUM_QUERIES, NUM_CLASSES),
        "dec_boxes_cdecoder": (NUM_LAYERS, B, NUM_QUERIES, 4),
        "enc_logits": (B, NUM_TOKENS, NUM_CLASSES),
        "enc_boxes": (B, NUM_TOKENS, 4),
        "enc_topk_indices": (B, NUM_QUERIES),
    }
    n = eval32["post_scores"].shape[0]
    shapes.update(post_scores=(n,), post_labels=(n,), post_boxes=(n, 4), post_label_space=())
    assert {k: v.shape for k, v in eval32.items()} == shapes
    assert 0 < n <= 100  # the demo config keeps at most 100 detections
    assert str(eval32["post_label_space"]) == "contiguous_class_id"
    # last layer at the top level; C-decoder layer 0 equals O-decoder layer 0
    # (docs/algorithm.md#2-two-streams-through-one-decoder)
    np.testing.assert_array_equal(eval32["pred_logits"], eval32["dec_logits"][-1])
    np.testing.assert_array_equal(eval32["pred_boxes"], eval32["dec_boxes"][-1])
    np.testing.assert_allclose(eval32["dec_logits_cdecoder"][0], eval32["dec_logits"][0], atol=1e-6)
    assert not np.allclose(eval32["dec_logits_cdecoder"][-1], eval32["dec_logits"][-1])
    # top-k: the queries start from the best encoder proposals by channel 0
    enc0 = eval32["enc_logits"][..., 0]
    for b in range(B):
        chosen = np.sort(enc0[b][eval32["enc_topk_indices"][b]])
        assert chosen.min() >= np.sort(enc0[b])[-NUM_QUERIES]


def test_post_process_matches_first_image_scores(eval32):
    """post_* is the first image: every score is one of its sigmoid(logit) values and the top
    score is its maximum; labels are its class indices, boxes are xyxy in input pixels."""
    prob = 1 / (1 + np.exp(-eval32["pred_logits"][0].astype(np.float64)))
    scores, labels = eval32["post_scores"], eval32["post_labels"]
    assert scores[0] == pytest.approx(prob.max(), rel=1e-5)
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < NUM_CLASSES
    q = np.abs(prob[:, labels[0]] - scores[0]).argmin()
    cx, cy, w, h = eval32["pred_boxes"][0, q].astype(np.float64)
    np.testing.assert_allclose(
        eval32["post_boxes"][0],
        [(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H],
        rtol=1e-4,
        atol=1e-3,
    )


def test_forced_topk_indices_are_used(files, eval32):
    rng = np.random.default_rng(3)
    forced = np.stack([rng.permutation(NUM_TOKENS)[:NUM_QUERIES] for _ in range(B)])
    np.save(files / "i.npy", forced.astype("int64"))
    out = _dump(files, "--topk-indices", files / "i.npy", out="forced.npz")
    np.testing.assert_array_equal(out["enc_topk_indices"], forced)
    np.testing.assert_array_equal(out["enc_logits"], eval32["enc_logits"])  # encoder untouched
    assert np.abs(out["dec_boxes"] - eval32["dec_boxes"]).max() > 1e-2
    assert np.abs(out["dec_logits"] - eval32["dec_logits"]).max() > 1e-3
    # forcing the model's own choice reproduces the plain run
    np.save(files / "own.npy", eval32["enc_topk_indices"])
    same = _dump(files, "--topk-indices", files / "own.npy", out="own.npz")
    np.testing.assert_allclose(same["dec_logits"], eval32["dec_logits"], atol=1e-6)


def test_float64_agrees_with_float32(files, eval32):
    out = _dump(files, "--dtype", "float64", out="f64.npz")
    np.testing.assert_array_equal(out["enc_topk_indices"], eval32["enc_topk_indices"])
    for key in (
        "pred_logits",
        "pred_boxes",
        "dec_logits",
        "dec_boxes",
        "dec_logits_cdecoder",
        "dec_boxes_cdecoder",
        "enc_logits",
        "enc_boxes",
    ):
        assert out[key].dtype == np.float64, key
        np.testing.assert_allclose(out[key], eval32[key], atol=1e-4, rtol=1e-4, err_msg=key)
    assert np.abs(out["dec_logits"] - eval32["dec_logits"]).max() > 0  # really recomputed


def _train(files, noise, out):
    return _dump(
        files, "--train", "--targets", files / "t.json", "--dn-noise", files / noise, out=out
    )


def _weight(name):
    """Independent reading of the criterion's weight table: ce 1, bbox 5, giou 2; the encoder
    terms use the *_enc weights."""
    kind = name.split("/")[1].split("_")[1]
    return DEFAULT_WEIGHTS[kind + "_enc" if name.endswith("_enc") else kind]


def test_replayed_noise_and_loss_total(files):
    first = _train(files, "n1.npz", "l1.npz")
    again = _train(files, "n1.npz", "l1b.npz")
    other = _train(files, "n2.npz", "l2.npz")
    terms = sorted(k for k in first if k.startswith("loss/"))
    # 3 decoder layers x 4 branches x 3 terms, plus the 3 encoder terms
    assert len(terms) == NUM_LAYERS * 4 * 3 + 3
    assert first.keys() == again.keys() == other.keys()
    for k in first:
        np.testing.assert_array_equal(first[k], again[k], err_msg=k)
    changed = {k for k in terms if not np.isclose(first[k], other[k], rtol=1e-6)}
    # the noise only moves the denoising queries, which the matching queries cannot see
    assert changed and all("_dn" in k for k in changed)
    assert any(k.startswith("loss/loss_bbox_dn") for k in changed)
    total = sum(_weight(k) * float(first[k]) for k in terms)
    assert float(first["loss_total"]) == pytest.approx(total, rel=1e-5)
    for k in terms:
        assert float(first["loss_weight/" + k[5:]]) == _weight(k)


def test_bad_noise_files_are_named(files):
    good = make_dn_noise([2, 1], NUM_DENOISING, NUM_CLASSES, seed=1)
    rows = num_dn_rows([2, 1], NUM_DENOISING)
    assert rows == 2 * (NUM_DENOISING // 2) * 3
    renamed = dict(good)
    renamed["label_noise_p"] = renamed.pop("dn_label_noise_p")
    np.savez(files / "bad_key.npz", **renamed)
    with pytest.raises(ValueError, match=r"bad_key\.npz.*missing \['dn_label_noise_p'\]"):
        _train(files, "bad_key.npz", "x.npz")
    short = dict(good, dn_rand_sign=good["dn_rand_sign"][:-1])
    np.savez(files / "bad_shape.npz", **short)
    with pytest.raises(
        ValueError,
        match=rf"bad_shape\.npz: 'dn_rand_sign' has shape "
        rf"\[{rows - 1}, 4\], expected \[{rows}, 4\]",
    ):
        _train(files, "bad_shape.npz", "x.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        _train(files, "missing.npz", "x.npz")


def test_bad_inputs_are_named(files):
    np.save(files / "mask_bad.npy", np.zeros((B, H, W + 1), dtype=bool))
    with pytest.raises(ValueError, match=r"mask_bad\.npy: mask must have shape \[2, 96, 128\]"):
        dump_outputs.main(
            [
                "-c",
                CONFIG,
                "-o",
                f"weights={files / 'w'}",
                "--input",
                str(files / "x.npy"),
                "--mask",
                str(files / "mask_bad.npy"),
                "--out",
                str(files / "x.npz"),
            ]
        )
    np.save(files / "topk_bad.npy", np.full((B, NUM_QUERIES), NUM_TOKENS, dtype="int64"))
    with pytest.raises(ValueError, match=rf"topk_indices must lie in \[0, {NUM_TOKENS}\)"):
        _dump(files, "--topk-indices", files / "topk_bad.npy", out="x.npz")
    with pytest.raises(FileNotFoundError, match="nowhere.pdparams"):
        dump_outputs.main(
            [
                "-c",
                CONFIG,
                "-o",
                f"weights={files / 'nowhere'}",
                "--input",
                str(files / "x.npy"),
                "--out",
                str(files / "x.npz"),
            ]
        )


def test_weights_that_do_not_fit_are_refused_with_counts(files):
    """The dumps (and tools/analyze_queries.py, same loader) load every tensor or nothing."""
    state = {k: v for k, v in paddle.load(str(files / "w.pdparams")).items()}
    dropped = sorted(state)[3]
    del state[dropped]
    state["neck.unknown.weight"] = paddle.zeros([2])
    paddle.save(state, str(files / "w_short.pdparams"))
    with pytest.raises(ValueError) as info:
        _dump(files, weights="w_short", out="x.npz")
    assert str(info.value) == (
        f"{files / 'w_short.pdparams'}: the weights do not fit the model (another config?): "
        f"{len(state) - 1} of {len(state)} model tensors found with their shape; missing 1 "
        f"({dropped}); other shape 0; unused in the file 1 (neck.unknown.weight)"
    )
    with pytest.raises(
        ValueError,
        match=r"model_final\.pdopt is an optimizer state \(\.pdopt\), "
        r"not model weights; use .*model_final\.pdparams",
    ):
        _dump(files, weights="model_final.pdopt", out="x.npz")


def test_coco_raw_labels_are_the_model_ids():
    """class_id_mode coco_raw: post_labels are the model's own class ids (raw COCO ids), not
    dataset indices, and the npz says so."""
    from _common import build_tiny_detector
    from ppdet_dac.analysis.dump import dump_eval_outputs
    from ppdet_dac.modeling.detector import DACDETR

    tiny = build_tiny_detector(num_classes=91)
    model = DACDETR(
        tiny.backbone,
        tiny.transformer,
        tiny.criterion,
        tiny.post_process,
        num_classes=91,
        class_id_mode="coco_raw",
    )
    for layer in model.transformer.class_heads:  # spread the scores over many classes
        layer.bias.set_value(np.random.default_rng(1).standard_normal(91).astype("float32"))
    image = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype("float32")
    out = dump_eval_outputs(model, image)
    assert str(out["post_label_space"]) == "coco_category_id"
    prob = 1 / (1 + np.exp(-out["pred_logits"][0].astype(np.float64)))
    order = np.argsort(-prob.reshape(-1), kind="stable")
    assert out["post_labels"][0] == order[0] % 91
    # ids that are no COCO category (which the dataset mapping would drop) are kept
    from ppdet_dac.data.coco_ids import COCO_RAW_CATEGORY_IDS

    assert set(out["post_labels"].tolist()) - set(COCO_RAW_CATEGORY_IDS)


# -------------------------------------------------------------------- training gradients
# official layout of the demo model's heads and self-attention (hidden 64)
HIDDEN = 64
TIED = ("grad/transformer.decoder.class_embed.", "grad/transformer.decoder.bbox_embed.")


@pytest.fixture(scope="module")
def grad_weights(files):
    """The demo weights with query-dependent sampling offsets and attention weights (the
    initialisation zeroes their weights): no sampling point then sits exactly on a pixel, where
    bilinear sampling has a kink and finite differences would be one-sided."""
    rng = np.random.default_rng(8)
    state = {}
    for name, value in paddle.load(str(files / "w.pdparams")).items():
        arr = value.numpy()
        if name.endswith(("sampling_offsets.weight", "attention_weights.weight")):
            arr = arr + 0.05 * rng.standard_normal(arr.shape).astype(arr.dtype)
        state[name] = paddle.to_tensor(arr)
    paddle.save(state, str(files / "w_grad.pdparams"))
    return "w_grad"


@pytest.fixture(scope="module")
def train_topk(files):
    """A forced top-k [B, Q] for the training dumps (not the model's own choice)."""
    rng = np.random.default_rng(7)
    forced = np.stack([rng.permutation(NUM_TOKENS)[:NUM_QUERIES] for _ in range(B)])
    np.save(files / "train_topk.npy", forced.astype("int64"))
    return files / "train_topk.npy"


def _train_args(files, topk=None, dtype=None):
    extra = ["--train", "--targets", files / "t.json", "--dn-noise", files / "n1.npz"]
    extra += ["--topk-indices", topk] if topk is not None else []
    return extra + (["--dtype", dtype] if dtype else [])


@pytest.fixture(scope="module")
def train64(files, train_topk, grad_weights):
    return _dump(
        files, *_train_args(files, train_topk, "float64"), out="train64.npz", weights=grad_weights
    )


@pytest.fixture(scope="module")
def train32(files, train_topk, grad_weights):
    return _dump(files, *_train_args(files, train_topk), out="train32.npz", weights=grad_weights)


class _FrozenDetach:
    """Records every ``Tensor.detach()`` result of one forward, then hands the recorded tensors
    back, call by call, in later forwards: the stop-gradient quantities (IA-BCE targets, rank
    weights, the detached reference boxes) stay at the unperturbed point, so a finite difference
    of the loss measures what backprop computes."""

    def __init__(self):
        self.recorded, self.replay = [], None
        self._original = paddle.Tensor.detach

    def __enter__(self):
        frozen = self

        def detach(tensor):
            if frozen.replay is None:
                frozen.recorded.append(frozen._original(tensor))
                return frozen.recorded[-1]
            return next(frozen.replay)

        paddle.Tensor.detach = detach
        return self

    def __exit__(self, *exc):
        paddle.Tensor.detach = self._original

    def start_replay(self):
        self.replay = iter(self.recorded)


def _train_inputs(files):
    """The model and inputs the CLI builds for train64."""
    from ppdet_dac.engine import load_checked_config
    from ppdet_dac.analysis.dump import build_model
    from ppdet_dac.analysis.dump_inputs import load_dn_noise, load_input, load_targets

    cfg = load_checked_config(CONFIG)
    model = build_model(cfg, str(files / "w_grad"))
    image, mask, topk = load_input(
        str(files / "x.npy"), str(files / "m.npy"), str(files / "train_topk.npy"), NUM_QUERIES
    )
    labels, boxes = load_targets(str(files / "t.json"), B, NUM_CLASSES, dtype="float64")
    noise = load_dn_noise(str(files / "n1.npz"), [2, 1], NUM_DENOISING, NUM_CLASSES)
    return model, dict(
        image=image,
        mask=mask,
        gt_labels=labels,
        gt_boxes=boxes,
        dn_noise=noise,
        topk_indices=topk,
        dtype="float64",
    )


def _official_to_ours(kind, grad):
    """(index function, our-layout view) of an official gradient, written out by hand: a Linear
    weight is transposed, the k third of in_proj_weight [3C, C] is rows C..2C, transposed."""
    if kind == "linear":
        return grad.T
    if kind == "in_proj_k":
        return grad[HIDDEN : 2 * HIDDEN].T
    return grad


# (our parameter, official key, layout)
FD_PARAMS = [
    ("transformer.class_heads.1.weight", "class_embed.1.weight", "linear"),
    (
        "transformer.decoder.layers.1.self_attn.k_proj.weight",
        "transformer.decoder.layers.1.self_attn.in_proj_weight",
        "in_proj_k",
    ),
    (
        "transformer.decoder.layers.0.cross_attn.sampling_offsets.bias",
        "transformer.decoder.layers.0.cross_attn.sampling_offsets.bias",
        "copy",
    ),
    ("backbone.res3.res3a.branch2a.conv.weight", "backbone.0.body.layer2.0.conv1.weight", "copy"),
    ("transformer.label_enc.weight", "label_enc.weight", "copy"),
]


def test_train_gradients_match_finite_differences(files, train64):
    """float64, replayed noise, forced top-k: for parameters of five kinds, the dumped gradient
    (official name and layout) of the largest entry equals the central difference of loss_total
    with eps 1e-6 (stop-gradients frozen at the unperturbed point, see _FrozenDetach)."""
    from ppdet_dac.analysis.dump import dump_train_losses

    model, inputs = _train_inputs(files)
    params = dict(model.named_parameters())
    eps = 1e-6
    with _FrozenDetach() as frozen:
        base = dump_train_losses(model, **inputs, gradients=False)
        frozen.start_replay()
        assert float(base["loss_total"]) == pytest.approx(float(train64["loss_total"]), rel=1e-12)
        for ours, official, layout in FD_PARAMS:
            grad = _official_to_ours(layout, train64["grad/" + official])
            assert grad.shape == tuple(params[ours].shape), ours
            index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
            value = params[ours].numpy()
            losses = []
            for step in (eps, -eps):
                moved = value.copy()
                moved[index] += step
                params[ours].set_value(moved)
                frozen.start_replay()
                losses.append(
                    float(dump_train_losses(model, **inputs, gradients=False)["loss_total"])
                )
            params[ours].set_value(value)
            numeric = (losses[0] - losses[1]) / (2 * eps)
            assert abs(grad[index]) > 1e-3, ours
            assert numeric == pytest.approx(grad[index], rel=1e-5), ours
    # the class head is tied: its gradient is written under both official names
    np.testing.assert_array_equal(
        train64["grad/class_embed.1.weight"],
        train64["grad/transformer.decoder.class_embed.1.weight"],
    )
    assert train64["grad/class_embed.1.weight"].shape == (NUM_CLASSES, HIDDEN)


def test_grad_total_norm_counts_every_gradient_once(train64):
    grads = {k: v for k, v in train64.items() if k.startswith("grad/")}
    once = {k: v for k, v in grads.items() if not k.startswith(TIED)}
    assert len(grads) - len(once) == 2 * (NUM_LAYERS + 1) + 6 * (NUM_LAYERS + 1)  # W, b; 3 x W, b
    expected = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in once.values()))
    assert train64["grad_total_norm"].dtype == np.float64
    assert float(train64["grad_total_norm"]) == pytest.approx(expected, rel=1e-12)
    assert float(train64["grad_total_norm"]) > 0


def test_dump_loss_and_grad_norm_equal_the_model_own_training_step(files):
    """The plain float32 --train dump against DACDETR's own training forward (the ppdet input
    dict, as the trainer calls it) and Paddle's own parameter gradients."""
    from ppdet_dac.engine import load_checked_config
    from ppdet_dac.analysis.dump import build_model
    from ppdet_dac.analysis.dump_inputs import load_dn_noise

    dumped = _dump(files, *_train_args(files), out="train_plain.npz")
    model = build_model(load_checked_config(CONFIG), str(files / "w"))
    targets = json.loads((files / "t.json").read_text())
    mask = np.load(files / "m.npy")
    inputs = {
        "image": paddle.to_tensor(np.load(files / "x.npy")),
        "pad_mask": paddle.to_tensor((~mask).astype("float32")),
        "im_shape": paddle.to_tensor(np.full((B, 2), [H, W], dtype="float32")),
        "scale_factor": paddle.to_tensor(np.ones((B, 2), dtype="float32")),
        "gt_bbox": [paddle.to_tensor(np.asarray(t["boxes"], "float32")) for t in targets],
        "gt_class": [paddle.to_tensor(np.asarray(t["labels"], "int32")[:, None]) for t in targets],
        "dn_noise": load_dn_noise(str(files / "n1.npz"), [2, 1], NUM_DENOISING, NUM_CLASSES),
    }
    paddle.seed(0)
    model.criterion.rng = np.random.default_rng(0)
    model.train()
    losses = model(inputs)
    losses["loss"].backward()
    assert float(losses["loss"]) == float(dumped["loss_total"])
    own = [p.grad.numpy().astype(np.float64) for p in model.parameters() if p.grad is not None]
    assert all(not p.stop_gradient for p in model.parameters() if p.grad is not None)
    norm = np.sqrt(sum(float(np.sum(g**2)) for g in own))
    assert float(dumped["grad_total_norm"]) == pytest.approx(norm, rel=1e-12)
    once = [k for k in dumped if k.startswith("grad/") and not k.startswith(TIED)]
    # one official key per parameter, except the three q/k/v projections packed into one
    packed = 2 * NUM_LAYERS  # in_proj_weight and in_proj_bias per decoder layer
    assert len(once) == len(own) - 2 * packed
    assert all(dumped[k].dtype == np.float32 for k in once)


def test_float64_train_dump_agrees_with_float32(train32, train64):
    terms = sorted(k for k in train32 if k.startswith("loss/"))
    assert terms and train32.keys() == train64.keys()
    for k in terms + ["loss_total"]:
        assert float(train64[k]) == pytest.approx(float(train32[k]), rel=1e-4, abs=1e-6), k
    assert any(float(train64[k]) != float(train32[k]) for k in terms)  # really recomputed
    grads = [k for k in train64 if k.startswith("grad/")]
    assert {train64[k].dtype for k in grads} == {np.dtype(np.float64)}
    assert {train32[k].dtype for k in grads} == {np.dtype(np.float32)}
    assert float(train64["grad_total_norm"]) == pytest.approx(
        float(train32["grad_total_norm"]), rel=1e-3
    )


def test_train_forced_topk_is_used(files, train32):
    plain = _dump(files, *_train_args(files), out="train_own.npz", weights="w_grad")
    # a different top-k moves the matching (O- and C-decoder) queries; the encoder loss, over
    # every token, does not see it
    for k in (
        "loss/loss_ce_one2one",
        "loss/loss_bbox_one2one",
        "loss/loss_giou_one2one",
        "loss/loss_ce",
        "loss/loss_bbox",
    ):
        assert abs(float(train32[k]) - float(plain[k])) > 1e-4 * abs(float(plain[k])), k
    for k in ("loss/loss_ce_enc", "loss/loss_bbox_enc", "loss/loss_giou_enc"):
        assert float(train32[k]) == float(plain[k]), k
    # forcing the model's own choice of that training forward reproduces the plain run; the
    # eval top-k is another one (the backbone's BatchNorm normalises with the batch's
    # statistics in training mode, with its running ones in eval mode)
    own = plain["enc_topk_indices"]
    assert own.shape == (B, NUM_QUERIES) and own.dtype == np.int64
    evaluated = _dump(files, out="eval_grad_weights.npz", weights="w_grad")["enc_topk_indices"]
    assert (own != evaluated).any()
    np.save(files / "own_train.npy", own)
    same = _dump(
        files, *_train_args(files, files / "own_train.npy"), out="train_same.npz", weights="w_grad"
    )
    for k in plain:
        np.testing.assert_allclose(same[k], plain[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_train_topk_and_option_errors(files):
    np.save(files / "topk_short.npy", np.zeros((B, NUM_QUERIES - 1), dtype="int64"))
    with pytest.raises(
        ValueError,
        match=rf"topk_short\.npy: top-k indices must have shape "
        rf"\[{B}, {NUM_QUERIES}\]",
    ):
        _dump(files, *_train_args(files, files / "topk_short.npy"), out="x.npz")
    np.save(files / "topk_float.npy", np.zeros((B, NUM_QUERIES), dtype="float32"))
    with pytest.raises(ValueError, match=r"topk_float\.npy: top-k indices must be integers"):
        _dump(files, *_train_args(files, files / "topk_float.npy"), out="x.npz")
    with pytest.raises(SystemExit):
        dump_outputs.parse_args(
            [
                "-c",
                CONFIG,
                "--input",
                "x.npy",
                "--out",
                "o.npz",
                "--train",
                "--targets",
                "t.json",
                "--orig-size",
                "10",
                "10",
            ]
        )
    args = dump_outputs.parse_args(
        [
            "-c",
            CONFIG,
            "--input",
            "x.npy",
            "--out",
            "o.npz",
            "--train",
            "--targets",
            "t.json",
            "--dtype",
            "float64",
            "--topk-indices",
            "i.npy",
        ]
    )
    assert (args.dtype, args.topk_indices) == ("float64", "i.npy")


def test_float64_train_dump_never_mixes_in_float32(files, train_topk, grad_weights, capfd):
    """Forward and backward of the float64 training dump without one float32 tensor meeting a
    float64 one: Paddle logs each such automatic promotion on stderr (a float32 helper tensor
    would be silently widened after its rounding)."""
    capfd.readouterr()
    out = _dump(
        files,
        *_train_args(files, train_topk, "float64"),
        out="train64_again.npz",
        weights=grad_weights,
    )
    assert "type promotion" not in capfd.readouterr().err
    assert out["loss_total"].dtype == np.float64
