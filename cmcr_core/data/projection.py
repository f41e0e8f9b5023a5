"""LiDAR → camera projection and point-to-pixel pairings (the chain of nuscenes-devkit's
`map_pointcloud_to_image`, as SLidR uses it; docs/data-format.md).

The nuScenes calibration chain (LiDAR calibrated_sensor → LiDAR-time ego_pose → camera-time ego_pose⁻¹ →
camera calibrated_sensor⁻¹ → intrinsics) is composed into one 3×4 matrix per (sample, camera) so all six
cameras are projected with one batched matmul. The matrices are built from the devkit's own
`transform_matrix` and pyquaternion, so they follow the devkit's conventions exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_DEPTH_M = 1.0


def lidar_to_camera_transform(
    lidar_calibration: Mapping[str, Any],
    lidar_pose: Mapping[str, Any],
    camera_pose: Mapping[str, Any],
    camera_calibration: Mapping[str, Any],
) -> np.ndarray:
    """4×4 rigid transform from the LiDAR sensor frame to the camera frame (the devkit chain's steps 1–4).

    Args:
        lidar_calibration, camera_calibration: `calibrated_sensor` records (translation, rotation w-x-y-z).
        lidar_pose, camera_pose: `ego_pose` records of the LiDAR and camera sample_data.

    Returns:
        (4, 4) float64 matrix T with p_cam = T · [p_lidar, 1].
    """
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion

    def rigid(record: Mapping[str, Any], inverse: bool) -> np.ndarray:
        return transform_matrix(record["translation"], Quaternion(record["rotation"]), inverse=inverse)

    return (
        rigid(camera_calibration, True)
        @ rigid(camera_pose, True)
        @ rigid(lidar_pose, False)
        @ rigid(lidar_calibration, False)
    )


def projection_matrix(camera_from_lidar: np.ndarray, intrinsic: Sequence[Sequence[float]]) -> np.ndarray:
    """3×4 LiDAR → pixel projection P = K · T[:3]; (u, v, depth) = P·[p, 1] with u, v divided by depth.

    Args:
        camera_from_lidar: (4, 4) from `lidar_to_camera_transform`.
        intrinsic: (3, 3) `camera_intrinsic`; its last row must be (0, 0, 1) so that the third
            row of P is the camera-frame depth.

    Returns:
        (3, 4) float64.
    """
    k = np.asarray(intrinsic, dtype=np.float64)
    if k.shape != (3, 3) or not np.allclose(k[2], (0.0, 0.0, 1.0)):
        raise ValueError(
            f"camera_intrinsic must be a 3x3 pinhole matrix with last row (0, 0, 1), got {k.tolist()}"
        )
    return k @ camera_from_lidar[:3]


def point_pairings(
    points_xyz: np.ndarray,
    projections: np.ndarray,
    image_hw: np.ndarray,
    min_depth: float = MIN_DEPTH_M,
) -> np.ndarray:
    """Point-to-pixel pairings of one LiDAR sweep with every camera (the devkit chain's steps 5–7).

    A point pairs with camera c when its depth > min_depth and 0 < u < W − 1, 0 < v < H − 1 (strict,
    SLidR's margins; the devkit's `map_pointcloud_to_image` uses 1 < u, 1 < v); its pixel is
    (round(v), round(u)) with numpy's round-half-to-even.

    Args:
        points_xyz: (N, 3) points in the LiDAR sensor frame.
        projections: (C, 3, 4) LiDAR → pixel matrices.
        image_hw: (C, 2) image (height, width) per camera.
        min_depth: depth threshold in metres.

    Returns:
        (P, 4) int32 rows [point_index, camera_index, row, col], grouped by camera in camera order and by
        ascending point index within a camera.
    """
    points = np.asarray(points_xyz, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    projected = np.einsum("cij,nj->cni", np.asarray(projections, dtype=np.float64), homogeneous)
    depth = projected[..., 2]
    in_front = depth > min_depth
    # Divide only where the depth is positive to avoid warnings for points behind the camera.
    safe_depth = np.where(in_front, depth, 1.0)
    u = projected[..., 0] / safe_depth
    v = projected[..., 1] / safe_depth
    height = np.asarray(image_hw, dtype=np.float64)[:, 0:1]
    width = np.asarray(image_hw, dtype=np.float64)[:, 1:2]
    keep = in_front & (u > 0) & (u < width - 1) & (v > 0) & (v < height - 1)
    camera_index, point_index = np.nonzero(keep)
    rows = np.round(v[camera_index, point_index])
    cols = np.round(u[camera_index, point_index])
    return np.stack([point_index, camera_index, rows, cols], axis=1).astype(np.int32)
