"""CMCR cross-modal code matching, L_cmcm (docs/cmcr.md).

Soft code assignments with gradient, from negative Euclidean (not squared) distances to the K codewords at
temperature τ (1 in the reference)::

    p_m = softmax_k(−√‖P_m − c_k‖² / τ),   v_m = softmax_k(−√‖Vf_m − c_k‖² / τ)
    S_ij = Σ_k p_ik·log(v_jk + 1e-10) + Σ_k v_ik·log(p_jk + 1e-10)              (M × M)
    L_cmcm = −(1/M) Σ_i log( exp(S_ii) / Σ_j exp(S_ij) ) = cross_entropy(S, arange(M))

The reference computes the last line with a Python loop over i, a shift by min(S) and a +1e-5 in the
denominator; one ``cross_entropy`` is the same up to that 1e-5 (D10 of docs/differences.md).
The squared distance is clamped before the square root (D19 of docs/differences.md); the clamp is at
1e-12 rather than 0 so that the backward of
√ stays finite when a feature sits exactly on a codeword. With unit vectors and τ = 1 the softmax over
400 codes is nearly uniform and L_cmcm ≈ log M: a faithful port reproduces that weak signal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["code_matching_loss", "soft_code_assignment"]

LOG_EPS = 1e-10
MIN_SQUARED_DISTANCE = 1e-12


def soft_code_assignment(features: Tensor, codebook: Tensor, temperature: float = 1.0) -> Tensor:
    """softmax_k(−‖x − c_k‖ / τ): (M, D), (K, D) -> (M, K) float32."""
    x, c = features.float(), codebook.float()
    squared = (x * x).sum(1, keepdim=True) + (c * c).sum(1) - 2.0 * (x @ c.t())
    distance = squared.clamp_min(MIN_SQUARED_DISTANCE).sqrt()
    return torch.softmax(-distance / temperature, dim=1)


def code_matching_loss(points: Tensor, pixels: Tensor, codebook: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-modal code matching over M pairs.

    Args:
        points: P, (M, D) point features (gradient flows to them).
        pixels: Vf, (M, D) pixel features of the same pairs (gradient flows to them).
        codebook: (K, D) codewords; treated as a constant (pass a snapshot if the codebook is updated in
            place before backward).
        temperature: τ of the soft assignments (1 in the reference).

    Returns:
        scalar float32 loss.
    """
    if points.dim() != 2 or points.shape != pixels.shape or codebook.shape[1] != points.shape[1]:
        raise ValueError(
            f"points and pixels must be (M, D) and codebook (K, D); got {tuple(points.shape)}, "
            f"{tuple(pixels.shape)}, {tuple(codebook.shape)}"
        )
    if points.shape[0] == 0:
        raise ValueError("code matching needs at least one pair, got M = 0")
    if temperature <= 0:
        raise ValueError(f"code matching temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=points.device.type, enabled=False):
        table = codebook.detach()
        p = soft_code_assignment(points, table, temperature)
        v = soft_code_assignment(pixels, table, temperature)
        similarity = p @ torch.log(v + LOG_EPS).t() + v @ torch.log(p + LOG_EPS).t()
        target = torch.arange(points.shape[0], device=points.device)
        return F.cross_entropy(similarity, target)
