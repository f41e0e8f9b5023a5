"""Recipe schema: frozen dataclasses whose defaults live here; YAML recipes hold overrides only.

Defaults follow the SLidR/PPKT pretraining settings (reference METHODS.md §9, PROTOCOLS.md §4-§5) unless a
field says otherwise; the published recipes in `recipes/` override what differs (e.g. CMCR's AdamW).
Loading, `--set` overrides, type checking and saving are in `cmcr_core.recipes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from cmcr_core import recipes

R = TypeVar("R")


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared data is and how a training item becomes a batch."""

    path: str = ""  # prepared folder (`cmcr prepare ...` output); `--data` on the command line sets it
    split: str = "parametrize"  # named subset of the prepared index
    voxel_size: float = 0.1
    cylindrical: bool = True  # (rho, phi in degrees, z) bins; False = cartesian x, y, z
    intensity_scale: float = 1.0  # SLidR/PPKT feed raw 0-255 intensity; CMCR divides by 255
    crop_size: tuple[int, int] = (224, 416)  # (height, width) of every camera crop
    crop_scale: tuple[float, float] = (0.3, 1.0)  # fraction of the image area
    crop_ratio: tuple[float, float] = (14 / 9, 17 / 9)  # width / height
    cloud_transforms: tuple[str, ...] = ("rotation", "flip_axis")
    mixed_transforms: tuple[str, ...] = ("drop_cuboids", "resized_crop", "flip_horizontal")
    min_pairs: int = 1024  # a crop is resampled until more pairs than this survive (or 75 % of them)
    batch_size: int = 4  # per process
    num_workers: int = 2  # data-loader worker processes per training process


@dataclass(frozen=True)
class StudentConfig:
    """The 3D student: MinkUNet (Res16UNet34C) widths, depths and head."""

    planes: tuple[int, ...] = (32, 64, 128, 256, 256, 128, 96, 96)
    layers: tuple[int, ...] = (2, 3, 4, 6, 2, 2, 2, 2)
    init_dim: int = 32
    in_channels: int = 1
    out_channels: int = 64
    bn_momentum: float = 0.05  # top-level batch norms (PyTorch convention)
    block_bn_momentum: float = 0.1  # batch norms inside BasicBlocks: PyTorch default in the reference
    normalize: bool = True  # L2-normalise the head output (pretraining)


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen 2D teacher and its trainable decoder."""

    arch: str = "resnet50"
    weights: str = ""  # local checkpoint file; empty = random initialisation (logged loudly)
    decoder: Literal["ppkt", "dilation"] = "ppkt"
    out_channels: int = 64


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (a loss is on when its weight is > 0) and their parameters."""

    point_nce: float = 1.0  # PointInfoNCE (PPKT, CMCR)
    superpixel_nce: float = 0.0  # superpixel-pooled InfoNCE (SLidR)
    temperature: float = 0.07
    num_matches: int = 4096


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["cosine", "constant"] = "cosine"
    per_epoch: bool = False  # step the schedule once per epoch (SLidR) instead of every step
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 = off


@dataclass(frozen=True)
class TrainConfig:
    """Length of the run, seeding, checkpoints and logging."""

    epochs: int = 50
    max_steps: int = 0  # > 0 stops after this many steps whatever the epochs say
    seed: int = 0
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    log_every: int = 10
    device: str = "auto"  # auto = cuda when available, else cpu
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)


@dataclass(frozen=True)
class PretrainRecipe:
    """A pretraining run: `cmcr pretrain --recipe R`."""

    name: str = "ppkt_nuscenes"
    method: str = "ppkt"
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_recipe(
    path: str | Path | None, sets: tuple[str, ...] | list[str] = (), kind: type[R] = PretrainRecipe
) -> R:
    """Resolve a recipe file plus `--set` overrides into a frozen `kind` (raises `RecipeError`)."""
    return recipes.load(kind, path, sets)
