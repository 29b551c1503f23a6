"""DACDETR: the registered ppdet architecture (backbone -> DACTransformer -> criterion / NMS)."""

import numpy as np
import paddle
from ppdet.core.workspace import create, register
from ppdet.modeling.architectures.meta_arch import BaseArch

from ppdet_dac.data.coco_ids import COCO_RAW_CATEGORY_IDS

from .masks import padding_from_image_mask
from .matcher import NonFiniteCostError

CLASS_ID_MODES = ("contiguous", "coco_raw")


@register
class DACDETR(BaseArch):
    """DAC-DETR on ppdet's DETR inputs.

    Inputs (ppdet reader): 'image' [B, 3, H, W], 'im_shape' [B, 2], 'scale_factor' [B, 2],
    optional 'pad_mask' [B, H, W] (an ``image_mask``: 1 = image, 0 = padding; see masks.py) and,
    for training, 'gt_bbox' (per image [n, 4] normalised cxcywh) and 'gt_class' (per image
    [n, 1] contiguous dataset ids).
    Training returns the loss dict (with 'loss'); a NaN/inf matching cost raises
    NonFiniteCostError naming the batch's 'im_id' values (when the batch has them). Eval returns
    'bbox' [N, 6] rows (label, score, x1, y1, x2, y2) in original-image pixels and 'bbox_num' [B].

    class_id_mode: 'contiguous' -> model class k is dataset class k (num_classes = #classes);
    'coco_raw' -> the model predicts raw COCO category ids (num_classes = 91), as the official
    checkpoints do; labels are mapped on the way in and back on the way out.
    backbone_lr_mult: multiplies the learning-rate multiplier of every backbone parameter (the
    official 0.1x backbone lr for a backbone without its own multipliers, e.g. Swin; it
    compounds with ResNet.lr_mult_list, so the R-50 configs leave it at 1).
    """

    __category__ = "architecture"
    __inject__ = ["post_process"]
    __shared__ = ["num_classes", "exclude_post_process"]

    def __init__(
        self,
        backbone,
        transformer,
        criterion,
        post_process="DACNMSPostProcess",
        num_classes=91,
        class_id_mode="coco_raw",
        exclude_post_process=False,
        backbone_lr_mult=1.0,
    ):
        super().__init__()
        if not backbone_lr_mult > 0:
            raise ValueError(f"DACDETR.backbone_lr_mult must be > 0, got {backbone_lr_mult!r}")
        for param in backbone.parameters():
            param.optimize_attr["learning_rate"] *= float(backbone_lr_mult)
        if class_id_mode not in CLASS_ID_MODES:
            raise ValueError(
                f"class_id_mode must be one of {CLASS_ID_MODES}, got {class_id_mode!r}"
            )
        self.backbone, self.transformer, self.criterion = backbone, transformer, criterion
        self.post_process = post_process
        self.exclude_post_process = exclude_post_process
        if class_id_mode == "coco_raw":
            to_model = np.asarray(COCO_RAW_CATEGORY_IDS, dtype="int64")
            if num_classes <= to_model.max():
                raise ValueError(
                    f"class_id_mode 'coco_raw' needs num_classes >= 91, got {num_classes}"
                )
        else:
            to_model = np.arange(num_classes, dtype="int64")
        to_dataset = np.full(num_classes, -1, dtype="int64")
        to_dataset[to_model] = np.arange(len(to_model))
        self.class_id_mode = class_id_mode
        self.register_buffer("to_model_ids", paddle.to_tensor(to_model), persistable=False)
        self.register_buffer("to_dataset_ids", paddle.to_tensor(to_dataset), persistable=False)

    @classmethod
    def from_config(cls, cfg, *args, **kwargs):
        backbone = create(cfg["backbone"])
        transformer = create(cfg["transformer"], input_shape=backbone.out_shape)
        return {
            "backbone": backbone,
            "transformer": transformer,
            "criterion": create(cfg["criterion"]),
        }

    def _padding(self):
        """bool [B, H, W], True = padding (all False when the batch has no 'pad_mask')."""
        image = self.inputs["image"]
        if "pad_mask" in self.inputs and self.inputs["pad_mask"] is not None:
            return padding_from_image_mask(self.inputs["pad_mask"])
        return (
            paddle.zeros([image.shape[0], image.shape[2], image.shape[3]], dtype="bool")
            if paddle.in_dynamic_mode()
            else paddle.zeros_like(image[:, 0], dtype="bool")
        )

    def targets(self):
        """Per-image (model class ids int64 [n], boxes [n, 4]) from the ppdet inputs."""
        labels = [
            paddle.gather(self.to_model_ids, c.reshape([-1]).astype("int64"))
            for c in self.inputs["gt_class"]
        ]
        boxes = [b.reshape([-1, 4]).astype("float32") for b in self.inputs["gt_bbox"]]
        return labels, boxes

    def _forward(self):
        feats = self.backbone(self.inputs)
        padding = self._padding()
        if self.training:
            gt_labels, gt_boxes = self.targets()
            outputs = self.transformer(
                feats, padding, gt_labels, gt_boxes, dn_noise=self.inputs.get("dn_noise")
            )
            try:
                return self.criterion(outputs, gt_labels, gt_boxes)
            except NonFiniteCostError as err:
                raise NonFiniteCostError(
                    f"{err}; {self._describe_batch(err.image)}", err.image
                ) from None
        outputs = self.transformer(feats, padding)
        logits, boxes = outputs["logits"][-1], outputs["boxes"][-1]
        if self.exclude_post_process:
            return {"pred_logits": logits, "pred_boxes": boxes}
        bbox, bbox_num = self.post_process(
            logits, boxes, self.inputs["im_shape"], self.inputs["scale_factor"]
        )
        return self._to_dataset_labels(bbox, bbox_num)

    def _describe_batch(self, image):
        """'it is im_id <id> (the batch's im_ids: [...])' for batch image ``image``."""
        im_id = self.inputs.get("im_id")
        if im_id is None:
            return "the batch has no 'im_id' to name the sample"
        if isinstance(im_id, (list, tuple)):
            ids = [
                int(np.asarray(v.numpy() if hasattr(v, "numpy") else v).reshape(-1)[0])
                for v in im_id
            ]
        else:
            ids = [
                int(v)
                for v in np.asarray(im_id.numpy() if hasattr(im_id, "numpy") else im_id).reshape(-1)
            ]
        return f"it is im_id {ids[image]} (the batch's im_ids: {ids})"

    def _to_dataset_labels(self, bbox, bbox_num):
        """Map raw model labels to dataset labels, dropping classes the dataset does not have."""
        if self.class_id_mode == "contiguous":
            return {"bbox": bbox, "bbox_num": bbox_num}
        labels = paddle.gather(self.to_dataset_ids, bbox[:, 0].astype("int64"))
        keep = labels >= 0
        image_idx = paddle.repeat_interleave(
            paddle.arange(bbox_num.shape[0], dtype="int64"), bbox_num.astype("int64")
        )
        bbox = paddle.concat([labels.astype(bbox.dtype).unsqueeze(1), bbox[:, 1:]], axis=1)
        kept_num = paddle.zeros_like(bbox_num).astype("int64")
        kept_num = paddle.scatter_nd_add(kept_num, image_idx.unsqueeze(1), keep.astype("int64"))
        return {
            "bbox": paddle.masked_select(bbox, keep.unsqueeze(1).tile([1, 6])).reshape([-1, 6]),
            "bbox_num": kept_num.astype(bbox_num.dtype),
        }

    def get_loss(self):
        return self._forward()

    def get_pred(self):
        return self._forward()
