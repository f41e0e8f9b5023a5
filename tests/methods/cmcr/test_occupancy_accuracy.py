"""CMCR's occupancy_accuracy metric: the fraction of (query, neighbour) pairs whose occupancy logit has the
sign of the query's label."""

from __future__ import annotations

import torch
from cmcr_toys import tiny_batch, tiny_cmcr

torch.set_num_threads(1)


def _accuracy_with_constant_logit(sign: float) -> float:
    method = tiny_cmcr(seed=0).train()
    last = method.occupancy_mlp.layers[-1]
    with torch.no_grad():  # every pair gets the logit `sign` (and intensity 0)
        for layer in method.occupancy_mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        last.bias[0] = sign
    _, metrics = method(tiny_batch(seed=2))
    return float(metrics["occupancy_accuracy"])


def test_constant_logits_score_the_label_fractions():
    always_occupied, always_free = _accuracy_with_constant_logit(1.0), _accuracy_with_constant_logit(-1.0)
    # The occupied and free fractions of the same pairs (same seeds, same neighbours) add up to 1, and the
    # queries are about one third "in", two thirds "out" or "far" (pairs: far queries often have none).
    assert abs(always_occupied + always_free - 1.0) < 1e-6
    assert 0.2 < always_occupied < 0.8
