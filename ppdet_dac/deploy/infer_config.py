"""What an exported model directory holds (``ppdet_dac.deploy.export`` writes it): the graph
(``model.json`` or ``model.pdmodel``), its weights (``model.pdiparams``) and ``infer_cfg.yml``,
read here into ``InferConfig``, a validated model of the keys the predictor uses.
"""

import os
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from ppdet_dac.deploy.validation import describe_validation_error

INFER_CFG = "infer_cfg.yml"
MODEL_FILES = ("model.json", "model.pdmodel")  # Paddle 3 (PIR) first, then the legacy program
PARAMS_FILE = "model.pdiparams"
NMS_KEYS = ("nms_threshold", "nms_top_k", "keep_top_k")
DEFAULT_OUTPUTS = ("bbox", "bbox_num")  # the outputs of exports made before output_names


def find_model_file(model_dir):
    """model.json (Paddle 3) or model.pdmodel (Paddle 2.x) in model_dir, with model.pdiparams."""
    params = os.path.join(model_dir, PARAMS_FILE)
    for name in MODEL_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            if not os.path.isfile(params):
                raise FileNotFoundError(f"{params} not found next to {path}")
            return path, params
    raise FileNotFoundError(f"no {' or '.join(MODEL_FILES)} in {model_dir}")


def _or(default):
    """Validator: an absent-or-empty value (None, [], 0) reads as ``default``."""
    return BeforeValidator(lambda value: value or default)


def _as_strings(value):
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


class InferConfig(BaseModel):
    """The parts of infer_cfg.yml the predictor uses. ``InferConfig(model_dir)`` reads the file;
    a bad value is one ValueError naming the file and the key (FileNotFoundError without it).

    preprocess: the reader ops (``Preprocess``, list of {type, ...}); label_list: class names;
    draw_threshold; attention: 'op' (needs the op library) or 'reference'; min_subgraph_size
    (TensorRT); arch; feature_strides / num_queries: the graph's input-size limits ([] / 0 in
    exports made before they were written); output_names: the graph's first outputs (bbox,
    bbox_num, then the NMS candidates nms_boxes, nms_scores); nms: the exported NMS
    ({nms_threshold, nms_top_k, keep_top_k[, label_map]}, None in older exports).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    preprocess: list = Field(validation_alias="Preprocess")
    label_list: Annotated[list[str], BeforeValidator(_as_strings), _or([])] = []
    draw_threshold: float = 0.5
    attention: Literal["op", "reference"] = "reference"
    min_subgraph_size: int = 3
    arch: Any = None
    feature_strides: Annotated[list[int], _or([])] = []
    num_queries: Annotated[int, _or(0)] = 0
    output_names: Annotated[list[str], BeforeValidator(_as_strings), _or(list(DEFAULT_OUTPUTS))] = (
        list(DEFAULT_OUTPUTS)
    )
    nms: Optional[dict] = Field(None, validation_alias="NMS")
    _path: str = PrivateAttr("")
    _raw: dict = PrivateAttr(default_factory=dict)

    @field_validator("nms")
    @classmethod
    def _nms_has_its_keys(cls, value):
        if value is not None and not set(NMS_KEYS) <= set(value):
            raise ValueError(f"must be a mapping with {', '.join(NMS_KEYS)}")
        return value

    def __init__(self, model_dir):
        path = os.path.join(model_dir, INFER_CFG)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: export the model with tools/export_model.py first"
            )
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(raw).__name__}")
        try:
            super().__init__(**{str(key): value for key, value in raw.items()})
        except ValidationError as err:
            raise ValueError(f"{path}: {describe_validation_error(err)}") from None
        self._path, self._raw = path, raw

    @property
    def path(self):
        """The infer_cfg.yml file read."""
        return self._path

    @property
    def raw(self):
        """The file's whole mapping, as read."""
        return self._raw
