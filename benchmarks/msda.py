"""Benchmark of multi-scale deformable attention: the compiled op vs the grid_sample reference.

    python benchmarks/msda.py [--reduced] [--threads N] [--repeat R] [--ref-fraction F]

Shapes (DAC-DETR at an 800x1216 input, float32, 8 heads x 32 channels, 4 levels, 4 points):

* encoder: batch 2, levels 100x152, 50x76, 25x38, 13x19, every token a query (Lq = S = 20197);
  each query samples near its own position (reference point + ~1.5 px Gaussian offsets);
* decoder: batch 2, 900 + 200 queries (matching + denoising), boxes anywhere on the image.

``--reduced`` divides each level side by 4 (and uses 300 decoder queries): runs in seconds.

For each shape it times forward and forward+backward (best of ``--repeat`` runs after one
warm-up; wall time and process CPU time of all threads) and prints the op/reference speed-up.
The reference at the encoder shape builds [N*M, D, Lq, P] tensors per level (GBs with
backward), so by default it runs on a fraction of the queries (``--ref-fraction``, encoder only)
and its times are scaled up linearly, which the output states; the grid_sample work is linear in
the number of queries.

Achieved bandwidth of the op's forward, against the machine's copy bandwidth measured here with
numpy (one copy per thread, bytes read + bytes written), counts bytes two ways:

* gathered: what the kernel loads and stores if nothing were cached: per sample that lands on the
  map, 4 corner rows of D values (corners outside the map are not read), plus the sampling
  locations, attention weights and the output, each once;
* compulsory: every input and the output once (a lower bound on DRAM traffic).
"""

import argparse
import os
import sys
import threading
import time

from _timing import run_timed  # benchmarks/ is on sys.path when a script here runs


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reduced", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP / Paddle CPU threads")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    parser.add_argument(
        "--ref-fraction",
        type=float,
        default=None,
        help="fraction of encoder queries the reference runs on (default: 1 "
        "with --reduced, else 0.25)",
    )
    return parser.parse_args(argv)


ARGS = _parse_args(sys.argv[1:])
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy / paddle start their thread pools

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from ppdet_dac import ops  # noqa: E402
from ppdet_dac.ops import _library  # noqa: E402

HEADS, CHANNELS, POINTS = 8, 32, 4
FULL_LEVELS = [(100, 152), (50, 76), (25, 38), (13, 19)]


def shapes_for(reduced):
    """{name: (levels, batch, queries or None for all tokens)}."""
    if reduced:
        levels = [(max(1, -(-h // 4)), max(1, -(-w // 4))) for h, w in FULL_LEVELS]
        return {"encoder": (levels, 2, None), "decoder": (levels, 2, 300)}
    return {"encoder": (FULL_LEVELS, 2, None), "decoder": (FULL_LEVELS, 2, 1100)}


def make_case(levels, batch, queries, seed=0):
    """float32 arrays value [N,S,M,D], shapes, starts, loc [N,Lq,M,L,P,2], attn [N,Lq,M,L,P]."""
    rng = np.random.default_rng(seed)
    hw = np.array(levels, "int64")
    areas = hw.prod(1)
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype("int64")
    total = int(areas.sum())
    nl = len(levels)
    value = rng.standard_normal((batch, total, HEADS, CHANNELS), dtype=np.float32)
    if queries is None:  # encoder: reference point = centre of each token's own pixel
        refs = []
        for h, w in levels:
            ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
            refs.append(np.stack([xs.ravel(), ys.ravel()], -1))
        ref = np.broadcast_to(np.concatenate(refs)[None], (batch, total, 2))
        pixels = rng.normal(0.0, 1.5, (batch, total, HEADS, nl, POINTS, 2))
        loc = ref[:, :, None, None, None, :] + pixels / hw[None, None, None, :, None, ::-1]
    else:  # decoder: boxes (cx, cy, w, h); loc = centre + offset / P * wh * 0.5
        centre = rng.uniform(0.05, 0.95, (batch, queries, 2))
        wh = rng.uniform(0.02, 0.5, (batch, queries, 2))
        offsets = rng.uniform(-POINTS, POINTS, (batch, queries, HEADS, nl, POINTS, 2))
        loc = centre[:, :, None, None, None] + offsets / POINTS * wh[:, :, None, None, None] * 0.5
    logits = rng.standard_normal(loc.shape[:-1])
    attn = np.exp(logits) / np.exp(logits).reshape(*logits.shape[:3], -1).sum(-1)[..., None, None]
    return {
        "value": value,
        "shapes": hw,
        "starts": starts,
        "loc": loc.astype("float32"),
        "attn": attn.astype("float32"),
    }


def slice_queries(case, fraction):
    """The case with only the first ``fraction`` of the queries (at least one)."""
    keep = max(1, int(round(case["loc"].shape[1] * fraction)))
    return dict(case, loc=case["loc"][:, :keep].copy(), attn=case["attn"][:, :keep].copy())


def to_tensors(case, requires_grad):
    tensors = [paddle.to_tensor(case[k]) for k in ("value", "shapes", "starts", "loc", "attn")]
    for i in (0, 3, 4):
        tensors[i].stop_gradient = not requires_grad
    return tensors


def time_call(fn, repeat):
    """(wall s, process CPU s) of ``fn()``: the best of ``repeat`` runs after one warm-up.

    The best run is the one least disturbed by other processes on a shared machine."""
    walls, cpus = run_timed(fn, repeat, warmup=1)
    return min(walls), min(cpus)


def measure(attention, case, repeat):
    """((wall, cpu) forward, (wall, cpu) forward+backward) in seconds of ``attention``."""
    fwd_inputs = to_tensors(case, requires_grad=False)

    def forward():
        attention(*fwd_inputs).numpy()  # .numpy() waits for the result

    grad_inputs = to_tensors(case, requires_grad=True)
    out_shape = [case["loc"].shape[0], case["loc"].shape[1], HEADS * CHANNELS]
    grad_out = paddle.ones(out_shape, dtype="float32")

    def forward_backward():
        for t in (grad_inputs[0], grad_inputs[3], grad_inputs[4]):
            t.clear_gradient(set_to_zero=False)
        out = attention(*grad_inputs)
        paddle.autograd.backward([out], [grad_out])
        grad_inputs[0].grad.numpy()

    return time_call(forward, repeat), time_call(forward_backward, repeat)


def copy_bandwidth(threads, mbytes_per_thread=256, repeat=5):
    """Best bytes/s (read + write) of ``threads`` concurrent numpy copies of large arrays."""
    n = mbytes_per_thread * 2**20 // 4
    srcs = [np.ones(n, np.float32) for _ in range(threads)]
    dsts = [np.empty_like(s) for s in srcs]
    best = 0.0
    for _ in range(repeat):
        workers = [threading.Thread(target=np.copyto, args=(d, s)) for d, s in zip(dsts, srcs)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        best = max(best, 2 * n * 4 * threads / elapsed)
    return best


def forward_bytes(case):
    """(gathered, compulsory) bytes of one forward; see the module docstring."""
    levels = case["shapes"]
    loc, itemsize = case["loc"], 4
    gathered_rows = 0
    for lvl, (h, w) in enumerate(levels):
        x = loc[:, :, :, lvl, :, 0] * w - 0.5
        y = loc[:, :, :, lvl, :, 1] * h - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        inside = (x > -1) & (x < w) & (y > -1) & (y < h)
        cols = (x0 >= 0).astype(np.int64) + (x0 + 1 < w)
        rows = (y0 >= 0).astype(np.int64) + (y0 + 1 < h)
        gathered_rows += int((cols * rows)[inside].sum())
    small = (case["loc"].size + case["attn"].size) * itemsize
    out = loc.shape[0] * loc.shape[1] * HEADS * CHANNELS * itemsize
    gathered = gathered_rows * CHANNELS * itemsize + small + out
    compulsory = case["value"].size * itemsize + small + out
    return gathered, compulsory


def main():
    paddle.set_device("cpu")
    if not ops.op_available():
        raise SystemExit(f"the op library is not built: {_library.load_error()}")
    print(
        f"paddle {paddle.__version__}, op CPU variant {_library.cpu_variant()}, "
        f"threads {ARGS.threads}, best of {ARGS.repeat} runs, float32"
    )
    bandwidth = copy_bandwidth(ARGS.threads)
    print(f"copy bandwidth ({ARGS.threads} numpy copies, read + write): {bandwidth / 1e9:.2f} GB/s")
    ref_fraction = (
        ARGS.ref_fraction if ARGS.ref_fraction is not None else (1.0 if ARGS.reduced else 0.25)
    )
    for name, (levels, batch, queries) in shapes_for(ARGS.reduced).items():
        case = make_case(levels, batch, queries)
        lq = case["loc"].shape[1]
        print(
            f"\n{name}: batch {batch}, levels {levels}, Lq {lq}, "
            f"M {HEADS} x D {CHANNELS}, P {POINTS}"
        )
        op_fwd, op_fb = measure(ops.ms_deform_attn, case, ARGS.repeat)
        fraction = ref_fraction if name == "encoder" else 1.0
        ref_case = slice_queries(case, fraction) if fraction < 1.0 else case
        scale = lq / ref_case["loc"].shape[1]
        ref_fwd, ref_fb = (
            (wall * scale, cpu * scale)
            for wall, cpu in measure(ops.ms_deform_attn_reference, ref_case, ARGS.repeat)
        )
        note = (
            f"  reference run on {ref_case['loc'].shape[1]} of {lq} queries, "
            f"its times scaled x{scale:.2f}"
            if scale != 1.0
            else ""
        )
        if note:
            print(note.strip())
        for label, op_t, ref_t in (("forward", op_fwd, ref_fwd), ("fwd+bwd", op_fb, ref_fb)):
            print(
                f"  {label:8s} wall: op {op_t[0] * 1e3:8.1f} ms, "
                f"reference {ref_t[0] * 1e3:9.1f} ms,"
                f" speed-up {ref_t[0] / op_t[0]:5.1f}x | CPU time: op {op_t[1] * 1e3:8.1f} ms, "
                f"reference {ref_t[1] * 1e3:9.1f} ms, speed-up {ref_t[1] / op_t[1]:5.1f}x"
            )
        gathered, compulsory = forward_bytes(case)
        print(
            f"  op forward bytes: gathered {gathered / 1e6:.0f} MB, compulsory "
            f"{compulsory / 1e6:.0f} MB"
        )
        # wall: as measured; CPU / threads: the wall time the threads would need running alone
        for label, seconds in (("wall", op_fwd[0]), ("CPU/threads", op_fwd[1] / ARGS.threads)):
            print(
                f"  op forward bytes/s ({label}): gathered {gathered / seconds / 1e9:5.2f} GB/s "
                f"({100 * gathered / seconds / bandwidth:5.1f}% of copy bandwidth), compulsory "
                f"{compulsory / seconds / 1e9:5.2f} GB/s "
                f"({100 * compulsory / seconds / bandwidth:5.1f}%)"
            )


if __name__ == "__main__":
    main()
