"""Build a ppdet loader from a config the way ppdet's Trainer does and pickle what it yields.

Run in a fresh interpreter by the data tests (ppdet's global config is process-global):

    python tests/data/loader_probe.py --config CFG --out OUT.pkl [--mode train|eval|test]
        [--override JSON] [--flip-prob P] [--batches N] [--seed S] [--workers W] [--opts JSON]

--opts loads the config as the tools do (ppdet_dac.engine.load_checked_config, with JSON as the
-o overrides); without it, with ppdet's plain load_config.

The pickle holds {'batches': [{key: ndarray | [ndarray per image]}], 'dataset': class name,
'catid2clsid': {...}, 'records': number of records} or, when building the dataset or its
loader raises, {'error': (exception type name, message)}.
"""

import argparse
import pickle
import random

import numpy as np
import paddle

import ppdet_dac  # noqa: F401  (must precede load_config)
from ppdet.core.workspace import create, load_config, merge_config


def _to_numpy(value):
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v) for v in value]
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _set_flip_prob(transforms, prob):
    for op in transforms:
        if "RandomFlip" in op:
            op["RandomFlip"]["prob"] = float(prob)
            return
    raise SystemExit("--flip-prob given but the reader has no RandomFlip op")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", default="train", choices=["train", "eval", "test"])
    parser.add_argument("--override", default=None, help="JSON dict merged into the config")
    parser.add_argument("--flip-prob", type=float, default=None)
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--opts", default=None, help="JSON -o overrides: load as the tools do")
    args = parser.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    paddle.seed(args.seed)
    if args.opts is not None:
        import json
        from ppdet_dac.engine import load_checked_config

        try:
            cfg = load_checked_config(args.config, json.loads(args.opts))
        except ValueError as err:
            with open(args.out, "wb") as f:
                pickle.dump({"error": (type(err).__name__, str(err))}, f)
            return
    else:
        cfg = load_config(args.config)
    if args.override:
        import json

        merge_config(json.loads(args.override))
    capital = args.mode.capitalize()
    if args.flip_prob is not None:
        _set_flip_prob(cfg[f"{capital}Reader"]["sample_transforms"], args.flip_prob)
    result = {}
    try:
        dataset = create(f"{capital}Dataset")()
        workers = cfg["worker_num"] if args.workers is None else args.workers
        loader = create(f"{capital}Reader")(dataset, workers)
    except (FileNotFoundError, ValueError) as err:
        result["error"] = (type(err).__name__, str(err))
    else:
        batches = []
        while len(batches) < args.batches:
            before = len(batches)
            for batch in loader:
                batches.append({k: _to_numpy(v) for k, v in batch.items()})
                if len(batches) >= args.batches:
                    break
            if len(batches) == before:  # an epoch without a batch: never more than that
                raise SystemExit(
                    f"the {capital}Reader yields no batch from "
                    f"{len(dataset.roidbs)} records (batch_size, drop_last)"
                )
        result.update(
            batches=batches,
            dataset=type(dataset).__name__,
            catid2clsid=getattr(dataset, "catid2clsid", None),
            records=len(dataset.roidbs),
        )
    with open(args.out, "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main()
