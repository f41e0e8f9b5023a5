"""loss.mim_point_codes: the MIM decoder's input gets the quantised 3D features of each pixel's points,
so MIM trains the 3D network too (in the reference it reaches only the 2D decoders)."""

from __future__ import annotations

import torch
from cmcr_toys import tiny_batch, tiny_cmcr
from test_gradient_flow import groups

torch.set_num_threads(1)


def test_point_code_map_equals_a_per_pixel_mean_of_the_quantised_point_features():
    method = tiny_cmcr(seed=0, mim_point_codes=True).train()
    batch = tiny_batch(seed=1)
    shared = torch.nn.functional.normalize(torch.randn(len(batch.coords), method.codebook.dim), dim=1)
    table = method.codebook.embedding.clone()
    num_images, size = batch.images.shape[0], tuple(batch.images.shape[-2:])
    chosen = torch.tensor([0, 2])
    got = method._mim_point_codes(batch, shared, table, chosen, num_images, size)
    assert got.shape == (2, *size, method.codebook.dim)
    expected = torch.zeros_like(got)
    sums: dict[tuple[int, int, int], list[torch.Tensor]] = {}
    for voxel, (image, row, col) in zip(batch.pairing_points.tolist(), batch.pairing_images.tolist(),
                                        strict=True):
        if image in (0, 2):
            code = int((shared[voxel] @ table.t()).argmax())
            sums.setdefault((0 if image == 0 else 1, row, col), []).append(table[code])
    for (slot, row, col), rows in sums.items():
        expected[slot, row, col] = torch.stack(rows).mean(0)
    torch.testing.assert_close(got, expected)


def test_mim_reaches_the_3d_network_only_with_point_codes(device):
    batch = tiny_batch(seed=0).to(device)
    for on, expected in ((False, {"decoder", "specific_decoder", "mim_decoder"}),
                         (True, {"trunk", "final", "decoder", "specific_decoder", "mim_decoder"})):
        method = tiny_cmcr(seed=0, mim_point_codes=on).train().to(device)
        losses, _ = method(batch)
        named = groups(method)
        params = [p for group in named.values() for p in group]
        grads = torch.autograd.grad(losses["mim"], params, allow_unused=True)
        reached, i = set(), 0
        for name, group in named.items():
            if any(g is not None and bool(g.abs().sum() > 0) for g in grads[i: i + len(group)]):
                reached.add(name)
            i += len(group)
        assert reached == expected, (on, reached)
