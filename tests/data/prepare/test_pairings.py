"""Pairings and projection matrices against nuscenes-devkit's own calibration chain."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import view_points
from pyquaternion import Quaternion

from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.projection import point_pairings

from .conftest import VERSION


def devkit_chain(nusc: NuScenes, lidar_token: str, camera_token: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps of `NuScenesExplorer.map_pointcloud_to_image` with devkit objects, keeping every point.

    The devkit keeps the cloud in float32 between steps (with global coordinates of hundreds of metres
    that costs up to ~0.1 px); here the cloud is promoted to float64 first, the only change.

    Returns ((3, N) view_points output, (N,) depths) in point order.
    """
    cam = nusc.get("sample_data", camera_token)
    lidar = nusc.get("sample_data", lidar_token)
    pc = LidarPointCloud.from_file(f"{nusc.dataroot}/{lidar['filename']}")
    pc.points = pc.points.astype(np.float64)
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
    return view_points(pc.points[:3], np.array(cs["camera_intrinsic"]), normalize=True), pc.points[2].copy()


@pytest.fixture(scope="module")
def nusc(world):
    return NuScenes(VERSION, str(world), verbose=False)


FLOAT32_PX = 0.1  # bound on the devkit's own float32 error in pixels (measured max 0.08 on this world)


def test_pairings_match_the_devkit_projection(prepared_plain, nusc):
    dataset = PreparedDataset(prepared_plain, "all")
    total_pairs = near_ties = 0
    for i in range(len(dataset)):
        item = dataset[i]
        for c, camera_token in enumerate(item.camera_tokens):
            height, width = item.image_hw[c]
            mine = item.pairings[item.pairings[:, 1] == c]
            uv, depth = devkit_chain(nusc, item.lidar_token, camera_token)
            # PROTOCOLS §3: strict 0-pixel margins, depth > 1 m, pixel = (round(v), round(u)).
            keep = (depth > 1.0) & (uv[0] > 0) & (uv[0] < width - 1) & (uv[1] > 0) & (uv[1] < height - 1)
            index = np.nonzero(keep)[0]
            pixels = np.round(uv[:, index])
            expected = np.stack([index, np.full_like(index, c), pixels[1], pixels[0]], axis=1)
            np.testing.assert_array_equal(mine, expected)
            total_pairs += len(mine)

            # The devkit's own function (float32, 1-pixel margins, no indices): on the points safely inside
            # both margins its points are ours, in the same order, within its float32 error.
            devkit_uv, _, _ = nusc.explorer.map_pointcloud_to_image(item.lidar_token, camera_token)
            margin = 1 + FLOAT32_PX
            safe = keep & (uv[0] > margin) & (uv[1] > margin) & (uv[0] < width - margin) \
                & (uv[1] < height - margin) & (depth > 1.0 + 1e-3)
            near_margin = keep & ~safe
            assert len(devkit_uv[0]) - int(safe.sum()) <= int(near_margin.sum())
            matched = _match_in_order(devkit_uv[:2].T, uv[:2, safe].T)
            np.testing.assert_allclose(devkit_uv[:2, matched], uv[:2, safe], atol=FLOAT32_PX)
            rows_cols = mine[np.isin(mine[:, 0], np.nonzero(safe)[0])][:, [3, 2]]
            devkit_pixels = np.round(devkit_uv[:2, matched].T)
            differs = np.any(rows_cols != devkit_pixels, axis=1)
            # A pixel may differ only where the coordinate sits within the float32 error of a .5 tie.
            tie_distance = np.abs(np.abs(uv[:2, safe].T - np.floor(uv[:2, safe].T)) - 0.5).min(axis=1)
            assert np.all(tie_distance[differs] < FLOAT32_PX)
            near_ties += int(differs.sum())
    assert total_pairs > 100  # the world is built so that many points land in the images
    assert near_ties <= 0.01 * total_pairs


def _match_in_order(devkit_points: np.ndarray, ours: np.ndarray) -> np.ndarray:
    """Positions of our points in the devkit's output (both in point order; the devkit's may have extras)."""
    positions, j = [], 0
    for point in ours:
        while np.abs(devkit_points[j] - point).max() > FLOAT32_PX:
            j += 1
        positions.append(j)
        j += 1
    return np.asarray(positions, dtype=np.int64)


def test_stored_projection_matrix_reproduces_the_pairings(prepared_plain):
    dataset = PreparedDataset(prepared_plain, "all")
    item = dataset[0]
    assert item.projections.shape == (6, 3, 4)
    again = point_pairings(item.points[:, :3], item.projections, item.image_hw)
    np.testing.assert_array_equal(again, item.pairings)
    # Every pairing is a valid pixel of its image.
    hw = item.image_hw[item.pairings[:, 1]]
    assert np.all((item.pairings[:, 2:] >= 0) & (item.pairings[:, 2:] < hw))


def test_point_pairings_on_an_analytic_camera():
    # Camera looking along +x of the LiDAR frame: x -> depth, -y -> u, -z -> v; f = 10, c = (5, 4), 10x8.
    intrinsic = np.array([[10.0, 0, 5], [0, 10.0, 4], [0, 0, 1]])
    rotation = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
    projection = intrinsic @ np.concatenate([rotation, np.zeros((3, 1))], axis=1)
    points = np.array([
        [2.0, 0.0, 0.0],    # centre: u=5, v=4
        [0.5, 0.0, 0.0],    # depth 0.5 <= 1 m: dropped
        [2.0, 0.99, 0.0],   # u = 5 - 4.95 = 0.05 > 0: kept, col 0
        [2.0, 1.0, 0.0],    # u = 0 exactly: dropped (strict)
        [-3.0, 0.0, 0.0],   # behind
        [4.0, -1.0, -0.5],  # u = 7.5, v = 5.25 -> (5, 8) (round half to even)
    ])
    pairs = point_pairings(points, projection[None], np.array([[8, 10]]))
    np.testing.assert_array_equal(pairs, [[0, 0, 4, 5], [2, 0, 4, 0], [5, 0, 5, 8]])
