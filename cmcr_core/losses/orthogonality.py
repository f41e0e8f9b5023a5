"""CMCR orthogonality loss between modality-shared and modality-specific 3D features (docs/cmcr.md).

With F (V, D) the unit-norm shared features and G (V, D) the raw specific features of all V voxels::

    L_orth = ‖Fᵀ · normalize_rows(G)‖_F / (D_F · D_G)        (64² = 4096 in CMCR; weight 0.1 in the total)

The sum runs over every voxel and is not divided by V (as in the reference), so the loss grows with the
number of voxels in a batch; ``per_voxel=True`` uses the mean cross-correlation ‖Fᵀ Ĝ / V‖_F instead. G is
row-normalised only inside this loss; F is used as given. Computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["orthogonality_loss"]


def orthogonality_loss(
    shared: Tensor, specific: Tensor, eps: float = 1e-12, per_voxel: bool = False
) -> Tensor:
    """Frobenius norm of the cross-correlation of shared and (row-normalised) specific features.

    Args:
        shared: F, (V, D_F), expected unit-norm rows.
        specific: G, (V, D_G), raw rows (normalised here with ``eps`` as the norm's lower bound).
        eps: lower bound of the row norms of G (an all-zero row stays finite).

    Returns:
        scalar ``‖Fᵀ Ĝ‖_F / (D_F · D_G)`` (float32).
    """
    if shared.dim() != 2 or specific.dim() != 2 or shared.shape[0] != specific.shape[0]:
        raise ValueError(
            f"shared and specific must be (V, D) with the same V; got {tuple(shared.shape)} and "
            f"{tuple(specific.shape)}"
        )
    with torch.autocast(device_type=shared.device.type, enabled=False):
        unit = F.normalize(specific.float(), dim=1, eps=eps)
        cross = shared.float().t() @ unit  # (D_F, D_G)
        if per_voxel:
            return torch.linalg.matrix_norm(cross / max(shared.shape[0], 1))
        return torch.linalg.matrix_norm(cross) / (shared.shape[1] * specific.shape[1])
