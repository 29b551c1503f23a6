"""Training/evaluation glue on ppdet's Trainer."""
from .config import check_section_keys, config_from_args, load_checked_config  # noqa: F401
from .pretrained import (check_pretrain_weights, fetch_pretrain_weights,  # noqa: F401
                         load_pretrain_weights)
from .trainer import DACTrainer  # noqa: F401
