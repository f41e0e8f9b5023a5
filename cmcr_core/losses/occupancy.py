"""CMCR occupancy and intensity estimation losses over (query, neighbour) pairs (docs/cmcr.md).

Every pair (query i, neighbouring LiDAR point j) yields two outputs o = (o₀, o₁) of the occupancy MLP;
each pair is supervised independently (no aggregation over neighbours)::

    L_occ = mean over pairs of BCEWithLogits(o₀, occupancy_i)
    L_int = mean over pairs with intensity_i ≥ 0 of |o₁ − intensity_i|         (o₁ linear, no sigmoid)

Queries whose intensity target is negative ("out far" queries, −1) are excluded from L_int only. When no
pair (or no pair with an intensity target) exists the loss is an exact 0 that still depends on the
outputs, so every parameter keeps a (zero) gradient and DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["occupancy_losses"]


def occupancy_losses(outputs: Tensor, occupancy: Tensor, intensity: Tensor) -> tuple[Tensor, Tensor]:
    """BCE occupancy and L1 intensity losses.

    Args:
        outputs: (E, 2) MLP outputs per pair: occupancy logit, intensity estimate.
        occupancy: (E,) occupancy label of each pair's query (1 occupied, 0 free).
        intensity: (E,) intensity target of each pair's query (negative = no target).

    Returns:
        (L_occ, L_int), float32 scalars.
    """
    if outputs.dim() != 2 or outputs.shape[1] != 2:
        raise ValueError(f"outputs must be (E, 2), got {tuple(outputs.shape)}")
    if occupancy.shape != outputs.shape[:1] or intensity.shape != outputs.shape[:1]:
        raise ValueError(
            f"occupancy and intensity must be (E={outputs.shape[0]},); got {tuple(occupancy.shape)}, "
            f"{tuple(intensity.shape)}"
        )
    with torch.autocast(device_type=outputs.device.type, enabled=False):
        out = outputs.float()
        if out.shape[0] == 0:
            zero = out.sum() * 0.0
            return zero, zero
        loss_occ = F.binary_cross_entropy_with_logits(out[:, 0], occupancy.float())
        # A masked mean instead of boolean indexing: no host synchronisation on the GPU.
        has_target = (intensity >= 0).float()
        error = (out[:, 1] - intensity.float()).abs() * has_target
        loss_int = error.sum() / has_target.sum().clamp_min(1.0)
    return loss_occ, loss_int
