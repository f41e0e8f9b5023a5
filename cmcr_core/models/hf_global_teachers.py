"""One-vector-per-image teachers through Hugging Face ``transformers``: ReCon's image targets.

ReCon (Qi et al., Contrast with Reconstruct, ICML 2023; code qizekun/ReCon) regresses its image query onto a
frozen ViT's *pre-logits*: timm's ``vit_base_patch16_224_in21k``, whose class token after the final
LayerNorm goes through a Linear(768, 768) + tanh, a 768-d vector in (−1, 1). Its zero-shot variant uses the
CLIP ViT-B/32 image embedding instead (class token → ``ln_post`` → visual projection, 512-d). Both are
available from LOCAL ``save_pretrained`` directories, nothing is ever downloaded:

* ``hf_vit`` — ``ViTModel`` with its pooler: ``pooler_output = tanh(dense(layernorm(h)[:, 0]))``, exactly
  timm's pre-logits (the Hugging Face conversion of the in21k checkpoint keeps them as ``pooler.dense``).
  A directory without pooler weights (e.g. a ``ViTForImageClassification``) is refused: a randomly
  initialised pooler is not the teacher.
* ``hf_clip`` — ``CLIPModel``'s ``get_image_features``: ``visual_projection(post_layernorm(h[:, 0]))``.

Input: RGB in [0, 1] (the ``FrozenTeacher`` contract), normalised inside with the ImageNet mean/std, as
ReCon's data pipeline does for both teachers (it ignores the 0.5/0.5 that timm's own configuration of the
in21k ViT lists). Images of another size than the model's are fed as they are, with interpolated position
embeddings. Output: (B, D).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cmcr_core.models.frozen_teacher import FrozenTeacher, TeacherInfo
from cmcr_core.models.hf_teachers import (
    HF_CHECKPOINT_FORMAT,
    load_clip_model,
    local_model_dir,
    require_transformers,
)
from cmcr_core.models.resnet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["GLOBAL_TEACHER_ARCHS", "ClipImageEmbedder", "VitPreLogits", "load_global_teacher"]

logger = logging.getLogger(__name__)


class _GlobalEncoder(nn.Module):
    """[0, 1] RGB → ImageNet-normalised pixels → one vector per image."""

    out_channels: int
    output_stride = 1

    def _setup(self, path: str | Path) -> None:
        self.path = str(path)
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _pixels(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        return (images - self.input_mean) / self.input_std


class VitPreLogits(_GlobalEncoder):
    """ViT pre-logits (the pooler's tanh output): (B, 3, H, W) in [0, 1] → (B, hidden) in (−1, 1).

    Args:
        path: local directory of a ``ViTModel`` saved with its pooler (``save_pretrained`` output).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        transformers = require_transformers()
        directory = local_model_dir(path, "hf_vit")
        model, info = transformers.ViTModel.from_pretrained(
            directory, local_files_only=True, add_pooling_layer=True, output_loading_info=True
        )
        missing = [k for k in info["missing_keys"] if k.startswith("pooler.")]
        if missing:
            raise ValueError(
                f"hf_vit: {directory} has no pooler weights ({', '.join(missing)}): the teacher is the "
                "pre-logits layer (tanh(dense(CLS))), so a ViTModel saved with its pooler is needed"
            )
        self.model = model
        self.out_channels = int(model.config.hidden_size)
        self._setup(path)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, hidden) pre-logits."""
        out = self.model(pixel_values=self._pixels(images), interpolate_pos_encoding=True)
        return out.pooler_output


class ClipImageEmbedder(_GlobalEncoder):
    """CLIP image embeddings (``get_image_features``): (B, 3, H, W) in [0, 1] → (B, projection_dim).

    Args:
        path: local directory of a ``CLIPModel`` (``save_pretrained`` output).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        model, _ = load_clip_model(path, "hf_clip")
        self.vision, self.projection = model.vision_model, model.visual_projection
        self.out_channels = int(model.config.projection_dim)
        self._setup(path)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, projection_dim), unnormalised."""
        out = self.vision(pixel_values=self._pixels(images), interpolate_pos_encoding=True)
        return self.projection(out.pooler_output)


GLOBAL_TEACHER_ARCHS: dict[str, type[_GlobalEncoder]] = {"hf_vit": VitPreLogits, "hf_clip": ClipImageEmbedder}


def load_global_teacher(arch: str, path: str | Path, **unexpected: Any) -> FrozenTeacher:
    """A frozen one-vector-per-image teacher (``hf_vit`` or ``hf_clip``) from a local directory.

    Returns:
        ``FrozenTeacher`` mapping (B, 3, H, W) in [0, 1] to (B, D); ``info`` names the directory.
    """
    if unexpected:
        raise ValueError(f"global teacher {arch!r} takes only a path, got {sorted(unexpected)}")
    if arch not in GLOBAL_TEACHER_ARCHS:
        raise ValueError(f"unknown global image teacher {arch!r}; known: {sorted(GLOBAL_TEACHER_ARCHS)}")
    encoder = GLOBAL_TEACHER_ARCHS[arch](path)
    info = TeacherInfo(arch, {"path": str(path)}, str(path), HF_CHECKPOINT_FORMAT,
                       sum(1 for _ in encoder.state_dict()))
    logger.info("image teacher %s from %s: %d-d vectors", arch, path, encoder.out_channels)
    return FrozenTeacher(encoder, info)
