"""The COCO metric counts only the images that were evaluated: an image left out (e.g. one that
cannot be decoded) adds no misses; with every image evaluated the AP is pycocotools' plain one."""
import json

import pytest

from ppdet_dac.engine.evaluation import coco_box_eval


def _write(tmp_path):
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2)]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 40, 40],
                    "area": 1600, "iscrowd": 0} for i in (1, 2)]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations,
                              "categories": [{"id": 1, "name": "box"}]}))
    dets = tmp_path / "dets.json"   # a perfect detection on image 1 only
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                                 "score": 0.9}]))
    return str(dets), str(gt)


def test_left_out_images_do_not_count(tmp_path):
    dets, gt = _write(tmp_path)
    only_first = coco_box_eval(dets, gt, img_ids={1})
    assert only_first[0] == pytest.approx(1.0) and only_first[8] == pytest.approx(1.0)
    # both images count: image 2's box is a miss, recall 1/2 (AR@100 = 0.5)
    both = coco_box_eval(dets, gt, img_ids={1, 2})
    assert both[8] == pytest.approx(0.5)
    assert list(coco_box_eval(dets, gt)) == list(both)
