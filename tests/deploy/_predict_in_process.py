"""Fresh-process helper: run the Predictor of each model dir on saved feeds.

    python tests/deploy/_predict_in_process.py FEEDS.npz OUT.npz MODEL_DIR [MODEL_DIR ...]

FEEDS.npz holds feed dicts as '<i>/<input name>'; OUT.npz gets '<model index>/<i>/bbox|bbox_num',
the graph's own outputs (Predictor.run_model).
"""

import sys

import numpy as np

from ppdet_dac.deploy.predictor import Predictor


def main(feeds_path, out_path, *model_dirs):
    saved = np.load(feeds_path)
    feeds = {}
    for key in saved.files:
        index, name = key.split("/")
        feeds.setdefault(int(index), {})[name] = saved[key]
    out = {}
    for m, model_dir in enumerate(model_dirs):
        predictor = Predictor(model_dir, cpu_threads=1)
        for i in sorted(feeds):
            raw = predictor.run_model(feeds[i])  # the graph's own (unclipped) outputs
            out[f"{m}/{i}/bbox"], out[f"{m}/{i}/bbox_num"] = raw["bbox"], raw["bbox_num"]
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
