"""What DAC costs: one training step and one eval forward of the same model, DAC on vs off.

    python benchmarks/train_step.py [-c configs/dac_cdn_ice_r50.yml] [--size 384] [--repeat 3]

One model is built from the config; ``use_dac`` is switched on its transformer (runs the
C-stream) and criterion (its 36 one-to-many loss terms) between measurements, so both settings
run with the same weights, input and targets. Steps alternate DAC / baseline so that a noisy
machine disturbs both alike; the best of ``--repeat`` is reported with the ratio DAC / baseline.
Targets: training step <= 1.15x, eval forward <= 1.02x (the C-stream is not computed in eval).

    python benchmarks/train_step.py --profile [-c CONFIG] [--size 512] [--real_data] [--steps 3]

prints where one training step's time goes (exclusive time per part: data, backbone, encoder,
O- and C-decoder, denoising queries, losses, matching, backward, optimizer, logging; see
``_profile.py``), the step's FLOP count, the machine's matrix-product rate and the ratio
"step time / FLOP floor". ``--real_data`` reads batches with the config's TrainReader from its
TrainDataset (the demo config: run ``tools/make_demo_data.py`` first) instead of one random
image of ``--size``.

    python benchmarks/train_step.py --host_copies [-c CONFIG] [--size 512] [--real_data]
        [--steps 3]

times the training step with the host copies the model made before they were cut (issue 25:
the input value checks in the forward, ``PPDET_DAC_DEBUG_CHECKS``, and every loss term copied
to the host each step) against the default (checks off, the total each step and every term on
log iterations), each batch once with each (in turns first), and prints the mean of each and
the ratio.
"""

import argparse
import os
import sys
import time
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import ppdet_dac  # noqa: E402,F401
from ppdet.core.workspace import create  # noqa: E402

from _profile import StepProfile, attach, forward_flops, matmul_rate  # noqa: E402
from ppdet_dac.engine import load_checked_config  # noqa: E402
from ppdet_dac.engine.loss_log import LossLog  # noqa: E402
from ppdet_dac.modeling.debug_checks import debug_checks  # noqa: E402


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


def batches(args, cfg):
    """An endless iterator of training batches: the config's reader or one random image."""
    if not args.real_data:
        batch = make_batch(args.size, args.num_gt)
        while True:
            yield dict(batch)
    loader = create("TrainReader")(create("TrainDataset")(), cfg.worker_num)
    while True:
        for batch in loader:
            batch["epoch_id"] = 0
            yield batch


def profile_steps(args, cfg, model, optimizer):
    """One warm-up step, then ``args.steps`` profiled steps and as many plain ones, alternating."""
    profile = StepProfile()
    data = batches(args, cfg)
    loss_log = LossLog(cfg.log_iter)  # the trainer's host copies: all terms on log iterations
    count = {"steps": 0}

    def step(profiled):
        start = time.perf_counter()
        with profile.part("data") if profiled else nullcontext():
            batch = next(data)
        with profile.part("detector (targets, inputs, other)") if profiled else nullcontext():
            losses = model(batch)
        with profile.part("backward") if profiled else nullcontext():
            losses["loss"].backward()
        with profile.part("clip + optimizer") if profiled else nullcontext():
            optimizer.step()
            optimizer.clear_grad()
        with profile.part("loss terms to host (logging)") if profiled else nullcontext():
            loss_log.step(losses, loss_log.due(count["steps"]))
        count["steps"] += 1
        return time.perf_counter() - start, batch

    model.train()
    _, batch = step(False)
    plain = []
    attach(profile, model)  # from here on the parts are timed (when a profile part is open)
    for _ in range(args.steps):
        step(True)
        with _quiet(profile):
            plain.append(step(False)[0])
    return profile, sum(plain) / len(plain), batch


def host_copies_main(args, cfg, model, optimizer):
    """Mean step time with the host copies of before the cut and without, alternating."""
    data = batches(args, cfg)
    settings = {"before (checks on, every term each step)": (True, LossLog(1))}
    settings["after (default)"] = (False, LossLog(cfg.log_iter))
    times = {name: [] for name in settings}
    model.train()
    for k in range(args.steps + 1):  # the first round warms up
        batch = next(data)  # both settings run on each batch, in turns first
        for name, (checks, loss_log) in sorted(settings.items(), reverse=k % 2 == 1):
            start = time.perf_counter()
            with debug_checks(checks):
                losses = model(dict(batch))
            losses["loss"].backward()
            optimizer.step()
            optimizer.clear_grad()
            loss_log.step(losses, loss_log.due(k))
            if k:
                times[name].append(time.perf_counter() - start)
    print(
        f"config {args.config}, {'reader' if args.real_data else 'random'} batches, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"mean of {args.steps} steps each, alternating"
    )
    means = {name: sum(t) / len(t) for name, t in times.items()}
    for name, mean in means.items():
        print(f"  {name:45s} {mean * 1000:9.1f} ms")
    before, after = means.values()
    print(f"  after / before: {after / before:.3f}")


class _quiet:
    """Steps run here are not profiled: the parts' totals are restored when they end."""

    def __init__(self, profile):
        self.profile = profile

    def __enter__(self):
        self.saved = dict(self.profile.seconds)

    def __exit__(self, *exc):
        self.profile.seconds.clear()
        self.profile.seconds.update(self.saved)
        return False


def profile_main(args, cfg, model, optimizer):
    profile, plain_step, batch = profile_steps(args, cfg, model, optimizer)
    model.train()
    fwd, kinds = forward_flops(model, batch)
    rate = matmul_rate()
    rows = profile.table(args.steps)
    total = sum(seconds for _, seconds, _ in rows)
    shape = list(batch["image"].shape)
    print(
        f"config {args.config}, batch {shape} ({'reader' if args.real_data else 'random'}), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{args.steps} profiled steps (exclusive time per part)"
    )
    for name, seconds, share in rows:
        print(f"  {name:50s} {seconds * 1000:9.1f} ms  {share * 100:5.1f} %")
    print(f"  {'step (sum of the parts)':50s} {total * 1000:9.1f} ms")
    print(f"  {'step without the profiler (mean)':50s} {plain_step * 1000:9.1f} ms")
    train = 3 * fwd
    floor = train / (rate * 1e9)
    detail = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(kinds.items()))
    print(f"forward {fwd / 1e9:.2f} GFLOP ({detail}); training step ~3x = {train / 1e9:.2f} GFLOP")
    print(f"matmul rate {rate:.1f} GFLOP/s -> floor {floor * 1000:.1f} ms")
    print(f"step time (without the profiler) / FLOP floor: {plain_step / floor:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="configs/dac_cdn_ice_r50.yml")
    parser.add_argument("--size", type=int, default=384, help="square input side (pixels)")
    parser.add_argument("--num_gt", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="where the step's time goes")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (with --profile)")
    parser.add_argument("--real_data", action="store_true", help="the config's reader (--profile)")
    parser.add_argument(
        "--host_copies", action="store_true", help="step time before/after the host-copy cut"
    )
    args = parser.parse_args()
    paddle.set_device("cpu")
    paddle.set_flags({"FLAGS_use_mkldnn": False})
    paddle.seed(0)
    cfg = load_checked_config(args.config)
    model = create(cfg.architecture)
    optimizer = create("OptimizerBuilder")(create("LearningRate")(1), model)
    if args.profile or args.host_copies:
        (profile_main if args.profile else host_copies_main)(args, cfg, model, optimizer)
        return
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
