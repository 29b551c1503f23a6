"""The official gradient clip on the optimizer ppdet's ``OptimizerBuilder`` builds.

The official recipe clips once per step over every gradient of the model,
``torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)``: with ``g`` all gradients,

    factor = min(1, max_norm / (||g||_2 + 1e-6)),   every gradient *= factor.

ppdet builds ``paddle.nn.ClipGradByGlobalNorm`` (``max_norm / max(||g||, max_norm)``: the same
up to the 1e-6), and Paddle applies an optimizer's clip to each parameter group separately, so
``param_groups`` would clip the backbone and the rest with different factors. Here the clip is
replaced by ``GlobalNormClip`` and the optimizer must have a single group; per-parameter
learning rates come from multipliers (``ResNet.lr_mult_list``, ``DACDETR.backbone_lr_mult``,
``DACTransformer.offset_lr_mult``), as the official parameter groups differ only in lr.
"""

import paddle
import paddle.nn as nn

__all__ = ["GlobalNormClip", "use_official_clip"]


class GlobalNormClip(nn.ClipGradByGlobalNorm):
    """``clip_grad_norm_(parameters, clip_norm)`` of the official code, on Paddle's clip API.

    The norm runs over every gradient handed to the clip (parameters with ``need_clip=False``
    are passed through unchanged and left out of the norm), accumulated in float32 (float64
    when a gradient is float64); the factor is always applied, 1 included, as in PyTorch.
    """

    def __init__(self, clip_norm, eps=1e-6):
        super().__init__(clip_norm=float(clip_norm))
        self.eps = float(eps)

    def global_norm(self, params_grads):
        """L2 norm over the clipped gradients, a 0-d tensor (None when there are none)."""
        grads = [g for p, g in params_grads if g is not None and getattr(p, "need_clip", True)]
        if not grads:
            return None
        dtype = "float64" if any(g.dtype == paddle.float64 for g in grads) else "float32"
        squares = [paddle.sum(paddle.square(g.astype(dtype))) for g in grads]
        return paddle.sqrt(paddle.add_n(squares))

    def _dygraph_clip(self, params_grads):
        norm = self.global_norm(params_grads)
        if norm is None:
            return params_grads
        factor = paddle.clip(self.clip_norm / (norm + self.eps), max=1.0)
        clipped = []
        for p, g in params_grads:
            if g is None or getattr(p, "need_clip", True) is False:
                clipped.append((p, g))
            else:
                clipped.append((p, g * factor.astype(g.dtype)))
        return clipped


def use_official_clip(optimizer, source="OptimizerBuilder"):
    """Give ``optimizer`` (built by ppdet) the official global clip; returns it.

    Raises ValueError naming ``source`` when the optimizer has several parameter groups (Paddle
    would clip each group on its own), and leaves an optimizer without a norm clip unchanged.
    """
    groups = getattr(optimizer, "_param_groups", None) or []
    if groups and isinstance(groups[0], dict):
        raise ValueError(
            f"{source}.optimizer.param_groups: Paddle clips the gradients of each parameter "
            f"group separately ({len(groups)} groups), the official recipe clips them all "
            "together. Use one group and per-parameter learning-rate multipliers instead: "
            "ResNet.lr_mult_list, DACDETR.backbone_lr_mult, DACTransformer.offset_lr_mult."
        )
    clip = getattr(optimizer, "_grad_clip", None)
    if isinstance(clip, nn.ClipGradByGlobalNorm) and not isinstance(clip, GlobalNormClip):
        optimizer._grad_clip = GlobalNormClip(clip.clip_norm)
    return optimizer
