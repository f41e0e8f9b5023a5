"""The cheaper evaluation orders of CMCR's step against the plain computations they replace.

* ``OccupancyMLP.forward_factored`` / ``forward`` against the reference layers applied in turn;
* ``UnifiedCodebook.nearest_upsampled`` against a float64 search over the upsampled, normalised maps;
* the method's occupancy losses (used voxels only, factored MLP) against the all-voxel concatenation;
* the ``mim_images`` knob: the drawn crops, the loss over them, the pair codes, the checkpointed generator.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cmcr_toys import IMAGE_HW, tiny_batch, tiny_cmcr

from cmcr_core.data.occupancy import QUERY_INTENSITY, QUERY_OCCUPANCY
from cmcr_core.losses.codebook import UnifiedCodebook
from cmcr_core.losses.occupancy import occupancy_losses
from cmcr_core.models.cmcr_heads import OccupancyMLP
from cmcr_core.ops.geometry import radius_neighbours

TIE = 1e-5  # float64 score margin below which either code of a tie is accepted


def test_factored_occupancy_mlp_equals_the_reference_layers():
    torch.manual_seed(0)
    mlp = OccupancyMLP(67).double()
    voxels = torch.randn(40, 64, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 40, (300,))
    offsets = torch.randn(300, 3, dtype=torch.float64, requires_grad=True)
    inputs = [voxels, offsets, *mlp.parameters()]
    expected = mlp.layers(torch.cat([voxels[index], offsets], 1))  # nn.Sequential, one layer after another
    got = mlp.forward_factored(voxels, index, offsets)
    plain = mlp(torch.cat([voxels[index], offsets], 1))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(plain, expected, rtol=0, atol=1e-12)
    weights = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    for out in (got, plain):
        for a, b in zip(torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True), expected_grads,
                        strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="C \\+ R = 67"):
        mlp.forward_factored(voxels[:, :60], index, offsets)
    with pytest.raises(ValueError, match="point_index"):
        mlp.forward_factored(voxels, index[:5], offsets)


def brute_force_codes(maps: torch.Tensor, size: tuple[int, int], align_corners: bool,
                      table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64: upsample, L2-normalise, score every codeword; (codes, scores) per pixel."""
    up = F.interpolate(maps.double(), size=size, mode="bilinear", align_corners=align_corners)
    unit = F.normalize(up, dim=1)
    scores = torch.einsum("idyx,kd->iyxk", unit, table.double())
    return scores.argmax(-1), scores


@pytest.mark.parametrize(("low", "size", "align_corners", "chunk"), [
    ((4, 7), (112, 208), True, 4096),
    ((3, 5), (37, 61), True, 1),  # size not a multiple of the map; one row per block
    ((3, 5), (37, 61), False, 500),
    ((1, 6), (9, 40), True, 64),  # a single input row
    ((5, 1), (23, 3), False, 7),  # a single input column
])
def test_nearest_upsampled_equals_a_search_over_the_upsampled_pixels(low, size, align_corners, chunk):
    g = torch.Generator().manual_seed(sum(size))
    book = UnifiedCodebook(60, 8, seed=3, chunk_size=chunk)
    maps = torch.randn(3, 8, *low, generator=g) * 2.0
    got = book.nearest_upsampled(maps, size, align_corners)
    expected, scores = brute_force_codes(maps, size, align_corners, book.embedding)
    assert got.shape == (3, *size) and got.dtype == torch.int64
    best = scores.max(-1).values
    chosen = scores.gather(-1, got.unsqueeze(-1)).squeeze(-1)
    assert bool((best - chosen <= TIE).all())  # never worse than the best code beyond a tie
    clear = (best - scores.topk(2, -1).values[..., 1]) > TIE
    assert bool(clear.float().mean() > 0.99)
    assert torch.equal(got[clear], expected[clear])
    # The same codes as the existing full-resolution search on the (float32) upsampled maps.
    full = F.normalize(F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners), dim=1)
    assert torch.equal(book.nearest_map(full)[clear], got[clear])


def test_method_pixel_codes_are_those_of_the_decoder_output():
    method = tiny_cmcr(seed=1)
    batch = tiny_batch(seed=1)
    with torch.no_grad():
        encoded = method.teacher(batch.images.float() / 255.0)
        pixels = method.decoder(encoded, output_size=IMAGE_HW)
        table = method.codebook.embedding.clone()
        low = method.decoder.conv(encoded)
    got = method._pixel_codes(encoded, IMAGE_HW, table)
    expected, scores = brute_force_codes(low, IMAGE_HW, True, table)
    clear = (scores.topk(2, -1).values.diff(dim=-1).abs().squeeze(-1)) > TIE
    assert torch.equal(got[clear], expected[clear])
    assert torch.equal(got[clear], method.codebook.nearest_map(pixels, table)[clear])


def test_occupancy_losses_equal_the_all_voxel_concatenation():
    method = tiny_cmcr(seed=2).double()
    batch = tiny_batch(seed=2)
    g = torch.Generator().manual_seed(0)
    voxels = batch.coords.shape[0]
    shared = F.normalize(torch.randn(voxels, 16, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    specific = torch.randn(voxels, 16, generator=g, dtype=torch.float64, requires_grad=True)
    queries = batch.extras["occupancy_queries"].double()
    extras = {**batch.extras, "occupancy_queries": queries}
    batch = replace(batch, points=batch.points.double(), extras=extras)
    table = method.codebook.embedding.clone()
    mlp = method.occupancy_mlp
    params = [shared, specific, *mlp.parameters()]
    got = method._occupancy_losses(batch, shared, specific, table)
    # Reference: every voxel quantised (STE), one concatenated input per pair, the layers in turn.
    qi, pi = radius_neighbours(queries[:, :3], batch.points[:, :3], method.occupancy_radius,
                               method.occupancy_max_neighbours, batch.extras["occupancy_queries_batch"],
                               batch.point_batch)
    assert len(qi) > 100
    codes = (shared.detach() @ table.t()).argmax(1)
    fused = specific + shared + (table[codes] - shared).detach()
    inputs = torch.cat([fused[batch.point_to_voxel[pi]], queries[qi, :3] - batch.points[pi, :3]], 1)
    logits = mlp.layers(inputs)
    expected = occupancy_losses(logits, queries[qi, QUERY_OCCUPANCY], queries[qi, QUERY_INTENSITY])
    *losses, accuracy = got
    labels = queries[qi, QUERY_OCCUPANCY].tolist()
    right = sum(int((z > 0) == (o > 0.5)) for z, o in zip(logits[:, 0].tolist(), labels, strict=True))
    assert float(accuracy) == pytest.approx(right / len(qi), rel=1e-6)  # a float32 ratio
    for a, b in zip(losses, expected, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-6, atol=0)
        for ga, gb in zip(torch.autograd.grad(a, params, retain_graph=True),
                          torch.autograd.grad(b, params, retain_graph=True), strict=True):
            torch.testing.assert_close(ga.double(), gb.double(), rtol=1e-5, atol=1e-9)


def test_mim_images_draws_crops_and_the_loss_is_their_mean():
    batch = tiny_batch(seed=3, batch_size=3)  # 6 crops
    method = tiny_cmcr(seed=3, mim_images=2, **{w: 0.0 for w in (
        "point_nce_weight", "orthogonality_weight", "commitment_weight", "code_matching_weight",
        "occupancy_weight", "intensity_weight")}).eval()
    assert "mim_images" in method.generators()
    state = method.mim_image_generator.get_state()
    losses, _ = method(batch)
    expected_images = torch.randperm(6, generator=torch.Generator().set_state(state))[:2].sort().values
    with torch.no_grad():
        encoded = method.teacher(batch.images.float() / 255.0)[expected_images]
        table = method.codebook.embedding
        codes = brute_force_codes(method.decoder.conv(encoded), IMAGE_HW, True, table)[0]
        fused = method.specific_decoder(encoded, output_size=IMAGE_HW) + table[codes].permute(0, 3, 1, 2)
        target = batch.target_images[expected_images].float() / 255.0
        expected = F.mse_loss(method.mim_decoder(fused), target)
    torch.testing.assert_close(losses["mim"], expected, rtol=1e-5, atol=0)
    # Another step draws again (different crops in general), from the same generator.
    assert not torch.equal(method.mim_image_generator.get_state(), state)
    # 0 (published) and k >= crops: every crop, and no extra generator to checkpoint.
    assert "mim_images" not in tiny_cmcr(seed=3).generators()
    assert tiny_cmcr(seed=3, mim_images=6)._draw_mim_images(6, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="mim_images must be >= 0"):
        tiny_cmcr(seed=3, mim_images=-1)


def test_pair_codes_with_a_crop_subset_equal_a_direct_search():
    method = tiny_cmcr(seed=4)
    g = torch.Generator().manual_seed(4)
    pixels = F.normalize(torch.randn(5, 16, 6, 9, generator=g, dtype=torch.float64), dim=1).float()
    table = method.codebook.embedding
    drawn = torch.tensor([1, 3])
    codes_map = method.codebook.nearest_map(pixels[drawn], table)
    where = torch.stack([torch.randint(0, n, (200,), generator=g) for n in (5, 6, 9)], 1)
    vectors = pixels[where[:, 0], :, where[:, 1], where[:, 2]]
    got = method._pair_pixel_codes(vectors, where, table, codes_map, drawn, 5)
    assert torch.equal(got, method.codebook.nearest(vectors, table))
    assert torch.equal(method._pair_pixel_codes(vectors, where, table, None, None, 5), got)


def test_neighbour_search_keeps_every_tie_at_the_cut():
    # 80 copies of one point (same distance to every query) and a ring of farther points: the histogram
    # cut must keep the copies with the lowest indices, as a stable brute-force sort does.
    rng = np.random.default_rng(0)
    copies = np.tile(np.array([[0.3, -0.2, 0.1]], np.float32), (80, 1))
    ring = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    points = torch.from_numpy(np.concatenate([ring[:150], copies, ring[150:]]))
    near = copies[:10] + rng.normal(0, 0.05, (10, 3)).astype(np.float32)
    queries = torch.from_numpy(np.concatenate([near, rng.uniform(-0.5, 0.5, (20, 3)).astype(np.float32)]))
    qi, pi = radius_neighbours(queries, points, 1.0, 32)
    d = torch.cdist(queries.double(), points.double())
    assert set(pi[qi == 0].tolist()) == set(range(150, 182))  # the cut falls inside the copies
    for q in range(len(queries)):
        order = np.argsort(d[q].numpy(), kind="stable")
        order = order[d[q].numpy()[order] < 1.0][:32]
        assert pi[qi == q].tolist() == order.tolist()
