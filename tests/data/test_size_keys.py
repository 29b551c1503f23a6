"""Image sizes as one knob: train_sizes / train_max_size / eval_size / eval_max_size fill the
readers' resize ops; unset, every shipped config's readers stay as written.

The dict-level tests read configs merged as ppdet merges them (no global config); the reader
outputs come from tests/data/loader_probe.py in a fresh interpreter, loading the config as the
tools do (load_checked_config with -o)."""

import copy
import glob
import os
import pickle

import numpy as np
import pytest

from _data_helpers import REPO, run_probe, write_coco
from ppdet_dac.data.image_sizes import apply_image_sizes, describe_image_sizes
from ppdet_dac.engine.config_files import read_with_bases

READERS = ("TrainReader", "EvalReader", "TestReader")
CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True)
    if "_base_" not in p
)
DEMO = "configs/demo/dac_demo.yml"
R50 = "configs/dac_cdn_ice_r50.yml"
COCO_TRAIN = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
DEMO_TRAIN = [128, 144, 160]
# the values that the shipped readers are written with
SHIPPED = {
    DEMO: dict(train_sizes=DEMO_TRAIN, train_max_size=192, eval_size=160, eval_max_size=224),
    "configs/demo/dac_demo_voc.yml": dict(
        train_sizes=DEMO_TRAIN, train_max_size=192, eval_size=160, eval_max_size=224
    ),
    R50: dict(train_sizes=COCO_TRAIN, train_max_size=1333, eval_size=800, eval_max_size=1333),
}
NORMALIZE = {
    "NormalizeImage": {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "is_scale": True,
    }
}


def _load(config, **keys):
    """The merged config of ``config`` and its _BASE_ files (plain dicts), keys added."""
    cfg = read_with_bases(os.path.join(REPO, config), [])
    cfg.update(keys)
    return cfg


def _readers(cfg):
    return {name: copy.deepcopy(cfg.get(name)) for name in READERS}


@pytest.mark.parametrize("config", CONFIGS)
def test_unset_keys_leave_every_shipped_reader_as_written(config):
    cfg = _load(config)
    before = _readers(cfg)
    assert apply_image_sizes(cfg) == {}
    assert _readers(cfg) == before
    assert describe_image_sizes(cfg).startswith("TrainReader short side [")


@pytest.mark.parametrize("config", sorted(SHIPPED))
def test_the_shipped_values_give_the_shipped_readers(config):
    """The keys set to the sizes a config is written with change nothing: they reach exactly
    the ops (and arguments) that hold those sizes."""
    cfg = _load(config, **SHIPPED[config])
    before = _readers(_load(config))
    assert apply_image_sizes(cfg) == SHIPPED[config]
    assert _readers(cfg) == before


def test_new_values_reach_every_reader_of_the_coco_recipe():
    cfg = _load(R50, train_sizes=[320, 352], train_max_size=600, eval_size=384, eval_max_size=640)
    apply_image_sizes(cfg)
    train = cfg["TrainReader"]["sample_transforms"]
    branches = train[2]["RandomSelect"]
    assert branches["transforms1"] == [
        {"RandomShortSideResize": {"short_side_sizes": [320, 352], "max_size": 600}}
    ]
    assert branches["transforms2"] == [
        {"RandomShortSideResize": {"short_side_sizes": [400, 500, 600]}},  # before the crop
        {"RandomSizeCrop": {"min_size": 384, "max_size": 600}},
        {"RandomShortSideResize": {"short_side_sizes": [320, 352], "max_size": 600}},
    ]
    assert cfg["EvalReader"]["sample_transforms"][1] == {
        "RandomShortSideResize": {"short_side_sizes": [384], "max_size": 640}
    }
    assert cfg["TestReader"]["sample_transforms"][1] == {
        "Resize": {"target_size": [384, 640], "keep_ratio": True}
    }
    assert [list(op)[0] for op in train] == [
        "DACDecode",
        "RandomFlip",
        "RandomSelect",
        "NormalizeImage",
        "NormalizeBox",
        "BboxXYXY2XYWH",
        "Permute",
    ]
    assert describe_image_sizes(cfg) == (
        "TrainReader short side [320, 352], long side <= 600; EvalReader short side 384, long "
        "side <= 640; TestReader short side 384, long side <= 640"
    )


def test_one_key_changes_only_its_argument():
    cfg = _load(DEMO, eval_max_size=300, train_max_size=400)
    apply_image_sizes(cfg)
    assert cfg["TrainReader"]["sample_transforms"][2] == {
        "RandomShortSideResize": {"short_side_sizes": DEMO_TRAIN, "max_size": 400}
    }
    for reader in ("EvalReader", "TestReader"):
        assert cfg[reader]["sample_transforms"][1] == {
            "Resize": {"target_size": [160, 300], "keep_ratio": True}
        }
        assert cfg[reader]["sample_transforms"][2] == NORMALIZE


def _where(key):
    return f"x.yml with -o {key}=..."


@pytest.mark.parametrize(
    "keys, message",
    [
        (
            dict(train_sizes=480),
            "x.yml with -o train_sizes=...: train_sizes must be a non-empty "
            "list of integers > 0 (short sides drawn per training image, e.g. [480, 512, 544]), got 480",
        ),
        (dict(train_sizes=[]), "train_sizes must be a non-empty list of integers > 0"),
        (dict(train_sizes=[96, "128"]), "got [96, '128']"),
        (dict(train_sizes=[96, 0]), "got [96, 0]"),
        (
            dict(eval_size=-1),
            "x.yml with -o eval_size=...: eval_size must be an integer > 0 (pixels), got -1",
        ),
        (dict(eval_size=True), "eval_size must be an integer > 0 (pixels), got True"),
        (dict(eval_max_size=12.5), "eval_max_size must be an integer > 0 (pixels), got 12.5"),
        (dict(train_max_size="big"), "train_max_size must be an integer > 0 (pixels), got 'big'"),
        (
            dict(train_sizes=[300]),
            "x.yml with -o train_sizes=...: TrainReader.sample_transforms[2]."
            "RandomShortSideResize would resize the short side to 300 but cap the long side at 192 "
            "(train_max_size); give train_max_size >= max(train_sizes)",
        ),
        (
            dict(eval_size=400, eval_max_size=300),
            "x.yml with -o eval_size=...: EvalReader."
            "sample_transforms[1].Resize would resize the short side to 400 but cap the long side at "
            "300 (eval_max_size); give eval_max_size >= eval_size",
        ),
    ],
)
def test_bad_values_are_one_error_naming_the_key(keys, message):
    cfg = _load(DEMO, **keys)
    before = _readers(cfg)
    with pytest.raises(ValueError) as info:
        apply_image_sizes(cfg, _where)
    assert message in str(info.value)
    assert str(info.value).startswith("x.yml with -o ")
    assert _readers(cfg) == before


def test_a_reader_without_a_resize_cannot_take_the_key():
    cfg = _load(DEMO, eval_size=128)
    cfg["TestReader"]["sample_transforms"] = [{"DACDecode": {}}, NORMALIZE, {"Permute": {}}]
    with pytest.raises(
        ValueError,
        match=r"^x\.yml with -o eval_size=\.\.\.: eval_size is set, but "
        r"TestReader\.sample_transforms has no "
        r"RandomShortSideResize / Resize to take it$",
    ):
        apply_image_sizes(cfg, _where)
    cfg = _load(DEMO, eval_size=128)
    cfg["EvalReader"]["sample_transforms"][1]["Resize"]["keep_ratio"] = False
    with pytest.raises(ValueError, match="keep_ratio false"):
        apply_image_sizes(cfg, _where)


# -- reader outputs, loaded as the tools load configs --------------------------------------
@pytest.fixture(scope="module")
def handmade_config(tmp_path_factory):
    """The demo config on a 200x100 image (one box) and a 100x100 image (none)."""
    root = tmp_path_factory.mktemp("sizes")
    write_coco(
        str(root),
        [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        [{"image_id": 1, "category_id": 7, "bbox": [20, 10, 60, 40]}],
        [(3, "square"), (7, "circle")],
    )
    text = f"_BASE_: ['{os.path.join(REPO, DEMO)}']\n"
    for section in ("TrainDataset", "EvalDataset", "TestDataset"):
        text += (
            f"{section}: {{dataset_dir: {root}, image_dir: images, "
            "anno_path: annotations/instances.json}\n"
        )
    text += "TrainReader: {shuffle: false, batch_size: 2}\n"  # 2 records: the demo takes 4
    path = root / "sizes.yml"
    path.write_text(text)
    return path


def _probe(tmp_path, config, *args):
    out = tmp_path / f"probe{len(list(tmp_path.iterdir()))}.pkl"
    run_probe(["--config", str(config), "--out", str(out), "--workers", "0"] + list(args))
    with open(out, "rb") as f:
        return pickle.load(f)


def _same(a, b, what):
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), what
        for x, y in zip(a, b):
            _same(x, y, what)
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def _same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert sorted(a) == sorted(b)
        for key in a:
            _same(a[key], b[key], key)


def test_reader_outputs_before_and_after_are_identical(tmp_path, handmade_config):
    """ppdet's plain loading vs the tools' loading with the keys at the shipped values: the
    same batches (train with the same seed, eval)."""
    import json

    opts = json.dumps(SHIPPED[DEMO])
    for mode in ("train", "eval"):
        before = _probe(tmp_path, handmade_config, "--mode", mode, "--batches", "2")
        after = _probe(tmp_path, handmade_config, "--mode", mode, "--batches", "2", "--opts", opts)
        _same_batches(before["batches"], after["batches"])


def test_o_sizes_change_train_and_eval_outputs(tmp_path, handmade_config):
    import json

    opts = json.dumps(
        {"train_sizes": [96], "train_max_size": 200, "eval_size": 64, "eval_max_size": 100}
    )
    train = _probe(tmp_path, handmade_config, "--opts", opts)["batches"][0]
    # 200x100: short side 100 -> 96, long 192 <= 200; 100x100 -> 96x96
    np.testing.assert_array_equal(train["im_shape"], [[96, 192], [96, 96]])
    first, second = _probe(
        tmp_path, handmade_config, "--mode", "eval", "--batches", "2", "--opts", opts
    )["batches"]
    # Resize [64, 100] keep_ratio: scale min(64 / 100, 100 / 200) = 0.5; min(0.64, 1) = 0.64
    np.testing.assert_array_equal(first["im_shape"], [[50, 100]])
    np.testing.assert_array_equal(second["im_shape"], [[64, 64]])


def test_bad_o_value_names_the_entry(tmp_path, handmade_config):
    import json

    result = _probe(tmp_path, handmade_config, "--opts", json.dumps({"train_sizes": 480}))
    assert result["error"] == (
        "ValueError",
        (
            f"{handmade_config} with -o train_sizes=480: train_sizes must be a non-empty list of "
            "integers > 0 (short sides drawn per training image, e.g. [480, 512, 544]), got 480"
        ),
    )
