"""Class names of an export (infer_cfg.yml label_list): from the annotation file or the config's
label_list (-o), never COCO's names on a model of another class count."""

import os

import pytest
import yaml

from _deploy_helpers import DEMO_CONFIG

NAMES = ["disc", "box", "wedge"]


def _demo_cfg(tmp_path, **opts):
    """The demo config (3 classes) with TestDataset pointed at a folder without annotations."""
    from ppdet_dac.engine import load_checked_config

    opts.setdefault("TestDataset", {"dataset_dir": str(tmp_path / "no_dataset_here")})
    return load_checked_config(DEMO_CONFIG, opts)


def test_missing_annotations_on_a_3_class_model_stop_the_export(
    exported, tmp_path, restore_global_config
):
    from ppdet_dac.deploy.export import export_model

    cfg = _demo_cfg(tmp_path)
    out = tmp_path / "model"
    missing = os.path.join(str(tmp_path / "no_dataset_here"), "annotations/instances_val.json")
    with pytest.raises(ValueError) as err:
        export_model(cfg, exported.weights, str(out), "reference")
    message = str(err.value)
    assert (
        f"annotation file {missing!r}, which is not there, and the model has 3 classes "
        "(not COCO's 80)" in message
    )
    assert "-o label_list=[name0,name1,...]" in message
    assert not out.exists()  # nothing written, no infer_cfg.yml with COCO names


def test_label_list_option_names_the_classes(exported, tmp_path, restore_global_config):
    """-o label_list=[...] (checked as a config key) goes to infer_cfg.yml and the predictor's
    detections carry those names."""
    from ppdet_dac.deploy.export import export_model
    from ppdet_dac.deploy.postprocess import detection_records
    from ppdet_dac.deploy.predictor import Predictor

    cfg = _demo_cfg(tmp_path, label_list=NAMES)
    out = export_model(cfg, exported.weights, str(tmp_path / "model"), "reference")
    with open(os.path.join(out, "infer_cfg.yml")) as f:
        assert yaml.safe_load(f)["label_list"] == NAMES
    predictor = Predictor(out)
    records = detection_records(predictor.predict([exported.images[0]])[0], predictor.label_list)
    assert records and {r["label"] for r in records} <= set(NAMES)
    assert all(r["label"] == NAMES[r["class_id"]] for r in records)


def test_label_list_file_and_counts(exported, tmp_path, restore_global_config):
    from ppdet_dac.deploy.export import class_names

    labels = tmp_path / "labels.txt"
    labels.write_text("background\n" + "\n".join(NAMES) + "\n\n")
    assert class_names(_demo_cfg(tmp_path, label_list=str(labels)), 3) == NAMES
    with pytest.raises(
        ValueError,
        match=r"label_list \['a', 'b'\] gives 2 class names but the "
        r"model outputs 3 labels",
    ):
        class_names(_demo_cfg(tmp_path, label_list=["a", "b"]), 3)
    with pytest.raises(FileNotFoundError, match="label_list file .*nope.txt.* not found"):
        class_names(_demo_cfg(tmp_path, label_list=str(tmp_path / "nope.txt")), 3)


def test_annotation_file_with_another_class_count_is_refused(
    exported, tmp_path, restore_global_config
):
    from ppdet_dac.deploy.export import class_names

    cfg = _demo_cfg(tmp_path, TestDataset={"dataset_dir": exported.data_dir})
    assert class_names(cfg, 3) == ["circle", "square", "triangle"]
    with pytest.raises(
        ValueError,
        match=r"TestDataset annotation file .*instances_val.json "
        r"gives 3 class names but the model outputs 5 labels",
    ):
        class_names(cfg, 5)


def test_coco_model_without_annotations_gets_coco_names(tmp_path, restore_global_config):
    """class_id_mode coco_raw: the graph maps the 91 raw ids to COCO's 80 classes, whose names
    are then the right ones even without the annotation file."""
    from ppdet_dac.deploy.export import build_model, class_names, num_output_labels

    cfg = _demo_cfg(tmp_path, num_classes=91, DACDETR={"class_id_mode": "coco_raw"})
    n = num_output_labels(build_model(cfg, None), cfg)
    names = class_names(cfg, n)
    assert n == 80 and len(names) == 80
    assert (names[0], names[2], names[-1]) == ("person", "car", "toothbrush")
