"""Where a training step's time goes, and how far the step is above its arithmetic floor.

``StepProfile`` keeps the *exclusive* wall time of named parts: while a part runs inside another
(matching inside the losses, say), the outer part's clock stops, so the shares add up to the
step. Parts are attached by wrapping methods of the model's sub-layers and the module-level
functions the model calls (``attach``); nothing in the model changes.

``forward_flops`` counts the multiply-adds of one forward pass with forward hooks: convolutions,
linear layers, the two matrix products of each multi-head self-attention and the bilinear
sampling of each deformable attention (4 taps per sample); element-wise work and normalisation
are left out (a few per cent). A training step is counted as 3x the forward (the backward of a
product costs two products: one for the input's gradient, one for the weight's), which
over-counts frozen layers (no weight gradient) slightly.

``matmul_rate`` is the machine's float32 matrix-product rate (GFLOP/s) with Paddle's CPU kernels
and this process's thread count: the floor of a step is its FLOP count at that rate.
"""

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import paddle
import paddle.nn as nn

# the parts of a training step, in the order they are printed
PARTS = (
    "data",
    "backbone",
    "transformer input (projection, flatten, masks)",
    "encoder",
    "query selection + denoising queries",
    "O-decoder (self-attention, cross-attention, FFN)",
    "C-decoder (cross-attention, FFN)",
    "decoder heads + box refinement",
    "losses (without matching)",
    "matching + one-to-many assignment",
    "detector (targets, inputs, other)",
    "backward",
    "clip + optimizer",
    "loss terms to host (logging)",
)


class StepProfile:
    """Exclusive wall seconds per named part, summed over the steps profiled."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._stack, self._mark = [], None

    @contextmanager
    def part(self, name):
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._stack.append(name)
        self._mark = now
        try:
            yield
        finally:
            now = time.perf_counter()
            self.seconds[self._stack.pop()] += now - self._mark
            self._mark = now

    def wrap(self, owner, attribute, name):
        """Time every call of ``owner.attribute`` (a method of a layer instance or a function of
        a module) as part ``name``."""
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.part(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def table(self, steps):
        """[(part, seconds per step, share)] in PARTS order, then any other part."""
        total = sum(self.seconds.values())
        names = [p for p in PARTS if p in self.seconds]
        names += sorted(set(self.seconds) - set(names))
        return [(n, self.seconds[n] / steps, self.seconds[n] / total) for n in names]


def attach(profile, model):
    """Wrap the parts of a DACDETR ``model`` (see PARTS). The decoder layers' cross-attention +
    FFN calls alternate O-stream, C-stream within a layer when the C-stream runs; the O-stream
    call comes first (``DACDecoder.forward``)."""
    transformer = model.transformer
    profile.wrap(model, "_forward", "detector (targets, inputs, other)")
    profile.wrap(model.backbone, "forward", "backbone")
    profile.wrap(transformer, "forward", "transformer input (projection, flatten, masks)")
    profile.wrap(transformer.encoder, "forward", "encoder")
    for method in ("_two_stage_queries", "_learned_queries"):
        profile.wrap(transformer, method, "query selection + denoising queries")
    profile.wrap(transformer.decoder, "forward", "decoder heads + box refinement")
    calls = {"n": 0}
    runs_c = {"on": False}
    decoder_forward = transformer.decoder.forward

    def decoder(*args, **kwargs):
        calls["n"] = 0
        runs_c["on"] = bool(kwargs.get("run_c_stream", False))
        return decoder_forward(*args, **kwargs)

    transformer.decoder.forward = decoder
    for layer in transformer.decoder.layers:
        profile.wrap(layer, "self_attention", "O-decoder (self-attention, cross-attention, FFN)")
        original = layer.cross_attention_ffn

        def stream(*args, _original=original, **kwargs):
            c_stream = runs_c["on"] and calls["n"] % 2 == 1
            calls["n"] += 1
            name = (
                "C-decoder (cross-attention, FFN)"
                if c_stream
                else "O-decoder (self-attention, cross-attention, FFN)"
            )
            with profile.part(name):
                return _original(*args, **kwargs)

        layer.cross_attention_ffn = stream
    profile.wrap(model.criterion, "forward", "losses (without matching)")
    for name in ("matcher", "assigner"):  # plain objects: called through a timing proxy
        setattr(
            model.criterion,
            name,
            _TimedCall(
                profile, getattr(model.criterion, name), "matching + one-to-many assignment"
            ),
        )


class _TimedCall:
    """``target`` with its calls timed as part ``name``; other attributes pass through."""

    def __init__(self, profile, target, name):
        self._profile, self._target, self._name = profile, target, name

    def __call__(self, *args, **kwargs):
        with self._profile.part(self._name):
            return self._target(*args, **kwargs)

    def __getattr__(self, attribute):
        return getattr(self._target, attribute)


def forward_flops(model, inputs):
    """Multiply-add FLOPs (2 per multiply-add) of ``model(inputs)``, counted by forward hooks
    (module docstring); returns (total, {layer kind: flops})."""
    from ppdet_dac.modeling.deformable_attention import MSDeformableAttention

    counts = defaultdict(float)

    def conv(layer, args, out):
        weight = layer.weight  # [Cout, Cin/groups, kh, kw]
        counts["conv"] += 2.0 * np.prod(out.shape) * np.prod(weight.shape[1:])

    def linear(layer, args, out):
        counts["linear"] += 2.0 * np.prod(out.shape) * layer.weight.shape[0]

    def self_attention(layer, args, out):
        query = args[0]  # [B, Lq, E]; keys as many as queries in the decoder's self-attention
        b, n, e = query.shape
        counts["self-attention products"] += 2 * 2.0 * b * n * n * e

    def deformable(layer, args, out):
        b, n = args[0].shape[0], args[0].shape[1]
        samples = layer.num_heads * layer.num_levels * layer.num_points
        counts["deformable sampling"] += 2.0 * 4 * b * n * samples * layer.head_dim

    hooks = []
    for layer in model.sublayers():
        if isinstance(layer, nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv))
        elif isinstance(layer, nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear))
        elif isinstance(layer, nn.MultiHeadAttention):
            hooks.append(layer.register_forward_post_hook(self_attention))
        elif isinstance(layer, MSDeformableAttention):
            hooks.append(layer.register_forward_post_hook(deformable))
    try:
        model(dict(inputs))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counts.values()), dict(counts)


def matmul_rate(side=1024, repeat=5):
    """Best float32 GFLOP/s of a [side x side] @ [side x side] product on the CPU."""
    a = paddle.randn([side, side], dtype="float32")
    b = paddle.randn([side, side], dtype="float32")
    paddle.matmul(a, b).numpy()  # warm-up: kernel choice, allocation
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        paddle.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * side**3 / best / 1e9
