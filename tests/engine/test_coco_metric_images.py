"""The COCO metric counts only the images that were evaluated: an image left out (e.g. one that
cannot be decoded) adds no misses; with every image evaluated the AP is pycocotools' plain one.
An annotation file with duplicated ids is refused; resolving the duplicates gives the clean AP."""

import contextlib
import io
import json

import pytest

from ppdet_dac.engine.evaluation import coco_box_eval


def _write(tmp_path):
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2)]
    annotations = [
        {
            "id": i,
            "image_id": i,
            "category_id": 1,
            "bbox": [10, 10, 40, 40],
            "area": 1600,
            "iscrowd": 0,
        }
        for i in (1, 2)
    ]
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}
        )
    )
    dets = tmp_path / "dets.json"  # a perfect detection on image 1 only
    dets.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}])
    )
    return str(dets), str(gt)


def test_left_out_images_do_not_count(tmp_path):
    dets, gt = _write(tmp_path)
    only_first = coco_box_eval(dets, gt, img_ids={1})
    assert only_first[0] == pytest.approx(1.0) and only_first[8] == pytest.approx(1.0)
    # both images count: image 2's box is a miss, recall 1/2 (AR@100 = 0.5)
    both = coco_box_eval(dets, gt, img_ids={1, 2})
    assert both[8] == pytest.approx(0.5)
    assert list(coco_box_eval(dets, gt)) == list(both)


def _gt_with_duplicates(gt_path, tmp_path):
    """The two-image GT of ``_write`` plus image 2 listed again, image 1's file listed again as
    id 3 with a box of its own, and annotation id 1 used again for image 3's box."""
    with open(gt_path) as handle:
        gt = json.load(handle)
    gt["images"] += [dict(gt["images"][1]), dict(gt["images"][0], id=3)]
    gt["annotations"].append(
        {
            "id": 1,
            "image_id": 3,
            "category_id": 1,
            "bbox": [50, 50, 40, 40],
            "area": 1600,
            "iscrowd": 0,
        }
    )
    path = tmp_path / "gt_dups.json"
    path.write_text(json.dumps(gt))
    return str(path), gt


def test_duplicated_ids_are_refused_and_resolving_them_gives_the_clean_ap(tmp_path):
    """Clean GT: a perfect detection on image 1, none on image 2: recall 1/2 at precision 1,
    so AP = 51/101 (the 101 recall points 0.00..0.50) at every IoU threshold."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from ppdet_dac.data.duplicates import resolve_duplicates

    dets, gt = _write(tmp_path)
    clean = coco_box_eval(dets, gt)
    assert clean[0] == pytest.approx(51 / 101) and clean[1] == pytest.approx(51 / 101)
    dup_path, dup = _gt_with_duplicates(gt, tmp_path)
    with pytest.raises(ValueError) as err:
        coco_box_eval(dets, dup_path)
    assert str(err.value).startswith(f"{dup_path}: duplicated ids")
    for named in (
        "image ids listed more than once (2)",
        "1.jpg as ids 1/3",
        "annotation ids used more than once (1)",
    ):
        assert named in str(err.value)
    # plain pycocotools takes the duplicated file without a word and reports another AP
    with contextlib.redirect_stdout(io.StringIO()):
        plain = COCOeval(COCO(dup_path), COCO(dup_path).loadRes(dets), "bbox")
        plain.evaluate(), plain.accumulate(), plain.summarize()
    assert plain.stats[0] != pytest.approx(clean[0])
    resolved, _ = resolve_duplicates(dup)
    resolved_path = tmp_path / "gt_resolved.json"
    resolved_path.write_text(json.dumps(resolved))
    assert list(coco_box_eval(dets, str(resolved_path))) == list(clean)


def test_coco_metric_refuses_duplicates_before_inference(tmp_path):
    from ppdet_dac.engine.evaluation import DACCOCOMetric

    _, gt = _write(tmp_path)
    dup_path, _ = _gt_with_duplicates(gt, tmp_path)
    with pytest.raises(ValueError, match="duplicated ids"):
        DACCOCOMetric(anno_file=dup_path, output_eval=str(tmp_path / "eval"))
    assert not (tmp_path / "eval").exists()
