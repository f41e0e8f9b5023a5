"""Everything `prepare` needs from the nuScenes tables, read through nuscenes-devkit.

The parent process turns the devkit tables into small picklable `SampleTask`s (paths, tokens, timestamps,
projection matrices), so worker processes never load the tables themselves (the trainval tables take
tens of seconds and gigabytes per copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmcr_core.data.projection import lidar_to_camera_transform, projection_matrix

LIDAR_CHANNEL = "LIDAR_TOP"
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


@dataclass(frozen=True)
class SampleTask:
    """One keyframe to prepare: what to read and the calibration that goes with it (C cameras)."""

    sample_token: str
    scene: str
    timestamp: int
    lidar_token: str
    lidar_timestamp: int
    lidar_path: str
    lidarseg_path: str | None  # None without a lidarseg table (e.g. v1.0-test) or record for this sweep
    camera_tokens: tuple[str, ...]
    camera_timestamps: tuple[int, ...]
    camera_paths: tuple[str, ...]
    camera_hw: tuple[tuple[int, int], ...]  # (height, width) from sample_data, checked against the JPEG
    projections: np.ndarray  # (C, 3, 4) float64 LiDAR -> pixel


def load_nuscenes(dataroot: str | os.PathLike[str], version: str) -> Any:
    """Load a nuScenes release with the devkit; a missing folder is a clear ValueError."""
    from nuscenes.nuscenes import NuScenes

    table_dir = os.path.join(os.fspath(dataroot), version)
    if not os.path.isdir(table_dir):
        raise ValueError(f"no nuScenes tables at {table_dir} (check --dataroot and --version)")
    try:
        return NuScenes(version=version, dataroot=os.fspath(dataroot), verbose=False)
    except AssertionError as exc:
        # The devkit refuses a release whose lidarseg file count differs from its table: name the files.
        missing = _missing_label_files(os.fspath(dataroot), version)
        detail = f"; missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else ""
        raise ValueError(f"nuscenes-devkit cannot load {table_dir}: {exc}{detail}") from exc


def _missing_label_files(dataroot: str, version: str) -> list[str]:
    import json

    table = os.path.join(dataroot, version, "lidarseg.json")
    if not os.path.isfile(table):
        return []
    with open(table, encoding="utf-8") as handle:
        records = json.load(handle)
    paths = (os.path.join(dataroot, record["filename"]) for record in records)
    return [path for path in paths if not os.path.isfile(path)]


def scene_sample_tokens(nusc: Any, scene: dict[str, Any]) -> list[str]:
    """Sample tokens of a scene in time order (linked list), checked against `nbr_samples`."""
    tokens = []
    token = scene["first_sample_token"]
    while token:
        tokens.append(token)
        token = nusc.get("sample", token)["next"]
    if len(tokens) != scene["nbr_samples"]:
        raise ValueError(
            f"scene {scene['name']}: nbr_samples is {scene['nbr_samples']} "
            f"but its sample list has {len(tokens)}"
        )
    return tokens


def fine_to_coarse_table(nusc: Any) -> np.ndarray | None:
    """(K,) uint8 lookup fine lidarseg index -> coarse id, built by category *name* (docs/data-format.md).

    Returns None when the release has no lidarseg/panoptic table (no labels to map).
    """
    from cmcr_core.data.labels import fine_to_coarse_lut

    if not hasattr(nusc, "lidarseg_name2idx_mapping"):
        return None
    return np.asarray(fine_to_coarse_lut(nusc.lidarseg_name2idx_mapping), dtype=np.uint8)


def fine_class_names(nusc: Any) -> list[str] | None:
    """Category names by lidarseg index ("" for unused indices), or None without lidarseg."""
    if not hasattr(nusc, "lidarseg_idx2name_mapping"):
        return None
    mapping = nusc.lidarseg_idx2name_mapping
    return [mapping.get(i, "") for i in range(max(mapping) + 1)]


def has_lidarseg(nusc: Any) -> bool:
    """Whether lidarseg labels are available (table loaded and not empty, as in the devkit)."""
    return len(getattr(nusc, "lidarseg", [])) > 0


def build_sample_task(nusc: Any, sample_token: str, scene_name: str, with_labels: bool) -> SampleTask:
    """Collect the files, tokens and calibration of one keyframe (LIDAR_TOP + the six cameras)."""
    sample = nusc.get("sample", sample_token)
    data = sample["data"]
    missing = [ch for ch in (LIDAR_CHANNEL, *CAMERA_NAMES) if ch not in data]
    if missing:
        raise ValueError(f"sample {sample_token} (scene {scene_name}) has no keyframe data for {missing}")
    lidar = nusc.get("sample_data", data[LIDAR_CHANNEL])
    lidar_calibration = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    lidar_pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    cameras = [nusc.get("sample_data", data[ch]) for ch in CAMERA_NAMES]
    projections = []
    for cam in cameras:
        calibration = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
        transform = lidar_to_camera_transform(
            lidar_calibration, lidar_pose, nusc.get("ego_pose", cam["ego_pose_token"]), calibration
        )
        try:
            projections.append(projection_matrix(transform, calibration["camera_intrinsic"]))
        except ValueError as exc:
            raise ValueError(f"calibrated_sensor {calibration['token']}: {exc}") from exc
    lidarseg_path = None
    if with_labels:
        # lidarseg records are keyed by the LiDAR sample_data token (not the sample token); a missing
        # record leaves the path None and the sample becomes a failure record, not a crash.
        try:
            lidarseg_path = os.path.join(nusc.dataroot, nusc.get("lidarseg", lidar["token"])["filename"])
        except KeyError:
            lidarseg_path = None
    return SampleTask(
        sample_token=sample_token,
        scene=scene_name,
        timestamp=int(sample["timestamp"]),
        lidar_token=lidar["token"],
        lidar_timestamp=int(lidar["timestamp"]),
        lidar_path=os.path.join(nusc.dataroot, lidar["filename"]),
        lidarseg_path=lidarseg_path,
        camera_tokens=tuple(cam["token"] for cam in cameras),
        camera_timestamps=tuple(int(cam["timestamp"]) for cam in cameras),
        camera_paths=tuple(os.path.join(nusc.dataroot, cam["filename"]) for cam in cameras),
        camera_hw=tuple((int(cam["height"]), int(cam["width"])) for cam in cameras),
        projections=np.stack(projections),
    )
