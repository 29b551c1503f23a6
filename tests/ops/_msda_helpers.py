"""Shared helpers for the ms_deform_attn tests: random inputs and an independent NumPy implementation."""

import numpy as np
import paddle


def make_inputs(
    shapes,
    batch=2,
    num_queries=5,
    heads=2,
    channels=3,
    points=2,
    seed=0,
    dtype="float64",
    spread=0.2,
    borders=True,
):
    """Random MSDA inputs as NumPy arrays.

    shapes: list of (H, W). Locations are drawn in [-spread, 1 + spread] so that some fall outside the
    map; with ``borders`` a few are placed exactly on pixel centres and map edges (kinks of the
    bilinear interpolation: gradients there are one-sided, so gradient checks turn it off). Returns a dict of arrays:
    value [N, S, M, D], spatial_shapes [L, 2], level_start_index [L], loc [N, Lq, M, L, P, 2],
    attn [N, Lq, M, L, P].
    """
    rng = np.random.default_rng(seed)
    shapes_arr = np.asarray(shapes, dtype="int64").reshape(-1, 2)
    areas = shapes_arr.prod(1)
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype("int64")
    levels = len(shapes_arr)
    value = rng.standard_normal((batch, int(areas.sum()), heads, channels))
    loc = rng.uniform(-spread, 1.0 + spread, (batch, num_queries, heads, levels, points, 2))
    flat = loc.reshape(-1, levels, 2)
    # Exact borders: x = 0, x = 1 (outer edges) and pixel centres / edges, for a few samples.
    for lvl, (h, w) in enumerate(shapes_arr if borders else []):
        k = min(len(flat), 6)
        flat[:k, lvl, 0] = np.array([0.0, 1.0, 0.5 / w, 1.0 - 0.5 / w, 1.0 / w, 0.0])[:k]
        flat[:k, lvl, 1] = np.array([0.0, 1.0, 0.5 / h, 1.0 - 0.5 / h, 0.0, 1.0 / h])[:k]
    attn = rng.uniform(0.0, 1.0, (batch, num_queries, heads, levels, points))
    return {
        "value": value.astype(dtype),
        "spatial_shapes": shapes_arr,
        "level_start_index": starts,
        "loc": loc.astype(dtype),
        "attn": attn.astype(dtype),
    }


def to_paddle(arrays, stop_gradient=True, place=None):
    """The inputs of ``make_inputs`` as Paddle tensors, in ms_deform_attn argument order."""
    out = []
    for key in ("value", "spatial_shapes", "level_start_index", "loc", "attn"):
        t = paddle.to_tensor(arrays[key], place=place)
        if key in ("value", "loc", "attn"):
            t.stop_gradient = stop_gradient
        out.append(t)
    return out


def naive_msda(value, spatial_shapes, level_start_index, loc, attn):
    """Direct NumPy transcription of docs/algorithm.md#sampling-convention (float64):
    [N, Lq, M·D]."""
    value = np.asarray(value, dtype=np.float64)
    loc = np.asarray(loc, dtype=np.float64)
    attn = np.asarray(attn, dtype=np.float64)
    n_b, _, n_m, n_d = value.shape
    _, n_q, _, n_l, n_p, _ = loc.shape
    out = np.zeros((n_b, n_q, n_m, n_d))
    bi = np.arange(n_b)[:, None, None, None]
    mi = np.arange(n_m)[None, None, :, None]
    for lvl in range(n_l):
        h, w = (int(s) for s in spatial_shapes[lvl])
        start = int(level_start_index[lvl])
        x = loc[:, :, :, lvl, :, 0] * w - 0.5  # [N, Lq, M, P]
        y = loc[:, :, :, lvl, :, 1] * h - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        for dy in (0, 1):
            for dx in (0, 1):
                xc, yc = x0 + dx, y0 + dy
                wgt = (1.0 - np.abs(x - xc)) * (1.0 - np.abs(y - yc))
                inside = (xc >= 0) & (xc < w) & (yc >= 0) & (yc < h)
                idx = (
                    start
                    + np.clip(yc, 0, h - 1).astype(np.int64) * w
                    + np.clip(xc, 0, w - 1).astype(np.int64)
                )
                vals = value[bi, idx, mi]  # [N, Lq, M, P, D]
                coef = np.where(inside, wgt, 0.0) * attn[:, :, :, lvl, :]
                out += (coef[..., None] * vals).sum(3)
    return out.reshape(n_b, n_q, n_m * n_d)
