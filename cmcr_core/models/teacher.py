"""Every 2D teacher behind one builder: ``build_teacher``, and loading from LOCAL checkpoint files.

``build_teacher(arch, weights)`` returns the ``FrozenTeacher`` (``cmcr_core.models.frozen_teacher``) of any
kind, so every pretraining method accepts every teacher:

* ``hf_clip`` / ``hf_dinov2``: a transformers directory (``cmcr_core.models.hf_teachers``);
* any other arch of ``TEACHER_ARCHS`` (the ResNets, ``synthetic_semantic``, registered ones) with empty
  ``weights``: random weights (demos and tests), logged loudly;
* a file: ``load_teacher``.

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

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cmcr_core.models.convert import LoadReport
from cmcr_core.models.frozen_teacher import FrozenTeacher, TeacherInfo
from cmcr_core.models.hf_teachers import HF_TEACHER_ARCHS, build_hf_encoder, load_hf_teacher
from cmcr_core.models.resnet import RESNET_LAYOUTS, BasicBlock, build_resnet
from cmcr_core.models.semantic_teacher import SEMANTIC_TEACHER_ARCH, build_compact_semantic_net
from cmcr_core.ops.atomic import atomic_torch_save
from cmcr_core.ops.files import load_torch_file

__all__ = [
    "TEACHER_ARCHS",
    "TEACHER_FILE_FORMAT",
    "build_teacher",
    "copy_matching_tensors",
    "detect_checkpoint_format",
    "infer_resnet_arch",
    "load_teacher",
    "register_teacher_arch",
    "save_teacher",
]

logger = logging.getLogger(__name__)

TEACHER_FILE_FORMAT = "cmcr-teacher"
TEACHER_FILE_VERSION = 1

# arch name → builder(**kwargs) returning an image encoder with ``out_channels``: every arch of the toolkit
# is here from the start (a teacher file never depends on the caller having imported some module).
TEACHER_ARCHS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(build_resnet, name) for name in RESNET_LAYOUTS},
    SEMANTIC_TEACHER_ARCH: build_compact_semantic_net,
    **{name: partial(build_hf_encoder, name) for name in HF_TEACHER_ARCHS},
}

# Prefixes of ResNet weights inside third-party checkpoints, most specific first.
_RESNET_PREFIXES = (
    "", "module.encoder_q.", "encoder_q.", "module.backbone.", "backbone.", "module.encoder.",
    "encoder.", "module.", "model.",
)


def register_teacher_arch(name: str, builder: Callable[..., nn.Module], overwrite: bool = False) -> None:
    """Make ``arch = name`` loadable from teacher files; ``builder(**kwargs)`` returns the encoder."""
    if name in TEACHER_ARCHS and not overwrite:
        raise ValueError(f"teacher arch {name!r} is already registered")
    TEACHER_ARCHS[name] = builder


def _build_encoder(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    if arch not in TEACHER_ARCHS:
        raise ValueError(
            f"unknown teacher arch {arch!r}; registered: {sorted(TEACHER_ARCHS)} (a module defining a new "
            "teacher must call register_teacher_arch)"
        )
    return TEACHER_ARCHS[arch](**kwargs)


def build_teacher(
    arch: str, weights: str | Path = "", dilation: Sequence[bool] = (False, False, False), **kwargs: Any
) -> FrozenTeacher:
    """The frozen teacher of any kind (see the module docstring); the one builder every method uses.

    Args:
        arch: an entry of ``TEACHER_ARCHS``. For a third-party ResNet file it names the architecture the
            file must hold; a ``cmcr-teacher`` file names its own (so the arch is not imposed on it).
        weights: local file or, for ``hf_*``, a transformers directory; empty = random weights.
        dilation: ``replace_stride_with_dilation`` of a ResNet (SLidR's ``dilation`` decoder); any True
            flag with a non-ResNet arch is refused (transformers teachers ignore it).
        kwargs: encoder constructor arguments (random weights), or overrides of a file's stored ones.
    """
    if arch.startswith("hf_"):
        if arch not in HF_TEACHER_ARCHS:
            raise ValueError(
                f"teacher.arch {arch!r} is unknown; transformers teachers: {sorted(HF_TEACHER_ARCHS)}"
            )
        return load_hf_teacher(arch, weights)
    is_resnet = arch in RESNET_LAYOUTS
    if is_resnet and any(dilation):
        kwargs["replace_stride_with_dilation"] = tuple(dilation)
    if not weights:
        logger.warning("teacher.weights is empty: the %s teacher has RANDOM weights", arch)
        return FrozenTeacher(_build_encoder(arch, kwargs), TeacherInfo(arch=arch, kwargs=dict(kwargs)))
    teacher = load_teacher(weights, overrides=kwargs or None)
    third_party = teacher.info.checkpoint_format != TEACHER_FILE_FORMAT
    if is_resnet and third_party and teacher.info.arch != arch:
        raise ValueError(f"{weights} holds {teacher.info.arch} weights, but teacher.arch is {arch!r}")
    if any(dilation) and not is_resnet:
        raise ValueError(f"teacher.decoder 'dilation' needs a ResNet teacher, got {teacher.info.arch!r}")
    return teacher


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


def copy_matching_tensors(
    model: nn.Module, state: Mapping[str, Tensor], checkpoint_format: str = "plain", prefix: str = "",
    allow_missing: bool = False, source: str = "<state dict>",
) -> LoadReport:
    """Copy matching (name and shape) tensors of ``state`` into ``model``, bit-exact.

    Checkpoint keys the model lacks (``fc.*``, MoCo's key encoder and queue) are skipped and reported.
    BatchNorm ``num_batches_tracked`` counters may be absent (old torchvision files). Raises ``ValueError``
    naming ``source`` when nothing matches, or when model tensors stay unloaded and not ``allow_missing``.
    """
    target = model.state_dict()
    report = LoadReport(checkpoint_format=checkpoint_format, prefix=prefix)
    new_state, described = dict(target), []
    for key, value in target.items():
        source_value = state.get(key)
        if source_value is not None and source_value.shape == value.shape:
            new_state[key] = source_value.to(dtype=value.dtype)
            report.loaded.append(key)
        elif not key.endswith("num_batches_tracked"):
            report.missing.append(key)
            described.append(key if source_value is None else f"{key} (shape {tuple(source_value.shape)} "
                             f"in file, {tuple(value.shape)} in model)")
    loaded = set(report.loaded)
    for key, value in state.items():
        if key not in loaded:
            report.skipped[key] = "unknown key" if key not in target else (
                f"shape mismatch: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
    if not report.loaded:
        raise ValueError(
            f"no tensor of {source} matches the {type(model).__name__} ({checkpoint_format!r} format; "
            f"first file keys: {list(state)[:5]}; first model keys: {list(target)[:5]})"
        )
    if described and not allow_missing:
        raise ValueError(
            f"{source}: {len(described)} model tensors are not in the checkpoint, e.g. {described[:5]} "
            "(pass allow_missing=True to keep their random initialisation)"
        )
    model.load_state_dict(new_state, strict=True)
    return report


TEACHER_FILES = ("a teacher checkpoint: torchvision, MoCo v1/v2 (.pth.tar), DINO or a `cmcr teacher train` "
                 "file (teacher.pt)")


def _read_checkpoint(path: Path, trusted: bool) -> object:
    return load_torch_file(
        path, "teacher checkpoint not found: {path} (weights are never downloaded; place the file there or "
        "fix the path)", expected=TEACHER_FILES, trusted=trusted)


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
    report = copy_matching_tensors(encoder, state, checkpoint_format, prefix, allow_missing, str(path))
    skipped = tuple(skipped_prefix) + tuple(report.skipped)
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
