"""Datasets, reader ops, image sizes, the demo-data generator and COCO id mapping.

Importing this package registers the datasets ``DACCOCODataSet`` and ``DACVOCDataSet`` (also
attached to ``ppdet.data.source``) and the reader op ``DACDecode`` (attached to
``ppdet.data.transform``) with ppdet, so it must run before
``ppdet.core.workspace.load_config``.
"""

from . import coco_ids  # noqa: F401
from . import transforms  # noqa: F401
from . import dataset  # noqa: F401
from . import voc  # noqa: F401
from . import demo_data  # noqa: F401
