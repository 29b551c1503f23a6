"""What DAC costs: one training step and one eval forward of the same model, DAC on vs off.

    python benchmarks/train_step.py [-c configs/dac_cdn_ice_r50.yml] [--size 384] [--repeat 3]

One model is built from the config; ``use_dac`` is switched on its transformer (runs the
C-stream) and criterion (its 36 one-to-many loss terms) between measurements, so both settings
run with the same weights, input and targets. Steps alternate DAC / baseline so that a noisy
machine disturbs both alike; the best of ``--repeat`` is reported with the ratio DAC / baseline.
Targets: training step <= 1.15x, eval forward <= 1.02x (the C-stream is not computed in eval).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import ppdet_dac  # noqa: E402,F401
from ppdet.core.workspace import create  # noqa: E402

from ppdet_dac.engine import load_checked_config  # noqa: E402


def make_batch(size, num_gt, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.25, 0.75, (num_gt, 2))
    sizes = rng.uniform(0.05, 0.3, (num_gt, 2))
    return {
        "image": paddle.to_tensor(rng.standard_normal((1, 3, size, size)).astype("float32")),
        "im_shape": paddle.to_tensor([[size, size]], dtype="float32"),
        "scale_factor": paddle.to_tensor([[1.0, 1.0]], dtype="float32"),
        "pad_mask": paddle.ones([1, size, size], dtype="float32"),
        "gt_bbox": [paddle.to_tensor(np.concatenate([centres, sizes], 1).astype("float32"))],
        "gt_class": [paddle.to_tensor(rng.integers(0, 80, (num_gt, 1)).astype("int32"))],
    }


def set_dac(model, enabled):
    model.transformer.use_dac = enabled
    model.criterion.use_dac = enabled


def train_step(model, optimizer, batch):
    model.train()
    start = time.perf_counter()
    losses = model(dict(batch))
    losses["loss"].backward()
    optimizer.step()
    optimizer.clear_grad()
    return time.perf_counter() - start, len(losses) - 1


def eval_forward(model, batch):
    model.eval()
    inputs = {k: batch[k] for k in ("image", "im_shape", "scale_factor", "pad_mask")}
    start = time.perf_counter()
    with paddle.no_grad():
        model(inputs)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="configs/dac_cdn_ice_r50.yml")
    parser.add_argument("--size", type=int, default=384, help="square input side (pixels)")
    parser.add_argument("--num_gt", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paddle.set_device("cpu")
    paddle.set_flags({"FLAGS_use_mkldnn": False})
    paddle.seed(0)
    cfg = load_checked_config(args.config)
    model = create(cfg.architecture)
    optimizer = create("OptimizerBuilder")(create("LearningRate")(1), model)
    batch = make_batch(args.size, args.num_gt)

    times = {"train": {True: [], False: []}, "eval": {True: [], False: []}}
    terms = {}
    for enabled in (True, False):  # warm-up (first calls allocate and pick kernels)
        set_dac(model, enabled)
        _, terms[enabled] = train_step(model, optimizer, batch)
        eval_forward(model, batch)
    for _ in range(args.repeat):
        for enabled in (True, False):
            set_dac(model, enabled)
            times["train"][enabled].append(train_step(model, optimizer, batch)[0])
    # eval in a loop of its own: right after a training step, freeing its graph slows a forward
    for _ in range(2 * args.repeat):
        for enabled in (False, True):
            set_dac(model, enabled)
            times["eval"][enabled].append(eval_forward(model, batch))

    print(
        f"config {args.config}, input {args.size}x{args.size}, {args.num_gt} GT, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, best of {args.repeat}"
    )
    print(f"loss terms: DAC {terms[True]}, baseline {terms[False]}")
    for kind, target in (("train", 1.15), ("eval", 1.02)):
        dac, base = min(times[kind][True]), min(times[kind][False])
        ratio = dac / base
        print(
            f"{kind:5s}  DAC {dac * 1000:9.1f} ms  baseline {base * 1000:9.1f} ms  "
            f"ratio {ratio:.3f}  (target <= {target}: {'met' if ratio <= target else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
