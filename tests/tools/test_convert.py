"""Converters: the torch-free .pth reader, the official DAC-DETR -> ppdet_dac mapping, and the
torchvision ResNet / Swin backbone mappings, on synthetic checkpoints written in torch's formats."""

import argparse
import collections
import hashlib
import os
import re
import sys
import tarfile
import zipfile

import numpy as np
import paddle
import pytest

from _common import REPO
import _pth_writer as writer

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_backbone  # noqa: E402
import convert_official  # noqa: E402

from ppdet_dac.interop import CheckpointError, read_pth  # noqa: E402
from ppdet_dac.interop import mapping  # noqa: E402

# names and shapes of the official R50 checkpoint's state_dict (a copy kept with the tests)
KEY_LIST = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "official_state_dict_keys.txt"
)
R50_CONFIG = os.path.join(REPO, "configs", "dac_cdn_ice_r50.yml")
BODY = "backbone.0.body."


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def official_rows():
    return writer.read_key_list(KEY_LIST)


@pytest.fixture(scope="module")
def official_state(official_rows):
    return writer.synthetic_state_dict(official_rows, seed=1)


@pytest.fixture(scope="module")
def official_file(official_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "checkpoint0011.pth"
    writer.save_zip(
        {
            "model": official_state,
            "optimizer": {"state": {}, "param_groups": []},
            "lr_scheduler": {"step_size": 11},
            "epoch": 11,
            "args": argparse.Namespace(lr=2e-4, num_queries_one2one=900),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def r50_model():
    return convert_official.build_model(R50_CONFIG)


@pytest.fixture(scope="module")
def r50_specs(r50_model):
    return mapping.state_specs(r50_model)


def _torchvision_r50_state(official_state):
    """A torchvision resnet50 state dict: the official backbone + BN counters + the classifier."""
    state = collections.OrderedDict()
    for key, value in official_state.items():
        if key.startswith(BODY):
            name = key[len(BODY) :]
            state[name] = value
            if name.endswith("running_var"):
                state[name.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
    state["fc.weight"] = np.ones((1000, 2048), np.float32)
    state["fc.bias"] = np.ones((1000,), np.float32)
    return state


def _source_candidates(state):
    """Every array a converted tensor may legitimately equal: as is, transposed, q/k/v thirds."""
    candidates = collections.defaultdict(list)
    for key, value in state.items():
        options = [value]
        if value.ndim == 2:
            options.append(value.T)
        if "in_proj" in key:
            options += [p.T if value.ndim == 2 else p for p in np.split(value, 3, axis=0)]
        for option in options:
            candidates[_fingerprint(option)].append(key)
    return candidates


def _fingerprint(array):
    return tuple(array.shape), hashlib.sha1(np.ascontiguousarray(array).tobytes()).digest()


# -------------------------------------------------------------------------------------- reader
def _layout_payload():
    base = np.arange(60, dtype=np.float64) * 0.5
    ints = np.arange(-20, 20, dtype=np.int64) * 3
    bf16 = writer.BFloat16(np.array([[1.5, -2.25, 3.1], [1e-3, 65504.0, -0.0]], np.float32))
    model = collections.OrderedDict(
        [
            ("f32", np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.25),
            ("f16", np.array([[0.5, -1.0], [2.0, 1e-4]], np.float16)),
            ("i32", np.array([1, -2, 2**30], np.int32)),
            ("i16", np.array([-3, 300], np.int16)),
            ("i8", np.array([-128, 127], np.int8)),
            ("u8", np.array([0, 255, 7], np.uint8)),
            ("bool", np.array([True, False, True])),
            ("scalar", np.array(42, np.int64)),
            ("empty", np.zeros((0, 3), np.float32)),
            # a transposed view with an offset, and a second view into the same storage
            ("strided", writer.Strided(base, 2, (3, 4), (1, 5))),
            ("strided_tail", writer.Strided(base, 40, (2, 2, 3), (9, 1, 3))),
            ("broadcast", writer.Strided(ints, 5, (3, 2), (0, 7))),
            ("bf16", bf16),
            ("subclass", writer.FromType(np.array([[0.5, 1.5]], np.float32))),
        ]
    )
    expected = {k: v for k, v in model.items() if isinstance(v, np.ndarray)}
    for name, view in [
        ("strided", model["strided"]),
        ("strided_tail", model["strided_tail"]),
        ("broadcast", model["broadcast"]),
    ]:
        index = np.full(view.shape, view.offset)
        for axis, step in enumerate(view.stride):  # flat index = offset + sum(i_axis * stride)
            shape = [1] * len(view.shape)
            shape[axis] = view.shape[axis]
            index = index + np.arange(view.shape[axis]).reshape(shape) * step
        expected[name] = view.storage[index]
    expected["bf16"] = bf16.expected
    expected["subclass"] = model["subclass"].array
    model._metadata = collections.OrderedDict([("", {"version": 1})])  # as nn.Module saves it
    obj = {
        "model": model,
        "epoch": 3,
        "args": argparse.Namespace(lr=1e-4, backbone="resnet50"),
        "history": [1.5, "text", (2, None), {3, 4}, np.float64(0.25), np.int64(-9)],
        "numpy": writer.PlainNumpy(np.array([[1, 2], [3, 4]], np.int32)),
        "tied": [model["f32"], model["f32"]],
    }
    return obj, expected


@pytest.mark.parametrize("fmt", ["zip", "zip_prefix", "legacy"])
def test_reader_round_trip_dtypes_and_layouts(tmp_path, fmt):
    obj, expected = _layout_payload()
    path = tmp_path / "x.pth"
    if fmt == "legacy":
        writer.save_legacy(obj, path)
    else:
        writer.save_zip(obj, path, prefix="archive" if fmt == "zip" else "checkpoint0011")
    loaded = read_pth(path)
    assert isinstance(loaded["model"], collections.OrderedDict)
    assert list(loaded["model"]) == list(obj["model"])
    assert loaded["model"]._metadata == {"": {"version": 1}}
    for name, value in expected.items():
        got = loaded["model"][name]
        assert got.shape == value.shape and got.dtype == value.dtype, name
        np.testing.assert_array_equal(got, value, err_msg=name)
        assert got.flags.c_contiguous and got.flags.writeable, name
    assert loaded["model"]["bf16"].dtype == np.float32
    assert loaded["epoch"] == 3
    assert loaded["history"] == [1.5, "text", (2, None), {3, 4}, 0.25, -9]
    assert type(loaded["history"][4]) is np.float64 and type(loaded["history"][5]) is np.int64
    np.testing.assert_array_equal(loaded["numpy"], np.array([[1, 2], [3, 4]], np.int32))
    assert vars(loaded["args"]) == {"lr": 1e-4, "backbone": "resnet50"}
    np.testing.assert_array_equal(loaded["tied"][1], expected["f32"])


def _zip_with_pickle(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


def test_reader_refuses_foreign_globals_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    # GLOBAL os.system, then call it: what a malicious checkpoint would do.
    payload = (
        b"\x80\x02cos\nsystem\nq\x00X"
        + len(f"touch {marker}").to_bytes(4, "little")
        + f"touch {marker}".encode()
        + b"\x85R."
    )
    _zip_with_pickle(tmp_path / "evil.pth", payload)
    with pytest.raises(CheckpointError) as info:
        read_pth(tmp_path / "evil.pth")
    assert "os.system" in str(info.value) and "evil.pth" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "case",
    [
        "random_bytes",
        "text",
        "tar",
        "zip_without_pickle",
        "truncated_storage",
        "out_of_bounds",
        "corrupt_pickle",
    ],
)
def test_reader_rejects_non_checkpoints_with_the_file_name(tmp_path, case):
    path = tmp_path / f"{case}.pth"
    if case == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "text":
        path.write_text("model weights go here\n")
    elif case == "tar":
        inner = tmp_path / "storages"
        inner.write_bytes(b"\0" * 16)
        with tarfile.open(path, "w") as tar:
            tar.add(inner, arcname="storages")
    elif case == "zip_without_pickle":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("weights/readme.txt", "no pickle")
    elif case == "truncated_storage":
        writer.save_zip({"w": np.ones((4, 4), np.float32)}, path)
        data = {}
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                data[name] = archive.read(name)
        data["archive/data/0"] = data["archive/data/0"][:20]
        with zipfile.ZipFile(path, "w") as archive:
            for name, raw in data.items():
                archive.writestr(name, raw)
    elif case == "out_of_bounds":
        writer.save_zip(
            {"w": writer.Strided(np.arange(10, dtype=np.float32), 4, (3, 3), (3, 1))}, path
        )
    elif case == "corrupt_pickle":
        _zip_with_pickle(path, b"\x80\x02}q\x00(X\x01\x00\x00")
    with pytest.raises(CheckpointError) as info:
        read_pth(path)
    message = str(info.value)
    assert str(path) in message
    expected_words = {
        "random_bytes": "not a PyTorch checkpoint",
        "text": "not a PyTorch checkpoint",
        "tar": "tar",
        "zip_without_pickle": "data.pkl",
        "truncated_storage": "storage '0'",
        "out_of_bounds": "reads past the end",
        "corrupt_pickle": "corrupt",
    }
    assert expected_words[case] in message


def test_reader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        read_pth(tmp_path / "nothere.pth")


# ----------------------------------------------------------------------- official checkpoints
def test_official_checkpoint_converts_and_loads_exactly(
    official_file, official_state, r50_model, r50_specs
):
    converted = mapping.convert_official(read_pth(official_file), r50_specs, str(official_file))
    missing, unexpected = r50_model.set_state_dict(converted)
    assert missing == [] and unexpected == []
    loaded = {k: v.numpy() for k, v in r50_model.state_dict().items()}
    assert set(loaded) == set(r50_specs)

    src = official_state
    d3, e2 = "transformer.decoder.layers.3.", "transformer.encoder.layers.2."
    expectations = {
        "transformer.level_embed": src["transformer.level_embed"],
        "transformer.input_proj.3.0.weight": src["input_proj.3.0.weight"],
        "transformer.input_proj.1.1.bias": src["input_proj.1.1.bias"],
        e2 + "self_attn.sampling_offsets.weight": src[e2 + "self_attn.sampling_offsets.weight"].T,
        e2 + "self_attn.attention_weights.bias": src[e2 + "self_attn.attention_weights.bias"],
        e2 + "norm.weight": src[e2 + "norm1.weight"],
        e2 + "ffn.linear1.weight": src[e2 + "linear1.weight"].T,
        e2 + "ffn.norm.bias": src[e2 + "norm2.bias"],
        d3 + "self_attn.q_proj.weight": src[d3 + "self_attn.in_proj_weight"][:256].T,
        d3 + "self_attn.k_proj.weight": src[d3 + "self_attn.in_proj_weight"][256:512].T,
        d3 + "self_attn.v_proj.weight": src[d3 + "self_attn.in_proj_weight"][512:].T,
        d3 + "self_attn.k_proj.bias": src[d3 + "self_attn.in_proj_bias"][256:512],
        d3 + "self_attn.v_proj.bias": src[d3 + "self_attn.in_proj_bias"][512:],
        d3 + "self_attn.out_proj.weight": src[d3 + "self_attn.out_proj.weight"].T,
        d3 + "norm_sa.weight": src[d3 + "norm2.weight"],
        d3 + "norm_ca.bias": src[d3 + "norm1.bias"],
        d3 + "ffn.norm.weight": src[d3 + "norm3.weight"],
        d3 + "ffn.linear2.weight": src[d3 + "linear2.weight"].T,
        d3 + "cross_attn.value_proj.weight": src[d3 + "cross_attn.value_proj.weight"].T,
        "transformer.class_heads.6.weight": src["class_embed.6.weight"].T,
        "transformer.class_heads.0.bias": src["transformer.decoder.class_embed.0.bias"],
        "transformer.box_heads.4.layers.2.weight": src["bbox_embed.4.layers.2.weight"].T,
        "transformer.query_selection.enc_output.weight": src["transformer.enc_output.weight"].T,
        "transformer.query_selection.pos_trans.weight": src["transformer.pos_trans.weight"].T,
        "transformer.query_selection.pos_trans_norm.bias": src["transformer.pos_trans_norm.bias"],
        "transformer.query_embed.weight": src["query_embed.weight"],
        "transformer.label_enc.weight": src["label_enc.weight"],
        "backbone.conv1.conv1.conv.weight": src[BODY + "conv1.weight"],
        "backbone.conv1.conv1.norm._variance": src[BODY + "bn1.running_var"],
        "backbone.res2.res2c.branch2b.conv.weight": src[BODY + "layer1.2.conv2.weight"],
        "backbone.res3.res3a.short.conv.weight": src[BODY + "layer2.0.downsample.0.weight"],
        "backbone.res3.res3a.short.norm._mean": src[BODY + "layer2.0.downsample.1.running_mean"],
        "backbone.res4.res4f.branch2c.norm.weight": src[BODY + "layer3.5.bn3.weight"],
        "backbone.res5.res5c.branch2a.norm.bias": src[BODY + "layer4.2.bn1.bias"],
    }
    for name, value in expectations.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)

    # Every model tensor is one source tensor (as is / transposed / a q-k-v third), and every
    # source tensor except the tied twins is used.
    candidates = _source_candidates(src)
    used = set()
    for name, value in loaded.items():
        keys = candidates.get(_fingerprint(value))
        assert keys, f"{name} equals no tensor of the checkpoint"
        used.update(keys)
    twins = {
        k
        for k in src
        if k.startswith(("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed."))
    }
    assert set(src) - twins <= used


def test_convert_official_tool_writes_weights_ppdet_loads(
    official_file, official_state, tmp_path, r50_model
):
    from ppdet.utils.checkpoint import load_pretrain_weight

    dst = tmp_path / "out" / "dac_r50.pdparams"
    assert convert_official.main(["--src", str(official_file), "--dst", str(dst)]) == str(dst)
    assert os.listdir(dst.parent) == ["dac_r50.pdparams"]  # no temporary file left behind
    assert len(paddle.load(str(dst))) == 600
    # tools/eval.py's `-o weights=<dst>` goes through ppdet's Trainer.load_weights
    for tensor in r50_model.state_dict().values():  # parameters and BN statistics
        tensor.set_value(np.zeros(tensor.shape, dtype="float32"))
    load_pretrain_weight(r50_model, str(dst))
    state = r50_model.state_dict()
    np.testing.assert_array_equal(
        state["transformer.class_heads.2.weight"].numpy(), official_state["class_embed.2.weight"].T
    )
    np.testing.assert_array_equal(
        state["transformer.decoder.layers.0.self_attn.q_proj.bias"].numpy(),
        official_state["transformer.decoder.layers.0.self_attn.in_proj_bias"][:256],
    )
    np.testing.assert_array_equal(
        state["backbone.res5.res5a.short.norm._variance"].numpy(),
        official_state[BODY + "layer4.0.downsample.1.running_var"],
    )


def test_checkpoint_saved_from_the_ddp_wrapper_converts(official_state, r50_specs):
    wrapped = {"model": {"module." + k: v for k, v in official_state.items()}}
    converted = mapping.convert_official(wrapped, r50_specs, "ddp.pth")
    np.testing.assert_array_equal(
        converted["transformer.query_embed.weight"], official_state["query_embed.weight"]
    )


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_converted_layers_compute_what_the_torch_layers_compute():
    """torch's packed nn.MultiheadAttention and nn.Linear, written out in numpy, against the
    Paddle layers loaded with the converted weights: checks the split order, head layout and
    transposes, not just names."""
    d, heads, length, classes = 16, 4, 5, 7
    rng = np.random.default_rng(11)
    sa, cls = "transformer.decoder.layers.0.self_attn.", "class_embed.0."
    source = {
        sa + "in_proj_weight": rng.standard_normal((3 * d, d)).astype(np.float32),
        sa + "in_proj_bias": rng.standard_normal(3 * d).astype(np.float32),
        sa + "out_proj.weight": rng.standard_normal((d, d)).astype(np.float32),
        sa + "out_proj.bias": rng.standard_normal(d).astype(np.float32),
        cls + "weight": rng.standard_normal((classes, d)).astype(np.float32),
        cls + "bias": rng.standard_normal(classes).astype(np.float32),
    }
    mha, linear = paddle.nn.MultiHeadAttention(d, heads), paddle.nn.Linear(d, classes)
    specs = {sa + k: v for k, v in mapping.state_specs(mha).items()}
    specs.update(
        {"transformer.class_heads.0." + k: v for k, v in mapping.state_specs(linear).items()}
    )
    converted = mapping.convert_state_dict(source, specs, mapping.OFFICIAL_DAC_RULES)
    mha.set_state_dict({k[len(sa) :]: v for k, v in converted.items() if k.startswith(sa)})
    linear.set_state_dict(
        {
            k.split(".")[-1]: v
            for k, v in converted.items()
            if k.startswith("transformer.class_heads.")
        }
    )
    mha.eval()

    query, key, value = (rng.standard_normal((1, length, d)).astype(np.float32) for _ in range(3))
    got = mha(paddle.to_tensor(query), paddle.to_tensor(key), paddle.to_tensor(value)).numpy()[0]
    w, b = source[sa + "in_proj_weight"], source[sa + "in_proj_bias"]
    q, k, v = (
        x[0] @ w[i * d : (i + 1) * d].T + b[i * d : (i + 1) * d]
        for i, x in enumerate((query, key, value))
    )
    split = lambda x: x.reshape(length, heads, d // heads).transpose(1, 0, 2)  # noqa: E731
    attended = _softmax(split(q) @ split(k).transpose(0, 2, 1) / np.sqrt(d // heads)) @ split(v)
    expected = (
        attended.transpose(1, 0, 2).reshape(length, d) @ source[sa + "out_proj.weight"].T
        + source[sa + "out_proj.bias"]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    got = linear(paddle.to_tensor(query[0])).numpy()
    expected = query[0] @ source[cls + "weight"].T + source[cls + "bias"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_wrong_official_checkpoint_lists_every_problem(official_state, r50_specs):
    bad = collections.OrderedDict(official_state)
    del bad["label_enc.weight"], bad[BODY + "layer3.4.bn2.running_mean"]
    bad["transformer.tgt_embed.weight"] = np.zeros((900, 256), np.float32)
    bad["class_embed.3.weight"] = np.zeros((80, 256), np.float32)
    bad["transformer.decoder.class_embed.3.weight"] = bad["class_embed.3.weight"]
    bad["transformer.decoder.layers.1.self_attn.in_proj_bias"] = np.zeros(512, np.float32)
    bad["transformer.decoder.bbox_embed.2.layers.0.bias"] = np.zeros(256, np.float32)
    with pytest.raises(ValueError) as info:
        mapping.convert_official({"model": bad}, r50_specs, "bad_checkpoint.pth")
    message = str(info.value)
    assert message.startswith("bad_checkpoint.pth")
    for text in [
        "transformer.label_enc.weight [92, 256]",
        "backbone.res4.res4e.branch2b.norm._mean [256]",
        "transformer.tgt_embed.weight [900, 256]",
        "class_embed.3.weight [80, 256] -> transformer.class_heads.3.weight: model needs [256, 91]",
        "transformer.decoder.layers.1.self_attn.in_proj_bias [512]",
        "transformer.decoder.bbox_embed.2.layers.0.bias should be the same tensor as "
        "bbox_embed.2.layers.0.bias",
        "class_id_mode: coco_raw",
    ]:
        assert text in message, text
    assert "2 missing" in message and "1 unexpected" in message and "2 mis-shaped" in message
    assert "1 inconsistent tied weights" in message
    assert "self_attn.q_proj.bias" not in message  # reported once, as the mis-shaped source


@pytest.mark.parametrize("content", ["random_bytes", "not_a_checkpoint_dict"])
def test_convert_official_tool_rejects_wrong_files(tmp_path, content):
    src = tmp_path / "wrong.pth"
    if content == "random_bytes":
        src.write_bytes(np.random.default_rng(5).integers(0, 256, 2048, dtype=np.uint8).tobytes())
        expected = "not a PyTorch checkpoint"
    else:
        writer.save_zip({"epoch": 3, "args": argparse.Namespace(lr=1.0)}, src)
        expected = "'epoch', 'args'"
    with pytest.raises(ValueError) as info:
        convert_official.main(["--src", str(src), "--dst", str(tmp_path / "x.pdparams")])
    assert str(src) in str(info.value) and expected in str(info.value)
    assert not (tmp_path / "x.pdparams").exists()


# ------------------------------------------------------------- the way back (gradient dumps)
def _official_trainable_keys(rows):
    """{key: (shape, alias_of)} of the official model's trainable parameters, read from the key
    list alone: the backbone's BatchNorms are FrozenBatchNorm2d buffers and its stem and layer1
    are frozen; everything else is trained."""
    keys = {}
    for key, shape, alias in rows:
        if key.startswith(BODY):
            part = key[len(BODY) :]
            if part.startswith(("conv1.", "bn1.", "layer1.")) or re.search(
                r"\.(bn\d|downsample\.1)\.", "." + part
            ):
                continue
        if "num_batches_tracked" in key:
            continue
        keys[key] = (shape, alias)
    return keys


def test_gradients_in_the_official_layout_round_trip(official_rows, r50_model):
    """Known gradients on every trainable R50 parameter (d/dp sum(p * c) = c) -> the dump's
    gradient_arrays: exactly the official trainable keys (tied duplicates included), in the
    official shapes; back through the forward converter they are the same arrays."""
    from ppdet_dac.analysis.dump import gradient_arrays

    expected = _official_trainable_keys(official_rows)
    with open(KEY_LIST, encoding="utf-8") as handle:
        count = int(re.search(r"(\d+) trainable params", handle.read()).group(1))
    assert sum(int(np.prod(shape)) for shape, alias in expected.values() if not alias) == count

    rng = np.random.default_rng(5)
    trainable = {n: p for n, p in r50_model.named_parameters() if not p.stop_gradient}
    values = {n: rng.standard_normal(p.shape).astype(np.float32) for n, p in trainable.items()}
    r50_model.clear_gradients(set_to_zero=False)
    paddle.add_n([(p * paddle.to_tensor(values[n])).sum() for n, p in trainable.items()]).backward()
    try:
        dumped = gradient_arrays(r50_model)
    finally:
        r50_model.clear_gradients(set_to_zero=False)
    grads = {k[len("grad/") :]: v for k, v in dumped.items() if k.startswith("grad/")}
    assert sorted(grads) == sorted(expected)
    for key, (shape, alias) in expected.items():
        assert grads[key].shape == shape, key
        if alias:
            np.testing.assert_array_equal(grads[key], grads[alias], err_msg=key)
    norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in values.values()))
    assert float(dumped["grad_total_norm"]) == pytest.approx(norm, rel=1e-12)

    specs = {n: (tuple(v.shape), "float32") for n, v in values.items()}
    back = mapping.convert_state_dict(
        grads, specs, mapping.official_dac_rules(grads), aliases=mapping.OFFICIAL_DAC_ALIASES
    )
    assert sorted(back) == sorted(values)
    for name, value in values.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_inverse_of_the_official_table_on_every_r50_key(official_state, r50_specs):
    """Every key of the official state dict (buffers too): converted, then mapped back with the
    inverse, gives the checkpoint's own keys and arrays."""
    converted = mapping.convert_official({"model": official_state}, r50_specs)
    inverse = mapping.official_dac_inverse(converted)
    back = mapping.to_source_layout(converted, inverse, mapping.OFFICIAL_DAC_ALIASES)
    assert sorted(back) == sorted(official_state)
    for key, value in official_state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_inverse_names_of_a_resnet101_and_a_swin_backbone():
    """ResNet-101 (stage 4 with 23 blocks: ppdet res4a, res4b1 .. res4b22) and the detection
    Swin (torch Linear layout, per-output norms) under backbone.0.body.: forward then back."""
    names = [f"{BODY}layer3.{i}.conv{j}.weight" for i in range(23) for j in (1, 2, 3)]
    names += [f"{BODY}layer3.0.downsample.{j}.weight" for j in (0, 1)]
    source = {key: np.full((1,), i, np.float32) for i, key in enumerate(names)}
    blocks = ["res4a"] + [f"res4b{i}" for i in range(1, 23)]
    ours = [f"backbone.res4.{b}.branch2{c}.conv.weight" for b in blocks for c in "abc"]
    ours += ["backbone.res4.res4a.short.conv.weight", "backbone.res4.res4a.short.norm.weight"]
    specs = {n: ((1,), "float32") for n in ours}
    converted = mapping.convert_state_dict(source, specs, mapping.official_dac_rules(source))
    back = mapping.to_source_layout(converted, mapping.official_dac_inverse(converted))
    assert back.keys() == source.keys()
    assert all(np.array_equal(back[k], v) for k, v in source.items())

    swin = _tiny_swin()
    torch_state = _torch_layout_swin_state(swin, np.random.default_rng(6), with_output_norms=True)
    source = {BODY + k: v for k, v in torch_state.items()}
    specs = {"backbone." + k: v for k, v in mapping.state_specs(swin).items()}
    converted = mapping.convert_state_dict(source, specs, mapping.official_dac_rules(source))
    back = mapping.to_source_layout(converted, mapping.official_dac_inverse(specs))
    assert sorted(back) == sorted(source)
    for key, value in source.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_model_names_without_an_official_key_are_listed():
    inverse = mapping.official_dac_inverse(["transformer.label_enc.weight"])
    with pytest.raises(
        ValueError,
        match=r"1 model name\(s\) have no official checkpoint key: "
        r"transformer\.class_head\.weight",
    ):
        mapping.to_source_layout(
            {
                "transformer.label_enc.weight": np.zeros(2),
                "transformer.class_head.weight": np.zeros(2),
            },
            inverse,
            source_name="official checkpoint",
        )
    # a packed projection needs its three thirds
    names = [f"transformer.decoder.layers.0.self_attn.{p}_proj.bias" for p in "qk"]
    with pytest.raises(
        ValueError,
        match=r"in_proj_bias: packing q/k/v needs all three "
        r"projections, v missing",
    ):
        mapping.to_source_layout(
            {n: np.zeros(4) for n in names}, mapping.official_dac_inverse(names)
        )


# ---------------------------------------------------------------------------------- backbones
@pytest.mark.filterwarnings("ignore:Skip loading")  # ppdet warns per non-backbone parameter
def test_torchvision_resnet50_converts_into_ppdet_resnet(official_state, tmp_path, r50_model):
    from ppdet.modeling.backbones.resnet import ResNet
    from ppdet.utils.checkpoint import load_pretrain_weight

    state = _torchvision_r50_state(official_state)
    src, dst = tmp_path / "resnet50-19c8e357.pth", tmp_path / "resnet50_ppdet.pdparams"
    writer.save_legacy(state, src)  # torchvision's 2017 file predates the zip format
    convert_backbone.main(["--src", str(src), "--dst", str(dst)])
    saved = {k: v.numpy() for k, v in paddle.load(str(dst)).items()}

    resnet = ResNet(
        depth=50, variant="b", norm_type="bn", freeze_norm=True, freeze_at=0, return_idx=[1, 2, 3]
    )
    missing, unexpected = resnet.set_state_dict(saved)
    assert missing == [] and unexpected == [] and set(saved) == set(resnet.state_dict())
    candidates = _source_candidates(state)
    used = set()
    for name, value in resnet.state_dict().items():
        keys = candidates.get(_fingerprint(value.numpy()))
        assert keys, f"{name} equals no tensor of the checkpoint"
        used.update(keys)
    assert {k for k in state if not k.startswith("fc.") and "num_batches" not in k} <= used
    np.testing.assert_array_equal(
        resnet.state_dict()["res5.res5b.branch2b.norm._variance"].numpy(),
        state["layer4.1.bn2.running_var"],
    )

    # `pretrain_weights` of a DAC-DETR config: ppdet matches the names under backbone.*
    load_pretrain_weight(r50_model, str(dst))
    model_state = r50_model.state_dict()
    for name, value in saved.items():
        np.testing.assert_array_equal(model_state["backbone." + name].numpy(), value, err_msg=name)


def _tiny_swin():
    from ppdet.modeling.backbones.swin_transformer import SwinTransformer

    return SwinTransformer(
        embed_dim=24,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        out_indices=(1, 2, 3),
        drop_path_rate=0.0,
    )


def _torch_layout_swin_state(swin, rng, with_output_norms):
    """Random weights named as in the PyTorch Swin code, with torch's Linear layout [out, in]."""
    state = collections.OrderedDict()
    linear = ("attn.qkv.weight", "attn.proj.weight", "fc1.weight", "fc2.weight", "reduction.weight")
    for name, tensor in swin.state_dict().items():
        if name.startswith("norm") and name[4].isdigit() and not with_output_norms:
            continue  # ppdet's per-output norms do not exist in ImageNet checkpoints
        shape = list(tensor.shape)
        if name.endswith(linear):
            shape = shape[::-1]
        if name.endswith("relative_position_index"):
            state[name] = tensor.numpy()
        else:
            state[name] = rng.standard_normal(shape).astype(np.float32)
    return state


def test_swin_checkpoint_converts_into_ppdet_swin(tmp_path):
    paddle.seed(0)
    reference = _tiny_swin()
    rng = np.random.default_rng(3)
    # The microsoft/Swin-Transformer ImageNet layout, with the classifier head, its final norm
    # and the shifted-window masks.
    state = _torch_layout_swin_state(reference, rng, with_output_norms=False)
    state["norm.weight"], state["norm.bias"] = np.ones(192, np.float32), np.zeros(192, np.float32)
    state["head.weight"] = np.ones((10, 192), np.float32)
    state["head.bias"] = np.zeros(10, np.float32)
    state["layers.0.blocks.1.attn_mask"] = np.zeros((4, 49, 49), np.float32)
    src, dst = tmp_path / "swin_tiny_test.pth", tmp_path / "swin_ppdet.pdparams"
    writer.save_zip({"model": state}, src)

    convert_backbone.main(["--src", str(src), "--dst", str(dst)])
    saved = {k: v.numpy() for k, v in paddle.load(str(dst)).items()}
    before = {k: v.numpy() for k, v in reference.state_dict().items()}
    missing, unexpected = reference.set_state_dict(saved)
    assert unexpected == []
    assert sorted(missing) == sorted(
        k for k in before if k.startswith(("norm1.", "norm2.", "norm3."))
    )
    after = {k: v.numpy() for k, v in reference.state_dict().items()}
    for name in (
        "layers.2.blocks.1.attn.qkv.weight",
        "layers.0.downsample.reduction.weight",
        "layers.3.blocks.0.mlp.fc2.weight",
    ):
        np.testing.assert_array_equal(after[name], state[name].T, err_msg=name)
    for name in (
        "layers.1.blocks.0.attn.relative_position_bias_table",
        "patch_embed.proj.weight",
        "layers.2.blocks.1.norm2.bias",
        "layers.1.blocks.1.attn.relative_position_index",
    ):
        np.testing.assert_array_equal(after[name], state[name], err_msg=name)
    np.testing.assert_array_equal(after["norm3.weight"], before["norm3.weight"])
    assert not any(k.startswith(("head.", "norm.")) or "attn_mask" in k for k in saved)


def test_official_swin_backbone_keys_map_onto_ppdet_swin():
    swin = _tiny_swin()
    torch_state = _torch_layout_swin_state(swin, np.random.default_rng(4), with_output_norms=True)
    source = {BODY + k: v for k, v in torch_state.items()}
    specs = {"backbone." + k: v for k, v in mapping.state_specs(swin).items()}
    converted = mapping.convert_state_dict(source, specs, mapping.official_dac_rules(source))
    assert set(converted) == set(specs)
    np.testing.assert_array_equal(
        converted["backbone.layers.1.blocks.0.attn.qkv.weight"],
        torch_state["layers.1.blocks.0.attn.qkv.weight"].T,
    )
    np.testing.assert_array_equal(converted["backbone.norm2.bias"], torch_state["norm2.bias"])


def test_backbone_tool_rejects_unknown_state_dicts(tmp_path):
    src = tmp_path / "other.pth"
    writer.save_zip({"encoder.weight": np.ones((2, 2), np.float32)}, src)
    with pytest.raises(ValueError) as info:
        convert_backbone.main(["--src", str(src), "--dst", str(tmp_path / "x.pdparams")])
    assert str(src) in str(info.value) and "encoder.weight" in str(info.value)
