"""Point utilities against naive Python implementations (the utilities on the test device,
CMCR_TEST_DEVICE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcr_core.ops.geometry import (
    block_patch_mask,
    farthest_point_sample,
    farthest_point_sample_np,
    gather_points,
    group_patches,
    knn,
    random_patch_mask,
)


def naive_fps(points: list[list[float]], count: int, start: int = 0) -> list[int]:
    chosen = [start]
    while len(chosen) < count:
        best, best_dist = -1, -1.0
        for j, p in enumerate(points):
            d = min(sum((p[a] - points[c][a]) ** 2 for a in range(3)) for c in chosen)
            if d > best_dist:  # strict: the first maximum wins
                best, best_dist = j, d
        chosen.append(best)
    return chosen


def test_fps_matches_naive_loop_on_random_clouds(device) -> None:
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(3, 40, 3, generator=gen, dtype=torch.float64)
    idx = farthest_point_sample(xyz.to(device), 12)
    assert idx.device == device
    for b in range(3):
        assert idx[b].tolist() == naive_fps(xyz[b].tolist(), 12)
        assert farthest_point_sample_np(xyz[b].numpy(), 12).tolist() == naive_fps(xyz[b].tolist(), 12)


def test_fps_ties_go_to_lowest_index_and_start_index(device) -> None:
    # a grid with duplicated points: many exact ties
    grid = torch.tensor([[x, y, 0.0] for x in range(3) for y in range(3)] * 2, dtype=torch.float32)
    idx = farthest_point_sample(grid[None].to(device), 9)
    assert idx[0].tolist() == naive_fps(grid.tolist(), 9)
    starts = torch.tensor([4, 7])
    idx = farthest_point_sample(torch.stack([grid, grid]).to(device), 5, start_index=starts.to(device))
    for b in range(2):
        assert idx[b].tolist() == naive_fps(grid.tolist(), 5, int(starts[b]))


def test_fps_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        farthest_point_sample(torch.zeros(1, 4, 3), 5)
    with pytest.raises(ValueError, match="B x N x 3"):
        farthest_point_sample(torch.zeros(4, 3), 2)


def test_knn_equals_brute_force(device) -> None:
    gen = torch.Generator().manual_seed(1)
    query, ref = torch.rand(2, 7, 3, generator=gen), torch.rand(2, 30, 3, generator=gen)
    dist, idx = knn(query.to(device), ref.to(device), 5, chunk_size=3)
    for b in range(2):
        for i in range(7):
            d = [float(((query[b, i].double() - ref[b, j].double()) ** 2).sum()) for j in range(30)]
            order = sorted(range(30), key=lambda j: d[j])[:5]
            assert idx[b, i].tolist() == order
            assert np.allclose(dist[b, i].tolist(), [d[j] for j in order], atol=1e-6)


def test_group_patches_are_centred_knn_of_fps_centres(device) -> None:
    gen = torch.Generator().manual_seed(2)
    xyz = torch.rand(2, 64, 3, generator=gen).to(device)
    neigh, centres = group_patches(xyz, 8, 4)
    assert neigh.shape == (2, 8, 4, 3) and centres.shape == (2, 8, 3)
    centre_idx = farthest_point_sample(xyz, 8)
    assert torch.equal(centres, gather_points(xyz, centre_idx))
    # the nearest neighbour of a centre is the centre itself: first row is exactly zero
    assert torch.equal(neigh[:, :, 0].cpu(), torch.zeros(2, 8, 3))
    _, nn_idx = knn(centres, xyz, 4)
    assert torch.allclose(neigh + centres[:, :, None], gather_points(xyz, nn_idx))


def test_random_mask_counts_and_generator() -> None:
    gen = torch.Generator().manual_seed(5)
    mask = random_patch_mask(16, 64, 0.6, gen)
    assert mask.dtype == torch.bool and mask.shape == (16, 64)
    assert mask.sum(1).tolist() == [38] * 16  # int(0.6 * 64), as in the reference
    again = random_patch_mask(16, 64, 0.6, torch.Generator().manual_seed(5))
    assert torch.equal(mask, again)
    assert not torch.equal(mask[0], mask[1])


def test_block_mask_hides_the_nearest_centres_to_one_seed(device) -> None:
    gen = torch.Generator().manual_seed(6)
    centres = torch.rand(4, 20, 3, generator=gen).to(device)
    mask = block_patch_mask(centres, 0.5, torch.Generator().manual_seed(0))  # CPU generator, any device
    assert mask.device == device
    assert mask.sum(1).tolist() == [10] * 4
    for b in range(4):
        masked, kept = centres[b][mask[b]], centres[b][~mask[b]]
        # some masked centre (the seed) is at least as close to every masked centre as to any kept one
        ok = False
        for s in masked:
            dm = ((masked - s) ** 2).sum(1).max()
            dk = ((kept - s) ** 2).sum(1).min()
            ok |= bool(dm <= dk)
        assert ok
