"""LiDAR and cameras see the same world: points projected with the devkit's calibration chain
(PROTOCOLS.md §3) land on camera truth pixels of their own class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.data_io import load_bin_file
from nuscenes.utils.geometry_utils import view_points
from PIL import Image
from pyquaternion import Quaternion

from cmcr_core.data.synthetic import CAMERA_CHANNELS


def project(nusc, lidar_token: str, camera_token: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Devkit chain: LiDAR -> ego(t_lidar) -> global -> ego(t_cam) -> camera -> pixels.

    Returns (u, v) (2, N) and depth (N,).
    """
    lidar = nusc.get("sample_data", lidar_token)
    cam = nusc.get("sample_data", camera_token)
    pc = LidarPointCloud(points.copy())
    cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
    pc.translate(np.array(cs["translation"]))
    pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
    pc.translate(np.array(pose["translation"]))
    pose = nusc.get("ego_pose", cam["ego_pose_token"])
    pc.translate(-np.array(pose["translation"]))
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix.T)
    cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
    pc.translate(-np.array(cs["translation"]))
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix.T)
    depth = pc.points[2].copy()
    uv = view_points(pc.points[:3], np.array(cs["camera_intrinsic"]), normalize=True)[:2]
    return uv, depth


def test_projected_points_land_on_pixels_of_their_class(nusc, synthetic_world: Path):
    index = json.loads((synthetic_world / "truth" / "index.json").read_text())
    truth_of = {frame["sample_data_token"]: frame["truth"] for frame in index["frames"]}
    agree = total = 0
    per_camera = {}
    for sample in nusc.sample:
        lidar_token = sample["data"]["LIDAR_TOP"]
        lidar = nusc.get("sample_data", lidar_token)
        points = LidarPointCloud.from_file(str(synthetic_world / lidar["filename"])).points
        labels = load_bin_file(str(synthetic_world / nusc.get("lidarseg", lidar_token)["filename"]))
        for channel in CAMERA_CHANNELS:
            camera_token = sample["data"][channel]
            cam = nusc.get("sample_data", camera_token)
            truth = np.asarray(Image.open(synthetic_world / truth_of[camera_token]))
            assert truth.shape == (cam["height"], cam["width"])
            uv, depth = project(nusc, lidar_token, camera_token, points)
            w, h = cam["width"], cam["height"]
            keep = (depth > 1.0) & (uv[0] > 0) & (uv[0] < w - 1) & (uv[1] > 0) & (uv[1] < h - 1)
            rows, cols = np.round(uv[1, keep]).astype(int), np.round(uv[0, keep]).astype(int)
            same = truth[rows, cols] == labels[keep]
            agree += int(same.sum())
            total += int(keep.sum())
            per_camera.setdefault(channel, []).append(same.mean())
    fraction = agree / total
    print(f"\nLiDAR/camera class consistency: {fraction:.4f} of {total} projected points (depth > 1 m); "
          + ", ".join(f"{ch} {np.mean(v):.3f}" for ch, v in per_camera.items()))
    assert total > 10_000
    assert fraction >= 0.9
    assert min(np.mean(v) for v in per_camera.values()) >= 0.8


def test_a_shifted_calibration_breaks_consistency(nusc, synthetic_world: Path):
    """The check above has teeth: projecting into the wrong camera's truth fails it."""
    index = json.loads((synthetic_world / "truth" / "index.json").read_text())
    truth_of = {frame["sample_data_token"]: frame["truth"] for frame in index["frames"]}
    sample = nusc.sample[0]
    lidar_token = sample["data"]["LIDAR_TOP"]
    lidar_file = synthetic_world / nusc.get("sample_data", lidar_token)["filename"]
    points = LidarPointCloud.from_file(str(lidar_file)).points
    labels = load_bin_file(str(synthetic_world / nusc.get("lidarseg", lidar_token)["filename"]))
    front, left = sample["data"]["CAM_FRONT"], sample["data"]["CAM_FRONT_LEFT"]
    uv, depth = project(nusc, lidar_token, front, points)
    truth = np.asarray(Image.open(synthetic_world / truth_of[left]))
    h, w = truth.shape
    keep = (depth > 1.0) & (uv[0] > 0) & (uv[0] < w - 1) & (uv[1] > 0) & (uv[1] < h - 1)
    wrong = truth[np.round(uv[1, keep]).astype(int), np.round(uv[0, keep]).astype(int)] == labels[keep]
    assert wrong.mean() < 0.8
