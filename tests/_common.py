"""Helpers shared by the test rooms: the repository root and a tiny DAC-DETR on CPU.

Tests import them from here (``from _common import ...``), never from a conftest: several
conftest modules exist and only one of them can be importable as ``conftest``.
"""

import os

import numpy as np
import paddle

import ppdet_dac  # noqa: F401  (registers classes before any config is loaded)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_tiny_detector(
    use_dac=True,
    num_classes=5,
    num_decoder_layers=2,
    num_queries=20,
    num_denoising=10,
    loss_class_type="ia_bce",
    seed=0,
    **transformer_kwargs,
):
    """A small DACDETR: ResNet-18, hidden 32, 1 encoder layer, few queries; for 64-128 px inputs."""
    from ppdet.modeling.backbones.resnet import ResNet
    from ppdet_dac.modeling.criterion import DACCriterion
    from ppdet_dac.modeling.detector import DACDETR
    from ppdet_dac.modeling.matcher import DACHungarianMatcher
    from ppdet_dac.modeling.post_process import DACNMSPostProcess
    from ppdet_dac.modeling.transformer import DACTransformer

    paddle.seed(seed)
    backbone = ResNet(
        depth=18, variant="b", norm_type="bn", freeze_norm=True, freeze_at=-1, return_idx=[1, 2, 3]
    )
    kwargs = dict(
        num_classes=num_classes,
        hidden_dim=32,
        num_queries=num_queries,
        in_channels=[s.channels for s in backbone.out_shape],
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=num_decoder_layers,
        dim_feedforward=64,
        num_encoder_points=2,
        num_decoder_points=2,
        num_denoising=num_denoising,
        use_dac=use_dac,
    )
    kwargs.update(transformer_kwargs)
    transformer = DACTransformer(**kwargs)
    criterion = DACCriterion(
        matcher=DACHungarianMatcher(),
        num_classes=num_classes,
        use_dac=use_dac,
        loss_class_type=loss_class_type,
        seed=seed,
    )
    return DACDETR(
        backbone,
        transformer,
        criterion,
        post_process=DACNMSPostProcess(),
        num_classes=num_classes,
        class_id_mode="contiguous",
    )


def make_batch(gt_per_image, size=64, seed=0, num_classes=5):
    """A ppdet-style batch dict: random images, pad_mask, per-image gt_bbox/gt_class lists."""
    rng = np.random.default_rng(seed)
    b = len(gt_per_image)
    batch = {
        "image": paddle.to_tensor(rng.standard_normal((b, 3, size, size)).astype("float32")),
        "im_shape": paddle.to_tensor(np.full((b, 2), size, dtype="float32")),
        "scale_factor": paddle.to_tensor(np.ones((b, 2), dtype="float32")),
        "pad_mask": paddle.to_tensor(np.ones((b, size, size), dtype="float32")),
        "gt_bbox": [],
        "gt_class": [],
    }
    for n in gt_per_image:
        centre = rng.uniform(0.3, 0.7, (n, 2))
        wh = rng.uniform(0.2, 0.4, (n, 2))
        batch["gt_bbox"].append(paddle.to_tensor(np.concatenate([centre, wh], 1).astype("float32")))
        batch["gt_class"].append(
            paddle.to_tensor(rng.integers(0, num_classes, (n, 1)).astype("int32"))
        )
    return batch
