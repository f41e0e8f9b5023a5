"""Recipe schema: frozen dataclasses whose defaults live here; YAML recipes hold overrides only.

Defaults follow the SLidR/PPKT pretraining settings of valeoai/SLidR (its configs and loaders) unless a
field says otherwise; the published recipes in `recipes/` override what differs (e.g. CMCR's AdamW).
This module holds the LiDAR recipes (pretraining, teacher training, downstream segmentation) and the
sections they share (`OptimConfig`, `TrainConfig`); the object-level (ReCon) recipes are in
`cmcr_core.config.objects`. Loading, `--set` overrides, type checking and saving are in
`cmcr_core.config.loading`; `cmcr_core.config` exports all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
    # CMCR masked image modelling (docs/cmcr.md): none, patch16_drop_pairs or pixel_keep_pairs
    mim_mask: Literal["none", "patch16_drop_pairs", "pixel_keep_pairs"] = "none"


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
    # > 0: after the last step, re-estimate every batch norm's running statistics as the plain average over
    # this many training batches with the final weights (cmcr_core.engine.batch_norm); 0 = the reference's
    # exponential averages, which still hold (1 - bn_momentum)^steps of their initial values after a short run
    recalibrate_bn_batches: int = 0


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
    # CMCR terms (docs/cmcr.md); off here, recipes/nuscenes.yaml sets the published weights.
    orthogonality: float = 0.0  # CMCR 0.1 (the 1/64² is inside the loss)
    commitment: float = 0.0  # CMCR 1: weight of both L_commit_P and L_commit_V
    code_matching: float = 0.0  # CMCR 1: L_cmcm
    mim: float = 0.0  # CMCR 1: masked image modelling
    mim_images: int = 0  # crops per step (per rank) with a MIM loss, drawn at random; 0 = all (published)
    occupancy: float = 0.0  # CMCR 1: L_occ
    intensity: float = 0.0  # CMCR 1: L_int
    codebook_size: int = 400
    codebook_decay: float = 0.999
    codebook_eps: float = 1e-5  # Laplace smoothing of the EMA counts
    commitment_beta: float = 0.25
    code_matching_temperature: float = 1.0  # the reference's 1 makes L_cmcm ≈ log M (§7.8)
    dead_code_reset: bool = False  # CMG's reset of codes unused for dead_code_steps steps (off in CMCR)
    dead_code_steps: int = 300
    occupancy_queries: int = 2048  # per sample: 684 in, 682 out, 682 far
    occupancy_delta: float = 0.1  # metres behind / in front of the surface
    occupancy_radius: float = 1.0  # neighbour search radius, metres
    occupancy_max_neighbours: int = 32
    shared_codebook_pairs: bool = False  # reuse the NCE pair sample for the codebook (reference: independent)
    # Deviations from the reference (docs/cmcr.md "What each part buys"); the defaults are the reference's.
    contrast_images: Literal["masked", "unmasked"] = "masked"  # crops feeding PointInfoNCE + codebook pairs
    orthogonality_per_voxel: bool = False  # L_orth = ‖FᵀĜ / V‖_F instead of ‖FᵀĜ‖_F / 64² (batch-free)
    mim_point_codes: bool = False  # MIM's input adds the quantised F³ᴰ of each pixel's points (3D gradient)
    # Relational distillation (docs/analysis.md; methods relational/similarity/contrastive), on the same
    # num_matches sampled pairs, in the teacher's own space (no decoder); contrastive uses `temperature`.
    relational: float = 0.0  # L_rel = λ_cross·L_cross + λ_intra·L_intra
    similarity: float = 0.0  # mean(1 − cos)
    contrastive: float = 0.0  # one-directional InfoNCE, student anchor
    lambda_cross: float = 1.0  # [assumed] 1 (paper silent)
    lambda_intra: float = 1.0  # [assumed] 1 (paper silent)
    relational_block_size: int = 0  # 0 = dense N×N; > 0 = row blocks of this size (bounded memory)


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


@dataclass(frozen=True)
class TruthDataConfig:
    """Camera images and truth maps of a synthetic world, for training the 2D semantic teacher."""

    world: str = ""  # `cmcr prepare synthetic` output; `--world` on the command line sets it
    holdout_scenes: int = 1  # the last N scenes of the world are never trained on (held-out evaluation)
    eval_worlds: tuple[str, ...] = ()  # other worlds (other seeds) evaluated after training
    crop_size: tuple[int, int] = (192, 320)  # (height, width) of the random training crops
    flip: bool = True  # random horizontal flips
    batch_size: int = 8
    num_workers: int = 1  # data-loader worker processes


@dataclass(frozen=True)
class SemanticNetConfig:
    """The compact stride-8 network (`cmcr_core.models.semantic_teacher.CompactSemanticNet`)."""

    widths: tuple[int, int, int, int] = (32, 64, 96, 128)  # stem, stage 1, stage 2, context (= out channels)
    context_dilations: tuple[int, ...] = (2, 4)


@dataclass(frozen=True)
class TeacherLossConfig:
    """Per-pixel cross-entropy over the 16 coarse classes (truth "ignore" pixels are skipped)."""

    cross_entropy: float = 1.0
    label_smoothing: float = 0.0
    # "inverse_sqrt": class k weighs (pixel frequency of k in the training truth)^-1/2, scaled so the
    # average labelled pixel weighs 1; lifts the rare classes (cones, bicycles) off zero IoU.
    class_weighting: Literal["none", "inverse_sqrt"] = "none"


@dataclass(frozen=True)
class TeacherTrainRecipe:
    """Training the offline semantic teacher: `cmcr teacher train --recipe R --world DIR`.

    `optim` and `train` reuse the pretraining sections, whose code defaults are the pretraining ones
    (SGD, lr 0.5, 50 epochs): a teacher recipe sets them (recipes/semantic_teacher_synthetic.yaml).
    """

    name: str = "semantic_teacher_synthetic"
    data: TruthDataConfig = field(default_factory=TruthDataConfig)
    model: SemanticNetConfig = field(default_factory=SemanticNetConfig)
    loss: TeacherLossConfig = field(default_factory=TeacherLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --- downstream semantic segmentation: `cmcr finetune` / `cmcr probe` (docs/finetune.md) ---------------


@dataclass(frozen=True)
class FinetuneDataConfig:
    """Labelled data of a downstream run, its label fraction and voxelisation.

    Defaults: nuScenes 1 % fine-tuning, cylindrical 0.1 voxels, raw intensity (SLidR/PPKT input).
    `fraction_skips` is the skip of each label fraction (0.01, 0.05, 0.1, 0.25, 1.0): nuScenes keeps every
    skip-th train scene in scene.json order, SemanticKITTI every skip-th train scan (SLidR's loaders).
    """

    dataset: Literal["nuscenes", "semantickitti"] = "nuscenes"
    path: str = ""  # prepared folder; `--data` sets it
    train_split: str = "train"
    val_split: str = "val"  # evaluation always uses the whole split (D2, docs/differences.md)
    label_fraction: float = 0.01
    fraction_skips: tuple[int, int, int, int, int] = (100, 20, 10, 4, 1)
    voxel_size: float = 0.1
    cylindrical: bool = True
    # feature = intensity * scale + offset; None = the pretraining checkpoint's scale (1 without one)
    intensity_scale: float | None = None
    intensity_offset: float = 0.0
    cloud_transforms: tuple[str, ...] = ("rotation", "flip_axis")
    batch_size: int = 16
    eval_batch_size: int = 4
    num_workers: int = 4


@dataclass(frozen=True)
class FinetuneModelConfig:
    """MinkUNet34C trunk of the downstream network (the head is sized by the dataset's classes)."""

    planes: tuple[int, ...] = (32, 64, 128, 256, 256, 128, 96, 96)
    layers: tuple[int, ...] = (2, 3, 4, 6, 2, 2, 2, 2)
    init_dim: int = 32
    in_channels: int = 1
    bn_momentum: float = 0.02  # the downstream configs of valeoai/SLidR and Eaphan/CMCR
    block_bn_momentum: float = 0.1


@dataclass(frozen=True)
class FinetuneLossConfig:
    """Cross-entropy + Lovász-softmax on labelled voxels (a term is on when its weight is > 0)."""

    cross_entropy: float = 1.0
    lovasz: float = 1.0


@dataclass(frozen=True)
class FinetuneOptimConfig:
    """SGD with a separate head learning rate and a per-epoch cosine schedule (SLidR's and CMCR's configs).

    `lr_scratch` / `lr_head_scratch` replace `lr` / `lr_head` when fine-tuning from random initialisation
    (SLidR issue #11: 0.05, no separate head lr); probing always uses `lr` / `lr_head`.
    `lr_head: null` = the head uses `lr`.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    lr_head: float | None = 2.0
    lr_scratch: float = 0.05
    lr_head_scratch: float | None = None
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    per_epoch: bool = True


@dataclass(frozen=True)
class FinetuneTrainConfig:
    """Protocol (fine-tuning or linear probing), length, seed, checkpoints."""

    mode: Literal["finetune", "probe"] = "finetune"
    epochs: int = 100
    max_steps: int = 0  # > 0 stops after this many steps whatever the epochs say
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    # finetune mode, > 0: after the last step, re-estimate the batch-norm statistics over this many batches
    # of the labelled training scans (cmcr_core.engine.batch_norm), so that a short fine-tuning is evaluated
    # with statistics of its final weights; 0 = the usual exponential averages (the reference)
    recalibrate_bn_batches: int = 0


@dataclass(frozen=True)
class FinetuneRecipe:
    """A downstream segmentation run: `cmcr finetune --recipe R` or `cmcr probe --recipe R`."""

    name: str = "finetune_nuscenes"
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    loss: FinetuneLossConfig = field(default_factory=FinetuneLossConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
