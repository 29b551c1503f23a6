"""The layout of the crowded demo data (``tools/make_demo_data.py --crowded``): how many shapes
an image asks for, their sizes, aspect ratios and how much they may hide of each other
(``ppdet_dac.data.demo_data`` draws them)."""

import dataclasses

__all__ = ["Crowding", "crowding_range"]


@dataclasses.dataclass(frozen=True)
class Crowding:
    """The layout of a crowded image: ``min_objects..max_objects`` shapes are asked for (placing
    them gives up after ``tries`` shapes that would hide too much of earlier ones, so a few
    images get fewer), extents from ``min_size..max_size`` of the shorter image side, aspect
    ratios (width / height before rotation) log-uniform in ``1/max_aspect..max_aspect``, a new
    shape hiding at most ``max_occlusion`` of an earlier one."""

    min_objects: int = 10
    max_objects: int = 24
    min_size: float = 0.10
    max_size: float = 0.36
    max_aspect: float = 3.0
    max_occlusion: float = 0.5
    tries: int = 300


def crowding_range(crowding):
    """(min_objects, max_objects) of a ``Crowding``, checked: ValueError naming the bad field."""
    fields = dataclasses.asdict(crowding)
    if not 1 <= crowding.min_objects <= crowding.max_objects:
        raise ValueError(f"Crowding: need 1 <= min_objects <= max_objects, got {fields}")
    if not 0 < crowding.min_size <= crowding.max_size <= 1:
        raise ValueError(f"Crowding: need 0 < min_size <= max_size <= 1, got {fields}")
    if crowding.max_aspect < 1 or not 0 <= crowding.max_occlusion <= 1 or crowding.tries < 1:
        raise ValueError(
            f"Crowding: need max_aspect >= 1, max_occlusion in [0, 1], tries >= 1, got {fields}"
        )
    return crowding.min_objects, crowding.max_objects
