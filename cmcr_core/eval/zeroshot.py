"""Zero-shot segmentation, tensor part: point features vs. class text embeddings (CLIP2Scene's protocol).

* Text classifier: t_c = normalize(mean_p normalize(E_text(p(c)))) — each template embedding is
  normalised, averaged over templates, and the mean renormalised (CLIP / CLIP2Scene prompt ensembling).
* Logits s_{p,c} = f̂(p)·t_c (cosine with the normalised point feature); prediction = argmax_c.
* Class prototypes (normalised class means of labelled features) stand in for text embeddings where no
  text encoder is available (tests, CPU demos, an upper-bound "oracle classifier").

Predictions are 0-based indices into the class list. For the nuScenes classes below, index c corresponds
to the segmentation train id c + 1 (train id 0 = ignore, docs/data-format.md).

The relational paper's prompts and class strings are [unknown]; the CLIP2Scene (85 templates) and
OpenScene (one template) conventions are provided as data constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cmcr_core.models.hf_teachers import encode_clip_texts

__all__ = [
    "CLIP2SCENE_CLASS_NAMES",
    "CLIP2SCENE_TEMPLATES",
    "CLIP_IMAGENET_TEMPLATES",
    "NUSCENES_CLASSES",
    "OPENSCENE_CLASS_NAMES",
    "OPENSCENE_TEMPLATES",
    "SCENE_TEMPLATES",
    "ClassPrototypes",
    "class_prototypes",
    "clip_text_embeddings",
    "format_prompts",
    "text_classifier",
    "zero_shot_logits",
    "zero_shot_predict",
]

# Evaluation class order of nuScenes lidarseg (train ids 1..16).
NUSCENES_CLASSES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)  # fmt: skip

# Class strings fed to the templates (same order as NUSCENES_CLASSES).
CLIP2SCENE_CLASS_NAMES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)  # fmt: skip
OPENSCENE_CLASS_NAMES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "person",
    "traffic cone", "trailer", "truck", "drivable surface", "other flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)  # fmt: skip

# The 80 prompt templates CLIP uses for ImageNet zero-shot classification.
CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip
# CLIP2Scene's five scene templates, appended to the 80 above (85 in all).
SCENE_TEMPLATES: tuple[str, ...] = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
CLIP2SCENE_TEMPLATES: tuple[str, ...] = CLIP_IMAGENET_TEMPLATES + SCENE_TEMPLATES
OPENSCENE_TEMPLATES: tuple[str, ...] = ("a {} in a scene",)


def format_prompts(
    class_names: tuple[str, ...] | list[str], templates: tuple[str, ...] | list[str]
) -> list[list[str]]:
    """All prompts, ``[c][p] = templates[p].format(class_names[c])``, ready for a text encoder.

    Args:
        class_names: C class strings.
        templates: P templates, each with exactly one ``{}``.

    Returns:
        C lists of P strings; encoding them gives the (C, P, D) input of :func:`text_classifier`.
    """
    for tpl in templates:
        if tpl.count("{}") != 1:
            raise ValueError(f"format_prompts: template {tpl!r} must contain exactly one '{{}}'")
    return [[tpl.format(name) for tpl in templates] for name in class_names]


def clip_text_embeddings(
    path: str | Path,
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Tensor:
    """CLIP text embeddings of every (class, template) prompt (``format_prompts``).

    Args:
        path: local ``CLIPModel`` directory with its tokenizer files.
        class_names: C class strings.
        templates: P templates with one ``{}`` each (e.g. ``CLIP2SCENE_TEMPLATES``).
        batch_size: prompts per forward pass.
        device: where to run the text tower.

    Returns:
        (C, P, D) float32 unnormalised embeddings (:func:`text_classifier` normalises, averages over P and
        renormalises).
    """
    prompts = format_prompts(list(class_names), list(templates))
    flat = [p for per_class in prompts for p in per_class]
    embeddings = encode_clip_texts(path, flat, batch_size=batch_size, device=device)
    return embeddings.view(len(class_names), len(templates), -1)


def text_classifier(text_embeddings: Tensor | np.ndarray) -> Tensor:
    """Class classifier weights from per-class (optionally per-template) text embeddings.

    Args:
        text_embeddings: (C, D) one embedding per class, or (C, P, D) P template embeddings per class.

    Returns:
        (C, D) unit rows: normalise each template embedding, mean over templates, renormalise. An
        all-zero class (e.g. an absent class prototype) stays a zero row; :func:`zero_shot_logits`
        refuses it unless ``valid_classes`` excludes it.
    """
    text = torch.as_tensor(text_embeddings)
    if text.dim() == 2:
        text = text.unsqueeze(1)
    if text.dim() != 3 or 0 in text.shape:
        raise ValueError(
            f"text_classifier: text embeddings must be (C, D) or (C, P, D), got shape {tuple(text.shape)}"
        )
    text = text.to(torch.promote_types(text.dtype, torch.float32))
    return F.normalize(F.normalize(text, dim=-1).mean(dim=1), dim=-1)


def zero_shot_logits(
    features: Tensor | np.ndarray,
    text_embeddings: Tensor | np.ndarray,
    valid_classes: Tensor | None = None,
) -> Tensor:
    """Cosine similarity between each point feature and each class embedding.

    Args:
        features: (N, D) point features (normalised here).
        text_embeddings: (C, D) or (C, P, D), see :func:`text_classifier`.
        valid_classes: optional (C,) bool; False columns get −inf (e.g. classes without a prototype).

    Returns:
        (N, C) logits in [−1, 1] (−inf for invalid classes).
    """
    feats = torch.as_tensor(features)
    classifier = text_classifier(text_embeddings)
    if feats.dim() != 2 or feats.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"zero_shot_logits: features {tuple(feats.shape)} must be (N, D) with D = "
            f"{classifier.shape[1]} (the text embedding size)"
        )
    if valid_classes is None:
        valid = torch.ones(classifier.shape[0], dtype=torch.bool, device=classifier.device)
    else:
        valid = torch.as_tensor(valid_classes, dtype=torch.bool, device=classifier.device)
        if valid.shape != (classifier.shape[0],):
            raise ValueError(
                f"zero_shot_logits: valid_classes must be ({classifier.shape[0]},), got {tuple(valid.shape)}"
            )
    if not bool(valid.any()):
        raise ValueError("zero_shot_logits: valid_classes marks no class as valid")
    empty = (classifier.norm(dim=1) == 0) & valid
    if bool(empty.any()):
        raise ValueError(
            f"zero_shot_logits: classes {torch.nonzero(empty).squeeze(1).tolist()} have a zero embedding "
            "(absent prototype or templates that cancel); exclude them with valid_classes, e.g. "
            "ClassPrototypes.present"
        )
    dtype = torch.promote_types(feats.dtype, classifier.dtype)
    logits = F.normalize(feats.to(dtype), dim=1) @ classifier.to(dtype=dtype, device=feats.device).t()
    return logits.masked_fill(~valid.to(logits.device), -float("inf"))


def zero_shot_predict(
    features: Tensor | np.ndarray,
    text_embeddings: Tensor | np.ndarray,
    valid_classes: Tensor | None = None,
    chunk_size: int = 65536,
) -> Tensor:
    """Predicted class per point: argmax_c of the cosine logits, in chunks of points.

    Args:
        features: (N, D) point features.
        text_embeddings: (C, D) or (C, P, D).
        valid_classes: optional (C,) bool mask of classes that may be predicted.
        chunk_size: points per chunk (bounds the (chunk, C) logits buffer).

    Returns:
        (N,) int64 class indices in [0, C).
    """
    feats = torch.as_tensor(features)
    if feats.dim() != 2:
        raise ValueError(f"zero_shot_predict: features must be (N, D), got shape {tuple(feats.shape)}")
    if chunk_size < 1:
        raise ValueError(f"zero_shot_predict: chunk_size must be ≥ 1, got {chunk_size}")
    classifier = text_classifier(text_embeddings)  # ensembled once, reused by every chunk
    preds = [
        zero_shot_logits(feats[s : s + chunk_size], classifier, valid_classes).argmax(dim=1)
        for s in range(0, feats.shape[0], chunk_size)
    ]
    if not preds:
        return torch.zeros(0, dtype=torch.long, device=feats.device)
    return torch.cat(preds)


class ClassPrototypes(NamedTuple):
    """Normalised class means and which classes had at least one feature."""

    embeddings: Tensor  # (C, D); rows of absent classes are zero
    present: Tensor  # (C,) bool


def class_prototypes(
    features: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> ClassPrototypes:
    """Normalised mean of the normalised features of each class (a stand-in for text embeddings).

    Args:
        features: (N, D) features.
        labels: (N,) class ids in [0, num_classes), or ``ignore_index``.
        num_classes: C.
        ignore_index: label whose rows are skipped.

    Returns:
        ClassPrototypes(embeddings (C, D), present (C,)). Absent classes (no member, or members whose
        directions cancel exactly) get a zero row and present = False; pass ``present`` as
        ``valid_classes`` so they are never predicted.
    """
    feats = torch.as_tensor(features)
    labels = torch.as_tensor(labels, device=feats.device).long()
    if feats.dim() != 2 or labels.shape != (feats.shape[0],):
        raise ValueError(
            f"class_prototypes: need features (N, D) and labels (N,), got {tuple(feats.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if ignore_index is not None:
        keep = labels != ignore_index
        feats, labels = feats[keep], labels[keep]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"class_prototypes: labels must lie in [0, {num_classes}) (or equal ignore_index), found "
            f"range [{int(labels.min())}, {int(labels.max())}]"
        )
    sums = torch.zeros((num_classes, feats.shape[1]), dtype=torch.float64, device=feats.device)
    sums.index_add_(0, labels, F.normalize(feats.to(torch.float64), dim=1))
    norms = sums.norm(dim=1)
    present = norms > 0
    embeddings = torch.where(present.unsqueeze(1), sums / norms.clamp_min(1e-300).unsqueeze(1), sums)
    return ClassPrototypes(embeddings.to(torch.promote_types(feats.dtype, torch.float32)), present)
