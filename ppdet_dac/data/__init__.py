"""Datasets, the demo-data generator and COCO id mapping; importing registers them with ppdet."""
