"""Frozen 2D teachers: the wrapper that refuses training, and loading from LOCAL checkpoint files.

An image teacher is any ``nn.Module`` that maps RGB images (B, 3, H, W) in [0, 1] to a feature map
(B, C, h, w) and exposes ``out_channels`` (and, optionally, ``output_stride``). ``FrozenTeacher`` wraps one:
its parameters never require gradients, it is always in eval mode (BatchNorm uses running statistics),
``train(True)`` raises ``FrozenTeacherError`` and ``forward`` runs under ``torch.no_grad``.

``load_teacher(path)`` reads, without ever downloading anything (format auto-detected):

* ``cmcr-teacher``: our own file ``{"format": "cmcr-teacher", "version": 1, "arch", "kwargs",
  "state_dict", "meta"}`` written by ``save_teacher``; ``arch`` names an entry of ``TEACHER_ARCHS``;
* ``moco``: MoCo v1/v2 ``{"state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue", ...}}``
  (only ``encoder_q`` is kept, its ``fc`` head dropped);
* ``dino-train``: a DINO training checkpoint ``{"teacher": {"backbone.*" | "module.backbone.*", ...}}``;
* ``wrapped``: ``{"state_dict" | "model": {...}}`` with an optional ``module.`` prefix;
* ``plain``: a bare state dict (torchvision ``resnet50-*.pth``, DINO ``dino_resnet50_pretrain.pth``),
  ``fc.*`` dropped.

ResNet checkpoints need no arch name: it is inferred from the block type and stage depths. See
docs/checkpoints.md.
"""

from __future__ import annotations

import importlib
import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cmcr_core.models.resnet import RESNET_LAYOUTS, BasicBlock, build_resnet
from cmcr_core.ops.atomic import atomic_torch_save

__all__ = [
    "TEACHER_ARCHS",
    "TEACHER_FILE_FORMAT",
    "FrozenTeacher",
    "FrozenTeacherError",
    "LoadReport",
    "TeacherInfo",
    "build_teacher",
    "detect_checkpoint_format",
    "infer_resnet_arch",
    "load_encoder_weights",
    "load_teacher",
    "register_teacher_arch",
    "save_teacher",
]

logger = logging.getLogger(__name__)

TEACHER_FILE_FORMAT = "cmcr-teacher"
TEACHER_FILE_VERSION = 1

# arch name → builder(**kwargs) returning an image encoder with ``out_channels``.
TEACHER_ARCHS: dict[str, Callable[..., nn.Module]] = {
    name: partial(build_resnet, name) for name in RESNET_LAYOUTS
}

# arch name → module that registers it when imported; imported on first use so that loading a teacher
# file never depends on the caller having imported the module defining its arch.
_LAZY_TEACHER_ARCHS: dict[str, str] = {"synthetic_semantic": "cmcr_core.models.semantic_teacher"}

# Prefixes of ResNet weights inside third-party checkpoints, most specific first.
_RESNET_PREFIXES = (
    "", "module.encoder_q.", "encoder_q.", "module.backbone.", "backbone.", "module.encoder.",
    "encoder.", "module.", "model.",
)


class FrozenTeacherError(RuntimeError):
    """Raised when something tries to put a frozen teacher in training mode."""


@dataclass(frozen=True)
class LoadReport:
    """What a checkpoint load did. ``loaded``/``missing`` are model keys, ``skipped`` checkpoint keys."""

    checkpoint_format: str
    prefix: str
    loaded: tuple[str, ...]
    skipped: tuple[str, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class TeacherInfo:
    """Provenance of a teacher, stored in pretraining checkpoints (``to_dict``)."""

    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    checkpoint_format: str | None = None
    num_loaded: int = 0
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()}
        return {
            "arch": self.arch, "kwargs": kwargs, "source": self.source,
            "checkpoint_format": self.checkpoint_format, "num_loaded": self.num_loaded,
            "skipped": list(self.skipped),
        }


class FrozenTeacher(nn.Module):
    """Eval-only, gradient-free wrapper around an image encoder.

    ``is_frozen = True`` tells ``cmcr_core.engine.Method`` to skip this module when switching modes and
    to leave its weights out of training checkpoints (they come from ``info.source``).
    """

    is_frozen = True

    def __init__(self, encoder: nn.Module, info: TeacherInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "out_channels"):
            raise ValueError(f"teacher encoder {type(encoder).__name__} has no `out_channels` attribute")
        self.encoder = encoder
        self.info = info
        self.encoder.requires_grad_(False)
        super().train(False)

    @property
    def out_channels(self) -> int:
        return int(self.encoder.out_channels)

    @property
    def output_stride(self) -> int:
        return int(getattr(self.encoder, "output_stride", 1))

    def train(self, mode: bool = True) -> FrozenTeacher:
        """``train(False)``/``eval()`` only; ``train(True)`` raises ``FrozenTeacherError``."""
        if mode:
            raise FrozenTeacherError(
                f"teacher {self.info.arch!r} is frozen and must stay in eval mode; train() was called on "
                "it (a parent module switching to training mode should skip modules with is_frozen=True)"
            )
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, out_channels, h, w), without autograd history."""
        with torch.no_grad():
            return self.encoder(images)


def register_teacher_arch(name: str, builder: Callable[..., nn.Module], overwrite: bool = False) -> None:
    """Make ``arch = name`` loadable from teacher files; ``builder(**kwargs)`` returns the encoder."""
    if name in TEACHER_ARCHS and not overwrite:
        raise ValueError(f"teacher arch {name!r} is already registered")
    TEACHER_ARCHS[name] = builder


def _build_encoder(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    if arch not in TEACHER_ARCHS and arch in _LAZY_TEACHER_ARCHS:
        importlib.import_module(_LAZY_TEACHER_ARCHS[arch])
    if arch not in TEACHER_ARCHS:
        raise ValueError(
            f"unknown teacher arch {arch!r}; registered: {sorted(TEACHER_ARCHS)} (a module defining a new "
            "teacher must be imported so that it calls register_teacher_arch)"
        )
    return TEACHER_ARCHS[arch](**kwargs)


def build_teacher(arch: str, **kwargs: Any) -> FrozenTeacher:
    """A frozen teacher with random weights (synthetic demos and tests)."""
    return FrozenTeacher(_build_encoder(arch, kwargs), TeacherInfo(arch=arch, kwargs=dict(kwargs)))


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def detect_checkpoint_format(obj: object) -> tuple[str, Mapping[str, Tensor]]:
    """Return (format name, inner state dict) of a loaded checkpoint object (formats: module docstring)."""
    if isinstance(obj, Mapping) and obj.get("format") == TEACHER_FILE_FORMAT:
        return TEACHER_FILE_FORMAT, obj["state_dict"]
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        inner = obj["state_dict"]
        moco = any(k.startswith(("module.encoder_q.", "encoder_q.")) for k in inner)
        return ("moco" if moco else "wrapped"), inner
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("teacher")):
        return "dino-train", obj["teacher"]
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("model")):
        return "wrapped", obj["model"]
    if _is_state_dict(obj):
        return "plain", obj  # type: ignore[return-value]
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"unrecognised checkpoint layout (top-level keys or type: {keys})")


def _strip_resnet_prefix(state: Mapping[str, Tensor]) -> tuple[str, dict[str, Tensor], list[str]]:
    for prefix in _RESNET_PREFIXES:
        if prefix + "conv1.weight" in state:
            kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            return prefix, kept, [k for k in state if not k.startswith(prefix)]
    return "", dict(state), []


def infer_resnet_arch(state: Mapping[str, Tensor]) -> str:
    """Name of the ResNet layout of an unprefixed state dict, from its block type and stage depths."""
    bottleneck = "layer1.0.conv3.weight" in state
    depths = tuple(
        len({k.split(".")[1] for k in state if k.startswith(f"layer{stage}.") and k.endswith("conv1.weight")})
        for stage in range(1, 5)
    )
    for name, (block, layers) in RESNET_LAYOUTS.items():
        if tuple(layers) == depths and (block is not BasicBlock) == bottleneck:
            return name
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise ValueError(f"no known ResNet has {kind} stages of depths {depths}; known: {sorted(RESNET_LAYOUTS)}")


def load_encoder_weights(
    model: nn.Module, state: Mapping[str, Tensor], checkpoint_format: str = "plain", prefix: str = "",
    allow_missing: bool = False, source: str = "<state dict>",
) -> LoadReport:
    """Copy matching (name and shape) tensors of ``state`` into ``model``, bit-exact.

    Checkpoint keys the model lacks (``fc.*``, MoCo's key encoder and queue) are skipped and reported.
    BatchNorm ``num_batches_tracked`` counters may be absent (old torchvision files). Raises ``ValueError``
    naming ``source`` when nothing matches, or when model tensors stay unloaded and not ``allow_missing``.
    """
    target = model.state_dict()
    loaded, missing, new_state = [], [], dict(target)
    for key, value in target.items():
        source_value = state.get(key)
        if source_value is not None and source_value.shape == value.shape:
            new_state[key] = source_value.to(dtype=value.dtype)
            loaded.append(key)
        elif not key.endswith("num_batches_tracked"):
            missing.append(key if source_value is None else f"{key} (shape {tuple(source_value.shape)} "
                           f"in file, {tuple(value.shape)} in model)")
    skipped = [k for k in state if k not in set(loaded)]
    if not loaded:
        raise ValueError(
            f"no tensor of {source} matches the {type(model).__name__} ({checkpoint_format!r} format; "
            f"first file keys: {list(state)[:5]}; first model keys: {list(target)[:5]})"
        )
    if missing and not allow_missing:
        raise ValueError(
            f"{source}: {len(missing)} model tensors are not in the checkpoint, e.g. {missing[:5]} "
            "(pass allow_missing=True to keep their random initialisation)"
        )
    model.load_state_dict(new_state, strict=True)
    return LoadReport(checkpoint_format, prefix, tuple(loaded), tuple(skipped), tuple(missing))


def _read_checkpoint(path: Path, trusted: bool) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {path} (weights are never downloaded; "
                                "place the file there or fix the path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects besides tensors and cannot be read with weights_only=True; "
            f"pass trusted=True only if you trust its origin ({error})"
        ) from error


def load_teacher(
    path: str | Path,
    arch: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    allow_missing: bool = False,
    trusted: bool = False,
) -> FrozenTeacher:
    """Load a frozen teacher from a LOCAL file (any format of the module docstring).

    Args:
        path: checkpoint file.
        arch: arch name for third-party ResNet files; inferred from the weights when None.
        overrides: constructor kwargs, e.g. ``{"replace_stride_with_dilation": (True, True, True)}``;
            they update the kwargs stored in a ``cmcr-teacher`` file.
        allow_missing: keep random weights for model tensors absent from the file.
        trusted: allow arbitrary pickled objects (``weights_only=False``).

    Returns:
        ``FrozenTeacher`` whose ``info`` records arch, kwargs, source, format and skipped keys.
    """
    path = Path(path)
    obj = _read_checkpoint(path, trusted)
    try:
        checkpoint_format, state = detect_checkpoint_format(obj)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if checkpoint_format == TEACHER_FILE_FORMAT:
        if obj.get("version") != TEACHER_FILE_VERSION:
            raise ValueError(f"{path}: unsupported cmcr-teacher version {obj.get('version')!r}")
        file_arch, kwargs = obj["arch"], {**obj.get("kwargs", {}), **(overrides or {})}
        if arch is not None and arch != file_arch:
            raise ValueError(f"{path} holds a {file_arch!r} teacher, but arch={arch!r} was requested")
        arch, prefix, skipped_prefix = file_arch, "", []
    else:
        prefix, state, skipped_prefix = _strip_resnet_prefix(state)
        try:
            arch = arch or infer_resnet_arch(state)
        except ValueError as error:
            raise ValueError(f"{path}: {error} (pass arch= for a non-ResNet file)") from error
        kwargs = dict(overrides or {})
    encoder = _build_encoder(arch, kwargs)
    report = load_encoder_weights(encoder, state, checkpoint_format, prefix, allow_missing, str(path))
    skipped = tuple(skipped_prefix) + report.skipped
    logger.info("teacher %s from %s (%s format): %d tensors loaded, %d skipped%s", arch, path,
                checkpoint_format, len(report.loaded), len(skipped), f" e.g. {list(skipped[:4])}" if skipped
                else "")
    info = TeacherInfo(arch, kwargs, str(path), checkpoint_format, len(report.loaded), skipped)
    return FrozenTeacher(encoder, info)


def save_teacher(
    path: str | Path, encoder: nn.Module, arch: str, kwargs: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``cmcr-teacher`` file atomically.

    ``TEACHER_ARCHS[arch](**kwargs)`` must rebuild ``encoder``; ``meta`` is free-form provenance
    (training data, steps, metrics) stored as is.
    """
    if isinstance(encoder, FrozenTeacher):
        encoder = encoder.encoder
    payload = {
        "format": TEACHER_FILE_FORMAT,
        "version": TEACHER_FILE_VERSION,
        "arch": arch,
        "kwargs": dict(kwargs or {}),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "meta": dict(meta or {}),
    }
    path = Path(path)
    atomic_torch_save(payload, path)
    return path
