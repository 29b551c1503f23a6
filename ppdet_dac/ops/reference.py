"""Pure-Paddle multi-scale deformable attention (the reference the custom op is checked against).

Sampling convention (docs/algorithm.md#sampling-convention): a location (x, y) in [0, 1] on a
level of size (H, W) samples the map bilinearly at pixel coordinates ``(x·W − 0.5, y·H − 0.5)``;
corners outside the map count as zero. This is
``F.grid_sample(align_corners=False, padding_mode='zeros')`` on ``2·loc − 1``.

The function works in dygraph and under ``paddle.jit.to_static(full_graph=True)``: the per-level
sizes come from the values of ``spatial_shapes`` (Python ints in dygraph, 0-D tensors in a static
graph), so an exported graph accepts any image size. Only the number of levels ``L``, heads ``M``,
channels ``D`` and points ``P`` must be static.
"""

import paddle
import paddle.nn.functional as F

__all__ = ["ms_deform_attn_reference"]


def _dim(x, axis):
    """Size of ``x`` along ``axis``: an int when known, else a 0-D int tensor (static graph)."""
    size = x.shape[axis]
    if size is not None and size >= 0:
        return size
    return paddle.shape(x)[axis]


def _level_sizes(spatial_shapes, level_start_index, num_levels):
    """Per level (start, H, W): Python ints in dygraph, 0-D int64 tensors under static export."""
    if paddle.in_dynamic_mode():
        shapes = spatial_shapes.numpy().reshape(-1, 2).tolist()
        starts = level_start_index.numpy().reshape(-1).tolist()
        return [(int(starts[l]), int(shapes[l][0]), int(shapes[l][1])) for l in range(num_levels)]
    return [
        (level_start_index[l], spatial_shapes[l, 0], spatial_shapes[l, 1])
        for l in range(num_levels)
    ]


def ms_deform_attn_reference(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights
):
    """Multi-scale deformable attention with ``F.grid_sample``.

    Args:
        value: [N, S, M, D] float tensor, S = Σ_l H_l·W_l (levels stored row-major, one after another).
        spatial_shapes: int64 [L, 2], (H_l, W_l) per level.
        level_start_index: int64 [L], offset of each level in S.
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) normalised to [0, 1].
        attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M·D] tensor of ``value``'s dtype:
        out[n, q, m·D + d] = Σ_l Σ_p A[n, q, m, l, p] · bilinear(V_l[n, :, :, m, d], x·W_l − 0.5, y·H_l − 0.5).
    """
    num_heads, channels = value.shape[2], value.shape[3]
    num_levels = sampling_locations.shape[3]
    batch = _dim(value, 0)
    num_queries = _dim(sampling_locations, 1)
    # [N, S, M, D] -> [N, M, D, S] -> [N·M, D, S]: each level is then a contiguous slice of S.
    value_t = value.transpose([0, 2, 3, 1]).flatten(0, 1)
    # grid_sample works in [-1, 1]; [N, Lq, M, L, P, 2] -> [N, M, Lq, L, P, 2] -> [N·M, Lq, L, P, 2].
    grids = (2.0 * sampling_locations - 1.0).transpose([0, 2, 1, 3, 4, 5]).flatten(0, 1)
    sampled = []
    for lvl, (start, height, width) in enumerate(
        _level_sizes(spatial_shapes, level_start_index, num_levels)
    ):
        value_l = paddle.slice(value_t, axes=[2], starts=[start], ends=[start + height * width])
        value_l = value_l.reshape([-1, channels, height, width])  # [N·M, D, H_l, W_l]
        grid_l = grids[:, :, lvl]  # [N·M, Lq, P, 2]
        sampled.append(
            F.grid_sample(
                value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # [N·M, D, Lq, P]
    sampled = paddle.stack(sampled, axis=-2).flatten(-2)  # [N·M, D, Lq, L·P]
    # [N, Lq, M, L, P] -> [N, M, Lq, L, P] -> [N·M, 1, Lq, L·P]
    weights = attention_weights.transpose([0, 2, 1, 3, 4]).flatten(0, 1).flatten(2).unsqueeze(1)
    out = (sampled * weights).sum(-1)  # [N·M, D, Lq]
    out = out.reshape([batch, num_heads * channels, num_queries])
    return out.transpose([0, 2, 1])
