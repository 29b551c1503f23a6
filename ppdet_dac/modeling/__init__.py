"""Detection model pieces of DAC-DETR; importing this module registers them with ppdet."""

from . import matcher  # noqa: F401
from . import post_process  # noqa: F401
from . import transformer  # noqa: F401
from . import criterion  # noqa: F401
from . import detector  # noqa: F401
