"""Export + Paddle Inference predictor (fresh process) against dygraph, preprocessing against
ppdet's reader, infer_cfg.yml content."""
import os

import numpy as np
import pytest
import yaml

from _deploy_helpers import dygraph_detections, run_python

ATOL = 1e-4


def test_infer_cfg_layout(exported):
    for mode, model_dir in exported.model_dirs.items():
        assert os.path.isfile(os.path.join(model_dir, "model.json"))
        assert os.path.isfile(os.path.join(model_dir, "model.pdiparams"))
        with open(os.path.join(model_dir, "infer_cfg.yml")) as f:
            cfg = yaml.safe_load(f)
        assert cfg["attention"] == mode
        assert cfg["mode"] == "paddle" and cfg["arch"] == "DETR" and cfg["use_dynamic_shape"]
        assert cfg["label_list"] == ["circle", "square", "triangle"]  # demo ids 1, 3, 5 in order
        reader = exported.cfg["TestReader"]["sample_transforms"]
        assert [p["type"] for p in cfg["Preprocess"]] == [list(t)[0] for t in reader[1:]]
        assert cfg["Preprocess"][0]["target_size"] == reader[1]["Resize"]["target_size"]


def test_preprocess_matches_ppdet_reader(exported):
    """The predictor's numpy preprocessing gives the tensors ppdet's TestReader ops give."""
    from ppdet.data.transform import operators as ppdet_ops
    from ppdet_dac.data.transforms import DACDecode
    from ppdet_dac.engine.predictor import Preprocessor, InferConfig

    pre = Preprocessor(InferConfig(exported.model_dirs["op"]).preprocess)
    reader = exported.cfg["TestReader"]["sample_transforms"]
    for path in exported.images:
        sample = DACDecode()({"im_file": path})
        for transform in reader[1:]:
            (name, args), = transform.items()
            sample = getattr(ppdet_ops, name)(**args)(sample)
        image, info = pre.one(path)
        np.testing.assert_array_equal(image, sample["image"])
        np.testing.assert_array_equal(info["im_shape"], sample["im_shape"])
        np.testing.assert_array_equal(info["scale_factor"], sample["scale_factor"])


def test_batch_padding_and_mask(exported):
    from ppdet_dac.engine.predictor import Preprocessor, InferConfig

    pre = Preprocessor(InferConfig(exported.model_dirs["op"]).preprocess)
    feeds = pre.batch(exported.images)
    singles = [pre.one(p)[0] for p in exported.images]
    h = max(s.shape[1] for s in singles)
    w = max(s.shape[2] for s in singles)
    assert feeds["image"].shape == (2, 3, h, w) and feeds["pad_mask"].shape == (2, h, w)
    for i, single in enumerate(singles):
        _, sh, sw = single.shape
        np.testing.assert_array_equal(feeds["image"][i, :, :sh, :sw], single)
        assert feeds["pad_mask"][i, :sh, :sw].min() == 1.0
        assert feeds["pad_mask"][i].sum() == sh * sw and not feeds["image"][i, :, sh:, :].any()


def test_predictor_in_fresh_process_matches_dygraph(exported, tmp_path):
    """Both attention modes, two input sizes and a padded batch of both: a new process (which has
    to register the op itself) reproduces the dygraph detections."""
    from ppdet_dac.engine.predictor import Preprocessor, InferConfig

    pre = Preprocessor(InferConfig(exported.model_dirs["op"]).preprocess)
    feeds = [pre.batch([path]) for path in exported.images] + [pre.batch(exported.images)]
    sizes = {f["image"].shape[2:] for f in feeds}
    assert len(sizes) == 3, sizes
    np.savez(tmp_path / "feeds.npz", **{f"{i}/{k}": v for i, f in enumerate(feeds)
                                        for k, v in f.items()})
    modes = ["op", "reference"]
    run_python([os.path.join("tests", "deploy", "_predict_in_process.py"),
                str(tmp_path / "feeds.npz"), str(tmp_path / "out.npz")]
               + [exported.model_dirs[m] for m in modes])
    out = np.load(tmp_path / "out.npz")
    model = exported.dygraph_model()
    for m, mode in enumerate(modes):
        for i, feed in enumerate(feeds):
            ref_bbox, ref_num = dygraph_detections(model, feed, mode)
            assert len(ref_num) == len(feed["image"]) and ref_num.min() > 0
            np.testing.assert_array_equal(out[f"{m}/{i}/bbox_num"], ref_num)
            np.testing.assert_allclose(out[f"{m}/{i}/bbox"], ref_bbox, rtol=0, atol=ATOL,
                                       err_msg=f"{mode} model, input {feed['image'].shape}")


def test_onednn_switch_gives_the_same_detections(exported):
    """--enable_mkldnn (oneDNN, with its placement pass dropped) runs the graph and agrees."""
    from ppdet_dac.engine.predictor import Predictor

    plain = Predictor(exported.model_dirs["op"])
    onednn = Predictor(exported.model_dirs["op"], enable_mkldnn=True, cpu_threads=2)
    for path in exported.images:
        feeds = plain.preprocessor.batch([path])
        ref_bbox, ref_num = plain.run(feeds)
        bbox, num = onednn.run(feeds)
        np.testing.assert_array_equal(num, ref_num)
        np.testing.assert_allclose(bbox, ref_bbox, rtol=0, atol=ATOL)


def test_predictor_rejects_bad_model_dir(tmp_path, exported):
    from ppdet_dac.engine.predictor import Predictor

    with pytest.raises(FileNotFoundError, match="infer_cfg.yml"):
        Predictor(str(tmp_path))
    (tmp_path / "infer_cfg.yml").write_text(
        open(os.path.join(exported.model_dirs["reference"], "infer_cfg.yml")).read())
    with pytest.raises(FileNotFoundError, match="model.json or model.pdmodel"):
        Predictor(str(tmp_path))
    (tmp_path / "infer_cfg.yml").write_text("Preprocess:\n- {type: Mosaic}\n")
    with pytest.raises(ValueError, match="Preprocess\\[0\\] has type 'Mosaic'"):
        Predictor(str(tmp_path))
