"""Raw outputs and losses of a model on a fixed input, as numpy arrays (``tools/dump_outputs.py``).

For exact comparisons with another implementation of DAC-DETR (or with the model before a
weight conversion): the input is an already-preprocessed tensor, the two-stage top-k can be
forced, the whole model can run in float64, and a training forward can replay the denoising
noise of another run.

Eval dump (``dump_eval_outputs``), names of the returned arrays:
  pred_logits [B, Q, C], pred_boxes [B, Q, 4]       O-decoder, last layer, normalised cxcywh
  dec_logits [L, B, Q, C], dec_boxes [L, B, Q, 4]   O-decoder, every layer
  dec_logits_cdecoder, dec_boxes_cdecoder           C-decoder, every layer (DAC models only)
  enc_logits [B, S, C], enc_boxes [B, S, 4]         encoder proposals, one per token
  enc_topk_indices [B, Q]                           the proposals the decoder starts from
  post_scores [N], post_labels [N], post_boxes [N, 4]  detections of the first image, xyxy
                                                    pixels, labels in the model's class space
  post_label_space                                  'coco_category_id' or 'contiguous_class_id'

Training dump (``dump_train_losses``; forced top-k and float64 work as in the eval dump):
  loss/<name> []                 unweighted term, the official ``loss_dict`` value (float64)
  loss_weight/<name> []          its weight in the total
  loss_total []                  the model's weighted sum, the loss that is backpropagated
  enc_topk_indices [B, Q]        the proposals the decoder started from in this training forward
                                 (the eval top-k differs where the backbone has BatchNorm
                                 layers that learn: training mode normalises with the batch's
                                 statistics); pass it back with a forced top-k to replay it
  grad_total_norm []             float64 global L2 norm of the gradients of all trainable
                                 parameters, before clipping: what the official
                                 ``clip_grad_norm_(model.parameters(), 0.1)`` returns
                                 (parameters without a gradient are skipped)
  grad/<official key> [shape]    d loss_total / d parameter, in the model's dtype, named and laid
                                 out as in the official checkpoint (``interop/mapping.py``):
                                 Linear weights [out, in], the decoder self-attention's q/k/v
                                 packed into in_proj_weight [3C, C] / in_proj_bias [3C], the
                                 backbone under 'backbone.0.body.' (torchvision ResNet or Swin
                                 names). One entry per official key whose parameter gets a
                                 gradient: the tied duplicates transformer.decoder.class_embed.*
                                 / transformer.decoder.bbox_embed.* hold the same array as
                                 class_embed.* / bbox_embed.* (count it once in a norm). Frozen
                                 parameters have no entry (R50 configs: the ResNet stem and res2
                                 = official conv1 / layer1; frozen BatchNorms = the official
                                 FrozenBatchNorm2d buffers).
"""

import os

import numpy as np
import paddle
from ppdet.core.workspace import create
from ppdet.utils.logger import setup_logger

from ppdet_dac.analysis.dump_inputs import (  # re-exported: part of this module's API
    DN_NOISE_KEYS,
    load_dn_noise,
    load_input,
    load_targets,
    make_dn_noise,
    num_dn_rows,
)
from ppdet_dac.interop import mapping
from ppdet_dac.interop.weights import load_model_weights as _load_weights

logger = setup_logger(__name__)

__all__ = [
    "DN_NOISE_KEYS",
    "LABEL_SPACES",
    "build_model",
    "load_model_weights",
    "load_input",
    "load_targets",
    "load_dn_noise",
    "make_dn_noise",
    "num_dn_rows",
    "loss_term_weight",
    "dump_eval_outputs",
    "dump_train_losses",
    "gradient_arrays",
    "save_npz",
]

# the label space of post_labels, per DACDETR.class_id_mode
LABEL_SPACES = {"coco_raw": "coco_category_id", "contiguous": "contiguous_class_id"}
DTYPES = ("float32", "float64")


# -- model -------------------------------------------------------------------------------------
def build_model(cfg, weights=None):
    """Create ``cfg.architecture`` and, when ``weights`` is given, load it (strictly)."""
    model = create(cfg.architecture)
    if weights:
        load_model_weights(model, weights)
    return model


def load_model_weights(model, path):
    """Load a ``.pdparams`` file (``path`` with or without the suffix) into ``model`` by
    ``ppdet_dac.interop.weights.load_model_weights`` (restricted reader, no code run; every
    model tensor must be in the file with its shape, else one ValueError naming the file and
    what does not fit). Returns the file actually read.
    """
    return _load_weights(model, path)


# -- forward passes ------------------------------------------------------------------------------
def _image_sizes(mask):
    """[B, H, W] bool (True = padding) -> [B, 2] float32 unpadded (h, w)."""
    rows = (~mask).any(axis=2).sum(axis=1)
    cols = (~mask).any(axis=1).sum(axis=1)
    return np.stack([rows, cols], axis=1).astype("float32")


def _cast_model(model, dtype):
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "float64":
        model.to(dtype="float64")  # parameters and floating buffers (frozen BN statistics too)
    return model


def dump_eval_outputs(model, image, mask=None, topk_indices=None, dtype="float32", orig_size=None):
    """Eval-mode forward on a preprocessed batch; returns the arrays listed in the module doc.

    image: [B, 3, H, W] numpy; mask: [B, H, W] bool, True = padding (None: no padding);
    topk_indices: [B, Q] int64 replacing the two-stage top-k (None: the model's own);
    dtype: 'float32' or 'float64' (casts the whole model, in place);
    orig_size: (h, w) the post-processed boxes are scaled to (None: the unpadded input size).
    """
    _cast_model(model, dtype)
    model.eval()
    if mask is None:
        mask = np.zeros([image.shape[0], image.shape[2], image.shape[3]], dtype=bool)
    im_shape = _image_sizes(mask)
    scale_factor = np.ones_like(im_shape)
    if orig_size is not None:
        scale_factor = im_shape / np.asarray(orig_size, dtype="float32").reshape([1, 2])
    use_dac = bool(model.transformer.use_dac)
    with paddle.no_grad():
        feats = model.backbone({"image": paddle.to_tensor(image.astype(dtype))})
        out = model.transformer(
            feats,
            paddle.to_tensor(mask),
            topk_indices=None if topk_indices is None else paddle.to_tensor(topk_indices),
            run_c_stream=use_dac,
        )
        bbox, bbox_num = model.post_process(
            out["logits"][-1],
            out["boxes"][-1],
            paddle.to_tensor(im_shape),
            paddle.to_tensor(scale_factor),
        )
    result = {
        "pred_logits": out["logits"][-1].numpy(),
        "pred_boxes": out["boxes"][-1].numpy(),
        "dec_logits": out["logits"].numpy(),
        "dec_boxes": out["boxes"].numpy(),
        "enc_logits": out["enc_logits"].numpy(),
        "enc_boxes": out["enc_boxes"].numpy(),
        "enc_topk_indices": out["topk_indices"].numpy().astype("int64"),
    }
    if use_dac:
        result["dec_logits_cdecoder"] = out["logits_c"].numpy()
        result["dec_boxes_cdecoder"] = out["boxes_c"].numpy()
    first = bbox.numpy()[: int(bbox_num.numpy()[0])]
    result.update(
        post_scores=first[:, 1],
        post_labels=first[:, 0].round().astype("int64"),
        post_boxes=first[:, 2:6],
        post_label_space=np.array(LABEL_SPACES[model.class_id_mode]),
    )
    return result


def loss_term_weight(name, weights):
    """Weight of criterion term ``name`` ('loss_<ce|bbox|giou><suffix>') in ``weights``
    (``DACCriterion.weights``: ce, bbox, giou, ce_enc, bbox_enc, giou_enc)."""
    kind = name[len("loss_") :].split("_")[0]
    key = kind + "_enc" if name.endswith("_enc") else kind
    if not name.startswith("loss_") or key not in weights:
        raise ValueError(f"no loss weight for term '{name}' (weights: {sorted(weights)})")
    return float(weights[key])


def dump_train_losses(
    model,
    image,
    mask,
    gt_labels,
    gt_boxes,
    dn_noise=None,
    seed=0,
    topk_indices=None,
    dtype="float32",
    gradients=True,
):
    """Training forward (and backward) on a preprocessed batch with fixed targets and replayed
    DN noise.

    image: [B, 3, H, W] numpy; mask: [B, H, W] bool, True = padding (None: no padding);
    gt_labels / gt_boxes: per image numpy int64 [n] (model class ids) and float [n, 4]
    (normalised cxcywh, cast to ``dtype``). dn_noise: a ``DNNoise`` (e.g. from
    ``load_dn_noise``), None = drawn from Paddle's generator after ``paddle.seed(seed)``. The
    one-to-many assigner's random subsampling uses a generator seeded with ``seed``.
    topk_indices: [B, Q] int64 replacing the two-stage top-k (None: the model's own);
    dtype: 'float32' or 'float64' (casts the whole model, in place; every loss term is checked
    to come out in this dtype); gradients: also backpropagate ``loss_total``.
    Returns {'loss/<name>': unweighted term, 'loss_weight/<name>': its weight,
    'loss_total': the model's weighted sum} and with ``gradients`` the arrays of
    ``gradient_arrays`` (module doc). The model is left in eval mode without gradients.
    """
    _cast_model(model, dtype)
    paddle.seed(seed)
    criterion = model.criterion
    criterion.rng = np.random.default_rng(seed)
    model.clear_gradients(set_to_zero=False)
    model.train()
    try:
        losses, topk = _train_forward(
            model, image, mask, gt_labels, gt_boxes, dn_noise, topk_indices, dtype
        )
        result = _loss_arrays(losses, criterion.weights, dtype)
        result["enc_topk_indices"] = topk
        if gradients:
            losses["loss"].backward()
            result.update(gradient_arrays(model))
    finally:
        model.clear_gradients(set_to_zero=False)
        model.eval()
    return result


def _train_forward(model, image, mask, gt_labels, gt_boxes, dn_noise, topk_indices, dtype):
    """Backbone, transformer (training mode) and criterion -> (the criterion's loss dict, the
    two-stage top-k indices [B, Q] int64 numpy)."""
    if mask is None:
        mask = np.zeros([image.shape[0], image.shape[2], image.shape[3]], dtype=bool)
    labels = [paddle.to_tensor(l.astype("int64")) for l in gt_labels]
    boxes = [paddle.to_tensor(np.asarray(b).astype(dtype).reshape([-1, 4])) for b in gt_boxes]
    feats = model.backbone({"image": paddle.to_tensor(image.astype(dtype))})
    out = model.transformer(
        feats,
        paddle.to_tensor(mask),
        labels,
        boxes,
        dn_noise=dn_noise,
        topk_indices=None if topk_indices is None else paddle.to_tensor(topk_indices),
    )
    return model.criterion(out, labels, boxes), out["topk_indices"].numpy().astype("int64")


def _loss_arrays(losses, weights, dtype):
    """The criterion's weighted terms -> loss/<name> (unweighted), loss_weight/<name>,
    loss_total, all float64; a term not computed in ``dtype`` raises ValueError."""
    wrong = [
        f"{name} ({str(v.dtype).replace('paddle.', '')})"
        for name, v in losses.items()
        if str(v.dtype).replace("paddle.", "") != dtype
    ]
    if wrong:
        raise ValueError(f"loss terms not computed in {dtype}: {', '.join(wrong)}")
    result = {"loss_total": np.asarray(losses["loss"].numpy(), dtype="float64").reshape([])}
    for name, value in losses.items():
        if name == "loss":
            continue
        weight = loss_term_weight(name, weights)
        result[f"loss_weight/{name}"] = np.asarray(weight, dtype="float64")
        weighted = np.asarray(value.numpy(), dtype="float64").reshape([])
        result[f"loss/{name}"] = weighted / weight if weight else weighted
    return result


def gradient_arrays(model):
    """After a backward: the gradients of the trainable parameters in the official layout.

    Returns {'grad_total_norm': float64 [] (L2 norm over every parameter gradient, each counted
    once), 'grad/<official key>': gradient array (model dtype) named and laid out as in the
    official checkpoint, tied duplicates included}; see the module doc. Parameters with
    ``stop_gradient`` (frozen) or without a gradient are left out. A trainable parameter with
    no official name (e.g. the one-stage model's shared heads) raises ValueError.
    """
    grads = {
        name: param.grad.numpy()
        for name, param in model.named_parameters()
        if not param.stop_gradient and param.grad is not None
    }
    squares = sum(float(np.square(g.astype("float64")).sum()) for g in grads.values())
    inverse = mapping.official_dac_inverse(model.state_dict())
    official = mapping.to_source_layout(
        grads, inverse, mapping.OFFICIAL_DAC_ALIASES, "official DAC-DETR checkpoint"
    )
    result = {"grad_total_norm": np.asarray(np.sqrt(squares), dtype="float64")}
    result.update((f"grad/{key}", value) for key, value in official.items())
    return result


def save_npz(path, arrays):
    """Write ``arrays`` to ``path`` (.npz, uncompressed), creating the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    np.savez(path, **arrays)
    logger.info(f"wrote {len(arrays)} arrays to {path}")
