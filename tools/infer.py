"""Detect objects with a ppdet_dac model in dygraph (no export); write JSON and drawn images.

    python tools/infer.py -c configs/demo/dac_demo.yml -o weights=output/dac_demo/model_final \
        --infer_img demo.jpg | --infer_dir images/ [--output_dir output] [--draw_threshold 0.3]

Writes <output_dir>/<image name>.png and <output_dir>/detections.json, in the same format as
deploy/python/infer.py (the exported model), so the two can be compared directly.
"""
import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes; must precede load_config)

import paddle
from ppdet.data.source.category import get_categories
from ppdet.engine import Trainer
from ppdet.utils.cli import ArgsParser

from ppdet_dac.engine import config_from_args
from ppdet_dac.engine.predictor import list_images, save_results, split_detections


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--infer_img", default=None, help="one image")
    parser.add_argument("--infer_dir", default=None, help="a directory of images")
    parser.add_argument("--output_dir", default="output", help="where the PNGs and JSON go")
    parser.add_argument("--draw_threshold", type=float, default=0.3,
                        help="draw detections with score >= this")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    paths = list_images(args.infer_img, args.infer_dir)
    trainer = Trainer(cfg, mode="test")
    trainer.load_weights(cfg.weights)
    with paddle.no_grad():
        results = trainer.predict(paths, args.draw_threshold, args.output_dir, visualize=False)
    imid2path = trainer.dataset.get_imid2path()
    by_path = {}
    for res in results:
        for im_id, dets in zip(res["im_id"].reshape(-1),
                               split_detections(res["bbox"], res["bbox_num"])):
            by_path[imid2path[int(im_id)]] = dets
    clsid2catid, catid2name = get_categories(cfg.metric, anno_file=trainer.dataset.get_anno())
    names = [catid2name[clsid2catid[i]] for i in sorted(clsid2catid)]
    ordered = sorted(by_path)
    json_path = save_results(ordered, [by_path[p] for p in ordered], args.output_dir, names,
                             args.draw_threshold)
    print(f"{len(ordered)} images; results in {json_path} and {args.output_dir}/")


if __name__ == "__main__":
    main()
