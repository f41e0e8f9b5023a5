"""Read and check the files of one keyframe and compute what is stored for it (runs in workers).

Every input problem (missing file, wrong size, undecodable JPEG, label count mismatch) raises
`SampleFailure` with the offending path and a reason, so the caller can record it and go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from cmcr_core.data.nuscenes_plan import SampleTask
from cmcr_core.data.projection import point_pairings
from cmcr_core.data.shards import SampleRecord
from cmcr_core.data.superpixels import SlicParams, decode_jpeg, segment_scaled

_POINT_COLUMNS = 5  # x, y, z, intensity, ring index (float32)
# Decoding at 1/8 scale still runs the whole entropy decoder, so it verifies a JPEG cheaply.
_VERIFY_SCALE = 0.125


class SampleFailure(Exception):
    """An input file of a sample is missing or unusable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class SampleContext:
    """Per-run settings every sample needs (picklable, sent to worker processes)."""

    camera_names: tuple[str, ...]
    fine_to_coarse: np.ndarray | None  # (K,) uint8; None = release without lidarseg labels
    slic: SlicParams | None  # None = no superpixels
    min_depth: float = 1.0


def load_points(path: str) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity of a `.pcd.bin` (the 5-column layout `LidarPointCloud.from_file`
    reads; done with numpy because importing the devkit costs seconds in every worker process)."""
    if not os.path.isfile(path):
        raise SampleFailure(path, "missing point file")
    size = os.path.getsize(path)
    row_bytes = 4 * _POINT_COLUMNS
    if size == 0 or size % row_bytes:
        raise SampleFailure(
            path, f"size {size} bytes is not a positive multiple of {row_bytes} (5 float32 columns)"
        )
    points = np.ascontiguousarray(np.fromfile(path, dtype=np.float32).reshape(-1, _POINT_COLUMNS)[:, :4])
    if not np.isfinite(points).all():
        raise SampleFailure(path, "non-finite values in the point file")
    return points


def load_labels(path: str, num_points: int, fine_to_coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw lidarseg labels (N,) uint8 (as the devkit's `load_bin_file`) and their coarse ids (N,) uint8."""
    if not os.path.isfile(path):
        raise SampleFailure(path, "missing lidarseg label file")
    fine = np.fromfile(path, dtype=np.uint8)
    if len(fine) != num_points:
        raise SampleFailure(path, f"{len(fine)} labels for {num_points} points")
    if int(fine.max()) >= len(fine_to_coarse):
        raise SampleFailure(path, f"label {int(fine.max())} is not a category index of category.json")
    return fine, fine_to_coarse[fine]


def read_image(
    path: str, expected_hw: tuple[int, int], slic: SlicParams | None
) -> tuple[bytes, np.ndarray | None]:
    """Original JPEG bytes (verified by decoding) and, when asked, its (H, W) uint16 superpixels."""
    if not os.path.isfile(path):
        raise SampleFailure(path, "missing image file")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        image, hw = decode_jpeg(data, slic.scale if slic is not None else _VERIFY_SCALE)
    except (OSError, ValueError, SyntaxError) as exc:
        raise SampleFailure(path, f"cannot decode JPEG ({exc})") from None
    if tuple(hw) != tuple(expected_hw):
        raise SampleFailure(
            path, f"image is {hw[1]}x{hw[0]} but sample_data says {expected_hw[1]}x{expected_hw[0]}"
        )
    if slic is None:
        return data, None
    return data, segment_scaled(image, hw, slic)


def process_sample(task: SampleTask, context: SampleContext) -> SampleRecord:
    """Everything stored for one keyframe; raises SampleFailure for a missing or corrupt input file."""
    points = load_points(task.lidar_path)
    labels_fine = labels = None
    if context.fine_to_coarse is not None:
        if task.lidarseg_path is None:
            raise SampleFailure(task.lidar_path, "no lidarseg record for this LiDAR sample_data")
        labels_fine, labels = load_labels(task.lidarseg_path, len(points), context.fine_to_coarse)
    jpegs, superpixels = [], []
    for path, hw in zip(task.camera_paths, task.camera_hw, strict=True):
        data, segments = read_image(path, hw, context.slic)
        jpegs.append(data)
        superpixels.append(segments)
    image_hw = np.asarray(task.camera_hw, dtype=np.int32)
    return SampleRecord(
        sample_token=task.sample_token,
        scene=task.scene,
        timestamp=task.timestamp,
        lidar_token=task.lidar_token,
        lidar_timestamp=task.lidar_timestamp,
        camera_tokens=list(task.camera_tokens),
        camera_timestamps=list(task.camera_timestamps),
        points=points,
        labels_fine=labels_fine,
        labels=labels,
        jpegs=jpegs,
        image_hw=image_hw,
        projections=task.projections,
        pairings=point_pairings(points[:, :3], task.projections, image_hw, context.min_depth),
        superpixels=superpixels if context.slic is not None else None,
    )
