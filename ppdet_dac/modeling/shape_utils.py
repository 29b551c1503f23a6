"""Sizes that work both in dygraph (Python ints) and under static export (0-D int tensors), so the
exported graph accepts any image size."""

import paddle


def dynamic_size(x, axes):
    """Sizes of ``x`` along ``axes``: ints in dygraph, 0-D int tensors under static export."""
    if paddle.in_dynamic_mode():
        return tuple(x.shape[a] for a in axes)
    shape = paddle.shape(x)
    return tuple(shape[a] for a in axes)


def as_float(v):
    """An int or a 0-D int tensor, as a float (tensor)."""
    return v.astype("float32") if isinstance(v, paddle.Tensor) else float(v)
