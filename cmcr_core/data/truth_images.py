"""Camera images and per-pixel truth of a synthetic world, as a training set for a 2D semantic network.

`cmcr prepare synthetic` writes, for every camera image, a truth PNG of lidarseg FINE indices and lists
both in `truth/index.json` (docs/synthetic-world.md §4). This module reads that index, finds the scene of
every frame from the world's own nuScenes tables (sample_data → sample → scene), maps truth to the 16
coarse classes (`cmcr_core.data.labels.FINE_TO_COARSE`, 0 = ignore) and serves random crops and flips.

Every random choice of item i in epoch e comes from `numpy.random.default_rng([seed, e, i])`, so a seed
reproduces a batch whatever the worker layout (as `cmcr_core.data.pretrain_dataset`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cmcr_core.data.labels import COARSE_CLASS_NAMES, FINE_CLASS_NAMES, FINE_TO_COARSE

__all__ = [
    "TRUTH_INDEX_FORMAT",
    "TruthBatch",
    "TruthFrame",
    "TruthImageDataset",
    "TruthSample",
    "TruthWorld",
    "coarse_pixel_counts",
    "collate_truth",
    "load_frame",
    "read_truth_world",
    "split_holdout",
]

TRUTH_INDEX_FORMAT = "cmcr-synthetic-truth/1"
_FINE_TO_COARSE_LUT = np.asarray(FINE_TO_COARSE, dtype=np.uint8)


@dataclass(frozen=True)
class TruthFrame:
    """One camera image of the world and its truth map (absolute paths)."""

    image: Path
    truth: Path
    channel: str
    scene: str  # scene name, e.g. "scene-0061"
    sample_data_token: str


@dataclass(frozen=True)
class TruthWorld:
    """A synthetic world's truth index: frames in file order, scenes in world order.

    ``fingerprint`` is the SHA-256 of `truth/index.json`: tokens differ per seed, so two worlds share a
    fingerprint only if they are the same world.
    """

    root: Path
    frames: tuple[TruthFrame, ...]
    scenes: tuple[str, ...]
    scene_tokens: tuple[str, ...]  # same order as ``scenes``
    image_size: tuple[int, int]  # (width, height)
    fingerprint: str

    def frames_of(self, scenes: Sequence[str]) -> tuple[TruthFrame, ...]:
        """The frames of the named scenes, in file order."""
        wanted = set(scenes)
        return tuple(frame for frame in self.frames if frame.scene in wanted)


def _read_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error


def read_truth_world(root: str | Path) -> TruthWorld:
    """Read `root/truth/index.json` and the scene of every frame from `root/<version>/` tables.

    Raises:
        FileNotFoundError: the index or a table is missing (not a `cmcr prepare synthetic` folder).
        ValueError: the index has another format, its class list differs from the lidarseg one, or a
            frame's sample_data token is not in the tables.
    """
    root = Path(root)
    index_path = root / "truth" / "index.json"
    hint = "the folder must be written by `cmcr prepare synthetic --out DIR`"
    index = _read_json(index_path, hint)
    if not isinstance(index, dict) or index.get("format") != TRUTH_INDEX_FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise ValueError(f"{index_path}: format {found!r}, expected {TRUTH_INDEX_FORMAT!r}")
    if list(index.get("classes", [])) != list(FINE_CLASS_NAMES):
        raise ValueError(f"{index_path}: 'classes' is not the lidarseg fine class list (FINE_CLASS_NAMES)")
    tables = root / str(index["version"])
    sample_to_scene = {r["token"]: r["scene_token"] for r in _read_json(tables / "sample.json", hint)}
    data_to_sample = {r["token"]: r["sample_token"] for r in _read_json(tables / "sample_data.json", hint)}
    scene_records = _read_json(tables / "scene.json", hint)
    scene_names = {r["token"]: r["name"] for r in scene_records}
    frames = []
    for entry in index["frames"]:
        token = entry["sample_data_token"]
        if token not in data_to_sample:
            raise ValueError(f"{index_path}: frame {token} is not in {tables / 'sample_data.json'}")
        scene = scene_names[sample_to_scene[data_to_sample[token]]]
        image, truth = root / entry["image"], root / entry["truth"]
        frames.append(TruthFrame(image, truth, entry["channel"], scene, token))
    used = {frame.scene for frame in frames}
    ordered = [r for r in scene_records if r["name"] in used]
    width, height = index["image_size"]
    return TruthWorld(
        root=root,
        frames=tuple(frames),
        scenes=tuple(r["name"] for r in ordered),
        scene_tokens=tuple(r["token"] for r in ordered),
        image_size=(int(width), int(height)),
        fingerprint=hashlib.sha256(index_path.read_bytes()).hexdigest(),
    )


def split_holdout(world: TruthWorld, holdout_scenes: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training scenes, held-out scenes): the last ``holdout_scenes`` scenes of the world are held out."""
    if not 0 <= holdout_scenes < len(world.scenes):
        raise ValueError(
            f"data.holdout_scenes={holdout_scenes}: the world {world.root} has {len(world.scenes)} scenes "
            f"({', '.join(world.scenes)}); at least one must remain for training"
        )
    cut = len(world.scenes) - holdout_scenes
    return world.scenes[:cut], world.scenes[cut:]


def load_frame(frame: TruthFrame) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 RGB, coarse truth (H, W) uint8 in 0..16, 0 = ignore)."""
    with Image.open(frame.image) as image:
        rgb = np.asarray(image.convert("RGB"))
    with Image.open(frame.truth) as truth:
        fine = np.asarray(truth)
    if fine.shape != rgb.shape[:2]:
        raise ValueError(f"{frame.truth}: truth size {fine.shape} differs from image {frame.image} "
                         f"{rgb.shape[:2]}")
    if fine.max(initial=0) >= len(_FINE_TO_COARSE_LUT):
        raise ValueError(f"{frame.truth}: value {int(fine.max())} is not a lidarseg fine index (0..31)")
    return rgb, _FINE_TO_COARSE_LUT[fine]


def coarse_pixel_counts(frames: Sequence[TruthFrame]) -> np.ndarray:
    """(17,) int64 pixel count of every coarse id (0 = ignore) over the truth maps of ``frames``."""
    counts = np.zeros(len(COARSE_CLASS_NAMES), dtype=np.int64)
    for frame in frames:
        with Image.open(frame.truth) as truth:
            fine = np.asarray(truth)
        counts += np.bincount(_FINE_TO_COARSE_LUT[fine].ravel(), minlength=len(counts))
    return counts


@dataclass(frozen=True)
class TruthSample:
    """One (possibly cropped and flipped) frame: image (3, h, w) uint8, target (h, w) int64 coarse ids."""

    image: Tensor
    target: Tensor


@dataclass(frozen=True)
class TruthBatch:
    """A batch: images (B, 3, h, w) uint8 RGB and targets (B, h, w) int64 coarse ids (0 = ignore)."""

    images: Tensor
    targets: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> TruthBatch:
        move = {"device": device, "non_blocking": True}
        return TruthBatch(self.images.to(**move), self.targets.to(**move))


def collate_truth(samples: Sequence[TruthSample]) -> TruthBatch:
    """Stack samples of one size into a ``TruthBatch``."""
    return TruthBatch(torch.stack([s.image for s in samples]), torch.stack([s.target for s in samples]))


class TruthImageDataset(torch.utils.data.Dataset):
    """Map-style dataset of frames → ``TruthSample``.

    Args:
        frames: the frames to serve (e.g. ``world.frames_of(training_scenes)``).
        crop_size: (height, width) of a random crop; None = whole images (evaluation).
        flip: random horizontal flip with probability 1/2 (only with ``train``).
        seed: seed of the per-item generators.
        train: False disables every random choice (a centred crop when ``crop_size`` is given).
    """

    def __init__(
        self,
        frames: Sequence[TruthFrame],
        crop_size: tuple[int, int] | None = None,
        flip: bool = False,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        if not frames:
            raise ValueError("TruthImageDataset needs at least one frame")
        if crop_size is not None and (len(crop_size) != 2 or min(crop_size) < 1):
            raise ValueError(f"crop_size must be (height, width) >= 1, got {crop_size}")
        self.frames = tuple(frames)
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.flip = flip
        self.seed = seed
        self.train = train
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` makes."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> TruthSample:
        rgb, coarse = load_frame(self.frames[index])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.crop_size is not None:
            height, width = coarse.shape
            crop_h, crop_w = self.crop_size
            if crop_h > height or crop_w > width:
                raise ValueError(f"data.crop_size {self.crop_size} (height, width) exceeds the image size "
                                 f"({height}, {width}) of {self.frames[index].image}")
            if self.train:
                top = int(rng.integers(0, height - crop_h + 1))
                left = int(rng.integers(0, width - crop_w + 1))
            else:
                top, left = (height - crop_h) // 2, (width - crop_w) // 2
            window = (slice(top, top + crop_h), slice(left, left + crop_w))
            rgb, coarse = rgb[window], coarse[window]
        if self.train and self.flip and rng.random() < 0.5:
            rgb, coarse = rgb[:, ::-1], coarse[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        return TruthSample(image, torch.from_numpy(coarse.astype(np.int64)))
