"""Name mappings from PyTorch checkpoints onto ppdet_dac / ppdet parameter names: the public API.

The work is split by concern; this module gathers what tools, tests and the analysis code use:

* ``tables.py``: the rules ``(source regex, target, kind)`` for the official DAC-DETR
  checkpoints, torchvision ResNets and Swin Transformers (and what each table ignores);
* ``convert.py``: ``convert_state_dict`` applies a table and checks the result against the
  model's names and shapes (one ``ValueError`` listing every missing, unexpected and mis-shaped
  key); ``convert_official`` / ``convert_swin`` / ``convert_torchvision_resnet``; saving;
* ``inverse.py``: the way back (model names -> checkpoint keys and layout, e.g. gradients in
  the official layout), derived from the same tables: each rule's keys are listed with
  ``regex_strings.py`` and run through the forward rule.
"""

from .convert import (
    convert_official,
    convert_state_dict,
    convert_swin,  # noqa: F401
    convert_torchvision_resnet,
    find_state_dict,
    load_and_save,
    save_pdparams,
    state_specs,
)
from .inverse import (
    invert_aliases,
    invert_rules,
    official_dac_inverse,  # noqa: F401
    to_source_layout,
)
from .tables import (
    COPY,
    LINEAR,
    OFFICIAL_DAC_ALIASES,
    OFFICIAL_DAC_BACKBONE_PREFIX,  # noqa: F401
    OFFICIAL_DAC_HINTS,
    OFFICIAL_DAC_IGNORED,
    OFFICIAL_DAC_RULES,
    QKV_BIAS,
    QKV_WEIGHT,
    SWIN_IGNORED,
    SWIN_NEW_LAYERS,
    SWIN_OUTPUT_NORM_RULES,
    SWIN_RULES,
    TORCHVISION_RESNET_IGNORED,
    official_dac_rules,
    official_dac_rules_for_model,
    ppdet_block_counts,
    ppdet_block_name,
    torchvision_block_counts,
    torchvision_resnet_rules,
    torchvision_resnet_table,
)
