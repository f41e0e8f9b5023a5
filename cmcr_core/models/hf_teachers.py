"""CLIP and DINOv2 image teachers through Hugging Face ``transformers`` (extra: ``pip install cmcr[hf]``).

(The one-vector-per-image teachers of ReCon, a ViT's pre-logits and CLIP's image embedding, are in
``cmcr_core.models.hf_global_teachers``; they share the loading helpers of this module.)

Weights are read from a LOCAL directory written by ``save_pretrained`` (``config.json`` + weights, and for
CLIP's text side the tokenizer files) with ``local_files_only=True``: nothing is ever downloaded.
``transformers`` is imported only when one of these teachers is built, so the rest of cmcr never needs it.

Architectures (``cmcr_core.models.teacher.TEACHER_ARCHS`` lists both; ``build_teacher`` loads them):

* ``hf_clip`` — the vision tower of a ViT CLIP (``CLIPModel``) with MaskCLIP-style dense features
  ([assumed] as in CLIP2Scene): the blocks before the last run unchanged; in the last
  block the query–key attention is skipped and each patch token keeps only its own value path,
  ``v = out_proj(v_proj(ln_1(x)))``, followed by the block's residual and MLP (``v = x + v``;
  ``v = v + mlp(ln_2(v))``); then the final LayerNorm (``post_layernorm``) and CLIP's visual projection
  are applied per patch — a 1×1 convolution in the joint image–text space (512-d for ViT-B/16) — and
  every patch vector is L2-normalised. Output stride = the patch size. CLIP ResNets are not provided by
  ``transformers``; only ViT CLIP is supported here.
* ``hf_dinov2`` — ``Dinov2Model`` patch tokens after its final LayerNorm (class token dropped), as a
  (B, hidden, H/p, W/p) map (not normalised: DINOv2 features are used as they come).

Inputs are RGB in [0, 1], normalised inside with the model's mean/std (``preprocessor_config.json`` when
present, else the CLIP or ImageNet constants). An image whose sides are not multiples of the patch size
is resized (bilinear) to the nearest multiple first, so the patch grid covers the whole image; position
embeddings are interpolated to the grid (``interpolate_pos_encoding``).

Text side: :func:`encode_clip_texts` encodes strings with the CLIP text tower (``get_text_features``);
``cmcr_core.eval.zeroshot.clip_text_embeddings`` feeds it the prompts of every class and template.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.models.frozen_teacher import FrozenTeacher, TeacherInfo
from cmcr_core.models.resnet import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "HF_TEACHER_ARCHS",
    "ClipDenseEncoder",
    "Dinov2DenseEncoder",
    "HFNotInstalledError",
    "build_hf_encoder",
    "encode_clip_texts",
    "load_clip_model",
    "load_hf_teacher",
]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HF_CHECKPOINT_FORMAT = "transformers"


class HFNotInstalledError(ImportError):
    """``transformers`` is needed for CLIP/DINOv2 teachers but is not installed."""


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise HFNotInstalledError(
            "the CLIP, DINOv2 and ViT teachers need Hugging Face transformers: pip install cmcr[hf]"
        ) from error
    return transformers


def local_model_dir(path: str | Path, what: str) -> Path:
    directory = Path(path)
    if not str(path):
        raise ValueError(f"{what}: teacher.weights must name a local directory written by save_pretrained")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{what}: {directory} is not a local transformers model directory (no config.json); weights "
            "are never downloaded — save the model there with save_pretrained first"
        )
    return directory


def load_clip_model(path: str | Path, what: str) -> tuple[Any, Path]:
    """A ``CLIPModel`` from a local ``save_pretrained`` directory (never downloaded), and that directory."""
    transformers = require_transformers()
    directory = local_model_dir(path, what)
    return transformers.CLIPModel.from_pretrained(directory, local_files_only=True), directory


def _preprocessing(directory: Path, default_mean: Sequence[float], default_std: Sequence[float]
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from ``preprocessor_config.json`` when the directory has one, else the defaults."""
    config = directory / "preprocessor_config.json"
    if config.is_file():
        values = json.loads(config.read_text(encoding="utf-8"))
        mean, std = values.get("image_mean", default_mean), values.get("image_std", default_std)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return tuple(default_mean), tuple(default_std)


class _PatchGridEncoder(nn.Module):
    """Shared input handling: [0, 1] RGB → normalised, resized to a multiple of the patch size."""

    out_channels: int
    output_stride: int

    def _setup_input(self, patch_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.patch_size = int(patch_size)
        self.output_stride = self.patch_size
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns for an input image of ``height`` × ``width`` pixels."""
        p = self.patch_size
        return max(1, round(height / p)), max(1, round(width / p))

    def _pixels(self, images: Tensor) -> tuple[Tensor, int, int]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        rows, cols = self.grid_size(images.shape[-2], images.shape[-1])
        size = (rows * self.patch_size, cols * self.patch_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return (images - self.input_mean) / self.input_std, rows, cols


class ClipDenseEncoder(_PatchGridEncoder):
    """MaskCLIP dense features of a ViT CLIP: (B, 3, H, W) in [0, 1] → (B, D, H/p, W/p) unit vectors.

    Args:
        path: local directory of a ``CLIPModel`` (``save_pretrained`` output).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        model, directory = load_clip_model(path, "hf_clip")
        self.path = str(path)
        self.vision = model.vision_model
        self.projection = model.visual_projection
        self.out_channels = int(model.config.projection_dim)
        layer_forward = inspect.signature(self.vision.encoder.layers[0].forward)
        self._legacy_layers = "causal_attention_mask" in layer_forward.parameters
        mean, std = _preprocessing(directory, CLIP_MEAN, CLIP_STD)
        self._setup_input(model.config.vision_config.patch_size, mean, std)

    def _tokens_before_last_block(self, pixels: Tensor) -> Tensor:
        hidden = self.vision.embeddings(pixels, interpolate_pos_encoding=True)
        hidden = self.vision.pre_layrnorm(hidden)
        for layer in self.vision.encoder.layers[:-1]:
            # transformers 4.x layers also take a (here unused) causal mask and return a tuple.
            extra = {"causal_attention_mask": None} if self._legacy_layers else {}
            hidden = layer(hidden, attention_mask=None, **extra)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, projection_dim, rows, cols) L2-normalised MaskCLIP patch features."""
        pixels, rows, cols = self._pixels(images)
        tokens = self._tokens_before_last_block(pixels)[:, 1:]  # patch tokens; the class token is unused
        last = self.vision.encoder.layers[-1]
        # Value path only: each patch attends to itself, so attention reduces to out_proj(v_proj(·)).
        values = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(tokens)))
        values = tokens + values
        values = values + last.mlp(last.layer_norm2(values))
        dense = self.projection(self.vision.post_layernorm(values))  # (B, rows·cols, D)
        dense = dense.transpose(1, 2).reshape(dense.shape[0], -1, rows, cols)
        return F.normalize(dense, dim=1)

    def global_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, D) unnormalised CLIP image embeddings, as ``get_image_features``."""
        pixels, _, _ = self._pixels(images)
        out = self.vision(pixel_values=pixels, interpolate_pos_encoding=True)
        return self.projection(out.pooler_output)


class Dinov2DenseEncoder(_PatchGridEncoder):
    """DINOv2 patch features: (B, 3, H, W) in [0, 1] → (B, hidden, H/p, W/p).

    Args:
        path: local directory of a ``Dinov2Model`` (``save_pretrained`` output).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        transformers = require_transformers()
        directory = local_model_dir(path, "hf_dinov2")
        self.path = str(path)
        self.model = transformers.Dinov2Model.from_pretrained(directory, local_files_only=True)
        self.out_channels = int(self.model.config.hidden_size)
        mean, std = _preprocessing(directory, IMAGENET_MEAN, IMAGENET_STD)
        self._setup_input(self.model.config.patch_size, mean, std)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, hidden, rows, cols) patch tokens after the final LayerNorm."""
        pixels, rows, cols = self._pixels(images)
        tokens = self.model(pixel_values=pixels).last_hidden_state[:, 1:]
        if tokens.shape[1] != rows * cols:
            raise ValueError(
                f"hf_dinov2 at {self.path}: {tokens.shape[1]} patch tokens for a {rows}×{cols} grid "
                "(models with register tokens are not supported)"
            )
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, rows, cols)


HF_TEACHER_ARCHS: dict[str, type[_PatchGridEncoder]] = {
    "hf_clip": ClipDenseEncoder,
    "hf_dinov2": Dinov2DenseEncoder,
}


def build_hf_encoder(arch: str, path: str = "", **unexpected: Any) -> nn.Module:
    """The encoder of ``arch`` from a local directory: the builder ``TEACHER_ARCHS`` lists for ``hf_*``."""
    if unexpected:
        raise ValueError(f"teacher arch {arch!r} takes only `path`, got {sorted(unexpected)}")
    if not path:
        raise ValueError(
            f"teacher arch {arch!r} has no random initialisation here: set teacher.weights to a local "
            "transformers model directory"
        )
    return HF_TEACHER_ARCHS[arch](path)


def load_hf_teacher(arch: str, path: str | Path) -> FrozenTeacher:
    """A frozen CLIP/DINOv2 teacher from a local ``save_pretrained`` directory.

    Args:
        arch: ``"hf_clip"`` or ``"hf_dinov2"``.
        path: the model directory.

    Returns:
        ``FrozenTeacher`` whose ``info`` records arch, ``kwargs = {"path": path}`` and the source, so a
        pretraining checkpoint names the directory to reload it from.
    """
    if arch not in HF_TEACHER_ARCHS:
        raise ValueError(f"unknown transformers teacher {arch!r}; known: {sorted(HF_TEACHER_ARCHS)}")
    encoder = HF_TEACHER_ARCHS[arch](path)
    loaded = sum(1 for _ in encoder.state_dict())
    info = TeacherInfo(arch, {"path": str(path)}, str(path), HF_CHECKPOINT_FORMAT, loaded)
    logger.info("teacher %s from %s: %d-d features at stride %d", arch, path, encoder.out_channels,
                encoder.output_stride)
    return FrozenTeacher(encoder, info)


@torch.no_grad()
def encode_clip_texts(
    path: str | Path, texts: Sequence[str], batch_size: int = 256, device: str | torch.device = "cpu"
) -> Tensor:
    """CLIP text embeddings (``get_text_features``) of ``texts``.

    Args:
        path: local ``CLIPModel`` directory with its tokenizer files.
        texts: N strings (e.g. every prompt of ``cmcr_core.eval.zeroshot.format_prompts``, flattened).
        batch_size: texts per forward pass.
        device: where to run the text tower.

    Returns:
        (N, D) float32 unnormalised embeddings.
    """
    model, directory = load_clip_model(path, "CLIP text encoder")
    model = model.to(device).eval()
    tokenizer = require_transformers().AutoTokenizer.from_pretrained(directory, local_files_only=True)
    flat = list(texts)
    max_length = int(model.config.text_config.max_position_embeddings)
    chunks = []
    for start in range(0, len(flat), batch_size):
        tokens = tokenizer(flat[start : start + batch_size], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt").to(device)
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        chunks.append((out.pooler_output if hasattr(out, "pooler_output") else out).float().cpu())
    embeddings = torch.cat(chunks)
    if not math.isfinite(float(embeddings.abs().sum())):
        raise ValueError(f"CLIP text encoder at {path} produced non-finite embeddings")
    return embeddings
