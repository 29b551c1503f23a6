"""Training/evaluation glue on ppdet's Trainer."""

from .loader import use_reporting_loader

use_reporting_loader()  # a reader's exception stops the tool instead of hanging it

from .config import check_section_keys, config_from_args, load_checked_config  # noqa: F401,E402
from .pretrained import (
    check_pretrain_weights,
    fetch_pretrain_weights,  # noqa: F401,E402
    load_pretrain_weights,
)
from .trainer import DACTrainer  # noqa: F401,E402
