"""Recipe schema of object point clouds (ReCon: Qi et al., Contrast with Reconstruct, ICML 2023; code
qizekun/ReCon; docs/recon.md): pretraining and object classification.

`cmcr pretrain` runs a `method: recon` recipe (`ReconRecipe`); `cmcr finetune` / `cmcr probe` run a
`task: classification` recipe (`ObjectClassifyRecipe`: fine-tuning, linear probe, few-shot when
`fewshot.way` > 0), and `cmcr zeroshot --objects` its `zeroshot` section. They share `TrainConfig` with
the LiDAR recipes (`cmcr_core.config.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cmcr_core.config.schema import TrainConfig


@dataclass(frozen=True)
class ObjectDataConfig:
    """Object point clouds in one of the real layouts (`cmcr_core.data.objects` readers).

    `train_split` / `test_split`: ShapeNet-55 takes train, test or whole (= test + train, pretraining);
    the other layouts take train or test. `targets` is the teacher-target file of `cmcr prepare objects`
    (needed when an img/text loss is on). Sampling: random (pretraining), fps_random (fine-tuning, FPS to
    `fps_pool` then a random subset), fps (evaluation).

    `normalize`: centre each sampled cloud on its centroid and scale it into the unit sphere, in training
    and evaluation alike. The reference does it for ShapeNet-55 and ModelNet40 (and the few-shot folds)
    and not for ScanObjectNN, whose clouds it reads as stored; every published recipe sets it.
    """

    dataset: Literal["shapenet55", "scanobjectnn", "modelnet_resampled", "modelnet_h5"] = "shapenet55"
    path: str = ""  # layout root; `--data` sets it
    variant: Literal["obj_bg", "obj_only", "hardest"] = "obj_bg"  # ScanObjectNN only
    train_split: str = "whole"
    test_split: str = "test"
    targets: str = ""
    num_points: int = 1024
    sampling: Literal["random", "fps", "fps_random", "first"] = "random"
    fps_pool: int = 0  # 0 = 1200 for 1024 points, 2400 for 2048 (reference), else num_points * 1.2
    normalize: bool = True  # unit sphere; reference: ShapeNet-55 and ModelNet40 yes, ScanObjectNN no
    augmentation: Literal["none", "rotate_y", "scale", "scale_translate"] = "rotate_y"
    batch_size: int = 128
    eval_batch_size: int = 64
    num_workers: int = 4


@dataclass(frozen=True)
class ReconModelConfig:
    """Point-transformer sizes: a `RECON_PRESETS` entry, optionally with its own G and K (0 = preset's)."""

    preset: Literal["ci", "ci64", "tiny", "small", "base"] = "base"
    num_groups: int = 0
    group_size: int = 0
    drop_path_rate: float = 0.1  # pretraining 0.1; fine-tuning 0.2
    mask_ratio: float = 0.6
    mask_type: Literal["rand", "block"] = "rand"
    img_dim: int = 768  # ViT-B/16 in21k pre-logits
    text_dim: int = 512  # CLIP text
    head: Literal["mlp3", "linear"] = "mlp3"  # classification head (fine-tuning)


@dataclass(frozen=True)
class ReconLossConfig:
    """ReCon loss weights (a term is on when its weight is > 0); published 1, 1, 1, 0."""

    rec: float = 1.0
    img: float = 1.0
    text: float = 1.0
    smc: float = 0.0
    rec_loss: Literal["cdl2", "cdl1"] = "cdl2"
    regression: Literal["smooth_l1", "mse", "l1", "cosine"] = "smooth_l1"
    smc_temperature: float = 0.1
    label_smoothing: float = 0.0  # fine-tuning cross-entropy


@dataclass(frozen=True)
class ReconOptimConfig:
    """AdamW with the reference parameter groups (`recon_param_groups`) and an epoch-counted schedule.

    The cosine runs per step from `warmup_start_lr` (linear warmup over `warmup_epochs`) down to `min_lr`.
    `cls_lr_scale` multiplies the lr of parameters whose name contains `cls` (fine-tuning: 10).
    """

    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 10
    warmup_start_lr: float = 1e-6
    min_lr: float = 1e-6
    grad_clip: float = 0.0  # fine-tuning: 10
    cls_lr_scale: float = 1.0


@dataclass(frozen=True)
class ReconRecipe:
    """ReCon pretraining: `cmcr pretrain --recipe R` with `method: recon`."""

    name: str = "recon_shapenet"
    method: Literal["recon"] = "recon"
    data: ObjectDataConfig = field(default_factory=ObjectDataConfig)
    model: ReconModelConfig = field(default_factory=ReconModelConfig)
    loss: ReconLossConfig = field(default_factory=ReconLossConfig)
    optim: ReconOptimConfig = field(default_factory=ReconOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class ObjectEvalConfig:
    """Evaluation of a classifier: voting (mean over votes, not the max) and the linear probe."""

    num_votes: int = 10
    num_subsets: int = 10  # random FPS subsets averaged inside one vote
    vote_augmentation: Literal["none", "rotate_y", "scale", "scale_translate"] = "none"
    # > 0: before evaluating a fine-tuned model, re-estimate its batch-norm statistics (cumulative average)
    # over this many passes of the training set (training sampling/augmentation, no gradients). Off in the
    # reference; short CPU runs need it because the running statistics lag the fast-moving weights.
    recalibrate_bn: int = 0
    # svm: 2C = max over the queries, max + mean pool of the tokens (reference); tokens: 2C = max and mean
    # pool of the tokens only; finetune: the 4C fine-tuning feature
    probe_features: Literal["svm", "tokens", "finetune"] = "svm"
    probe_classifier: Literal["svc", "logistic"] = "svc"  # svc: LinearSVC(C = probe_c) on raw features
    probe_c: float = 0.075
    probe_epochs: int = 300  # logistic only (with probe_lr, probe_weight_decay)
    probe_lr: float = 0.1
    probe_weight_decay: float = 1e-4


@dataclass(frozen=True)
class FewShotConfig:
    """Few-shot classification, on when `way` > 0: `folds` episodes of `way` classes with `shot` training
    objects per class (from `data.train_split`) and `queries` test objects per class (from
    `data.test_split`), labels renumbered 0 … way − 1 in the drawn order. Fold f draws from the generator
    seeded [seed, f]; `folds.json` records what was drawn. `folds_path` instead reads the published fold
    files (`{way}way{shot}shot/{fold}.pkl` of a ModelNetFewshot folder)."""

    way: int = 0  # 0 = off; ReCon: 5 or 10
    shot: int = 10  # ReCon: 10 or 20
    folds: int = 10
    queries: int = 20  # test objects per class and fold
    seed: int = 0  # fold sampling (training randomness: train.seed)
    folds_path: str = ""


@dataclass(frozen=True)
class ZeroShotConfig:
    """`cmcr zeroshot --objects`: a cloud's feature is `ratio` x text_proj(q_text) + img_proj(q_img) (`full`),
    or one of the two terms (`text`, `image`); the prediction is the class embedding of highest cosine."""

    feature: Literal["full", "text", "image"] = "full"
    ratio: float = 0.25  # ReCon: ModelNet40 0.25, ScanObjectNN OBJ_ONLY 0.15, OBJ_BG 0.1, PB_T50_RS 0.05
    prompts: Literal["recon", "name"] = "recon"  # prompts per class name with a CLIP directory (--clip)


@dataclass(frozen=True)
class ObjectClassifyRecipe:
    """Object classification: `cmcr finetune` / `cmcr probe` with `task: classification`."""

    name: str = "recon_finetune_scanobjectnn"
    task: Literal["classification"] = "classification"
    data: ObjectDataConfig = field(default_factory=ObjectDataConfig)
    model: ReconModelConfig = field(default_factory=ReconModelConfig)
    loss: ReconLossConfig = field(default_factory=ReconLossConfig)
    optim: ReconOptimConfig = field(default_factory=ReconOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: ObjectEvalConfig = field(default_factory=ObjectEvalConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
