"""ppdet_dac: DAC-DETR for PaddleDetection.

Importing this package registers every ppdet_dac class with ppdet's workspace, so it must run
before ``ppdet.core.workspace.load_config`` in every entry point.
"""

import sys

from ._decode_limit import set_decode_limit

# first, before ppdet / cv2 load: OpenCV's own pixel limit from --max_pixels (_decode_limit.py)
set_decode_limit(sys.argv[1:], warn_if_late=False)

import zlib  # noqa: F401,E402  (before paddle: paddle 2.6.x clashes with a late-loaded zlib)

from ._notices import drop_known_warnings, known_notices_dropped  # noqa: E402

with known_notices_dropped():  # Paddle's and ppdet's known-harmless import notices
    from . import ops  # noqa: F401,E402
    from . import modeling  # noqa: F401,E402
    from . import data  # noqa: F401,E402
    from . import engine  # noqa: F401,E402
drop_known_warnings()  # for the rest of the process (after the block, which restores the filters)

__version__ = "0.1.0"
