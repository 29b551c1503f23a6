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

from ppdet_dac.engine.dump import make_dn_noise, num_dn_rows  # noqa: E402
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
    targets = [{"boxes": [[0.3, 0.4, 0.2, 0.3], [0.6, 0.6, 0.3, 0.2]], "labels": [0, 2]},
               {"boxes": [[0.5, 0.5, 0.4, 0.4]], "labels": [1]}]
    (tmp / "t.json").write_text(json.dumps(targets))
    for seed in (1, 2):
        np.savez(tmp / f"n{seed}.npz", **make_dn_noise([2, 1], NUM_DENOISING, NUM_CLASSES,
                                                       seed=seed))
    return tmp


def _dump(files, *extra, out="o.npz"):
    argv = ["-c", CONFIG, "-o", f"weights={files / 'w'}", "--input", str(files / "x.npy"),
            "--mask", str(files / "m.npy"), "--out", str(files / out)] + [str(e) for e in extra]
    dump_outputs.main(argv)
    with np.load(files / out) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def eval32(files):
    return _dump(files)


def test_eval_keys_and_shapes(eval32):
    shapes = {
        "pred_logits": (B, NUM_QUERIES, NUM_CLASSES), "pred_boxes": (B, NUM_QUERIES, 4),
        "dec_logits": (NUM_LAYERS, B, NUM_QUERIES, NUM_CLASSES),
        "dec_boxes": (NUM_LAYERS, B, NUM_QUERIES, 4),
        "dec_logits_cdecoder": (NUM_LAYERS, B, NUM_QUERIES, NUM_CLASSES),
        "dec_boxes_cdecoder": (NUM_LAYERS, B, NUM_QUERIES, 4),
        "enc_logits": (B, NUM_TOKENS, NUM_CLASSES), "enc_boxes": (B, NUM_TOKENS, 4),
        "enc_topk_indices": (B, NUM_QUERIES),
    }
    n = eval32["post_scores"].shape[0]
    shapes.update(post_scores=(n, ), post_labels=(n, ), post_boxes=(n, 4), post_label_space=())
    assert {k: v.shape for k, v in eval32.items()} == shapes
    assert 0 < n <= 100  # the demo config keeps at most 100 detections
    assert str(eval32["post_label_space"]) == "contiguous_class_id"
    # last layer at the top level; C-decoder layer 0 equals O-decoder layer 0 (spec 2.2)
    np.testing.assert_array_equal(eval32["pred_logits"], eval32["dec_logits"][-1])
    np.testing.assert_array_equal(eval32["pred_boxes"], eval32["dec_boxes"][-1])
    np.testing.assert_allclose(eval32["dec_logits_cdecoder"][0], eval32["dec_logits"][0],
                               atol=1e-6)
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
    np.testing.assert_allclose(eval32["post_boxes"][0],
                               [(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W,
                                (cy + h / 2) * H], rtol=1e-4, atol=1e-3)


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
    for key in ("pred_logits", "pred_boxes", "dec_logits", "dec_boxes", "dec_logits_cdecoder",
                "dec_boxes_cdecoder", "enc_logits", "enc_boxes"):
        assert out[key].dtype == np.float64, key
        np.testing.assert_allclose(out[key], eval32[key], atol=1e-4, rtol=1e-4, err_msg=key)
    assert np.abs(out["dec_logits"] - eval32["dec_logits"]).max() > 0  # really recomputed


def _train(files, noise, out):
    return _dump(files, "--train", "--targets", files / "t.json", "--dn-noise",
                 files / noise, out=out)


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
    with pytest.raises(ValueError, match=rf"bad_shape\.npz: 'dn_rand_sign' has shape "
                                         rf"\[{rows - 1}, 4\], expected \[{rows}, 4\]"):
        _train(files, "bad_shape.npz", "x.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        _train(files, "missing.npz", "x.npz")


def test_bad_inputs_are_named(files):
    np.save(files / "mask_bad.npy", np.zeros((B, H, W + 1), dtype=bool))
    with pytest.raises(ValueError, match=r"mask_bad\.npy: mask must have shape \[2, 96, 128\]"):
        dump_outputs.main(["-c", CONFIG, "-o", f"weights={files / 'w'}", "--input",
                           str(files / "x.npy"), "--mask", str(files / "mask_bad.npy"),
                           "--out", str(files / "x.npz")])
    np.save(files / "topk_bad.npy", np.full((B, NUM_QUERIES), NUM_TOKENS, dtype="int64"))
    with pytest.raises(ValueError, match=rf"topk_indices must lie in \[0, {NUM_TOKENS}\)"):
        _dump(files, "--topk-indices", files / "topk_bad.npy", out="x.npz")
    with pytest.raises(FileNotFoundError, match="nowhere.pdparams"):
        dump_outputs.main(["-c", CONFIG, "-o", f"weights={files / 'nowhere'}", "--input",
                           str(files / "x.npy"), "--out", str(files / "x.npz")])


def test_coco_raw_labels_are_the_model_ids():
    """class_id_mode coco_raw: post_labels are the model's own class ids (raw COCO ids), not
    dataset indices, and the npz says so."""
    from _common import build_tiny_detector
    from ppdet_dac.engine.dump import dump_eval_outputs
    from ppdet_dac.modeling.detector import DACDETR

    tiny = build_tiny_detector(num_classes=91)
    model = DACDETR(tiny.backbone, tiny.transformer, tiny.criterion, tiny.post_process,
                    num_classes=91, class_id_mode="coco_raw")
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
