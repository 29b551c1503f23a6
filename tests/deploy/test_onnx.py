"""ppdet_dac.deploy.onnx_export (deploy/onnx/convert.py): paddle2onnx on the reference export,
onnxruntime vs Paddle Inference.

Runs only with the ONNX extra installed (`make onnx`)."""

import numpy as np
import pytest

for _name in ("onnx", "onnxruntime", "paddle2onnx"):
    pytest.importorskip(_name, reason=f"{_name} not installed (make onnx)")


def _convert_module():
    from ppdet_dac.deploy import onnx_export

    return onnx_export


def test_onnxruntime_matches_predictor(exported, tmp_path):
    convert = _convert_module()
    onnx_file = convert.convert(exported.model_dirs["reference"], str(tmp_path / "model.onnx"))
    from ppdet_dac.deploy.predictor import Predictor

    predictor = Predictor(exported.model_dirs["reference"])
    detector = convert.OnnxDetector(onnx_file)
    sizes = set()
    for image in exported.images:
        feeds = predictor.preprocessor.batch([image])
        sizes.add(feeds["image"].shape)
        ref = predictor.run_model(feeds)  # the graph's unclipped outputs, as ONNX gives them
        ref_bbox, ref_num = ref["bbox"], ref["bbox_num"]
        bbox, num = detector.run(feeds)
        assert ref_num.sum() > 0
        np.testing.assert_array_equal(np.asarray(num).reshape(-1), ref_num.reshape(-1))
        np.testing.assert_allclose(bbox, ref_bbox, rtol=0, atol=1e-4)
    assert len(sizes) == 2


def test_op_export_is_refused(exported, tmp_path):
    with pytest.raises(ValueError, match="attention is 'op'.*--attention reference"):
        _convert_module().convert(exported.model_dirs["op"], str(tmp_path / "m.onnx"))
