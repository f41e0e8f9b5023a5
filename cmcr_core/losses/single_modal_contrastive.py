"""ReCon's optional single-modal contrastive term (``smc``, off in every released config).

For anchor i, with S the B x B cosine similarity of L2-normalised embeddings and P(i) the samples sharing
i's category (i included): logits = [mean_{j in P(i)} S_ij, S_ik for k not in P(i)] / tau, cross-entropy
with target 0, averaged over anchors. Vectorised: the negatives are the row of S with positives set to -inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def multi_positive_contrastive(embeddings: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Mean-positive contrastive loss over a batch.

    Args:
        embeddings: B x D, L2-normalised (the caller normalises, as in the reference).
        labels: B category ids; equal ids are positives.
        temperature: tau (reference 0.1).

    Returns:
        scalar.
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"expected embeddings B x D and labels B, got {tuple(embeddings.shape)}, {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    sim = embeddings @ embeddings.t()  # B x B
    positive = labels[:, None] == labels[None, :]
    mean_pos = (sim * positive).sum(1) / positive.sum(1)
    negatives = sim.masked_fill(positive, float("-inf"))
    logits = torch.cat([mean_pos[:, None], negatives], dim=1) / temperature
    target = torch.zeros(embeddings.shape[0], dtype=torch.long, device=embeddings.device)
    return F.cross_entropy(logits, target)
