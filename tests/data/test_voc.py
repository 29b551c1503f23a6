"""DACVOCDataSet: ppdet's VOC layout, VOC's 1-based inclusive boxes, and DACCOCODataSet's
rules for bad input (one message naming the file each). Built directly (no global config)."""

import json
import os

import cv2
import numpy as np
import pytest
from ppdet.data.reader import Compose

from _data_helpers import BOX_COLOUR, write_voc
from ppdet_dac.data.dataset import DACCOCODataSet
from ppdet_dac.data.decode_errors import UnreadableDatasetError
from ppdet_dac.data.demo_data import make_demo_data, write_voc_split
from ppdet_dac.data.voc import DACVOCDataSet
from ppdet_dac.data.voc_files import read_label_list

FIELDS = ["image", "gt_bbox", "gt_class", "is_crowd", "difficult"]
LABELS = ["tree", "car"]


def _dataset(root, **kwargs):
    kwargs.setdefault("data_fields", FIELDS)
    kwargs.setdefault("label_list", "label_list.txt")
    ds = DACVOCDataSet(dataset_dir=str(root), anno_path="train.txt", **kwargs)
    ds.check_or_download_dataset()
    ds.parse_dataset()
    return ds


def _sample(stem, objects, width=100, height=80, **extra):
    return dict(stem=stem, width=width, height=height, objects=objects, **extra)


def test_boxes_classes_and_ids_follow_voc_and_the_label_list(tmp_path):
    """VOC xmin..xmax are 1-based inclusive pixel indices: the box [xmin - 1, xmax) covers
    exactly the painted pixels; classes in label-list order; image ids = list positions."""
    write_voc(
        str(tmp_path),
        [
            _sample("a", [("car", [11, 21, 40, 50], 0), ("tree", [1, 1, 100, 80], 1)]),
            _sample("b", [("car", [90, 70, 130, 95], 0)]),
        ],
        LABELS,
    )  # crosses the border
    ds = _dataset(tmp_path)
    a, b = ds.roidbs
    np.testing.assert_array_equal(a["gt_bbox"], [[10, 20, 40, 50], [0, 0, 100, 80]])
    np.testing.assert_array_equal(a["gt_class"], [[1], [0]])
    np.testing.assert_array_equal(a["difficult"], [[0], [1]])
    np.testing.assert_array_equal(a["is_crowd"], [[0], [0]])
    np.testing.assert_array_equal(b["gt_bbox"], [[89, 69, 100, 80]])  # clamped to the image
    assert [int(r["im_id"][0]) for r in ds.roidbs] == [0, 1]
    assert a["im_file"] == os.path.join(str(tmp_path), "images", "a.png")
    assert (a["w"], a["h"]) == (100.0, 80.0)
    assert ds.catid2clsid == {1: 0, 2: 1} and ds.cname2cid == {"tree": 0, "car": 1}
    assert ds.get_label_list() == os.path.join(str(tmp_path), "label_list.txt")
    # the painted pixels of a box are the record's box (the convention, checked on pixels)
    write_voc(str(tmp_path / "car_only"), [_sample("a", [("car", [11, 21, 40, 50], 0)])], LABELS)
    image = cv2.imread(str(tmp_path / "car_only" / "images" / "a.png"))[:, :, ::-1]
    ys, xs = np.nonzero((image == BOX_COLOUR).all(axis=2))
    box = _dataset(tmp_path / "car_only").roidbs[0]["gt_bbox"][0]
    np.testing.assert_array_equal([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box)


def test_same_records_as_the_coco_reader_on_the_demo_data(tmp_path):
    """The demo shapes written as VOC load to the records of their COCO file: same images,
    boxes, classes, in the same order; as many boxes as the COCO file has."""
    make_demo_data(
        str(tmp_path),
        num_train=8,
        num_val=2,
        num_empty_train=2,
        min_size=64,
        max_size=96,
        max_objects=4,
    )
    write_voc_split(str(tmp_path), "train")
    voc = DACVOCDataSet(
        dataset_dir=str(tmp_path),
        anno_path="voc/train.txt",
        label_list="voc/label_list.txt",
        data_fields=FIELDS,
        allow_empty=True,
    )
    voc.parse_dataset()
    coco = DACCOCODataSet(
        dataset_dir=str(tmp_path),
        image_dir="train",
        anno_path="annotations/instances_train.json",
        data_fields=FIELDS,
        allow_empty=True,
    )
    coco.parse_dataset()
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        anno = json.load(f)
    assert len(voc.roidbs) == len(anno["images"]) == 8
    assert sum(len(r["gt_bbox"]) for r in voc.roidbs) == len(anno["annotations"])
    for v, c in zip(voc.roidbs, coco.roidbs):
        assert v["im_file"] == c["im_file"] and (v["w"], v["h"]) == (c["w"], c["h"])
        np.testing.assert_array_equal(v["gt_bbox"], c["gt_bbox"])
        np.testing.assert_array_equal(v["gt_class"], c["gt_class"])
    assert read_label_list(str(tmp_path / "voc" / "label_list.txt")) == [
        "circle",
        "square",
        "triangle",
    ]


def test_missing_and_empty_images_are_skipped_and_counted(tmp_path, dataset_log):
    write_voc(
        str(tmp_path),
        [
            _sample("a", [("car", [1, 1, 10, 10], 0)]),
            _sample("gone", [("car", [1, 1, 10, 10], 0)], paint=False),
            _sample("zero", [("car", [1, 1, 10, 10], 0)]),
        ],
        LABELS,
    )
    open(tmp_path / "images" / "zero.png", "wb").close()
    ds = _dataset(tmp_path)
    assert [int(r["im_id"][0]) for r in ds.roidbs] == [0]
    text = dataset_log.text
    assert (
        f"skipping {tmp_path / 'xml' / 'gone.xml'}: file {tmp_path / 'images' / 'gone.png'}"
        " is missing"
    ) in text
    assert f"{tmp_path / 'images' / 'zero.png'} is empty or not a file" in text
    assert (
        f"{tmp_path / 'train.txt'}: skipped 2 of 3 images (file missing or empty; "
        "annotation files xml/gone.xml, xml/zero.xml)"
    ) in text


def test_bad_size_is_skipped_naming_the_xml(tmp_path, dataset_log):
    write_voc(
        str(tmp_path),
        [
            _sample("a", [("car", [1, 1, 10, 10], 0)]),
            _sample("b", [("car", [1, 1, 10, 10], 0)], xml_size=("fifty", 80)),
            _sample("c", [("car", [1, 1, 10, 10], 0)], xml_size=(0, 80)),
            _sample("d", [("car", [1, 1, 10, 10], 0)], xml_size=(None, 80)),
        ],
        LABELS,
    )
    assert [int(r["im_id"][0]) for r in _dataset(tmp_path).roidbs] == [0]
    text = dataset_log.text
    assert (
        f"skipping {tmp_path / 'xml' / 'b.xml'} ({tmp_path / 'images' / 'b.png'}): width "
        "'fifty' / height 80 in its <size> must be numbers > 0"
    ) in text
    assert "width 0 / height 80 in its <size>" in text and "width None / height 80" in text
    assert (
        f"{tmp_path / 'train.txt'}: skipped 3 of 4 images (width/height not a number > 0; "
        "annotation files xml/b.xml, xml/c.xml, xml/d.xml)"
    ) in text


def test_non_numeric_non_finite_and_degenerate_boxes_are_skipped(tmp_path, dataset_log):
    bad = [
        [10, "abc", 20, 30],
        ["nan", 1, 20, 30],
        [1, 1, "inf", 30],
        [None, 1, 20, 30],
        [1, 1, "-inf", 30],
    ]
    degenerate = [
        [50, 10, 40, 30],  # xmax < xmin
        [120, 10, 130, 30],
    ]  # right of the 100 px image
    write_voc(
        str(tmp_path),
        [
            _sample(
                "a", [("car", [11, 21, 40, 50], 0)] + [("car", box, 0) for box in bad + degenerate]
            )
        ],
        LABELS,
    )
    ds = _dataset(tmp_path)  # no exception
    np.testing.assert_array_equal(ds.roidbs[0]["gt_bbox"], [[10, 20, 40, 50]])
    text = dataset_log.text
    xml = tmp_path / "xml" / "a.xml"
    assert (
        f"skipping object 2 ('car') of {xml}: bndbox [xmin, ymin, xmax, ymax] = "
        "['10', 'abc', '20', '30'] has a value that is not a number"
    ) in text
    assert (
        f"skipping object 3 ('car') of {xml}: bndbox [xmin, ymin, xmax, ymax] = "
        "['nan', '1', '20', '30'] has a non-finite value"
    ) in text
    assert (
        "bndbox [xmin, ymin, xmax, ymax] = [None, '1', '20', '30'] has a value that is "
        "not a number" in text
    )
    assert (
        f"skipping degenerate box of {xml} (object 7 ('car')): bndbox [xmin, ymin, xmax, "
        "ymax] = ['50', '10', '40', '30'] has no area inside the 100x80 image"
    ) in text
    listed = tmp_path / "train.txt"
    assert (
        f"{listed}: skipped 5 malformed boxes (bbox not 4 finite numbers; objects xml/a.xml "
        "object 2, xml/a.xml object 3, xml/a.xml object 4, xml/a.xml object 5, xml/a.xml "
        "object 6)"
    ) in text
    assert (
        f"{listed}: skipped 2 degenerate boxes (no area inside the image; objects xml/a.xml "
        "object 7, xml/a.xml object 8)"
    ) in text


def test_unknown_label_is_one_error_naming_the_xml_object_and_label_file(tmp_path):
    write_voc(
        str(tmp_path),
        [_sample("a", [("car", [1, 1, 10, 10], 0), ("dog", [1, 1, 10, 10], 0)])],
        LABELS,
    )
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'xml' / 'a.xml'}: object 2 is labelled 'dog', which is not in the label "
        f"list {tmp_path / 'label_list.txt'} (classes: ['tree', 'car'])"
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing_xml",
        "invalid_xml",
        "one_field_line",
        "no_labels",
        "duplicate_label",
        "bad_difficult",
        "missing_list",
        "inherited_image_dir",
    ],
)
def test_bad_files_stop_with_one_message_naming_them(tmp_path, case):
    list_file, label_file = write_voc(
        str(tmp_path), [_sample("a", [("car", [1, 1, 9, 9], 0)])], LABELS
    )
    xml = tmp_path / "xml" / "a.xml"
    kwargs = {}
    if case == "missing_xml":
        os.remove(xml)
        error, message = (
            FileNotFoundError,
            (f"annotation file not found: {xml} (listed on line 1 of {list_file})"),
        )
    elif case == "invalid_xml":
        xml.write_text("<annotation><size>")
        error, message = ValueError, f"{xml} is not valid XML: no element found: line 1, column 18"
    elif case == "one_field_line":
        with open(list_file, "a") as f:
            f.write("\nimages/b.png\n")
        error, message = (
            ValueError,
            (f"{list_file}:3: expected '<image path> <xml path>', got 'images/b.png'"),
        )
    elif case == "no_labels":
        os.remove(label_file)
        error, message = (
            FileNotFoundError,
            (
                f"label list file not found: {label_file} "
                f"(dataset_dir={str(tmp_path)!r}, "
                "label_list='label_list.txt')"
            ),
        )
    elif case == "duplicate_label":
        with open(label_file, "w") as f:
            f.write("tree\ncar\ntree\n")
        error, message = ValueError, f"{label_file}:3: class 'tree' already named on line 1"
    elif case == "bad_difficult":
        xml.write_text(
            xml.read_text().replace("<difficult>0</difficult>", "<difficult>yes</difficult>")
        )
        error, message = ValueError, f"{xml}: object 1 has <difficult> 'yes'; it must be 0 or 1"
    elif case == "missing_list":
        os.remove(list_file)
        error, message = (
            FileNotFoundError,
            (
                f"annotation file not found: {list_file} "
                f"(dataset_dir={str(tmp_path)!r}, "
                "anno_path='train.txt')"
            ),
        )
    else:  # image_dir inherited from a COCO config
        kwargs["image_dir"] = "train2017"
        error, message = (
            FileNotFoundError,
            (
                f"image directory not found: {tmp_path / 'train2017'} (dataset_dir={str(tmp_path)!r}"
                ", image_dir='train2017'); the list's paths are relative to dataset_dir/image_dir "
                "(image_dir: '' when they start at dataset_dir)"
            ),
        )
    with pytest.raises(error) as info:
        _dataset(tmp_path, **kwargs)
    assert str(info.value) == message


def test_training_set_without_any_usable_box_is_an_error(tmp_path):
    list_file, _ = write_voc(
        str(tmp_path), [_sample("a", []), _sample("b", [("car", ["x", 1, 9, 9], 0)])], LABELS
    )
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path, allow_empty=True)
    assert str(info.value) == (
        f"{list_file}: no image has a usable box, nothing to train on (of the 2 images listed: "
        f"0 missing or empty under {tmp_path}, 0 with a bad width/height, 2 without a usable "
        "box; 1 annotations, 1 malformed and 0 degenerate boxes skipped)"
    )
    assert len(_dataset(tmp_path, allow_empty=True, data_fields=["image"]).roidbs) == 2


def test_image_without_boxes_kept_only_with_allow_empty(tmp_path):
    write_voc(str(tmp_path), [_sample("a", [("car", [1, 1, 9, 9], 0)]), _sample("b", [])], LABELS)
    assert len(_dataset(tmp_path).roidbs) == 1
    kept = _dataset(tmp_path, allow_empty=True).roidbs
    assert len(kept) == 2 and kept[1]["gt_bbox"].shape == (0, 4)


def test_undecodable_image_is_skipped_in_training(tmp_path, dataset_log):
    write_voc(str(tmp_path), [_sample(s, [("car", [1, 1, 9, 9], 0)]) for s in "abc"], LABELS)
    (tmp_path / "images" / "b.png").write_bytes(b"garbage")
    ds = _dataset(tmp_path, max_consecutive_decode_errors=2)
    ds.set_kwargs()
    ds.set_transform(Compose([{"DACDecode": {}}]))
    assert [int(ds[i]["im_id"][0]) for i in range(3)] == [0, 2, 2]
    assert "skipping undecodable image: cannot decode image file" in dataset_log.text
    for name in "ac":
        (tmp_path / "images" / f"{name}.png").write_bytes(b"garbage")
    fresh = _dataset(tmp_path)
    fresh.set_kwargs()
    fresh.set_transform(Compose([{"DACDecode": {}}]))
    with pytest.raises(
        UnreadableDatasetError,
        match=f"none of the 3 images listed in {tmp_path / 'train.txt'} can be decoded",
    ):
        fresh[0]


def test_coco_form_is_the_loaded_images_and_boxes(tmp_path):
    """get_anno(): a COCO file of what was loaded (clamped boxes, category ids 1..K, image ids
    as the records), which pycocotools scores AP 1 against itself."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    write_voc(
        str(tmp_path),
        [
            _sample("a", [("car", [11, 21, 40, 50], 0), ("tree", [90, 70, 130, 95], 1)]),
            _sample("gone", [("car", [1, 1, 9, 9], 0)], paint=False),
            _sample("c", [("tree", [5, 5, 24, 34], 0)]),
        ],
        LABELS,
    )
    ds = _dataset(tmp_path, data_fields=["image"])  # an evaluation dataset: no gt in records
    with open(ds.get_anno()) as f:
        coco = json.load(f)
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        (0, "images/a.png", 100.0, 80.0),
        (2, "images/c.png", 100.0, 80.0),
    ]
    assert [
        (a["image_id"], a["category_id"], a["bbox"], a["difficult"]) for a in coco["annotations"]
    ] == [
        (0, 2, [10.0, 20.0, 30.0, 30.0], 0),
        (0, 1, [89.0, 69.0, 11.0, 11.0], 1),
        (2, 1, [4.0, 4.0, 20.0, 30.0], 0),
    ]
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "tree"), (2, "car")]
    assert ds.get_anno() == ds.get_anno()
    gt = COCO(ds.get_anno())
    detections = [
        dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0)
        for a in coco["annotations"]
    ]
    evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_eval_batches_give_ppdet_voc_metric_what_it_reads(tmp_path):
    """The VOC demo config's evaluation data with ppdet's `metric: VOC` fields: batches (2
    images, Resize [160, 224]) carry gt_bbox in the resized image, gt_class, difficult and
    scale_factor, from which VOCMetric scores detections in original pixels: all found ->
    mAP 1; the car missed (IoU < 0.5) -> car AP 0, tree AP 1 (the difficult tree ignored)."""
    import pickle

    from ppdet.metrics import VOCMetric

    from _data_helpers import REPO, run_probe

    list_file, label_file = write_voc(
        str(tmp_path),
        [
            _sample(
                "a",
                [("car", [21, 11, 80, 50], 0), ("tree", [101, 51, 150, 90], 1)],
                width=200,
                height=100,
            ),
            _sample("b", [("tree", [11, 11, 60, 60], 0)], width=100, height=100),
        ],
        LABELS,
    )
    config = tmp_path / "voc.yml"
    sections = "".join(
        f"{name}: {{dataset_dir: {tmp_path}, anno_path: train.txt, label_list: "
        "label_list.txt, data_fields: [image, gt_bbox, gt_class, difficult]}\n"
        for name in ("TrainDataset", "EvalDataset")
    )
    config.write_text(
        f"_BASE_: ['{REPO}/configs/demo/demo_data_voc.yml']\n{sections}"
        "EvalReader: {batch_size: 2, collate_batch: false}\n"
    )
    out = tmp_path / "batches.pkl"
    run_probe(["--config", str(config), "--out", str(out), "--mode", "eval"])
    with open(out, "rb") as f:
        (batch,) = pickle.load(f)["batches"]
    # scale min(160 / short, 224 / long): 200x100 -> min(1.6, 1.12); 100x100 -> 1.6
    np.testing.assert_allclose(batch["scale_factor"], [[1.12, 1.12], [1.6, 1.6]], rtol=1e-6)
    np.testing.assert_allclose(
        batch["gt_bbox"][0], np.array([[20, 10, 80, 50], [100, 50, 150, 90]]) * 1.12, rtol=1e-6
    )
    np.testing.assert_array_equal(batch["difficult"][0], [[0], [1]])
    np.testing.assert_array_equal(batch["gt_class"][1], [[0]])

    def voc_map(car_box):
        metric = VOCMetric(label_list=label_file, class_num=2, map_type="11point")
        detections = np.array(
            [[1, 0.9] + car_box, [0, 0.8, 100, 50, 150, 90], [0, 0.7, 10, 10, 60, 60]],
            dtype=np.float32,
        )
        metric.update(batch, {"bbox": detections, "bbox_num": np.array([2, 1])})
        metric.accumulate()
        return metric.get_results()["bbox"][0]

    assert voc_map([20, 10, 80, 50]) == pytest.approx(1.0)
    assert voc_map([60, 10, 120, 50]) == pytest.approx(0.5)
