"""ppdet_dac: DAC-DETR for PaddleDetection.

Importing this package registers every ppdet_dac class with ppdet's workspace, so it must run
before ``ppdet.core.workspace.load_config`` in every entry point.
"""
import zlib  # noqa: F401  (first: paddle 2.6.x clashes with a late-loaded shared zlib)

from ._notices import known_notices_dropped  # noqa: E402

with known_notices_dropped():   # Paddle's and ppdet's known-harmless import notices
    from . import ops  # noqa: F401,E402
    from . import modeling  # noqa: F401,E402
    from . import data  # noqa: F401,E402
    from . import engine  # noqa: F401,E402

__version__ = "0.1.0"
