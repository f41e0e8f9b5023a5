"""`cmcr prepare objects`: synthetic objects in the real layouts, and ReCon teacher targets per object.

Layering: the image teacher arrives as a callable (the CLI loads it with ``cmcr_core.models.teacher``);
nothing here imports a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor

from cmcr_core.data.objects.readers import read_shapenet55, read_shapenet_image
from cmcr_core.data.objects.teacher_targets import TeacherTargets, precompute_teacher_targets


def read_class_text_features(path: str | Path, num_classes: int) -> np.ndarray:
    """Class text features from a ``.npy`` file: classes x D, or classes x M x D (M prompts per class)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--text-embeddings: no file {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"--text-embeddings {path}: not a plain .npy array ({err})") from err
    if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"--text-embeddings {path}: expected a float array classes x D (or classes x M x D), "
            f"got {array.dtype} {array.shape}"
        )
    if len(array) != num_classes:
        raise ValueError(
            f"--text-embeddings {path}: {len(array)} rows but the dataset has {num_classes} classes"
        )
    return array.astype(np.float32)


def prepare_teacher_targets(
    root: str | Path,
    out_file: str | Path,
    image_teacher: Callable[[Tensor], Tensor],
    text_features: np.ndarray,
    num_views: int = 1,
    image_size: int = 224,
    seed: int = 0,
    bgr: bool = True,
    normalize: bool = True,
    batch_size: int = 64,
    device: str = "cpu",
) -> TeacherTargets:
    """Teacher targets for every ShapeNet-55 object under ``root`` (train + test), saved to ``out_file``.

    Image features: ``image_teacher`` on the renders in ``root/shapenet_img`` (``num_views`` stored views;
    ``normalize``: ImageNet mean/std applied here, off for teachers that take [0, 1] and normalise
    themselves). Text features: ``text_features``, one row (or M prompt rows) per class in
    ``shapenet55.json`` order (``read_class_text_features``, ``class_text_vectors`` or a text encoder).

    Returns:
        TeacherTargets with img n x num_views x D_img, text n x M x D_text.
    """
    objects = read_shapenet55(root, "whole")
    text = np.asarray(text_features, dtype=np.float32)
    if len(text) != len(objects.class_names):
        raise ValueError(f"{len(text)} classes of text features, but {root} has {len(objects.class_names)}")
    images = [read_shapenet_image(root, obj_id) for obj_id in objects.ids]
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise ValueError(
            f"{root}/shapenet_img: renders differ in size ({sorted(sizes)[:3]}); resize them first"
        )
    targets = precompute_teacher_targets(
        np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8),
        objects.ids,
        objects.labels,
        image_teacher,
        text,
        num_views=num_views,
        image_size=image_size,
        seed=seed,
        bgr=bgr,
        normalize=normalize,
        batch_size=batch_size,
        device=device,
    )
    targets.save(out_file)
    return targets
