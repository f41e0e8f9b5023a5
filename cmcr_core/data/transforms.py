"""Pretraining augmentations (SLidR's and CMCR's `utils/transforms.py`), every random choice explicit.

A training item travels through these functions as a `PairedSample`: points in the LiDAR frame, the camera
images, the point-to-pixel pairings and (optionally) superpixels. Cloud transforms move points only
(pairings are index-based and survive); mixed transforms change points, images and pairings together.

Deliberate differences from the reference code (documented in docs/pipeline.md):
- a crop maps a pixel by its centre, `floor((row - top + 0.5) * out_h / h)`, which always lands inside the
  output; the reference's `round((row - top) * out_h / h)` can produce `out_h` itself for tall crops;
- the crop is resampled at most `max_attempts` times, then the whole image is used (it keeps every pair),
  so a camera with few pairs can never loop forever;
- DropCuboids has one signature for every caller (D6, docs/differences.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairedSample:
    """One LiDAR sweep with its cameras.

    points:      (N, 4) float32, x, y, z (LiDAR frame, metres), intensity.
    images:      (C, H, W, 3) uint8 camera images (C cameras, all the same size).
    pairings:    (P, 4) int64, [point_index, camera_index, row, col] in `images` pixels.
    superpixels: (C, H, W) int64 ids per image, or None.
    extras:      optional per-point arrays that must follow point removal (e.g. labels), same N.
    """

    points: np.ndarray
    images: np.ndarray
    pairings: np.ndarray
    superpixels: np.ndarray | None = None
    extras: tuple[np.ndarray, ...] = ()


def rotation_z(rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) rotation about z by an angle drawn from U[0, 2π)."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def cloud_transform(names: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Compose the cloud transforms into one (3, 3) matrix applied as `xyz @ M.T`.

    "rotation": about z, U[0, 2π); "flip_axis": negate x with p = 0.5, then y with p = 0.5. Returning the
    matrix lets the caller move other geometry (e.g. CMCR occupancy queries) exactly like the points.
    """
    matrix = np.eye(3)
    for name in names:
        if name == "rotation":
            matrix = rotation_z(rng) @ matrix
        elif name == "flip_axis":
            flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, -1.0 if rng.random() < 0.5 else 1.0, 1.0])
            matrix = flip @ matrix
        else:
            raise ValueError(f"unknown cloud transform {name!r} (known: rotation, flip_axis)")
    return matrix


def apply_cloud_matrix(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Return a copy of (N, 3+) points with their first three columns multiplied by `matrix`."""
    out = points.copy()
    out[:, :3] = (points[:, :3].astype(np.float64) @ matrix.T).astype(points.dtype)
    return out


def drop_cuboids(sample: PairedSample, rng: np.random.Generator, min_pairs: int = 1024) -> PairedSample:
    """Remove the points inside a random axis-aligned box (SLidR's DropCuboids).

    The box is centred on a random point with half-extent = (range of xyz) * U(0, 0.2) / 2 per axis. Point
    indices are remapped; the drop is rejected (sample returned unchanged) when any camera that had pairs
    would keep fewer than `min_pairs`.
    """
    xyz = sample.points[:, :3]
    if len(xyz) == 0:
        return sample
    centre = xyz[rng.integers(len(xyz))]
    half = (xyz.max(0) - xyz.min(0)) * rng.uniform(0.0, 0.2) / 2.0
    inside = np.all(np.abs(xyz - centre) < half, axis=1)
    keep_pair = ~inside[sample.pairings[:, 0]]
    n_cameras = len(sample.images)
    before = np.bincount(sample.pairings[:, 1], minlength=n_cameras)
    after = np.bincount(sample.pairings[keep_pair, 1], minlength=n_cameras)
    if np.any((before > 0) & (after < min_pairs)):
        return sample
    new_index = np.cumsum(~inside) - 1
    pairings = sample.pairings[keep_pair].copy()
    pairings[:, 0] = new_index[pairings[:, 0]]
    return replace(
        sample,
        points=sample.points[~inside],
        pairings=pairings,
        extras=tuple(extra[~inside] for extra in sample.extras),
    )


def resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop, with torchvision RandomResizedCrop's sampling rule.

    Up to 10 draws of area = H·W·U(scale) and aspect = exp(U(log r_min, log r_max)); falls back to the
    largest centred crop of a clamped aspect ratio.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_pairings(
    pairings: np.ndarray, box: tuple[int, int, int, int], out_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Map (P, 4) pairings of one camera into a crop resized to `out_size`: (kept mask, new pairings)."""
    top, left, h, w = box
    rows, cols = pairings[:, 2], pairings[:, 3]
    kept = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    out = pairings[kept].copy()
    out[:, 2] = np.floor((out[:, 2] - top + 0.5) * out_size[0] / h).astype(np.int64)
    out[:, 3] = np.floor((out[:, 3] - left + 0.5) * out_size[1] / w).astype(np.int64)
    return kept, out


def resize_crop_image(
    image: np.ndarray, box: tuple[int, int, int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """Crop an (H, W, 3) uint8 image and resize it bilinearly (antialiased) to a (3, h, w) uint8 tensor."""
    top, left, h, w = box
    crop = torch.from_numpy(np.ascontiguousarray(image[top : top + h, left : left + w]))
    crop = crop.permute(2, 0, 1).unsqueeze(0).float()
    resized = F.interpolate(crop, size=out_size, mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)[0]


def resize_crop_labels(
    labels: np.ndarray, box: tuple[int, int, int, int], out_size: tuple[int, int]
) -> np.ndarray:
    """Crop an (H, W) integer map and resize it with nearest-neighbour sampling at pixel centres."""
    top, left, h, w = box
    rows = top + np.floor((np.arange(out_size[0]) + 0.5) * h / out_size[0]).astype(np.int64)
    cols = left + np.floor((np.arange(out_size[1]) + 0.5) * w / out_size[1]).astype(np.int64)
    return labels[np.ix_(rows, cols)]


@dataclass(frozen=True)
class CroppedCameras:
    """The cameras after ResizedCrop and flips, at crop resolution.

    images:      (C, 3, h, w) uint8 tensor.
    pairings:    (P, 4) int64 [point_index, camera_index, row, col] in crop pixels.
    superpixels: (C, h, w) int64 or None.
    boxes:       per camera (top, left, h, w) in original pixels, and whether it was flipped.
    """

    images: torch.Tensor
    pairings: np.ndarray
    superpixels: np.ndarray | None
    boxes: tuple[tuple[int, int, int, int], ...]
    flipped: tuple[bool, ...]


def crop_and_flip_cameras(
    sample: PairedSample,
    rng: np.random.Generator,
    out_size: tuple[int, int] = (224, 416),
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (14 / 9, 17 / 9),
    min_pairs: int = 1024,
    random_crop: bool = True,
    flip: bool = True,
    max_attempts: int = 50,
) -> CroppedCameras:
    """ResizedCrop then FlipHorizontal for every camera (as SLidR's transforms).

    A crop is redrawn until more than `min_pairs` pairs survive or more than 75 % of the camera's pairs do
    (at most `max_attempts` times, then the whole image is used). `random_crop=False` resizes the whole
    image (validation). Flip: p = 0.5 per camera, col -> w - 1 - col.
    """
    n_cameras, height, width = sample.images.shape[:3]
    images, pairings, superpixels, boxes, flips = [], [], [], [], []
    for camera in range(n_cameras):
        own = sample.pairings[sample.pairings[:, 1] == camera]
        box = (0, 0, height, width)
        if random_crop:
            for _ in range(max_attempts):
                candidate = resized_crop_params(height, width, scale, ratio, rng)
                kept, _ = crop_pairings(own, candidate, out_size)
                if kept.sum() > min_pairs or kept.sum() > 0.75 * len(own):
                    box = candidate
                    break
        _, mapped = crop_pairings(own, box, out_size)
        image = resize_crop_image(sample.images[camera], box, out_size)
        spx = (
            None
            if sample.superpixels is None
            else resize_crop_labels(sample.superpixels[camera], box, out_size)
        )
        flipped = bool(flip and rng.random() < 0.5)
        if flipped:
            image = image.flip(-1)
            mapped[:, 3] = out_size[1] - 1 - mapped[:, 3]
            spx = None if spx is None else spx[:, ::-1]
        images.append(image)
        pairings.append(mapped)
        superpixels.append(spx)
        boxes.append(box)
        flips.append(flipped)
    return CroppedCameras(
        images=torch.stack(images),
        pairings=np.concatenate(pairings) if pairings else np.zeros((0, 4), np.int64),
        superpixels=None if sample.superpixels is None else np.ascontiguousarray(np.stack(superpixels)),
        boxes=tuple(boxes),
        flipped=tuple(flips),
    )
