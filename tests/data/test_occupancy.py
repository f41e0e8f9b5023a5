"""Occupancy queries are correct by construction; the neighbour search equals a brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcr_core.data.occupancy import (
    QUERY_INTENSITY,
    QUERY_OCCUPANCY,
    OccupancyQueries,
    query_group_sizes,
    sample_occupancy_queries,
)
from cmcr_core.ops.geometry import radius_neighbours


def test_group_sizes_of_the_reference():
    assert query_group_sizes(2048) == (684, 682, 682)
    assert sum(query_group_sizes(100)) == 100


def test_queries_lie_on_the_rays_of_their_points_with_the_right_labels():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-30, 30, (400, 3)), rng.uniform(0, 255, (400, 1))], 1)
    queries = sample_occupancy_queries(points.astype(np.float32), np.random.default_rng(1), 2048, delta=0.1)
    assert queries.shape == (2048, 5) and queries.dtype == np.float32
    xyz = points[:, :3]
    for start, stop, group in ((0, 684, "in"), (684, 1366, "out"), (1366, 2048, "far")):
        for q in queries[start:stop]:
            # The source point: the one whose ray through the origin passes through the query.
            direction = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
            along = xyz @ (q[:3] / np.linalg.norm(q[:3]))
            on_ray = np.linalg.norm(np.cross(direction, q[:3]), axis=1) < 1e-3
            candidates = np.flatnonzero(on_ray & (along > 0))
            assert len(candidates) >= 1, group
            s = candidates[np.argmin(np.abs(np.linalg.norm(xyz[candidates], axis=1) - np.linalg.norm(q[:3])))]
            gap = np.linalg.norm(q[:3]) - np.linalg.norm(xyz[s])  # signed distance along the ray
            if group == "in":
                assert 0 <= gap <= 0.1 + 1e-4 and q[QUERY_OCCUPANCY] == 1
                assert q[QUERY_INTENSITY] == pytest.approx(points[s, 3] / 255, rel=1e-5)
            elif group == "out":
                assert -0.1 - 1e-4 <= gap <= 0 and q[QUERY_OCCUPANCY] == 0
                assert q[QUERY_INTENSITY] == pytest.approx(points[s, 3] / 255, rel=1e-5)
            else:
                assert gap <= 1e-4 and q[QUERY_OCCUPANCY] == 0 and q[QUERY_INTENSITY] == -1
    # u ~ U(0, 1): the in/out offsets and far fractions spread over their whole range.
    far_fraction = np.linalg.norm(queries[1366:, :3], axis=1)
    assert far_fraction.min() < 5 and far_fraction.max() > 20


def test_queries_are_reproducible_and_follow_the_hook_protocol():
    points = np.random.default_rng(0).uniform(-5, 5, (50, 4)).astype(np.float32)
    hook = OccupancyQueries(num_queries=30)
    a = hook(points, np.random.default_rng(7))["occupancy_queries"]
    b = sample_occupancy_queries(points, np.random.default_rng(7), 30)
    assert np.array_equal(a, b) and a.shape == (30, 5)  # 50 points: each group drawn without replacement
    few = sample_occupancy_queries(points[:3], np.random.default_rng(7), 30)  # with replacement
    assert few.shape == (30, 5)


def brute_force(queries, points, qb, pb, radius, k):
    pairs = set()
    for i in range(len(queries)):
        same = np.flatnonzero(pb == qb[i])
        d = np.linalg.norm(points[same].astype(np.float64) - queries[i].astype(np.float64), axis=1)
        order = np.argsort(d, kind="stable")[:k]
        pairs |= {(i, int(same[j])) for j in order if d[j] < radius}
    return pairs


@pytest.mark.parametrize("chunk", [7, 1024])
def test_neighbour_search_equals_brute_force_per_sample(chunk, device):
    rng = np.random.default_rng(chunk)
    # Two samples overlapping in space (they must not see each other), one dense clump (> 32 neighbours),
    # rows of the samples interleaved (no sorted-batch assumption).
    points = np.concatenate([rng.uniform(-4, 4, (600, 3)), rng.normal(0, 0.3, (200, 3))]).astype(np.float32)
    pb = rng.integers(0, 2, len(points))
    queries = np.concatenate([rng.uniform(-5, 5, (150, 3)), rng.normal(0, 0.2, (30, 3))]).astype(np.float32)
    qb = rng.integers(0, 2, len(queries))
    on = [torch.from_numpy(a).to(device) for a in (queries, points, qb, pb)]  # the search runs there
    qi, pi = radius_neighbours(on[0], on[1], 1.0, 32, on[2], on[3], chunk_size=chunk)
    assert qi.device == pi.device == device
    qi, pi = qi.cpu(), pi.cpu()
    got = list(zip(qi.tolist(), pi.tolist(), strict=True))
    assert set(got) == brute_force(queries, points, qb, pb, 1.0, 32) and len(got) == len(set(got))
    counts = np.bincount(qi.numpy(), minlength=len(queries))
    assert counts.max() == 32 and counts.min() == 0  # capped, and some far queries have no neighbour
    # Sorted by query, nearest first.
    assert bool((qi[1:] >= qi[:-1]).all())
    d = (torch.from_numpy(queries)[qi] - torch.from_numpy(points)[pi]).norm(dim=1)
    same_query = qi[1:] == qi[:-1]
    assert bool((d[1:][same_query] >= d[:-1][same_query]).all())


def test_neighbour_search_other_radius_and_edge_cases(device):
    rng = np.random.default_rng(5)
    points = rng.uniform(-2, 2, (300, 3)).astype(np.float32)
    queries = rng.uniform(-2, 2, (40, 3)).astype(np.float32)
    qi, pi = radius_neighbours(torch.from_numpy(queries).to(device), torch.from_numpy(points).to(device),
                               0.35, 5)
    zeros_q, zeros_p = np.zeros(40, int), np.zeros(300, int)
    assert set(zip(qi.tolist(), pi.tolist(), strict=True)) == brute_force(queries, points, zeros_q, zeros_p,
                                                                           0.35, 5)
    empty = radius_neighbours(torch.zeros(0, 3), torch.from_numpy(points))
    assert empty[0].numel() == 0 and empty[1].numel() == 0
    with pytest.raises(ValueError, match="both query_batch and point_batch"):
        radius_neighbours(torch.zeros(2, 3), torch.zeros(2, 3), query_batch=torch.zeros(2, dtype=torch.long))
