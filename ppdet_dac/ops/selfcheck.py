"""Self-check of the compiled ``ms_deform_attn`` op on a GPU: ``python -m ppdet_dac.ops.selfcheck``.

On a CUDA build of Paddle that sees a GPU, with the op library built with CUDA
(``pip install --no-build-isolation -e .`` after installing requirements-gpu.txt), it runs the op
on the GPU and on the CPU for the same random inputs (a reduced DAC encoder and decoder shape and
edge cases: levels with H or W = 1, one query, odd channel counts, locations outside the map), in
float32 and float64, and compares the output and the three gradients (value, sampling locations,
attention weights; loss = sum(out * g) for a random g). It prints one line per comparison and a
verdict.

Threshold (as build/cuda/msda_gpu_check): max|gpu - cpu| <= atol * max(1, max|cpu|), atol 5e-5
for float32 and 1e-10 for float64. Components of the location gradient on a kink of the bilinear
map (x * W - 0.5 within 8 eps (|x * W| + 1) of an integer), where the derivative is one-sided and
the side depends on the last bit of the product, are left out and counted.

Exit status: 0 every comparison within its threshold; 1 a mismatch, or the op library is missing
or built without CUDA; 2 CUDA is absent (Paddle without CUDA, or no GPU visible): nothing compared.
"""

import argparse
import sys

import numpy as np
import paddle

from . import _library

__all__ = [
    "CASES",
    "ATOL",
    "make_case_inputs",
    "run_op",
    "kink_mask",
    "compare",
    "check_cases",
    "cuda_status",
    "main",
]

ATOL = {"float32": 5e-5, "float64": 1e-10}
TENSORS = ("out", "grad_value", "grad_sampling_locations", "grad_attention_weights")

# name: (levels [(H, W)], batch, queries (None: one per token, S), heads, channels, points, spread)
_DAC_REDUCED = [(25, 38), (13, 19), (7, 10), (4, 5)]  # DAC's 800 x 1216 levels, sides / 4
CASES = {
    "dac-encoder-reduced": (_DAC_REDUCED, 2, None, 8, 32, 4, 0.05),
    "dac-decoder-reduced": (_DAC_REDUCED, 2, 300, 8, 32, 4, 0.1),
    "h1-w1-levels": ([(1, 5), (4, 1), (1, 1)], 1, 4, 2, 5, 3, 0.3),
    "one-query-odd-d7": ([(5, 5)], 3, 1, 1, 7, 4, 0.2),
    "d33-outside": ([(8, 6), (4, 3)], 2, 9, 3, 33, 2, 0.5),
}


def make_case_inputs(case, dtype, seed=0):
    """Random inputs of one case as NumPy arrays.

    Returns a dict: value [N, S, M, D], spatial_shapes int64 [L, 2], level_start_index int64 [L],
    loc [N, Lq, M, L, P, 2] uniform in [-spread, 1 + spread], attn [N, Lq, M, L, P] softmax over
    L * P, grad_out [N, Lq, M * D]; floats in ``dtype``.
    """
    levels, batch, queries, heads, channels, points, spread = case
    rng = np.random.default_rng(seed)
    shapes = np.asarray(levels, dtype="int64").reshape(-1, 2)
    areas = shapes.prod(1)
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype("int64")
    total, num_levels = int(areas.sum()), len(shapes)
    queries = total if queries is None else queries
    value = rng.standard_normal((batch, total, heads, channels))
    loc = rng.uniform(-spread, 1.0 + spread, (batch, queries, heads, num_levels, points, 2))
    logits = rng.standard_normal((batch, queries, heads, num_levels * points))
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    grad_out = rng.standard_normal((batch, queries, heads * channels))
    return {
        "value": value.astype(dtype),
        "spatial_shapes": shapes,
        "level_start_index": starts,
        "loc": loc.astype(dtype),
        "attn": attn.reshape(batch, queries, heads, num_levels, points).astype(dtype),
        "grad_out": grad_out.astype(dtype),
    }


def run_op(arrays, place):
    """The compiled op's output and gradients on ``place``: {tensor name: NumPy array}."""
    if _library.load() is None:
        raise RuntimeError(f"ms_deform_attn op library not available: {_library.load_error()}")
    names = ("value", "spatial_shapes", "level_start_index", "loc", "attn")
    tensors = [paddle.to_tensor(arrays[k], place=place) for k in names]
    for t in (tensors[0], tensors[3], tensors[4]):
        t.stop_gradient = False
    out = _library.run_op(*tensors)
    (out * paddle.to_tensor(arrays["grad_out"], place=place)).sum().backward()
    return {
        "out": out.numpy(),
        "grad_value": tensors[0].grad.numpy(),
        "grad_sampling_locations": tensors[3].grad.numpy(),
        "grad_attention_weights": tensors[4].grad.numpy(),
    }


def kink_mask(loc, spatial_shapes):
    """Boolean mask of ``loc`` [N, Lq, M, L, P, 2]: components on a kink of the bilinear map."""
    sizes = np.asarray(spatial_shapes, dtype=np.float64)[:, ::-1]  # (W, H) per level, as (x, y)
    u = loc.astype(np.float64) * sizes[:, None, :] - 0.5  # broadcast over [.., L, P, 2]
    eps = np.finfo(loc.dtype).eps
    inside = (u > -1.0) & (u < sizes[:, None, :])
    return inside & (np.abs(u - np.round(u)) <= 8.0 * eps * (np.abs(u) + 1.0))


def compare(candidate, reference, dtype, skip=None):
    """One comparison row: dict(max_abs, max_rel, threshold, skipped, ok).

    max_rel is taken over the elements with |reference| >= 1e-3 * scale, scale = max(1,
    max|reference|); ``skip`` (a boolean mask) leaves elements out.
    """
    cand = np.asarray(candidate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if cand.shape != ref.shape:
        raise ValueError(f"shape {cand.shape} of the candidate differs from {ref.shape}")
    keep = np.ones(ref.shape, bool) if skip is None else ~skip
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    diff = np.abs(cand - ref)[keep]
    diff = np.where(np.isnan(diff), np.inf, diff)
    big = np.abs(ref[keep]) >= 1e-3 * scale
    max_abs = float(diff.max(initial=0.0))
    max_rel = float((diff[big] / np.abs(ref[keep][big])).max(initial=0.0))
    threshold = ATOL[dtype] * scale
    return {
        "max_abs": max_abs,
        "max_rel": max_rel,
        "threshold": threshold,
        "skipped": int((~keep).sum()),
        "ok": max_abs <= threshold,
    }


def check_cases(candidate, reference, cases=None, dtypes=("float32", "float64"), out=None, seed=0):
    """Compare ``candidate(arrays)`` with ``reference(arrays)`` (dicts of TENSORS) on every case.

    Prints one line per (dtype, case, tensor) to ``out`` (default: sys.stdout); returns the rows
    as dicts (with dtype, case, tensor).
    """
    rows = []
    cases = CASES if cases is None else cases
    out = sys.stdout if out is None else out
    print(
        f"{'dtype':8} {'case':22} {'tensor':24} {'max_abs':>10} {'max_rel':>10} "
        f"{'threshold':>10}  result",
        file=out,
    )
    for dtype in dtypes:
        for name, case in cases.items():
            arrays = make_case_inputs(case, dtype, seed)
            got, want = candidate(arrays), reference(arrays)
            kinks = kink_mask(arrays["loc"], arrays["spatial_shapes"])
            for tensor in TENSORS:
                row = compare(
                    got[tensor],
                    want[tensor],
                    dtype,
                    kinks if tensor == "grad_sampling_locations" else None,
                )
                row.update(dtype=dtype, case=name, tensor=tensor)
                rows.append(row)
                note = f" ({row['skipped']} on kinks left out)" if row["skipped"] else ""
                print(
                    f"{dtype:8} {name:22} {tensor:24} {row['max_abs']:10.3e} "
                    f"{row['max_rel']:10.3e} {row['threshold']:10.3e}  "
                    f"{'ok' if row['ok'] else 'MISMATCH'}{note}",
                    file=out,
                )
    return rows


def cuda_status():
    """(True, description of GPU 0) when Paddle has CUDA and sees a GPU, else (False, why not)."""
    if not paddle.is_compiled_with_cuda():
        return False, (
            f"this Paddle ({paddle.__version__}) is not compiled with CUDA; install "
            "requirements-gpu.txt on a CUDA machine"
        )
    count = paddle.device.cuda.device_count()
    if count == 0:
        return False, (
            f"this Paddle ({paddle.__version__}, CUDA {paddle.version.cuda()}) sees no "
            "GPU (check the driver and CUDA_VISIBLE_DEVICES)"
        )
    return True, (
        f"GPU 0 {paddle.device.cuda.get_device_name(0)} (sm_"
        f"{''.join(map(str, paddle.device.cuda.get_device_capability(0)))}), Paddle "
        f"{paddle.__version__}, CUDA {paddle.version.cuda()}"
    )


def main(argv=None):
    """Command-line entry; returns the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m ppdet_dac.ops.selfcheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    path = _library.load()
    if path is None:
        print(
            f"ms_deform_attn self-check: the op library is not available: {_library.load_error()}"
        )
        return 1
    print(
        f"ms_deform_attn self-check: op library {path} (built with CUDA: "
        f"{_library.built_with_cuda()}, CPU kernels: {_library.cpu_variant()})"
    )
    available, description = cuda_status()
    if not available:
        print(f"ms_deform_attn self-check: CUDA is absent: {description}; nothing was compared")
        return 2
    if not _library.built_with_cuda():
        print(
            f"ms_deform_attn self-check: {description}, but the op library was built without "
            "CUDA; rebuild it with `pip install --no-build-isolation -e .` in this environment"
        )
        return 1
    print(
        f"ms_deform_attn self-check: {description}; candidate: the op on the GPU, reference: "
        "the op on the CPU"
    )
    rows = check_cases(
        lambda a: run_op(a, paddle.CUDAPlace(0)),
        lambda a: run_op(a, paddle.CPUPlace()),
        seed=args.seed,
    )
    bad = [f"{r['dtype']}/{r['case']}/{r['tensor']}" for r in rows if not r["ok"]]
    if bad:
        print(
            f"RESULT: FAIL: {len(bad)} of {len(rows)} comparisons exceed their thresholds: "
            + " ".join(bad)
        )
        return 1
    print(f"RESULT: PASS: the GPU op matches the CPU op ({len(rows)} comparisons)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
