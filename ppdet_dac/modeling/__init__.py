"""Detection model pieces of DAC-DETR; importing this module registers them with ppdet."""
