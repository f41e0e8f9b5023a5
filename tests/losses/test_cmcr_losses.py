"""CMCR losses against naive formulas: orthogonality, commitment, cross-modal code matching, occupancy; the
losses compute on the test device (CMCR_TEST_DEVICE), the formulas on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.losses.code_matching import code_matching_loss
from cmcr_core.losses.commitment import commitment_losses
from cmcr_core.losses.occupancy import occupancy_losses
from cmcr_core.losses.orthogonality import orthogonality_loss


def unit(x):
    return F.normalize(x, dim=1)


def on(device, *tensors):
    return tuple(t.to(device) for t in tensors)


def test_orthogonality_against_its_sum_form(device):
    g = torch.Generator().manual_seed(0)
    shared, specific = unit(torch.randn(50, 6, generator=g)), torch.randn(50, 6, generator=g) * 4
    g_hat = [row / row.norm() for row in specific]
    total = 0.0
    for i in range(6):
        for j in range(6):
            total += float(sum(shared[v, i] * g_hat[v][j] for v in range(50))) ** 2
    assert float(orthogonality_loss(*on(device, shared, specific))) == pytest.approx(math.sqrt(total) / 36,
                                                                                     rel=1e-5)
    # Feature columns orthogonal over the voxels (disjoint supports) give 0; the loss is not divided by V
    # (it doubles with a duplicated set).
    a, b = torch.zeros(4, 4), torch.zeros(4, 4)
    a[:2] = unit(torch.randn(2, 4, generator=g))
    b[2:] = torch.randn(2, 4, generator=g)
    assert float(orthogonality_loss(*on(device, a, b))) == pytest.approx(0.0, abs=1e-7)
    doubled = orthogonality_loss(*on(device, torch.cat([shared, shared]), torch.cat([specific, specific])))
    single = orthogonality_loss(*on(device, shared, specific))
    assert float(doubled) == pytest.approx(2 * float(single), rel=1e-5)


def test_orthogonality_per_voxel_is_the_mean_cross_correlation_and_does_not_grow_with_the_batch(device):
    g = torch.Generator().manual_seed(1)
    shared, specific = unit(torch.randn(40, 5, generator=g)), torch.randn(40, 5, generator=g) * 3
    g_hat = [row / row.norm() for row in specific]
    total = 0.0
    for i in range(5):
        for j in range(5):
            total += (float(sum(shared[v, i] * g_hat[v][j] for v in range(40))) / 40) ** 2
    per_voxel = float(orthogonality_loss(*on(device, shared, specific), per_voxel=True))
    assert per_voxel == pytest.approx(math.sqrt(total), rel=1e-5)
    tripled = orthogonality_loss(*on(device, torch.cat([shared] * 3), torch.cat([specific] * 3)),
                                 per_voxel=True)
    assert float(tripled) == pytest.approx(per_voxel, rel=1e-5)
    # A shared feature equal to the normalised specific one: the correlation matrix is F^T F / V.
    same = orthogonality_loss(*on(device, shared, shared * 7), per_voxel=True)
    assert float(same) == pytest.approx(float(torch.linalg.matrix_norm(shared.t() @ shared / 40)), rel=1e-5)


def test_commitment_losses_and_their_cross_modal_terms(device):
    g = torch.Generator().manual_seed(1)
    p = torch.randn(10, 4, generator=g).to(device).requires_grad_(True)
    v = torch.randn(10, 4, generator=g).to(device).requires_grad_(True)
    cp, cv = on(device, torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g))
    lp, lv = commitment_losses(p, v, cp, cv, beta=0.25)

    def mse(a, b):
        a, b = a.tolist(), b.tolist()
        return sum((a[m][d] - b[m][d]) ** 2 for m in range(10) for d in range(4)) / 40

    assert lp.item() == pytest.approx(0.25 * (2 * mse(p, cp) + mse(p, cv)), rel=1e-6)
    assert lv.item() == pytest.approx(0.25 * (2 * mse(v, cv) + mse(v, cp)), rel=1e-6)
    (lp + lv).backward()
    # d/dp of β(2·mse(p, cp) + mse(p, cv)) with mse = mean over 40 elements; codewords get nothing.
    expected = 0.25 * (2 * 2 * (p - cp) + 2 * (p - cv)) / 40
    torch.testing.assert_close(p.grad, expected.detach())


def reference_cmcm(points, pixels, codebook):
    """Eaphan/CMCR's formula (METHODS.md §7.8): Python loop over i, shift by min(S), +1e-5."""
    dp = torch.cdist(points.double(), codebook.double())
    dv = torch.cdist(pixels.double(), codebook.double())
    p, v = torch.softmax(-dp, 1), torch.softmax(-dv, 1)
    m = len(points)
    s = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(m):
            s[i, j] = (p[i] * torch.log(v[j] + 1e-10)).sum() + (v[i] * torch.log(p[j] + 1e-10)).sum()
    s = s - s.min()
    total = 0.0
    for i in range(m):
        total += -math.log(math.exp(s[i, i]) / (float(torch.exp(s[i]).sum()) + 1e-5))
    return total / m


def test_code_matching_equals_the_reference_loop(device):
    g = torch.Generator().manual_seed(2)
    codebook = unit(torch.randn(30, 8, generator=g))
    points = unit(torch.randn(25, 8, generator=g))
    pixels = unit(points + 0.3 * torch.randn(25, 8, generator=g))
    loss = code_matching_loss(*on(device, points, pixels, codebook))
    assert float(loss) == pytest.approx(reference_cmcm(points, pixels, codebook), abs=1e-4)


def test_code_matching_is_near_log_m_at_temperature_one_and_finite_on_a_codeword(device):
    g = torch.Generator().manual_seed(3)
    codebook = unit(torch.randn(400, 64, generator=g)).to(device)
    points = unit(torch.randn(256, 64, generator=g)).to(device)
    loss = code_matching_loss(points, points.clone(), codebook)  # perfectly matched pairs
    assert abs(float(loss) - math.log(256)) < 0.05  # METHODS.md §7.8: almost no signal at τ = 1
    sharp = code_matching_loss(points, points.clone(), codebook, temperature=0.05)
    assert float(sharp) < float(loss) - 0.5
    on_code = codebook[:4].clone().requires_grad_(True)  # squared distance 0 (or slightly negative)
    code_matching_loss(on_code, on_code, codebook).backward()
    assert bool(torch.isfinite(on_code.grad).all())


def test_occupancy_losses_against_a_per_pair_loop(device):
    g = torch.Generator().manual_seed(4)
    outputs = torch.randn(12, 2, generator=g)
    occupancy = torch.tensor([1, 0, 0] * 4, dtype=torch.float32)
    intensity = torch.tensor([0.2, 0.5, -1.0] * 4)
    occ, inten = occupancy_losses(*on(device, outputs, occupancy, intensity))
    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    bce = [-(y * math.log(sigmoid(o)) + (1 - y) * math.log(1 - sigmoid(o)))
           for o, y in zip(outputs[:, 0].tolist(), occupancy.tolist(), strict=True)]
    l1 = [abs(o - t) for o, t in zip(outputs[:, 1].tolist(), intensity.tolist(), strict=True) if t >= 0]
    assert float(occ) == pytest.approx(sum(bce) / 12, rel=1e-5)
    assert float(inten) == pytest.approx(sum(l1) / 8, rel=1e-5)


def test_occupancy_losses_without_pairs_are_zero_but_keep_the_graph(device):
    outputs = torch.zeros(0, 2, device=device, requires_grad=True)
    occ, inten = occupancy_losses(outputs, *on(device, torch.zeros(0), torch.zeros(0)))
    assert occ.item() == 0.0 and inten.item() == 0.0 and occ.requires_grad
    far_only = torch.randn(3, 2, device=device, requires_grad=True)
    _, inten = occupancy_losses(far_only, *on(device, torch.zeros(3), -torch.ones(3)))
    inten.backward()
    assert inten.item() == 0.0 and torch.equal(far_only.grad.cpu(), torch.zeros(3, 2))
