"""Label-fraction subsets for semantic-segmentation fine-tuning, as published (valeoai/SLidR's loaders).

* nuScenes (scene level, valeoai/SLidR `downstream/dataloader_nuscenes.py`): walk the scenes in
  `scene.json` order; for the scenes of the training split keep a counter c = 1, 2, ... and keep the scene
  when c % skip == 0 (1 %: the 100th, 200th, ..., 700th train scene); every keyframe of a kept scene.
* SemanticKITTI (scan level, `downstream/dataloader_kitti.py`): the sorted list of all training scan paths,
  every skip-th entry starting with the first (`[::skip]`; 1 % = 192 scans).

An empty subset is an error (the CMCR loader silently falls back to one fixed scene, D21 of
docs/differences.md).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "LABEL_FRACTIONS",
    "PUBLISHED_SKIPS",
    "LabelSubsetError",
    "kitti_label_scans",
    "nuscenes_label_scenes",
    "skip_for_fraction",
]

LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 1.0)
PUBLISHED_SKIPS: tuple[int, ...] = (100, 20, 10, 4, 1)
"""skip of each fraction in LABEL_FRACTIONS (nuScenes scenes and SemanticKITTI scans alike)."""


class LabelSubsetError(ValueError):
    """A label fraction that is unknown or selects nothing."""


def skip_for_fraction(fraction: float, skips: Sequence[int] = PUBLISHED_SKIPS) -> int:
    """The skip of a label fraction: 0.01 -> 100, 0.05 -> 20, 0.1 -> 10, 0.25 -> 4, 1.0 -> 1.

    Args:
        fraction: one of LABEL_FRACTIONS.
        skips: skip per fraction, aligned with LABEL_FRACTIONS (recipes of small synthetic worlds replace
            the published table, documented in docs/finetune.md).
    """
    if len(skips) != len(LABEL_FRACTIONS) or min(skips) < 1:
        raise LabelSubsetError(
            f"skips must hold {len(LABEL_FRACTIONS)} positive integers, got {tuple(skips)}"
        )
    for known, skip in zip(LABEL_FRACTIONS, skips, strict=True):
        if abs(fraction - known) < 1e-9:
            return int(skip)
    raise LabelSubsetError(
        f"label fraction {fraction} is not a published one; "
        f"choose one of {', '.join(map(str, LABEL_FRACTIONS))}"
    )


def nuscenes_label_scenes(
    scenes_in_order: Sequence[str], train_scenes: Sequence[str], skip: int
) -> list[str]:
    """Scenes of a scene-level label fraction.

    Args:
        scenes_in_order: every scene name of the release, in `scene.json` order.
        train_scenes: the names forming the training split (order irrelevant).
        skip: keep the train scenes whose 1-based rank in `scene.json` order is a multiple of `skip`.
    Returns:
        the kept scene names, in `scene.json` order.
    Raises:
        LabelSubsetError: skip < 1, or no scene is kept.
    """
    if skip < 1:
        raise LabelSubsetError(f"skip must be >= 1, got {skip}")
    wanted = set(train_scenes)
    kept, counter = [], 0
    for name in scenes_in_order:
        if name in wanted:
            counter += 1
            if counter % skip == 0:
                kept.append(name)
    if not kept:
        raise LabelSubsetError(
            f"label subset with skip {skip} is empty: the training split has only {counter} scenes "
            "(use a larger label fraction, or a recipe made for this dataset)"
        )
    return kept


def kitti_label_scans(train_scans: Sequence[str], skip: int) -> list[str]:
    """Scans of a scan-level label fraction: `sorted(train_scans)[::skip]`.

    Args:
        train_scans: identifiers that sort like the reference's paths, e.g. "00/000000" or full paths.
        skip: keep every skip-th scan, starting with the first.
    """
    if skip < 1:
        raise LabelSubsetError(f"skip must be >= 1, got {skip}")
    kept = sorted(train_scans)[::skip]
    if not kept:
        raise LabelSubsetError("label subset is empty: the training split has no scans")
    return kept
