"""Object classification with a ReCon encoder: fine-tuning through the shared engine and linear probing.

* ``finetune_classifier`` / ``run_object_finetune``: ``PointTransformerClassifier`` trained by the engine
  (one run folder per seed), evaluated by overall accuracy on FPS-sampled test clouds, voting (mean +- std
  over votes) and per-class accuracy; ``metrics.json`` aggregates the seeds.
* ``probe_classifier`` / ``run_object_probe``: a linear SVM (ReCon's ``LinearSVC(C = 0.075)``) or logistic
  regression on frozen global features.

The commands' dispatch (fine-tuning, probe, few-shot folds) is ``cmcr_core.runs.object_protocols``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cmcr_core.config import ObjectClassifyRecipe, ObjectDataConfig, ObjectEvalConfig
from cmcr_core.data.objects import (
    ObjectPointDataset,
    ObjectSet,
    augment_points,
    collate_objects,
)
from cmcr_core.engine import distributed
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.eval.classification import (
    extract_global_features,
    overall_accuracy,
    per_class_accuracy,
    voting_accuracy,
)
from cmcr_core.eval.probes import fit_linear_classifier, fit_linear_svc
from cmcr_core.methods.classification import ClassifierMethod, classifier_param_groups
from cmcr_core.methods.registry import recon_encoder_sizes
from cmcr_core.models.point_transformer import PointTransformerClassifier
from cmcr_core.runs.objects import fps_pool_size, read_objects, train_dataset, train_on_objects
from cmcr_core.runs.run_folder import METRICS_JSON, seed_folder, write_json

logger = logging.getLogger(__name__)


def load_recon_encoder(encoder: torch.nn.Module, weights: str | Path) -> None:
    """Load the ``student`` entry of a ReCon pretraining checkpoint into ``encoder`` (all keys must match)."""
    payload = load_checkpoint(weights)
    state = payload.get("student")
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: no 'student' entry (not a ReCon pretraining checkpoint)")
    result = encoder.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights}: encoder weights do not match the recipe's model (missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}); check model.preset"
        )


def eval_points(objects: ObjectSet, data: ObjectDataConfig, num_points: int | None = None) -> Tensor:
    """B x N x 3 FPS-sampled, un-augmented clouds (evaluation protocol), normalised as ``data.normalize``."""
    ds = ObjectPointDataset(objects, num_points or data.num_points, sampling="fps", normalize=data.normalize)
    return torch.from_numpy(np.stack([ds[i]["points"] for i in range(len(ds))]))


@torch.no_grad()
def _logits(model: PointTransformerClassifier, points: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    return torch.cat(
        [model(points[s : s + batch_size].to(device)).cpu() for s in range(0, len(points), batch_size)]
    )


@torch.no_grad()
def recalibrate_batch_norm(
    model: torch.nn.Module, dataset: ObjectPointDataset, passes: int, batch_size: int
) -> None:
    """Re-estimate every batch norm's running mean/var as the cumulative average over ``passes`` epochs
    of ``dataset`` in training mode (no gradients; dropout does not affect the BN inputs of the encoder)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    device = next(model.parameters()).device
    for epoch in range(passes):
        dataset.set_epoch(10**6 + epoch)  # draws unlike the training epochs'
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_objects, drop_last=True)
        for batch in loader:
            model(batch.points.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def evaluate_classifier(
    model: PointTransformerClassifier, recipe: ObjectClassifyRecipe, test: ObjectSet
) -> dict[str, Any]:
    """Overall accuracy (one FPS pass), voting mean +- std over votes, per-class accuracy."""
    model.eval()
    points, labels = eval_points(test, recipe.data), torch.from_numpy(test.labels)
    logits = _logits(model, points, recipe.data.eval_batch_size)
    e = recipe.eval
    augment = None
    if e.vote_augmentation != "none":

        def augment(subset: Tensor, generator: torch.Generator) -> Tensor:
            # numpy augmentation per cloud, seeded from the vote generator (reproducible)
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            rng = np.random.default_rng(seed)
            out = [augment_points(c.cpu().numpy(), e.vote_augmentation, rng) for c in subset]
            return torch.from_numpy(np.stack(out).astype(np.float32)).to(subset.device)

    pool_source = eval_points(test, recipe.data, fps_pool_size(recipe.data))
    votes = voting_accuracy(
        lambda p: _logits(model, p, recipe.data.eval_batch_size),
        pool_source,
        labels,
        recipe.data.num_points,
        e.num_votes,
        e.num_subsets,
        augment=augment,
        seed=recipe.train.seed,
    )
    return {
        "overall_accuracy": overall_accuracy(logits, labels),
        "voting_mean": votes["mean"],
        "voting_std": votes["std"],
        "voting_votes": votes["votes"],
        "per_class_accuracy": per_class_accuracy(logits.argmax(1), labels, test.class_names),
    }


def finetune_classifier(
    recipe: ObjectClassifyRecipe, train_set: ObjectSet, test_set: ObjectSet, out_dir: str | Path,
    weights: str | Path | None = None,
) -> dict[str, Any]:
    """Fine-tune one classifier (seed ``recipe.train.seed``) on ``train_set`` into ``out_dir``, evaluate it on
    ``test_set``, write ``out_dir/metrics.json``. ``weights``: ReCon pretraining checkpoint (None = random
    initialisation)."""
    out_dir = Path(out_dir)
    distributed.seed_process(recipe.train.seed)
    model = PointTransformerClassifier(
        len(train_set.class_names),
        **recon_encoder_sizes(recipe.model),
        drop_path_rate=recipe.model.drop_path_rate,
        head=recipe.model.head,
    )
    if weights is not None:
        load_recon_encoder(model.encoder, weights)
    method = ClassifierMethod(model, recipe.loss.label_smoothing)
    o = recipe.optim
    groups = classifier_param_groups(method, o.lr, o.weight_decay, o.cls_lr_scale)
    dataset = train_dataset(recipe, train_set, needs_targets=False)
    train_on_objects(recipe, method, dataset, out_dir, param_groups=groups)
    if recipe.eval.recalibrate_bn > 0:
        recalibrate_batch_norm(model, dataset, recipe.eval.recalibrate_bn, recipe.data.batch_size)
    metrics = evaluate_classifier(model.cpu(), recipe, test_set)
    write_json(out_dir / METRICS_JSON, metrics, indent=2, newline=False)
    return metrics


def run_object_finetune(
    recipe: ObjectClassifyRecipe,
    out_dir: str | Path,
    weights: str | Path | None = None,
    seeds: Iterable[int] = (0,),
) -> dict[str, Any]:
    """Fine-tune a classifier per seed (``out_dir/seed{s}``), evaluate it, write ``out_dir/metrics.json``.

    ``weights``: ReCon pretraining checkpoint (``None`` = random initialisation).
    """
    out_dir = Path(out_dir)
    train_set = read_objects(recipe.data, recipe.data.train_split)
    test_set = read_objects(recipe.data, recipe.data.test_split)
    runs = {}
    for seed in seeds:
        seeded = replace(recipe, train=replace(recipe.train, seed=int(seed)))
        folder = seed_folder(out_dir, seed)
        runs[str(seed)] = finetune_classifier(seeded, train_set, test_set, folder, weights)
    summary = _summary(recipe, weights, runs)
    write_json(out_dir / METRICS_JSON, summary, indent=2, newline=False)
    return summary


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and population std (the spread of the runs themselves, as the tables report it)."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def _summary(
    recipe: ObjectClassifyRecipe, weights: str | Path | None, runs: dict[str, Any]
) -> dict[str, Any]:
    keys = ("overall_accuracy", "voting_mean")
    return {
        "recipe": recipe.name,
        "weights": str(weights) if weights is not None else None,
        **{k: mean_std([r[k] for r in runs.values()]) for k in keys if all(k in r for r in runs.values())},
        "seeds": runs,
    }


def fit_probe(
    train_x: Tensor, train_y: Tensor, num_classes: int, e: ObjectEvalConfig, seed: int
) -> Callable[[Tensor], Tensor]:
    """The probe the recipe names: ``svc`` (reference LinearSVC) or ``logistic`` (standardised features)."""
    if e.probe_classifier == "svc":
        return fit_linear_svc(train_x, train_y, num_classes, e.probe_c)
    return fit_linear_classifier(
        train_x, train_y, num_classes, e.probe_epochs, e.probe_lr, e.probe_weight_decay, seed
    )


def probe_classifier(
    recipe: ObjectClassifyRecipe, train_set: ObjectSet, test_set: ObjectSet, weights: str | Path | None = None
) -> dict[str, Any]:
    """The linear probe (``eval.probe_classifier``) on frozen global features of a pretrained or random
    (seed ``train.seed``) encoder, fitted on ``train_set`` and scored on ``test_set``.

    Voting here = the probe's logits averaged over random FPS subsets, reported as mean +- std over votes.
    """
    seed, e = recipe.train.seed, recipe.eval
    distributed.seed_process(seed)
    classifier = PointTransformerClassifier(
        len(train_set.class_names), **recon_encoder_sizes(recipe.model), drop_path_rate=0.0, head="linear"
    )
    encoder = classifier.encoder
    if weights is not None:
        load_recon_encoder(encoder, weights)
    encoder.eval()
    bs = recipe.data.eval_batch_size
    train_y, test_y = torch.from_numpy(train_set.labels), torch.from_numpy(test_set.labels)
    train_f = extract_global_features(encoder, eval_points(train_set, recipe.data), e.probe_features, bs)
    test_f = extract_global_features(encoder, eval_points(test_set, recipe.data), e.probe_features, bs)
    predict = fit_probe(train_f, train_y, len(train_set.class_names), e, seed)
    logits = predict(test_f)
    votes = voting_accuracy(
        lambda p: predict(extract_global_features(encoder, p, e.probe_features, bs)),
        eval_points(test_set, recipe.data, fps_pool_size(recipe.data)),
        test_y,
        recipe.data.num_points,
        e.num_votes,
        e.num_subsets,
        seed=seed,
    )
    return {
        "recipe": recipe.name,
        "weights": str(weights) if weights is not None else None,
        "train_accuracy": overall_accuracy(predict(train_f), train_y),
        "overall_accuracy": overall_accuracy(logits, test_y),
        "voting_mean": votes["mean"],
        "voting_std": votes["std"],
        "voting_votes": votes["votes"],
        "per_class_accuracy": per_class_accuracy(logits.argmax(1), test_y, test_set.class_names),
    }


def run_object_probe(
    recipe: ObjectClassifyRecipe, out_dir: str | Path, weights: str | Path | None = None
) -> dict[str, Any]:
    """``probe_classifier`` on the recipe's train and test splits -> ``out_dir/metrics.json``."""
    train_set = read_objects(recipe.data, recipe.data.train_split)
    test_set = read_objects(recipe.data, recipe.data.test_split)
    metrics = probe_classifier(recipe, train_set, test_set, weights)
    write_json(Path(out_dir) / METRICS_JSON, metrics, indent=2, newline=False)
    return metrics


def run_object_probe_seeds(
    recipe: ObjectClassifyRecipe, out_dir: str | Path, weights: str | Path | None, seeds: Iterable[int]
) -> dict[str, Any]:
    """``run_object_probe`` once per seed (``out_dir/seed{s}``) and ``out_dir/metrics.json`` with the mean
    +- std over seeds. The seed draws the encoder of a random initialisation, the probe's start (logistic)
    and the votes' subsets; with ``weights`` the encoder is the same in every seed."""
    out_dir = Path(out_dir)
    runs = {}
    for seed in seeds:
        seeded = replace(recipe, train=replace(recipe.train, seed=int(seed)))
        runs[str(seed)] = run_object_probe(seeded, seed_folder(out_dir, seed), weights)
    summary = _summary(recipe, weights, runs)
    write_json(out_dir / METRICS_JSON, summary, indent=2, newline=False)
    return summary
