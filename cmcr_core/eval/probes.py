"""Linear probes on frozen features: a torch LinearSVC (the reference probe) and logistic regression.

* ``fit_linear_svc``: ``sklearn.svm.LinearSVC(C)`` solved exactly (one-vs-rest, squared hinge);
* ``fit_linear_classifier``: full-batch multinomial logistic regression (AdamW) on standardised features;
* ``linear_probe``: ``fit_linear_classifier`` scored on a train and a test set.

Each returns (or uses) a predictor ``features -> logits``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.eval.classification import overall_accuracy

__all__ = ["fit_linear_classifier", "fit_linear_svc", "linear_probe"]


def fit_linear_classifier(
    train_x: Tensor,
    train_y: Tensor,
    num_classes: int,
    epochs: int = 300,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
    standardize: bool = True,
) -> Callable[[Tensor], Tensor]:
    """Full-batch multinomial logistic regression (AdamW), on features standardised with the training mean
    and std when ``standardize``; returns x -> logits."""
    if standardize:
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)

        def prepare(feats: Tensor) -> Tensor:
            return (feats - mean) / std
    else:

        def prepare(feats: Tensor) -> Tensor:
            return feats

    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(train_x.shape[1], num_classes, generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    x = prepare(train_x)
    with torch.enable_grad():
        for _ in range(epochs):
            optimizer.zero_grad()
            F.cross_entropy(x @ weight + bias, train_y).backward()
            optimizer.step()
    weight, bias = weight.detach(), bias.detach()
    return lambda feats: prepare(feats) @ weight + bias


def fit_linear_svc(
    train_x: Tensor, train_y: Tensor, num_classes: int, c: float = 0.075
) -> Callable[[Tensor], Tensor]:
    """Torch equivalent of ``sklearn.svm.LinearSVC(C=c)`` (the reference probe): one-vs-rest, squared hinge,
    L2 penalty on the weights *and* the intercept (liblinear's ``intercept_scaling = 1``), raw features.

    Each class solves ``min 0.5 |w|^2 + c * sum_i max(0, 1 - y_i (w . [x_i, 1]))^2`` (y = +-1) exactly by a
    generalised Newton method with backtracking (the objective is strongly convex and piecewise quadratic).
    Returns x -> decision values (B x classes).
    """
    if c <= 0:
        raise ValueError(f"linear SVC: C must be > 0, got {c}")
    x = torch.cat([train_x.double(), torch.ones(len(train_x), 1, dtype=torch.float64)], dim=1)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    weights = []
    for k in range(num_classes):
        y = (train_y == k).double() * 2 - 1
        w = torch.zeros(x.shape[1], dtype=torch.float64)

        def objective(w: Tensor, y: Tensor = y) -> Tensor:
            return 0.5 * w @ w + c * (1 - y * (x @ w)).clamp_min(0).square().sum()

        for _ in range(100):
            margin = 1 - y * (x @ w)
            active = margin > 0
            xa = x[active]
            grad = w - 2 * c * xa.T @ (y[active] * margin[active])
            if float(grad.norm()) <= 1e-10 * max(1.0, float(w.norm())):
                break
            step = torch.linalg.solve(eye + 2 * c * xa.T @ xa, grad)
            value, t = objective(w), 1.0
            while t > 1e-12 and objective(w - t * step) > value - 1e-4 * t * (grad @ step):
                t /= 2
            w = w - t * step
        weights.append(w)
    stacked = torch.stack(weights, dim=1)  # (D + 1) x classes
    return lambda feats: (feats.double() @ stacked[:-1] + stacked[-1]).float()


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                 **fit: Any) -> dict[str, float]:
    """``fit_linear_classifier(train_x, train_y, num_classes, **fit)`` scored: ``{"train_acc", "test_acc"}``
    in [0, 1] (``fit``: ``epochs``, ``lr``, ``weight_decay``, ``seed``, ``standardize``)."""
    predict = fit_linear_classifier(train_x, train_y, num_classes, **fit)
    with torch.no_grad():
        return {
            "train_acc": overall_accuracy(predict(train_x), train_y),
            "test_acc": overall_accuracy(predict(test_x), test_y),
        }
