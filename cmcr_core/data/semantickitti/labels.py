"""SemanticKITTI label constants: raw label ids, the 19-class learning map, and its inverse.

valeoai/SLidR `downstream/dataloader_kitti.py` and SemanticKITTI's API: a `.label` file holds one uint32 per
point; the semantic label is `value & 0xFFFF` (the upper 16 bits are the instance id). Raw ids map to
train ids 1..19; everything else (unlabeled, outlier, other-structure, other-object, unknown ids) to 0.

Pure Python on purpose (cheap to import).
"""

from __future__ import annotations

KITTI_CLASS_NAMES: tuple[str, ...] = (
    "ignore",
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)
"""Train ids: position = id; 0 = ignore, 1..19 the evaluated classes."""

NUM_CLASSES: int = len(KITTI_CLASS_NAMES) - 1

RAW_NAMES: dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle",
    16: "on-rails", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist",
    40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence",
    52: "other-structure", 60: "lane-marking", 70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole",
    81: "traffic-sign", 99: "other-object", 252: "moving-car", 253: "moving-bicyclist",
    254: "moving-person", 255: "moving-motorcyclist", 256: "moving-on-rails", 257: "moving-bus",
    258: "moving-truck", 259: "moving-other-vehicle",
}
"""The raw semantic ids of the SemanticKITTI API (`semantic-kitti.yaml`)."""

LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 52: 0, 99: 0,
    10: 1, 252: 1,
    11: 2,
    15: 3,
    18: 4, 258: 4,
    13: 5, 16: 5, 20: 5, 256: 5, 257: 5, 259: 5,
    30: 6, 254: 6,
    31: 7, 253: 7,
    32: 8, 255: 8,
    40: 9, 60: 9,
    44: 10,
    48: 11,
    49: 12,
    50: 13,
    51: 14,
    70: 15,
    71: 16,
    72: 17,
    80: 18,
    81: 19,
}
"""Raw semantic id -> train id (SemanticKITTI's learning map); unlisted ids map to 0."""

LEARNING_MAP_INV: tuple[int, ...] = (
    0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81,
)
"""Train id -> the raw id written in prediction files (the SemanticKITTI API's `learning_map_inv`)."""


def learning_lut(size: int = 1 << 16) -> list[int]:
    """A lookup table raw semantic id (0..size−1) -> train id, 0 for unlisted ids."""
    lut = [0] * size
    for raw, train in LEARNING_MAP.items():
        lut[raw] = train
    return lut
