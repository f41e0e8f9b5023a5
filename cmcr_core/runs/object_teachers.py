"""The teachers of `cmcr prepare objects` and the class texts of `cmcr zeroshot --objects`, named on the
command line.

Image teacher (``--teacher``): ``hf_vit:DIR`` (a ViT's pre-logits, ReCon's image teacher), ``hf_clip:DIR``
(CLIP's image embedding, ReCon's zero-shot variant), a teacher FILE (ResNet / cmcr-teacher), or nothing
(the ``TinyImageTeacher`` stand-in). Text (``--text hf_clip:DIR``): the CLIP text tower fed with ReCon's 60
prompts of every class text; or a ``.npy`` of class rows (``--text-embeddings``); or nothing (the
``class_text_vectors`` stand-in).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmcr_core.data.objects import class_text_vectors, read_shapenet55_classes
from cmcr_core.data.objects.prepare import prepare_teacher_targets, read_class_text_features
from cmcr_core.data.objects.prompts import prompt_set
from cmcr_core.engine.runner import resolve_device
from cmcr_core.models.hf_global_teachers import GLOBAL_TEACHER_ARCHS, load_global_teacher
from cmcr_core.models.hf_teachers import encode_clip_texts
from cmcr_core.models.teacher import load_teacher
from cmcr_core.models.tiny_image_teacher import TinyImageTeacher
from cmcr_core.runs.report import Line, Report

__all__ = [
    "CLASS_TEXT_SUFFIX", "ImageTeacher", "class_text_features", "clip_prompt_features",
    "object_image_teacher", "parse_model_spec", "write_teacher_targets",
]

CLASS_TEXT_SUFFIX = ".class_text.npy"


@dataclass
class ImageTeacher:
    """An image teacher for the renders: the module, whether the caller must ImageNet-normalise its input
    (the stand-in) or it takes [0, 1] (every loaded teacher), and where it came from."""

    module: nn.Module
    normalize_input: bool
    source: str


def parse_model_spec(spec: str, option: str, archs: Sequence[str]) -> tuple[str, Path] | None:
    """``ARCH:DIR`` → (arch, directory) for an arch of ``archs``; None for anything without such a prefix
    (a plain file path). An unknown ``xxx:`` prefix that is not an existing path is an error."""
    arch, sep, rest = str(spec).partition(":")
    if sep and arch in archs:
        if not rest:
            raise ValueError(f"{option} {spec}: give the local model directory after '{arch}:'")
        return arch, Path(rest)
    if sep and arch.startswith("hf_") and not Path(spec).exists():
        raise ValueError(f"{option} {spec}: unknown model kind {arch!r}; expected one of {', '.join(archs)}")
    return None


def object_image_teacher(teacher: str | Path | None, img_dim: int = 32, seed: int = 0) -> ImageTeacher:
    """The image teacher named by ``--teacher`` (see the module docstring)."""
    if teacher is None:
        return ImageTeacher(TinyImageTeacher(out_dim=img_dim, seed=seed), True,
                            f"TinyImageTeacher(out_dim={img_dim}, seed={seed}) stand-in")
    spec = parse_model_spec(str(teacher), "--teacher", tuple(GLOBAL_TEACHER_ARCHS))
    try:
        if spec is not None:
            return ImageTeacher(load_global_teacher(*spec), False, str(teacher))
        return ImageTeacher(load_teacher(teacher), False, str(teacher))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise ValueError(f"--teacher {teacher}: {exc}") from exc


def clip_prompt_features(clip_dir: str | Path, texts: Sequence[str], prompts: str = "recon",
                         device: str | torch.device = "cpu") -> np.ndarray:
    """CLIP text features of every prompt of every class text: classes × prompts × D (unnormalised)."""
    per_class = prompt_set(texts, prompts)
    flat = [p for class_prompts in per_class for p in class_prompts]
    features = encode_clip_texts(clip_dir, flat, device=device).numpy()
    return features.reshape(len(per_class), len(per_class[0]), -1).astype(np.float32)


def class_text_features(root: str | Path, text: str | None, text_embeddings: str | Path | None,
                        text_dim: int, seed: int, device: str | torch.device) -> tuple[np.ndarray, str]:
    """Per-class text features of the ShapeNet-55 copy at ``root`` (``shapenet55.json`` order, classes × M ×
    D) and their source: CLIP on ReCon's prompts (``text = "hf_clip:DIR"``), a file, or the stand-in."""
    _, descriptions = read_shapenet55_classes(root)
    if text is not None and text_embeddings is not None:
        raise ValueError("--text and --text-embeddings both name the text features; give one")
    if text is not None:
        spec = parse_model_spec(text, "--text", ("hf_clip",))
        if spec is None:
            raise ValueError(f"--text {text}: expected hf_clip:DIR (a local CLIP directory)")
        return clip_prompt_features(spec[1], descriptions, "recon", device), f"{text} (ReCon's 60 prompts)"
    if text_embeddings is not None:
        features = read_class_text_features(text_embeddings, len(descriptions))
        return (features if features.ndim == 3 else features[:, None]), str(text_embeddings)
    return class_text_vectors(len(descriptions), text_dim, seed=seed), "class_text_vectors stand-in"


def write_teacher_targets(root: str | Path, target_file: str | Path, teacher: str | Path | None = None,
                          text: str | None = None, text_embeddings: str | Path | None = None,
                          img_dim: int = 32, text_dim: int = 24, views: int = 1, image_size: int = 224,
                          seed: int = 0, device: str = "auto") -> Report:
    """ReCon teacher targets of every ShapeNet-55 object under ``root`` into ``target_file`` (.npz), and the
    per-class text features next to it (``<stem>.class_text.npy``, classes × M × D: the class embeddings of
    `cmcr zeroshot --objects` on the same classes). Teachers run on `device` (auto: CUDA when available)."""
    device = resolve_device(device)
    image_teacher = object_image_teacher(teacher, img_dim, seed)
    features, text_source = class_text_features(root, text, text_embeddings, text_dim, seed, device)
    targets = prepare_teacher_targets(root, target_file, image_teacher.module.to(device), features, views,
                                      image_size, seed, normalize=image_teacher.normalize_input,
                                      device=device)
    class_file = Path(target_file).with_suffix(CLASS_TEXT_SUFFIX)
    np.save(class_file, features)
    info = {"image_teacher": image_teacher.source, "text": text_source, "objects": len(targets.ids),
            "img": list(targets.img.shape), "text_shape": list(targets.text.shape)}
    return Report((Line(f"wrote teacher targets {target_file}: {json.dumps(info)}"),
                   Line(f"wrote class text features {class_file}: {list(features.shape)}")))
