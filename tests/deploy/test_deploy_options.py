"""The deploy option models: infer_cfg.yml values (InferConfig) and the command-line flags of the
infer tools and the service (cli_options) are checked as they are read; each bad value is one
error naming the file or the flag, and the key."""

import argparse

import pytest

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS


@pytest.mark.parametrize(
    "text, key",
    [
        ("Preprocess: []\ndraw_threshold: high\n", "draw_threshold"),
        ("Preprocess: []\nfeature_strides: [8, x]\n", "feature_strides[1]"),
        ("Preprocess: []\nnum_queries: many\n", "num_queries"),
        ("Preprocess: []\nmin_subgraph_size: [3]\n", "min_subgraph_size"),
        ("Preprocess: []\nattention: fast\n", "attention"),
        ("Preprocess: []\nNMS: {nms_threshold: 0.7}\n", "NMS"),
        ("Preprocess: {type: Resize}\n", "Preprocess"),
        ("label_list: [a]\n", "missing key 'Preprocess'"),
    ],
)
def test_bad_infer_cfg_value_names_the_file_and_key(tmp_path, text, key):
    from ppdet_dac.deploy.infer_config import InferConfig

    (tmp_path / "infer_cfg.yml").write_text(text)
    with pytest.raises(ValueError) as info:
        InferConfig(str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'infer_cfg.yml'}: ") and key in message, message
    assert "\n" not in message


def test_infer_cfg_of_an_older_export_reads_with_its_defaults(tmp_path):
    """Keys absent or empty in exports made before they were written read as those exports
    behave: outputs bbox, bbox_num; no NMS candidates; no input-size limits."""
    from ppdet_dac.deploy.infer_config import InferConfig

    (tmp_path / "infer_cfg.yml").write_text(
        "Preprocess: [{type: Permute}]\nlabel_list: [1, cat]\nfeature_strides: null\n"
        "num_queries: null\noutput_names: []\nmin_subgraph_size: '5'\n"
    )
    cfg = InferConfig(str(tmp_path))
    assert (cfg.preprocess, cfg.label_list, cfg.output_names, cfg.nms) == (
        [{"type": "Permute"}],
        ["1", "cat"],
        ["bbox", "bbox_num"],
        None,
    )
    assert (
        cfg.feature_strides,
        cfg.num_queries,
        cfg.min_subgraph_size,
        cfg.draw_threshold,
        cfg.attention,
    ) == ([], 0, 5, 0.5, "reference")
    assert cfg.path == str(tmp_path / "infer_cfg.yml") and cfg.raw["num_queries"] is None


def _parser():
    from ppdet_dac.deploy.cli_options import add_cpu_options, add_detection_options

    parser = argparse.ArgumentParser(prog="infer")
    add_cpu_options(parser)
    add_detection_options(parser)
    return parser


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--max_pixels", "0"], "--max_pixels"),
        (["--max_pixels", str(2**31)], "--max_pixels"),
        (["--max_pixels", "many"], "--max_pixels"),
        (["--nms_threshold", "1.5"], "--nms_threshold"),
        (["--score_threshold", "-0.1"], "--score_threshold"),
        (["--slice_size", "0", "64"], "--slice_size"),
        (["--overlap_ratio", "0.5", "1"], "--overlap_ratio"),
        (["--match_threshold", "2"], "--match_threshold"),
    ],
)
def test_bad_flag_value_stops_the_parser_naming_the_flag(flags, flag, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(flags)
    assert info.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


def test_flag_values_and_defaults_as_parsed():
    from ppdet_dac.deploy.cli_options import detection_options_from_args
    from ppdet_dac.deploy.slicing import SliceConfig

    args = _parser().parse_args([])
    assert args.max_pixels == DEFAULT_MAX_PIXELS and isinstance(args.max_pixels, int)
    args = _parser().parse_args(
        [
            "--max_pixels",
            "5000",
            "--nms_threshold",
            "1",
            "--slice_infer",
            "--overlap_ratio",
            "0",
            "0.5",
            "--score_threshold",
            "0",
        ]
    )
    assert args.max_pixels == 5000
    assert detection_options_from_args(args) == {
        "nms_threshold": 1.0,
        "score_threshold": 0.0,
        "slicing": SliceConfig((640, 640), (0.0, 0.5), "nms", 0.6, "ios"),
    }
