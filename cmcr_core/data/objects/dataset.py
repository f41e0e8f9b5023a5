"""Object point-cloud dataset: sampling, unit-sphere normalisation, augmentations, teacher targets, batches.

Randomness: item ``i`` of epoch ``e`` draws from ``np.random.default_rng([seed, e, i])``, so a run is
reproducible whatever the number of loader workers and the order in which they fetch items.

Protocols of ReCon (Qi et al., ICML 2023; code qizekun/ReCon, its configs and runners; docs/recon.md), as
the recipes set them:

* pretraining (ShapeNet-55): ``sampling="random"`` (random subset, not FPS), ``normalize=True``,
  ``augmentation="rotate_y"`` (angle U[0, 2 pi) about y);
* ScanObjectNN fine-tuning: ``sampling="fps_random"`` with ``fps_pool=2400`` for 2048 points, no
  normalisation (the clouds are used as stored), ``rotate_y``; ModelNet40 1k: ``fps_pool=1200``,
  normalised, ``scale_translate`` (per-axis scale U[2/3, 3/2], translation U[-0.2, 0.2]); its voting
  scales only (``scale``, per-axis U[2/3, 3/2]);
* evaluation: ``sampling="fps"``, no augmentation, the same normalisation as training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cmcr_core.data.objects.readers import ObjectSet
from cmcr_core.data.objects.teacher_targets import TeacherTargets
from cmcr_core.ops.geometry import farthest_point_sample_np

SAMPLING_MODES = ("random", "fps", "fps_random", "first")
AUGMENTATIONS = ("none", "rotate_y", "scale", "scale_translate")


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre on the centroid and scale so the farthest point has norm 1 (reference ``pc_norm``)."""
    centred = points - points.mean(axis=0)
    radius = np.sqrt((centred**2).sum(1)).max()
    return centred / radius if radius > 0 else centred


def sample_points(
    points: np.ndarray, num_points: int, mode: str, rng: np.random.Generator, fps_pool: int | None = None,
    fps_order: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``num_points`` points of one cloud.

    ``random``: random subset (with replacement only if the cloud is smaller); ``fps``: farthest point
    sampling from index 0; ``fps_random``: FPS to ``fps_pool`` points then a random subset; ``first``:
    the first points (clouds stored already sampled). ``fps_order``: this cloud's FPS indices computed
    before (at least as many as needed; FPS from index 0 is deterministic and its prefixes are the smaller
    samples), so a dataset computes them once per object.
    """
    count = len(points)
    if mode == "random":
        if count >= num_points:
            return rng.permutation(count)[:num_points]
        return np.concatenate([rng.permutation(count), rng.integers(0, count, num_points - count)])
    if mode == "fps":
        if fps_order is not None:
            return fps_order[:num_points]
        return farthest_point_sample_np(points, num_points)
    if mode == "fps_random":
        size = min(fps_pool or num_points, count)
        pool = fps_order[:size] if fps_order is not None else farthest_point_sample_np(points, size)
        if len(pool) < num_points:
            raise ValueError(f"fps_random: pool of {len(pool)} points is smaller than {num_points}")
        return pool[rng.choice(len(pool), num_points, replace=False)]
    if mode == "first":
        if count < num_points:
            raise ValueError(f"cloud has {count} points, fewer than {num_points}")
        return np.arange(num_points)
    raise ValueError(f"unknown sampling mode {mode!r}; expected one of {SAMPLING_MODES}")


def augment_points(points: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one training augmentation to a P x 3 cloud (see the module docstring)."""
    if kind == "none":
        return points
    if kind == "rotate_y":
        angle = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return points @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    if kind == "scale":
        return points * rng.uniform(2.0 / 3.0, 1.5, 3)
    if kind == "scale_translate":
        return points * rng.uniform(2.0 / 3.0, 1.5, 3) + rng.uniform(-0.2, 0.2, 3)
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")


@dataclass
class ObjectBatch:
    """A batch of objects.

    points: B x N x 3 float32; labels: B int64; ids: B names; img_target: B x Di or None;
    text_target: B x Dt or None (teacher features, one of the stored augmentations per object).
    """

    points: Tensor
    labels: Tensor
    ids: list[str]
    img_target: Tensor | None = None
    text_target: Tensor | None = None

    def to(self, device: torch.device | str) -> ObjectBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return ObjectBatch(
            move(self.points), move(self.labels), self.ids, move(self.img_target), move(self.text_target)
        )

    def __len__(self) -> int:
        return len(self.ids)


def collate_objects(items: list[dict]) -> ObjectBatch:
    """Stack the dicts returned by ``ObjectPointDataset.__getitem__`` into an ``ObjectBatch``."""

    def stack(key: str) -> Tensor | None:
        values = [item[key] for item in items]
        if any(v is None for v in values):
            return None
        return torch.from_numpy(np.stack(values))

    return ObjectBatch(
        stack("points"),
        torch.as_tensor([item["label"] for item in items], dtype=torch.long),
        [item["id"] for item in items],
        stack("img_target"),
        stack("text_target"),
    )


class ObjectPointDataset(Dataset):
    """Object clouds sampled to ``num_points``, optionally normalised and augmented.

    Args:
        objects: clouds, labels, ids.
        num_points: N points per item.
        sampling: ``random``, ``fps``, ``fps_random`` or ``first``.
        normalize: unit-sphere normalisation after sampling.
        augmentation: ``none``, ``rotate_y``, ``scale`` or ``scale_translate``.
        targets: optional teacher targets looked up by object id (one stored augmentation drawn per item).
        fps_pool: FPS pool size for ``fps_random``.
        seed: base seed of the per-item generators.
    """

    def __init__(
        self,
        objects: ObjectSet,
        num_points: int,
        sampling: str = "random",
        normalize: bool = True,
        augmentation: str = "none",
        targets: TeacherTargets | None = None,
        fps_pool: int | None = None,
        seed: int = 0,
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {sampling!r}; expected one of {SAMPLING_MODES}")
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}")
        if targets is not None:
            missing = [i for i in objects.ids if i not in targets]
            if missing:
                raise KeyError(f"teacher targets lack {len(missing)} object ids, e.g. {missing[:3]}")
        self.objects, self.num_points, self.sampling = objects, num_points, sampling
        self.normalize, self.augmentation, self.targets = normalize, augmentation, targets
        self.fps_pool, self.seed, self.epoch = fps_pool, seed, 0
        self._fps_orders: dict[int, np.ndarray] = {}  # FPS indices per object, computed once

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used in the per-item generator seeds."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cloud = self.objects.points[index]
        order = None
        if self.sampling in ("fps", "fps_random"):
            order = self._fps_orders.get(index)
            if order is None:
                size = self.num_points  # fps: an error for a smaller cloud, as without the cache
                if self.sampling == "fps_random":
                    size = min(self.fps_pool or self.num_points, len(cloud))
                order = self._fps_orders[index] = farthest_point_sample_np(cloud, size)
        points = cloud[sample_points(cloud, self.num_points, self.sampling, rng, self.fps_pool, order)]
        if self.normalize:
            points = normalize_unit_sphere(points)
        points = augment_points(points, self.augmentation, rng).astype(np.float32)
        obj_id = self.objects.ids[index]
        img = text = None
        if self.targets is not None:
            img, text = self.targets.lookup(obj_id, rng)
        return {
            "points": points,
            "label": int(self.objects.labels[index]),
            "id": obj_id,
            "img_target": img,
            "text_target": text,
        }
