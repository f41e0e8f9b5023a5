"""Intersection kernels, normals and rotation helpers against naive references (ray marching, implicit
inside tests, pyquaternion)."""

from __future__ import annotations

import numpy as np
import pytest
from pyquaternion import Quaternion

from cmcr_core.data.synthetic import CAMERA_RIG
from cmcr_core.data.synthetic.geometry import (
    BOX,
    CYLINDER,
    ELLIPSOID,
    KERNELS,
    local_normals,
    quaternion_multiply,
    quaternion_to_matrix,
    yaw_quaternion,
)


def inside(kind: int, p: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Reference implicit inside test. p (..., 3) local points -> (...) bool."""
    q = p / half
    if kind == BOX:
        return np.abs(q).max(axis=-1) <= 1.0
    if kind == CYLINDER:
        return (q[..., 0] ** 2 + q[..., 1] ** 2 <= 1.0) & (np.abs(q[..., 2]) <= 1.0)
    return (q**2).sum(axis=-1) <= 1.0


def march(kind: int, o: np.ndarray, d: np.ndarray, half: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """First t (to `step`) at which the ray is inside, by dense sampling. o (N, 3), d (N, 3) -> (N,)."""
    ts = np.arange(0.0, 25.0, step)
    out = np.full(len(o), np.inf)
    for i in range(len(o)):
        hit = np.flatnonzero(inside(kind, o[i] + ts[:, None] * d[i], half))
        if len(hit):
            out[i] = ts[hit[0]]
    return out


@pytest.mark.parametrize("kind", [BOX, CYLINDER, ELLIPSOID])
def test_kernels_match_ray_marching(kind):
    rng = np.random.default_rng(kind)
    half = rng.uniform(0.3, 2.0, 3)
    n = 60
    # Origins outside the bounding sphere; half the rays aim at a point inside (hits), half at random.
    direction0 = rng.normal(size=(n, 3))
    origin = direction0 / np.linalg.norm(direction0, axis=1, keepdims=True) * rng.uniform(4.0, 8.0, (n, 1))
    target = rng.uniform(-0.7, 0.7, (n, 3)) * half
    target[n // 2 :] = rng.normal(size=(n - n // 2, 3)) * 3.0
    d = target - origin
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t = KERNELS[kind](origin.T.astype(np.float32), d.T.astype(np.float32), half.astype(np.float32))
    ref = march(kind, origin, d, half)
    assert np.isfinite(t[: n // 2]).all()
    # Grazing rays may differ by one marching step; everything else agrees to about a millimetre.
    both = np.isfinite(ref) & np.isfinite(t)
    assert np.array_equal(np.isfinite(ref), np.isfinite(t))
    np.testing.assert_allclose(t[both], ref[both], atol=3e-3)
    # A shared origin (3,) gives the same answer as per-ray origins.
    one = KERNELS[kind](origin[0].astype(np.float32), d[:1].T.astype(np.float32), half.astype(np.float32))
    assert one[0] == pytest.approx(t[0], abs=1e-5) or (np.isinf(one[0]) and np.isinf(t[0]))


@pytest.mark.parametrize("kind", [BOX, CYLINDER, ELLIPSOID])
def test_normals_point_out_of_the_solid(kind):
    rng = np.random.default_rng(10 + kind)
    half = rng.uniform(0.3, 2.0, 3)
    origin = rng.normal(size=(500, 3))
    origin = origin / np.linalg.norm(origin, axis=1, keepdims=True) * 6.0
    d = rng.uniform(-0.55, 0.55, (500, 3)) * half - origin  # targets inside every kind
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t = KERNELS[kind](origin.T.astype(np.float32), d.T.astype(np.float32), half.astype(np.float32))
    hit = origin + t[:, None] * d
    n = local_normals(np.full(len(t), kind), hit.T.astype(np.float32),
                      np.repeat(half[:, None], len(t), axis=1).astype(np.float32)).T
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    eps = 1e-3
    assert not inside(kind, hit + eps * n, half).any()
    assert inside(kind, hit - eps * n, half).all()
    assert (np.einsum("ij,ij->i", n, d) < 0).all()  # rays enter through front faces
    if kind == ELLIPSOID:
        grad = hit / half**2
        np.testing.assert_allclose(n, grad / np.linalg.norm(grad, axis=1, keepdims=True), atol=1e-4)


def test_quaternion_helpers_match_pyquaternion():
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = rng.normal(size=4), rng.normal(size=4)
        a /= np.linalg.norm(a)
        b /= np.linalg.norm(b)
        np.testing.assert_allclose(quaternion_to_matrix(a), Quaternion(a).rotation_matrix, atol=1e-12)
        product = (Quaternion(a) * Quaternion(b)).elements
        np.testing.assert_allclose(quaternion_multiply(a, b), product, atol=1e-12)
    yaw = 0.7
    reference = Quaternion(axis=[0, 0, 1], angle=yaw).elements
    np.testing.assert_allclose(yaw_quaternion(yaw), reference, atol=1e-12)


def test_camera_rig_axes_follow_nuscenes_conventions():
    for cam in CAMERA_RIG:
        rot = Quaternion(cam.rotation).rotation_matrix  # camera -> ego
        theta = np.deg2rad(cam.yaw_deg)
        # Optical axis (camera z) horizontal at the camera's yaw; image down (camera y) is ego down.
        np.testing.assert_allclose(rot @ [0, 0, 1], [np.cos(theta), np.sin(theta), 0], atol=1e-12)
        np.testing.assert_allclose(rot @ [0, 1, 0], [0, 0, -1], atol=1e-12)
        np.testing.assert_allclose(rot @ [1, 0, 0], [np.sin(theta), -np.cos(theta), 0], atol=1e-12)
