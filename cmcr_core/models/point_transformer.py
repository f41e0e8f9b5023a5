"""ReCon point transformer: patch embedding, ReCon blocks with global queries, MAE decoder, classifier head.

Architecture as in qizekun/ReCon (docs/recon.md). Module and parameter names follow the reference
(``encoder.first_conv``, ``cls_token``, ``pos_embed``, ``norm1_contrast``, ``attn_contrast`` ...) so its
checkpoints map onto these modules with prefix changes only (see ``cmcr_core.methods.recon``).

Shapes: B batch, N points, G patches, K points per patch, C width, Q = 3 global queries (cls, img, text).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.ops.geometry import group_patches

NUM_QUERIES = 3
QUERY_NAMES = ("cls", "img", "text")


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (and rescale the rest)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep) / keep


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (hidden = 4 C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """B x L x C -> B x H x L x C/H."""
    b, length, c = x.shape
    return x.reshape(b, length, num_heads, c // num_heads).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention, no qkv bias, scale head_dim^-0.5, projection with bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: B x L x C -> B x L x C."""
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class CrossAttention(nn.Module):
    """Queries attend to a separate token set (``q`` on the queries, ``kv`` on the tokens)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        """queries: B x Q x C, tokens: B x L x C -> B x Q x C."""
        q = _heads(self.q(queries), self.num_heads)
        k, v = (_heads(t, self.num_heads) for t in self.kv(tokens).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(queries.shape))


class MiniPointNet(nn.Module):
    """Shared per-patch PointNet: 3->128->256, max-pool concat (512), 512->512->C, max over K."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, out_dim, 1)
        )

    def forward(self, patches: Tensor) -> Tensor:
        """patches: B x G x K x 3 (centred) -> B x G x C."""
        b, g, k, _ = patches.shape
        feat = self.first_conv(patches.reshape(b * g, k, 3).transpose(1, 2))  # BG x 256 x K
        pooled = feat.max(dim=2, keepdim=True).values
        feat = self.second_conv(torch.cat([pooled.expand(-1, -1, k), feat], dim=1))  # BG x C x K
        return feat.max(dim=2).values.reshape(b, g, self.out_dim)


def _position_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


class ReConBlock(nn.Module):
    """Two parallel streams: patch tokens (self-attention) and global queries (cross-attention to tokens).

    Normalise-then-residual (the residual adds to the normalised tensor), as in the reference. The queries
    read the normalised tokens through ``detach()`` when ``stop_grad`` is set, so query losses cannot reach
    the token stream; tokens never attend to the queries and queries never attend to each other.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.norm1_contrast = nn.LayerNorm(dim)
        self.attn_contrast = CrossAttention(dim, num_heads)
        self.norm2_contrast = nn.LayerNorm(dim)
        self.mlp_contrast = Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, queries: Tensor, tokens: Tensor, stop_grad: bool) -> tuple[Tensor, Tensor]:
        """queries: B x Q x C, tokens: B x L x C -> same shapes."""
        q = self.norm1_contrast(queries)
        x = self.norm1(tokens)
        q = q + self.drop_path(self.attn_contrast(q, x.detach() if stop_grad else x))
        x = x + self.drop_path(self.attn(x))
        q = self.norm2_contrast(q)
        x = self.norm2(x)
        q = q + self.drop_path(self.mlp_contrast(q))
        x = x + self.drop_path(self.mlp(x))
        return q, x


class DecoderBlock(nn.Module):
    """Standard pre-norm transformer block (MAE decoder)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _trunc_normal_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ReConEncoder(nn.Module):
    """Patch embedding + position MLP + 3 global queries + ReCon blocks + shared final LayerNorm.

    Args:
        embed_dim: C.
        depth: number of ReCon blocks.
        num_heads: attention heads.
        num_groups: G patches (FPS centres) per cloud.
        group_size: K neighbours per patch.
        drop_path_rate: stochastic depth, linear from 0 to this value over the blocks.
        stop_grad: default for ``forward``: True for pretraining, False for fine-tuning.
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_groups: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mlp_ratio: float = 4.0,
        stop_grad: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_groups, self.group_size = embed_dim, num_groups, group_size
        self.stop_grad = stop_grad
        self.encoder = MiniPointNet(embed_dim)
        self.pos_embed = _position_mlp(embed_dim)
        for name in QUERY_NAMES:
            self.register_parameter(f"{name}_token", nn.Parameter(torch.zeros(1, 1, embed_dim)))
            self.register_parameter(f"{name}_pos", nn.Parameter(torch.zeros(1, 1, embed_dim)))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(ReConBlock(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim)
        self.apply(_trunc_normal_init)
        for name in QUERY_NAMES:
            nn.init.trunc_normal_(getattr(self, f"{name}_token"), std=0.02)
            nn.init.trunc_normal_(getattr(self, f"{name}_pos"), std=0.02)

    def group(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points: B x N x 3 -> (neighbourhoods B x G x K x 3 centred, centres B x G x 3)."""
        return group_patches(points, self.num_groups, self.group_size)

    def forward(
        self,
        neighbourhoods: Tensor,
        centres: Tensor,
        mask: Tensor | None = None,
        stop_grad: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode the visible patches.

        Args:
            neighbourhoods: B x G x K x 3.
            centres: B x G x 3.
            mask: optional B x G bool (True = masked, dropped before the encoder), same count per sample.
            stop_grad: overrides the constructor default.

        Returns:
            (queries B x 3 x C in the order cls, img, text; visible tokens B x G_vis x C), both after the
            shared final LayerNorm.
        """
        stop_grad = self.stop_grad if stop_grad is None else stop_grad
        tokens = self.encoder(neighbourhoods)
        pos = self.pos_embed(centres)
        b, g, c = tokens.shape
        if mask is not None:
            keep = ~mask
            counts = keep.sum(1)
            if bool((counts != counts[0]).any()):
                raise ValueError(
                    f"mask must hide the same number of patches per sample, got {counts.tolist()}"
                )
            tokens = tokens[keep].reshape(b, -1, c)
            pos = pos[keep].reshape(b, -1, c)
        queries = torch.cat([getattr(self, f"{n}_token") for n in QUERY_NAMES], 1).expand(b, -1, -1)
        query_pos = torch.cat([getattr(self, f"{n}_pos") for n in QUERY_NAMES], 1).expand(b, -1, -1)
        for block in self.blocks:
            # position re-added before every block, as in the reference
            queries, tokens = block(queries + query_pos, tokens + pos, stop_grad)
        return self.norm(queries), self.norm(tokens)


class MAEDecoder(nn.Module):
    """Masked-patch decoder: visible tokens + mask tokens, pre-norm blocks, Conv1d head to K x 3 points.

    Args:
        embed_dim: C (same as the encoder).
        depth: decoder blocks (reference 4).
        num_heads: decoder heads.
        group_size: K points predicted per masked patch.
        drop_path_rate: linear 0 -> rate over the decoder blocks (reference 0.1).
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 4,
        num_heads: int = 6,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.group_size = group_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = _position_mlp(embed_dim)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(DecoderBlock(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim)
        self.increase_dim = nn.Conv1d(embed_dim, 3 * group_size, 1)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, visible_tokens: Tensor, visible_centres: Tensor, masked_centres: Tensor) -> Tensor:
        """Predict the centred points of every masked patch.

        Args:
            visible_tokens: B x G_vis x C (encoder output after its final norm).
            visible_centres: B x G_vis x 3.
            masked_centres: B x N_m x 3.

        Returns:
            B x N_m x K x 3.
        """
        b, num_masked = masked_centres.shape[:2]
        x = torch.cat([visible_tokens, self.mask_token.expand(b, num_masked, -1)], dim=1)
        pos = self.pos_embed(torch.cat([visible_centres, masked_centres], dim=1))
        for block in self.blocks:
            x = block(x + pos)
        x = self.norm(x[:, -num_masked:])
        points = self.increase_dim(x.transpose(1, 2)).transpose(1, 2)
        return points.reshape(b, num_masked, self.group_size, 3)


def finetune_features(queries: Tensor, tokens: Tensor) -> Tensor:
    """Classification feature: concat(q_cls, q_img, q_text, max over tokens).

    queries: B x 3 x C, tokens: B x L x C -> B x 4C.
    """
    return torch.cat([queries.flatten(1), tokens.max(dim=1).values], dim=1)


def svm_features(queries: Tensor, tokens: Tensor) -> Tensor:
    """Linear-probe/SVM feature: concat(max over the queries, max-pool + mean-pool of tokens).

    queries: B x 3 x C, tokens: B x L x C -> B x 2C.
    """
    return torch.cat([queries.max(dim=1).values, tokens.max(dim=1).values + tokens.mean(dim=1)], dim=1)


def token_features(queries: Tensor, tokens: Tensor) -> Tensor:
    """Patch-token feature: concat(max-pool, mean-pool of the tokens); the queries are ignored.

    queries: B x 3 x C (unused), tokens: B x L x C -> B x 2C.
    """
    return torch.cat([tokens.max(dim=1).values, tokens.mean(dim=1)], dim=1)


class ClassificationHead(nn.Module):
    """``mlp3`` (reference ``full``): 4C->256->256->classes with BN, ReLU, dropout 0.5; or ``linear``."""

    def __init__(self, in_dim: int, num_classes: int, kind: str = "mlp3", dropout: float = 0.5) -> None:
        super().__init__()
        if kind == "linear":
            self.net = nn.Sequential(nn.Linear(in_dim, num_classes))
        elif kind == "mlp3":
            self.net = nn.Sequential(
                nn.Linear(in_dim, 256),
                nn.BatchNorm1d(256),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(256, 256),
                nn.BatchNorm1d(256),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(256, num_classes),
            )
        else:
            raise ValueError(f"unknown head kind {kind!r}; expected 'mlp3' or 'linear'")
        self.apply(_trunc_normal_init)

    def forward(self, features: Tensor) -> Tensor:
        """features: B x in_dim -> B x num_classes logits."""
        return self.net(features)


class PointTransformerClassifier(nn.Module):
    """Fine-tuning model: ReCon encoder without masking or stop-gradient + classification head.

    Args:
        num_classes: output classes.
        head: ``mlp3`` or ``linear``.
        other arguments: as ``ReConEncoder`` (fine-tuning uses drop path 0.2 and its own G, K).
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_groups: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.2,
        head: str = "mlp3",
    ) -> None:
        super().__init__()
        self.encoder = ReConEncoder(
            embed_dim, depth, num_heads, num_groups, group_size, drop_path_rate, stop_grad=False
        )
        self.head = ClassificationHead(4 * embed_dim, num_classes, head)

    def encode(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points: B x N x 3 -> (queries B x 3 x C, tokens B x G x C)."""
        neighbourhoods, centres = self.encoder.group(points)
        return self.encoder(neighbourhoods, centres, mask=None, stop_grad=False)

    def forward(self, points: Tensor) -> Tensor:
        """points: B x N x 3 -> B x num_classes logits."""
        return self.head(finetune_features(*self.encode(points)))
