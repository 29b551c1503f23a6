"""Reading PyTorch checkpoints without PyTorch, and the name mappings onto ppdet_dac models."""

from .pth_reader import CheckpointError, read_pth  # noqa: F401
