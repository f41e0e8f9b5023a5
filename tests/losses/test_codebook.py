"""Unified codebook: EMA update vs a naive loop, nearest-code search vs brute force, init, precision,
reset; the codebook computes on the test device (CMCR_TEST_DEVICE), the references on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmcr_core.losses.codebook import UnifiedCodebook, codebook_usage, straight_through


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


def naive_nearest(vectors: np.ndarray, codebook: np.ndarray) -> list[int]:
    """argmin_k ‖x − c_k‖² by explicit float64 loops (first index on ties)."""
    codes = []
    for x in vectors.astype(np.float64):
        best, best_d = 0, math.inf
        for k, c in enumerate(codebook.astype(np.float64)):
            d = float(((x - c) ** 2).sum())
            if d < best_d:
                best, best_d = k, d
        codes.append(best)
    return codes


def naive_ema(weight, count, points, pixels, point_codes, pixel_codes, gamma, eps):
    """METHODS.md §7.6 written with Python loops over codes and pairs, float64. Returns (C, W, n)."""
    weight, count = weight.astype(np.float64).copy(), count.astype(np.float64).copy()
    num_codes = len(count)
    for codes, own, other in ((point_codes, points, pixels), (pixel_codes, pixels, points)):
        for k in range(num_codes):
            members = [m for m in range(len(codes)) if codes[m] == k]
            count[k] = gamma * count[k] + (1 - gamma) * len(members)
        total = count.sum()
        for k in range(num_codes):
            count[k] = (count[k] + eps) / (total + num_codes * eps) * total
        for k in range(num_codes):
            members = [m for m in range(len(codes)) if codes[m] == k]
            own_sum = sum((own[m].astype(np.float64) for m in members), np.zeros(own.shape[1]))
            other_sum = sum((other[m].astype(np.float64) for m in members), np.zeros(own.shape[1]))
            weight[k] = gamma * weight[k] + 0.5 * (1 - gamma) * own_sum + 0.5 * (1 - gamma) * other_sum
    mean = [weight[k] / count[k] for k in range(num_codes)]
    codebook = np.stack([m / np.linalg.norm(m) for m in mean])
    return codebook, weight, count


def test_initialisation_is_seeded_unit_norm_and_float32():
    a, b, c = UnifiedCodebook(30, 8, seed=3), UnifiedCodebook(30, 8, seed=3), UnifiedCodebook(30, 8, seed=4)
    assert torch.equal(a.embedding, b.embedding) and not torch.equal(a.embedding, c.embedding)
    assert torch.allclose(a.embedding.norm(dim=1), torch.ones(30))
    assert torch.equal(a.ema_weight, a.embedding) and bool((a.ema_count == 0).all())
    assert a.embedding.dtype == torch.float32


def test_ema_update_matches_a_naive_loop_over_codes_for_several_steps(device):
    g = torch.Generator().manual_seed(0)
    book = UnifiedCodebook(12, 5, decay=0.9, eps=1e-3, seed=1).to(device)
    weight, count = book.ema_weight.cpu().numpy().copy(), book.ema_count.cpu().numpy().copy()
    for _ in range(4):
        points = unit(torch.randn(40, 5, generator=g))
        pixels = unit(points + 0.5 * torch.randn(40, 5, generator=g))
        start = book.embedding.cpu().numpy().copy()
        kp, kv = book.nearest(points.to(device)), book.nearest(pixels.to(device))
        assert kp.device == device
        assert kp.tolist() == naive_nearest(points.numpy(), start)
        assert kv.tolist() == naive_nearest(pixels.numpy(), start)
        book.update(points.to(device), pixels.to(device), kp, kv)
        expected, weight, count = naive_ema(weight, count, points.numpy(), pixels.numpy(), kp.tolist(),
                                            kv.tolist(), 0.9, 1e-3)
        np.testing.assert_allclose(book.ema_weight.cpu().numpy(), weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(book.ema_count.cpu().numpy(), count, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(book.embedding.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
    # Codes never chosen keep their direction (no dead-code reset by default).
    assert torch.allclose(book.embedding.norm(dim=1), torch.ones(12, device=device), atol=1e-6)


def test_unused_codes_keep_their_direction_without_reset(device):
    book = UnifiedCodebook(10, 4, decay=0.5, seed=0).to(device)
    before = book.embedding.clone()
    points = before[[2, 2, 2]] * 1.0
    codes = torch.tensor([2, 2, 2], device=device)
    for _ in range(5):
        book.update(points, points, codes, codes)
    unused = [k for k in range(10) if k != 2]
    assert torch.allclose(book.embedding[unused], before[unused], atol=1e-6)
    assert book.unactivated_count[unused].tolist() == [5.0] * 9 and book.unactivated_count[2] == 0


def test_dead_code_reset_replaces_long_unused_codes_by_noisy_active_ones(device):
    book = UnifiedCodebook(10, 4, decay=0.5, seed=0, dead_code_reset=True, dead_code_threshold=2).to(device)
    assert book.generator.device == book.embedding.device  # the reset draws where the codebook lives
    points = book.embedding[[2, 5]].clone()
    codes = torch.tensor([2, 5], device=device)
    for _ in range(3):  # after the 3rd step unused codes have count 3 > 2
        book.update(points, points, codes, codes)
    active = book.embedding[[2, 5]]
    for k in [0, 1, 3, 4, 6, 7, 8, 9]:
        closest = (book.embedding[k] - active).norm(dim=1).min()
        assert 0 < float(closest) < 4e-3  # a copy of an active code plus U(±1/1024) noise, renormalised
    assert bool((book.unactivated_count == 0).all())
    assert torch.allclose(F.normalize(book.ema_weight / book.ema_count[:, None], dim=1), book.embedding)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_nearest_search_equals_brute_force_with_any_chunking(chunk, device):
    g = torch.Generator().manual_seed(chunk)
    book = UnifiedCodebook(50, 6, seed=2, chunk_size=chunk).to(device)
    codewords = book.embedding.cpu().numpy()
    vectors = torch.randn(93, 6, generator=g) * 3.0  # any norm: argmax x·c = argmin ‖x − c‖² for unit c
    assert book.nearest(vectors.to(device)).tolist() == naive_nearest(vectors.numpy(), codewords)
    maps = torch.randn(2, 6, 5, 7, generator=g)
    rows = maps.permute(0, 2, 3, 1).reshape(-1, 6)
    expected = torch.tensor(naive_nearest(rows.numpy(), codewords)).reshape(2, 5, 7)
    assert torch.equal(book.nearest_map(maps.to(device)).cpu(), expected)


def test_quantisation_is_a_straight_through_estimator(device):
    book = UnifiedCodebook(20, 4, seed=0).to(device)
    x = torch.randn(9, 4, device=device, requires_grad=True)
    q = book.quantize(x)
    assert torch.equal(q, book.embedding[book.nearest(x.detach())])
    weights = torch.arange(4.0, device=device)
    (q * weights).sum().backward()
    assert torch.equal(x.grad, weights.expand(9, 4))
    maps = torch.randn(2, 4, 3, 5, device=device, requires_grad=True)
    qm = book.quantize_map(maps)
    assert torch.equal(qm.permute(0, 2, 3, 1), book.embedding[book.nearest_map(maps.detach())])
    qm.sum().backward()
    assert torch.equal(maps.grad, torch.ones_like(maps))
    y = torch.randn(3, device=device, requires_grad=True)
    straight_through(y, torch.zeros(3, device=device)).pow(2).sum().backward()  # gradient evaluated at q = 0
    assert torch.equal(y.grad, torch.zeros(3, device=device))


def test_codebook_math_stays_float32_under_autocast(device):
    book = UnifiedCodebook(30, 8, seed=0).to(device)
    reference = UnifiedCodebook(30, 8, seed=0).to(device)
    g = torch.Generator().manual_seed(1)
    points, pixels = unit(torch.randn(64, 8, generator=g)), unit(torch.randn(64, 8, generator=g))
    points, pixels = points.to(device), pixels.to(device)
    expected_p, expected_v = reference.nearest(points), reference.nearest(pixels)
    expected_half = reference.nearest(points.bfloat16().float())
    reference.update(points, pixels, expected_p, expected_v)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        kp, kv = book.nearest(points), book.nearest(pixels)
        assert torch.equal(book.nearest(points.bfloat16()), expected_half)  # bf16 input, fp32 search
        book.update(points, pixels, kp, kv)
    assert torch.equal(kp, expected_p) and torch.equal(kv, expected_v)
    for name in ("embedding", "ema_weight", "ema_count"):
        assert getattr(book, name).dtype == torch.float32
        assert torch.equal(getattr(book, name), getattr(reference, name)), name


def test_usage_metrics_against_their_definition(device):
    codes = torch.tensor([0, 0, 1, 3, 3, 3, 3, 7], device=device)
    perplexity, active = codebook_usage(codes, 10)
    p = np.array([2, 1, 4, 1]) / 8
    assert float(perplexity) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(active) == 4
    assert float(codebook_usage(torch.arange(10, device=device), 10)[0]) == pytest.approx(10.0, rel=1e-6)
