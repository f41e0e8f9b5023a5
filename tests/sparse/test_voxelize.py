"""voxelize / voxel_mean / batch_coordinates on the test device (CMCR_TEST_DEVICE, see
tests/support/device.py) against a naive Python + numpy implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmcr_core.sparse import batch_coordinates, voxel_mean, voxelize


def _naive(points: np.ndarray, voxel_size: float, cylindrical: bool, batch: np.ndarray | None = None):
    """Floor-quantise with numpy; first occurrence per voxel by a dictionary walk in input order."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    if cylindrical:
        q = np.stack([np.sqrt(x**2 + y**2) / voxel_size, np.degrees(np.arctan2(y, x)), z / voxel_size], 1)
    else:
        q = points[:, :3] / voxel_size
    cells = np.floor(q).astype(np.int64)
    if batch is not None:
        cells = np.concatenate([batch[:, None], cells], 1)
    first: dict[tuple, int] = {}
    for i, c in enumerate(map(tuple, cells.tolist())):
        first.setdefault(c, i)
    return cells, first


def _points(seed: int, n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Clustered so that many voxels hold several points; negative coordinates on every axis.
    centres = rng.uniform(-3.0, 3.0, (20, 3))
    return centres[rng.integers(0, 20, n)] + rng.normal(0.0, 0.06, (n, 3))


@pytest.mark.parametrize("cylindrical", [False, True])
def test_voxelize_matches_naive(cylindrical: bool, device) -> None:
    points = _points(1)
    cells, first = _naive(points, 0.1, cylindrical)
    vox = voxelize(torch.from_numpy(points).to(device), 0.1, cylindrical=cylindrical)
    assert vox.coords.device == vox.inverse.device == vox.representative.device == device
    coords = vox.coords.cpu().numpy()
    assert vox.coords.dtype == torch.int32 and coords.shape[1] == 3
    # Unique voxels, the same set as the naive version, sorted lexicographically.
    assert len({tuple(c) for c in coords.tolist()}) == vox.num_voxels == len(first)
    assert sorted(map(tuple, coords.tolist())) == [tuple(c) for c in coords.tolist()]
    assert set(map(tuple, coords.tolist())) == set(first)
    # Inverse map reproduces the floored coordinates; representative = first point in input order.
    np.testing.assert_array_equal(coords[vox.inverse.cpu().numpy()], cells)
    expected_rep = [first[tuple(c)] for c in coords.tolist()]
    assert vox.representative.tolist() == expected_rep
    assert len(first) < len(points) / 2  # the test data really has multi-point voxels


def test_cylindrical_uses_degrees_for_azimuth(device) -> None:
    pts = torch.tensor([[1.0, 0.0, 0.05], [0.0, 2.0, -0.05], [-1.0, -1e-9, 0.0], [-1.0, 0.0, 0.0]],
                       dtype=torch.float64, device=device)
    vox = voxelize(pts, 0.1, cylindrical=True)
    rows = vox.coords[vox.inverse].tolist()
    assert rows[0] == [10, 0, 0]
    assert rows[1] == [20, 90, -1]
    assert rows[2] == [10, -180, 0]  # phi just below -180 deg is not wrapped
    assert rows[3] == [10, 180, 0]  # phi exactly 180 deg gets its own bin
    assert math.isclose(np.degrees(np.arctan2(2.0, 0.0)), 90.0)


def test_batch_index_separates_samples(device) -> None:
    points = _points(2, 800)
    batch = np.repeat([0, 1], 400)
    points[400:] = points[:400]  # identical geometry in both samples
    cells, first = _naive(points, 0.2, False, batch)
    vox = voxelize(torch.from_numpy(points).to(device), 0.2, batch=torch.from_numpy(batch).to(device))
    assert vox.coords.shape[1] == 4
    assert set(map(tuple, vox.coords.tolist())) == set(first)
    np.testing.assert_array_equal(vox.coords[vox.inverse].cpu().numpy(), cells)
    assert (vox.coords[:, 0] == 1).sum() == (vox.coords[:, 0] == 0).sum()


def test_voxel_mean_matches_naive(device) -> None:
    points = _points(3, 500)
    vox = voxelize(torch.from_numpy(points).to(device), 0.3)
    feats = torch.from_numpy(np.random.default_rng(0).normal(size=(500, 2)))
    mean = voxel_mean(feats.to(device), vox.inverse, vox.num_voxels).cpu()
    inverse = vox.inverse.cpu().numpy()
    for v in range(vox.num_voxels):
        np.testing.assert_allclose(mean[v].numpy(), feats.numpy()[inverse == v].mean(0), rtol=1e-12)


def test_batch_coordinates_prepends_sample_index(device) -> None:
    a = torch.tensor([[1, 2, 3]], dtype=torch.int32, device=device)
    b = torch.tensor([[4, 5, 6], [7, 8, 9]], dtype=torch.int32, device=device)
    assert batch_coordinates([a, b]).device == device
    assert batch_coordinates([a, b]).tolist() == [[0, 1, 2, 3], [1, 4, 5, 6], [1, 7, 8, 9]]


def test_bad_input_is_rejected(device) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        voxelize(torch.tensor([[0.0, float("nan"), 0.0]], device=device), 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(torch.zeros(2, 3, device=device), 0.0)
    with pytest.raises(ValueError, match="span"):
        voxelize(torch.tensor([[1e6, 0.0, 0.0]], device=device), 0.1)
