"""Object-level point-cloud data for ReCon: readers of the real layouts, synthetic objects, dataset.

Layering: nothing here imports ``cmcr_core.models``; the image teacher for precomputed targets is passed
in as a callable.
"""

from cmcr_core.data.objects.dataset import (
    AUGMENTATIONS,
    SAMPLING_MODES,
    ObjectBatch,
    ObjectPointDataset,
    augment_points,
    collate_objects,
    normalize_unit_sphere,
    sample_points,
)
from cmcr_core.data.objects.fewshot import FewShotFold, read_published_fold, sample_fold
from cmcr_core.data.objects.prompts import RECON_PREFIXES, RECON_SUFFIXES, recon_prompts
from cmcr_core.data.objects.readers import (
    SCANOBJECTNN_CLASSES,
    ObjectSet,
    read_modelnet_h5,
    read_modelnet_resampled,
    read_scanobjectnn,
    read_shapenet55,
    read_shapenet55_classes,
    read_shapenet_image,
)
from cmcr_core.data.objects.synthetic import SHAPE_CLASSES, SyntheticObjects, make_synthetic_objects
from cmcr_core.data.objects.teacher_targets import (
    TeacherTargets,
    class_text_vectors,
    load_teacher_targets,
    precompute_teacher_targets,
)
from cmcr_core.data.objects.writers import (
    write_modelnet_h5,
    write_modelnet_resampled,
    write_scanobjectnn,
    write_shapenet55,
    write_synthetic_object_datasets,
)

__all__ = [
    "AUGMENTATIONS",
    "RECON_PREFIXES",
    "RECON_SUFFIXES",
    "SAMPLING_MODES",
    "SCANOBJECTNN_CLASSES",
    "SHAPE_CLASSES",
    "FewShotFold",
    "ObjectBatch",
    "ObjectPointDataset",
    "ObjectSet",
    "SyntheticObjects",
    "TeacherTargets",
    "augment_points",
    "class_text_vectors",
    "collate_objects",
    "load_teacher_targets",
    "make_synthetic_objects",
    "normalize_unit_sphere",
    "precompute_teacher_targets",
    "read_modelnet_h5",
    "read_published_fold",
    "read_modelnet_resampled",
    "read_scanobjectnn",
    "read_shapenet55",
    "read_shapenet55_classes",
    "read_shapenet_image",
    "recon_prompts",
    "sample_fold",
    "sample_points",
    "write_modelnet_h5",
    "write_modelnet_resampled",
    "write_scanobjectnn",
    "write_shapenet55",
    "write_synthetic_object_datasets",
]
