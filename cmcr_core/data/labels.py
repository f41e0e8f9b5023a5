"""nuScenes-lidarseg label constants: the 32 fine categories and the 16 coarse challenge classes.

Indices follow the released lidarseg `category.json` (its `index` field), not the inconsistent table of
the devkit's `instructions_lidarseg.md`. The fine -> coarse mapping is defined by *name*, exactly as the
devkit's `LidarsegClassMapper.get_fine2coarse()`; readers of real data should build their lookup table
from the dataset's own `category.json` with `fine_to_coarse_lut`, never assume the index order.

Pure Python on purpose: many modules import these constants, and importing them must stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping

FINE_CLASS_NAMES: tuple[str, ...] = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)
"""The 32 lidarseg category names; position = fine index (0..31)."""

FINE_NAME_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(FINE_CLASS_NAMES)}
NUM_FINE_CLASSES: int = len(FINE_CLASS_NAMES)

IGNORE_INDEX: int = 0
"""Coarse index of the ignored class ("ignore"); predictions must never use it (devkit asserts 1..16)."""

COARSE_CLASS_NAMES: tuple[str, ...] = (
    "ignore",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)
"""Coarse challenge classes; position = coarse id (0 = ignore, 1..16 the 16 evaluated classes)."""

COARSE_NAME_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(COARSE_CLASS_NAMES)}
NUM_COARSE_CLASSES: int = len(COARSE_CLASS_NAMES) - 1
EVALUATED_CLASS_NAMES: tuple[str, ...] = COARSE_CLASS_NAMES[1:]
"""The 16 evaluated (predicted) classes without "ignore"; index k is the coarse id k + 1."""
"""16: the evaluated coarse classes, not counting "ignore"."""

FINE_TO_COARSE_NAME: dict[str, str] = {
    "noise": "ignore",
    "animal": "ignore",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": "ignore",
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": "ignore",
    "human.pedestrian.wheelchair": "ignore",
    "movable_object.barrier": "barrier",
    "movable_object.debris": "ignore",
    "movable_object.pushable_pullable": "ignore",
    "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": "ignore",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": "ignore",
    "vehicle.emergency.police": "ignore",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": "ignore",
    "static.vegetation": "vegetation",
    "vehicle.ego": "ignore",
}
"""Fine name -> coarse name, as the devkit's `LidarsegClassMapper.get_fine2coarse()`."""

FINE_TO_COARSE: tuple[int, ...] = tuple(
    COARSE_NAME_TO_INDEX[FINE_TO_COARSE_NAME[name]] for name in FINE_CLASS_NAMES
)
"""Lookup table fine index (official order) -> coarse id; use `fine_to_coarse_lut` for other datasets."""


def fine_to_coarse_lut(name_to_index: Mapping[str, int]) -> list[int]:
    """Build a fine index -> coarse id lookup table from a dataset's own category names and indices.

    Args:
        name_to_index: category name -> fine index, e.g. from the records of a lidarseg `category.json`.

    Returns:
        A list `lut` of length max(index) + 1 with `lut[fine_index]` = coarse id (0 = ignore); indices not
        named in `name_to_index` map to 0.

    Raises:
        ValueError: a name is not one of the 32 official lidarseg categories, or an index is negative.
    """
    unknown = sorted(set(name_to_index) - set(FINE_TO_COARSE_NAME))
    if unknown:
        raise ValueError(f"category names not in the nuScenes-lidarseg taxonomy: {unknown}")
    negative = sorted(name for name, index in name_to_index.items() if index < 0)
    if negative:
        raise ValueError(f"negative category index for: {negative}")
    lut = [IGNORE_INDEX] * (max(name_to_index.values(), default=-1) + 1)
    for name, index in name_to_index.items():
        lut[index] = COARSE_NAME_TO_INDEX[FINE_TO_COARSE_NAME[name]]
    return lut
