"""ReCon pretraining method (contrast guided by reconstruction, qizekun/ReCon) and its eval pieces.

``ReConMethod.forward(batch)`` takes any batch with ``points`` (B x N x 3), ``labels`` (B), and, when the
distillation terms are on, ``img_target`` (B x D_img) and ``text_target`` (B x D_text) (e.g.
``cmcr_core.data.objects.ObjectBatch``) and returns the weighted loss terms that are on (weight > 0):

* ``rec``  = w_rec  * ChamferL2(decoded masked patches, masked patches);
* ``img``  = w_img  * SmoothL1(img_proj(q_img), img_target);
* ``text`` = w_text * SmoothL1(text_proj(q_text), text_target);
* ``smc``  = w_smc  * multi-positive contrastive loss on cls_proj(q_cls), positives = same label.

Published weights: 1, 1, 1, 0. The queries read the patch tokens through a stop-gradient while pretraining.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.engine.method import Method
from cmcr_core.losses.chamfer import chamfer_l1, chamfer_l2
from cmcr_core.losses.feature_regression import feature_regression
from cmcr_core.losses.single_modal_contrastive import multi_positive_contrastive
from cmcr_core.models.point_transformer import (
    MAEDecoder,
    ReConEncoder,
)
from cmcr_core.ops.geometry import (
    block_patch_mask,
    random_patch_mask,
)

# architecture presets: the published sizes (ReCon paper) and small CI sizes (docs/recon.md)
RECON_PRESETS: dict[str, dict[str, int]] = {
    "ci": dict(
        embed_dim=32, depth=2, num_heads=2, decoder_depth=1, decoder_heads=2, num_groups=8, group_size=16
    ),
    "ci64": dict(
        embed_dim=64, depth=2, num_heads=2, decoder_depth=1, decoder_heads=2, num_groups=16, group_size=16
    ),
    "tiny": dict(
        embed_dim=192, depth=12, num_heads=3, decoder_depth=4, decoder_heads=3, num_groups=64, group_size=32
    ),
    "small": dict(
        embed_dim=256, depth=12, num_heads=4, decoder_depth=4, decoder_heads=4, num_groups=64, group_size=32
    ),
    "base": dict(
        embed_dim=384, depth=12, num_heads=6, decoder_depth=4, decoder_heads=6, num_groups=64, group_size=32
    ),
}


def _projection_init(module: nn.Module) -> None:
    # the reference initialises its projections with normal(mean=0.02, std=0.01) (mean really 0.02)
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.02, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ReConMethod(Method):
    """ReCon student: encoder + MAE decoder + per-query projections, with loss weights as fields.

    Args:
        embed_dim, depth, num_heads, num_groups, group_size, drop_path_rate: encoder (see ``ReConEncoder``).
        decoder_depth, decoder_heads: MAE decoder.
        mask_ratio: fraction of patches masked (int(ratio * G) per sample).
        mask_type: ``rand`` (reference default) or ``block``.
        img_dim, text_dim: teacher feature sizes (768 ViT-B/16 in21k, 512 CLIP text).
        w_rec, w_img, w_text, w_smc: loss weights; a term (and its head) exists only when its weight > 0.
        rec_loss: ``cdl2`` (reference) or ``cdl1``.
        regression: ``smooth_l1`` (reference), ``mse``, ``l1`` or ``cosine``.
        smc_temperature: tau of the optional single-modal contrastive term.
        stop_grad: queries read detached patch tokens (True for pretraining).
        mask_generator: optional CPU generator for the masks (default: torch's global generator).
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        decoder_depth: int = 4,
        decoder_heads: int = 6,
        num_groups: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mask_ratio: float = 0.6,
        mask_type: str = "rand",
        img_dim: int = 768,
        text_dim: int = 512,
        w_rec: float = 1.0,
        w_img: float = 1.0,
        w_text: float = 1.0,
        w_smc: float = 0.0,
        rec_loss: str = "cdl2",
        regression: str = "smooth_l1",
        smc_temperature: float = 0.1,
        stop_grad: bool = True,
        mask_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if mask_type not in ("rand", "block"):
            raise ValueError(f"mask_type must be 'rand' or 'block', got {mask_type!r}")
        if rec_loss not in ("cdl2", "cdl1"):
            raise ValueError(f"rec_loss must be 'cdl2' or 'cdl1', got {rec_loss!r}")
        if min(w_rec, w_img, w_text, w_smc) < 0:
            raise ValueError(f"loss weights must be >= 0, got {w_rec}, {w_img}, {w_text}, {w_smc}")
        if w_rec > 0 and int(mask_ratio * num_groups) == 0:
            raise ValueError(
                f"mask_ratio {mask_ratio} masks no patch out of {num_groups}; reconstruction needs some"
            )
        self.config = dict(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_groups=num_groups,
            group_size=group_size,
        )
        self.mask_ratio, self.mask_type, self.stop_grad = mask_ratio, mask_type, stop_grad
        self.w_rec, self.w_img, self.w_text, self.w_smc = w_rec, w_img, w_text, w_smc
        self.rec_loss, self.regression, self.smc_temperature = rec_loss, regression, smc_temperature
        self.mask_generator = mask_generator
        self.encoder = ReConEncoder(
            embed_dim, depth, num_heads, num_groups, group_size, drop_path_rate, stop_grad=stop_grad
        )
        self.decoder = (
            MAEDecoder(embed_dim, decoder_depth, decoder_heads, group_size, drop_path_rate)
            if w_rec > 0
            else None
        )
        self.img_proj = nn.Linear(embed_dim, img_dim) if w_img > 0 else None
        self.text_proj = nn.Linear(embed_dim, text_dim) if w_text > 0 else None
        self.cls_proj = (
            nn.Sequential(
                nn.Linear(embed_dim, 128),
                nn.BatchNorm1d(128),
                nn.ReLU(inplace=True),
                nn.Linear(128, 128),
                nn.BatchNorm1d(128),
            )
            if w_smc > 0
            else None
        )
        for head in (self.img_proj, self.text_proj, self.cls_proj):
            if head is not None:
                head.apply(_projection_init)

    def make_mask(self, centres: Tensor) -> Tensor:
        """B x G bool mask (True = masked) for the patch centres B x G x 3."""
        if self.mask_type == "block":
            return block_patch_mask(centres, self.mask_ratio, self.mask_generator)
        return random_patch_mask(
            centres.shape[0], centres.shape[1], self.mask_ratio, self.mask_generator, centres.device
        )

    def forward(self, batch: Any) -> dict[str, Tensor]:
        """Weighted loss terms that are on, keyed ``rec``, ``img``, ``text``, ``smc``."""
        points = batch.points
        neighbourhoods, centres = self.encoder.group(points)
        b, g, k, _ = neighbourhoods.shape
        mask = self.make_mask(centres)
        queries, visible = self.encoder(neighbourhoods, centres, mask, stop_grad=self.stop_grad)
        losses: dict[str, Tensor] = {}
        if self.decoder is not None:
            visible_centres = centres[~mask].reshape(b, -1, 3)
            masked_centres = centres[mask].reshape(b, -1, 3)
            predicted = self.decoder(visible, visible_centres, masked_centres).reshape(-1, k, 3)
            target = neighbourhoods[mask].reshape(-1, k, 3)
            chamfer = chamfer_l2 if self.rec_loss == "cdl2" else chamfer_l1
            losses["rec"] = self.w_rec * chamfer(predicted, target)
        for name, head, index in (("img", self.img_proj, 1), ("text", self.text_proj, 2)):
            if head is None:
                continue
            target = getattr(batch, f"{name}_target", None)
            if target is None:
                raise ValueError(f"w_{name} > 0 but the batch has no {name}_target")
            weight = self.w_img if name == "img" else self.w_text
            losses[name] = weight * feature_regression(head(queries[:, index]), target, self.regression)
        if self.cls_proj is not None:
            embeddings = F.normalize(self.cls_proj(queries[:, 0]), dim=1, eps=1e-8)
            losses["smc"] = self.w_smc * multi_positive_contrastive(
                embeddings, batch.labels, self.smc_temperature
            )
        return losses

    def handoff(self) -> dict[str, Any]:
        """Encoder weights and sizes for fine-tuning / probing (``PointTransformerClassifier.encoder``)."""
        return {"student": self.encoder.state_dict(), "student_config": dict(self.config)}


def recon_param_groups(
    module: nn.Module, lr: float, weight_decay: float = 0.05, cls_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups as in the reference: no decay for 1-D tensors, biases and names containing ``token``;
    names containing ``cls`` get ``cls_lr_scale`` x lr (10 when fine-tuning). Groups carry ``base_lr``."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or "token" in name
        groups.setdefault((no_decay, "cls" in name), []).append(param)
    out = []
    for (no_decay, is_cls), params in sorted(groups.items()):
        group_lr = lr * (cls_lr_scale if is_cls else 1.0)
        out.append(
            {
                "params": params,
                "name": f"{'cls' if is_cls else 'main'}{'_no_decay' if no_decay else ''}",
                "lr": group_lr,
                "base_lr": group_lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        )
    return out


_REFERENCE_RULES = (
    (r"^(module\.)?", ""),
    (r"^MAE_encoder\.blocks\.blocks\.", "encoder.blocks."),
    (r"^MAE_encoder\.", "encoder."),
    (r"^MAE_decoder\.blocks\.", "decoder.blocks."),
    (r"^MAE_decoder\.norm\.", "decoder.norm."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder_pos_embed\.", "decoder.pos_embed."),
    (r"^increase_dim\.0\.", "decoder.increase_dim."),
)


def convert_reference_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a qizekun/ReCon pretraining state dict (``base_model``) to ``ReConMethod`` keys.

    Teacher weights (``img_encoder.*``, ``text_encoder.*``) are dropped: the teachers are not part of the
    student. Fine-tuning checkpoints: strip ``encoder.`` from the result to load a bare ``ReConEncoder``.
    """
    out = {}
    for key, value in state.items():
        for pattern, repl in _REFERENCE_RULES:
            key = re.sub(pattern, repl, key)
        if key.startswith(("img_encoder.", "text_encoder.")):
            continue
        out[key] = value
    return out
