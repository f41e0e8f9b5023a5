"""Collation: global voxel/image offsets and batch-unique superpixel ids, checked against a naive build."""

from __future__ import annotations

import torch

from cmcr_core.data.batch import SampleTensors, collate
from cmcr_core.ops.pixels import offset_superpixel_ids


def sample(g, n_voxels, n_points, n_images, n_pairs, spx_max, token):
    return SampleTensors(
        coords=torch.randint(-50, 50, (n_voxels, 3), generator=g, dtype=torch.int32),
        feats=torch.rand(n_voxels, 1, generator=g),
        points=torch.rand(n_points, 4, generator=g),
        point_to_voxel=torch.randint(0, n_voxels, (n_points,), generator=g),
        images=torch.randint(0, 255, (n_images, 3, 8, 12), generator=g, dtype=torch.uint8),
        pairings=torch.stack(
            [
                torch.randint(0, n_voxels, (n_pairs,), generator=g),
                torch.randint(0, n_images, (n_pairs,), generator=g),
                torch.randint(0, 8, (n_pairs,), generator=g),
                torch.randint(0, 12, (n_pairs,), generator=g),
            ],
            1,
        ),
        superpixels=torch.randint(0, spx_max + 1, (n_images, 8, 12), generator=g),
        token=token,
        extras={"queries": torch.rand(5, 4, generator=g)},
    )


def test_collate_offsets_match_a_naive_construction():
    g = torch.Generator().manual_seed(0)
    samples = [
        sample(g, 30, 50, 2, 40, 160, "a"),
        sample(g, 20, 35, 3, 25, 20, "b"),
        sample(g, 7, 9, 1, 3, 300, "c"),
    ]
    batch = collate(samples)
    assert batch.batch_size == 3 and batch.tokens == ("a", "b", "c")
    assert batch.coords.shape == (57, 4) and batch.images.shape == (6, 3, 8, 12)
    voxel_start, image_start = [0, 30, 50], [0, 2, 5]
    row = 0
    for b, s in enumerate(samples):
        assert torch.equal(batch.coords[voxel_start[b] : voxel_start[b] + len(s.coords), 1:], s.coords)
        assert bool((batch.coords[voxel_start[b] : voxel_start[b] + len(s.coords), 0] == b).all())
        for i in range(len(s.pairings)):
            v, cam, r, c = s.pairings[i].tolist()
            assert batch.pairing_points[row].item() == voxel_start[b] + v
            assert batch.pairing_images[row].tolist() == [image_start[b] + cam, r, c]
            # the paired voxel's coordinates and the paired image are the sample's own
            assert torch.equal(batch.coords[batch.pairing_points[row], 1:], s.coords[v])
            assert torch.equal(batch.images[batch.pairing_images[row, 0]], s.images[cam])
            row += 1
    assert batch.batch_n_pairings.tolist() == [40, 25, 3]
    # The number of batch superpixel ids, counted at collation (the loss then sizes its buffers without
    # waiting for the GPU): one past the largest id, which the last image's offset reaches.
    assert batch.num_superpixels == max(int(m.max()) for m in batch.superpixels) + 1
    assert batch.to("cpu").num_superpixels == batch.num_superpixels
    assert torch.equal(batch.point_to_voxel[50 : 50 + 35], samples[1].point_to_voxel + 30)
    assert (
        batch.extras["queries"].shape == (15, 4)
        and batch.extras["queries_batch"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    )


def test_superpixel_ids_are_unique_per_image_even_above_150():
    maps = [torch.tensor([[0, 151]]), torch.tensor([[0, 3]]), torch.tensor([[2, 2]])]
    out = offset_superpixel_ids(torch.stack(maps))
    assert out.tolist() == [[[0, 151]], [[152, 155]], [[158, 158]]]
    sets = [set(m.flatten().tolist()) for m in out]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and not (sets[0] & sets[2])


def test_batch_to_moves_every_tensor():
    g = torch.Generator().manual_seed(1)
    batch = collate([sample(g, 5, 6, 1, 4, 10, "x")]).to("cpu")
    assert batch.coords.device.type == "cpu" and batch.extras["queries"].device.type == "cpu"
