"""Datasets, reader ops, the demo-data generator and COCO id mapping.

Importing this package registers ``DACCOCODataSet`` (also attached to ``ppdet.data.source``)
and the reader ops ``DACDecode`` / ``DACRandomSizeCrop`` (attached to ``ppdet.data.transform``)
with ppdet, so it must run before ``ppdet.core.workspace.load_config``.
"""
from . import coco_ids  # noqa: F401
from . import transforms  # noqa: F401
from . import dataset  # noqa: F401
from . import demo_data  # noqa: F401
