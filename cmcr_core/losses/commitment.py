"""CMCR commitment losses with the cross-modal term (docs/cmcr.md).

For M pairs with point features P, pixel features Vf (both (M, D)) and the codewords C[kP], C[kV] chosen
for them (hard codes on the step's starting codebook), with mse = mean over the M×D elements and sg the
stop-gradient::

    L_commit_P = β·[2·mse(P, sg(C[kP])) + mse(P, sg(C[kV]))]
    L_commit_V = β·[2·mse(Vf, sg(C[kV])) + mse(Vf, sg(C[kP]))]          β = 0.25

The second term of each pulls a modality towards the codeword its *paired* feature chose. Codewords never
receive gradient (the codebook moves by EMA only). Computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["commitment_losses"]


def commitment_losses(
    points: Tensor, pixels: Tensor, point_codewords: Tensor, pixel_codewords: Tensor, beta: float = 0.25
) -> tuple[Tensor, Tensor]:
    """The two commitment losses.

    Args:
        points: P, (M, D).
        pixels: Vf, (M, D), row m paired with row m of ``points``.
        point_codewords: C[kP], (M, D) codewords chosen by the points (detached here).
        pixel_codewords: C[kV], (M, D) codewords chosen by the pixels (detached here).
        beta: β.

    Returns:
        (L_commit_P, L_commit_V), float32 scalars.
    """
    shapes = {tuple(t.shape) for t in (points, pixels, point_codewords, pixel_codewords)}
    if len(shapes) != 1 or points.dim() != 2:
        raise ValueError(
            "points, pixels and both codeword sets must be the same (M, D); got "
            f"{[tuple(t.shape) for t in (points, pixels, point_codewords, pixel_codewords)]}"
        )
    with torch.autocast(device_type=points.device.type, enabled=False):
        p, v = points.float(), pixels.float()
        cp, cv = point_codewords.detach().float(), pixel_codewords.detach().float()
        loss_points = beta * (2.0 * F.mse_loss(p, cp) + F.mse_loss(p, cv))
        loss_pixels = beta * (2.0 * F.mse_loss(v, cv) + F.mse_loss(v, cp))
    return loss_points, loss_pixels
