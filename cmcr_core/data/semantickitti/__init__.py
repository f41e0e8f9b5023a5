"""SemanticKITTI: the 19-class learning map, a synthetic-world writer in the SemanticKITTI layout, and a
reader/prepare step into per-sequence HDF5 shards (docs/data-format.md §7)."""

from cmcr_core.data.semantickitti.labels import KITTI_CLASS_NAMES, LEARNING_MAP, LEARNING_MAP_INV, NUM_CLASSES
from cmcr_core.data.semantickitti.prepared import (
    INDEX_NAME,
    KittiDataError,
    KittiPrepareReport,
    PreparedKitti,
    label_path,
    prepare_semantickitti,
    read_labels,
    read_scan,
    to_train_ids,
)

__all__ = [
    "KITTI_CLASS_NAMES",
    "INDEX_NAME",
    "LEARNING_MAP",
    "LEARNING_MAP_INV",
    "NUM_CLASSES",
    "KittiDataError",
    "KittiPrepareReport",
    "PreparedKitti",
    "label_path",
    "prepare_semantickitti",
    "read_labels",
    "read_scan",
    "to_train_ids",
]
