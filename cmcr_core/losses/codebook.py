"""CMCR's unified codebook: K unit codewords shared by both modalities, updated by EMA (docs/cmcr.md).

Buffers (stored in training checkpoints, never handed to downstream tasks):

* ``embedding`` (K, D): the unit-norm codewords C;
* ``ema_weight`` (K, D): the EMA sums W; ``ema_count`` (K,): the EMA counts n;
* ``unactivated_count`` (K,): steps since each code was last chosen (used only by the dead-code reset).

Update of one step from M paired samples, P (point features) and Vf (pixel features of the same pairs),
with hard codes kP, kV chosen on the codebook as it was at the start of the step (one-hots E_P, E_V),
decay γ and Laplace ε — the point pass, then the image pass::

    n ← γ·n + (1 − γ)·Σ_m E[m];   n ← (n + ε) / (Σ_k n_k + K·ε) · Σ_k n_k
    W ← γ·W + ½(1 − γ)·Eᵀ own + ½(1 − γ)·Eᵀ other         (point pass: E = E_P, own = P, other = Vf)

then, when ``torch.distributed`` is initialised, W and n are averaged over ranks (all_reduce SUM / world,
one collective) and C ← normalize_rows(W / n). Everything runs in float32 under ``no_grad``, also under
autocast. Initialisation is identical on every rank (seeded generator; broadcast from rank 0 at the first
update when a process group exists), instead of relying on DDP's buffer broadcast (D18 of
docs/differences.md).

Nearest-code search uses argmax of x·cᵀ (equal to argmin ‖x − c‖² because every codeword has unit norm)
over chunks of rows, so memory is O(N) plus one (chunk, K) float32 block, never a float64 (N, K) distance
matrix (D9 of docs/differences.md).
Blocks of 4096 rows (6.5 MB of scores) stay in cache; 32768-row blocks ran about
1.7× slower on the CPU. ``nearest_upsampled`` searches bilinearly upsampled maps from their
low-resolution scores (the MIM path: h instead of D multiply-adds per pixel and code).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UnifiedCodebook", "add_straight_through", "codebook_usage", "straight_through"]


def straight_through(inputs: Tensor, quantized: Tensor) -> Tensor:
    """STE(x) = x + sg(q − x): forward value exactly ``quantized``, gradient identity to ``inputs``."""
    return quantized.detach() + (inputs - inputs.detach())


class _AddStraightThrough(torch.autograd.Function):
    """base + STE(x → q) in one tensor: value base + q, gradient identity to both base and x."""

    @staticmethod
    def forward(ctx: Any, base: Tensor, inputs: Tensor, quantized: Tensor) -> Tensor:
        return base + quantized

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        return grad, grad, None


def add_straight_through(base: Tensor, inputs: Tensor, quantized: Tensor) -> Tensor:
    """``base + straight_through(inputs, quantized)`` without the two full-size temporaries of the STE
    (they matter at every pixel of a batch: 6B·224·416 × 64 values). Shapes must match."""
    if base.shape != inputs.shape or quantized.shape != inputs.shape:
        raise ValueError(f"shapes differ: base {tuple(base.shape)}, inputs {tuple(inputs.shape)}, "
                         f"quantized {tuple(quantized.shape)}")
    return _AddStraightThrough.apply(base, inputs, quantized.detach())


def codebook_usage(codes: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """Perplexity exp(−Σ p log p) of the code histogram and the number of codes used.

    Args:
        codes: (N,) int64 code indices.
        num_codes: K.

    Returns:
        (perplexity, active) float32 scalars; perplexity is K for uniform use, 1 for a single code.
    """
    counts = torch.bincount(codes.reshape(-1), minlength=num_codes).float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return torch.exp(entropy), (counts > 0).sum().float()


def _bilinear_matrix(size_in: int, size_out: int, align_corners: bool, device: torch.device) -> Tensor:
    """(size_out, size_in) float32 weights of 1-D bilinear resampling, exactly as ``F.interpolate`` computes
    them: the interpolation of the identity (one channel per input position)."""
    eye = torch.eye(size_in, dtype=torch.float64, device=device).reshape(1, size_in, 1, size_in)
    weights = F.interpolate(eye, size=(1, size_out), mode="bilinear", align_corners=align_corners)
    return weights[0, :, 0, :].t().float()


class UnifiedCodebook(nn.Module):
    """K × D unit codewords with a two-modality EMA update.

    Args:
        num_codes: K (400 in CMCR).
        dim: D (64).
        decay: γ of the EMA (0.999).
        eps: ε of the Laplace smoothing (1e-5).
        seed: seed of the initialisation and of the dead-code reset draws (same on every rank).
        dead_code_reset: replace codes unused for more than ``dead_code_threshold`` steps by a random
            code used in this step plus U(±1/1024) noise (CMG's rule; disabled in the reference).
        dead_code_threshold: steps without use before a code counts as dead (300).
        chunk_size: rows per block of the nearest-code search.
    """

    def __init__(
        self,
        num_codes: int = 400,
        dim: int = 64,
        decay: float = 0.999,
        eps: float = 1e-5,
        seed: int = 0,
        dead_code_reset: bool = False,
        dead_code_threshold: int = 300,
        chunk_size: int = 4096,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1 or chunk_size < 1:
            raise ValueError(
                f"num_codes, dim and chunk_size must be >= 1, got {num_codes}, {dim}, {chunk_size}"
            )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"codebook decay must be in [0, 1), got {decay}")
        if eps <= 0:
            raise ValueError(f"codebook eps must be > 0, got {eps}")
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.eps, self.seed = decay, eps, seed
        self.dead_code_reset, self.dead_code_threshold = dead_code_reset, dead_code_threshold
        self.chunk_size = chunk_size
        init = torch.Generator().manual_seed(seed)
        embedding = F.normalize(torch.rand(num_codes, dim, generator=init) * 2.0 - 1.0, dim=1)
        self.register_buffer("embedding", embedding)
        self.register_buffer("ema_weight", embedding.clone())
        self.register_buffer("ema_count", torch.zeros(num_codes))
        self.register_buffer("unactivated_count", torch.zeros(num_codes))
        self.generator = torch.Generator().manual_seed(seed + 1)
        self._synced = False

    def _apply(self, fn: Any, recurse: bool = True) -> UnifiedCodebook:
        # The reset draws happen on the codebook's device; moving happens before training, so re-seeding
        # the generator there loses nothing (its state is then checkpointed through the method).
        result = super()._apply(fn, recurse)
        if self.generator.device != self.embedding.device:
            self.generator = torch.Generator(device=self.embedding.device).manual_seed(self.seed + 1)
        return result

    def extra_repr(self) -> str:
        return f"{self.num_codes}, {self.dim}, decay={self.decay}, eps={self.eps}"

    # ---------------------------------------------------------------- search
    def nearest(self, vectors: Tensor, codebook: Tensor | None = None) -> Tensor:
        """Index of the nearest codeword of every row.

        Args:
            vectors: (N, D) features (any norm; the codewords are unit norm).
            codebook: (K, D) unit codewords to search (default: the current ``embedding``).

        Returns:
            (N,) int64 ``argmin_k ‖x − c_k‖² = argmax_k x·c_k``.
        """
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (N, {self.dim}), got {tuple(vectors.shape)}")
        table = self.embedding if codebook is None else codebook
        codes = torch.empty(vectors.shape[0], dtype=torch.int64, device=vectors.device)
        with torch.no_grad(), torch.autocast(device_type=vectors.device.type, enabled=False):
            table = table.float()
            for start in range(0, vectors.shape[0], self.chunk_size):
                block = vectors[start : start + self.chunk_size].float()
                codes[start : start + len(block)] = (block @ table.t()).argmax(1)
        return codes

    def nearest_map(self, maps: Tensor, codebook: Tensor | None = None) -> Tensor:
        """Nearest codeword of every pixel of channel-first maps, without a channel-last copy.

        Args:
            maps: (I, D, H, W) features.
            codebook: (K, D) unit codewords (default: the current ``embedding``).

        Returns:
            (I, H, W) int64 code indices.
        """
        if maps.dim() != 4 or maps.shape[1] != self.dim:
            raise ValueError(f"maps must be (I, {self.dim}, H, W), got {tuple(maps.shape)}")
        table = self.embedding if codebook is None else codebook
        n_images, _, height, width = maps.shape
        flat = maps.reshape(n_images, self.dim, height * width)
        codes = torch.empty(n_images, height * width, dtype=torch.int64, device=maps.device)
        with torch.no_grad(), torch.autocast(device_type=maps.device.type, enabled=False):
            table = table.float()
            for image in range(n_images):
                for start in range(0, height * width, self.chunk_size):
                    block = flat[image, :, start : start + self.chunk_size].float()  # (D, chunk)
                    # (chunk, K) scores: argmax over the contiguous axis is ~3x faster than over K rows.
                    codes[image, start : start + block.shape[1]] = (block.t() @ table.t()).argmax(1)
        return codes.reshape(n_images, height, width)

    def nearest_upsampled(
        self, maps: Tensor, size: tuple[int, int], align_corners: bool = True, codebook: Tensor | None = None
    ) -> Tensor:
        """Nearest codeword of every pixel of ``F.interpolate(maps, size, mode="bilinear")``, without
        building the upsampled features.

        Scores are linear in the features and bilinear upsampling is linear (per channel), so the scores
        of the upsampled pixels are the bilinear upsampling of the low-resolution scores: with My (H, h),
        Mx (W, w) the interpolation matrices, x(y, x)·c = Σ_ab My[y, a]·Mx[x, b]·(maps[a, b]·c). The
        (I, h, w, K) scores are interpolated along the width once, then each block of output rows is one
        (rows, h) × (h, W·K) product and an argmax over the codes: h multiply-adds per (pixel, code)
        instead of D. A positive per-pixel factor (the decoder's L2 normalisation) leaves the argmax
        unchanged, so this equals ``nearest_map`` of the upsampled (and normalised) maps, float rounding
        aside (scores within ~1e-6 of a tie may pick the other code of the tie).

        Args:
            maps: (I, D, h, w) features before upsampling.
            size: (H, W) of the upsampled maps.
            align_corners: as in ``F.interpolate`` (the decoders use True).
            codebook: (K, D) unit codewords (default: the current ``embedding``).

        Returns:
            (I, H, W) int64 code indices.
        """
        if maps.dim() != 4 or maps.shape[1] != self.dim:
            raise ValueError(f"maps must be (I, {self.dim}, h, w), got {tuple(maps.shape)}")
        table = self.embedding if codebook is None else codebook
        n_images, _, low_h, low_w = maps.shape
        height, width = int(size[0]), int(size[1])
        codes = torch.empty(n_images, height, width, dtype=torch.int64, device=maps.device)
        with torch.no_grad(), torch.autocast(device_type=maps.device.type, enabled=False):
            rows_weights = _bilinear_matrix(low_h, height, align_corners, maps.device)  # (H, h)
            cols_weights = _bilinear_matrix(low_w, width, align_corners, maps.device)  # (W, w)
            scores = torch.einsum("idab,kd->iabk", maps.float(), table.float())  # (I, h, w, K)
            rows = max(1, self.chunk_size // width)
            for image in range(n_images):
                along_width = torch.einsum("xb,abk->axk", cols_weights, scores[image])  # (h, W, K)
                flat = along_width.reshape(low_h, width * self.num_codes)
                for start in range(0, height, rows):
                    block = rows_weights[start : start + rows] @ flat  # (rows, W·K)
                    codes[image, start : start + rows] = block.view(-1, width, self.num_codes).argmax(2)
        return codes

    def quantize(
        self, vectors: Tensor, codebook: Tensor | None = None, base: Tensor | None = None,
        codes: Tensor | None = None,
    ) -> Tensor:
        """STE-quantised rows: forward value C[nearest(x)], gradient identity to x. (N, D) -> (N, D).

        With ``base`` (N, D): ``base + STE(q(x))`` in one tensor (``add_straight_through``). ``codes``
        (N,): the rows' nearest codes when already known (no second search).
        """
        table = self.embedding if codebook is None else codebook
        codes = self.nearest(vectors, table) if codes is None else codes
        quantized = table[codes].to(vectors.dtype)
        if base is not None:
            return add_straight_through(base, vectors, quantized)
        return straight_through(vectors, quantized)

    def quantize_map(
        self, maps: Tensor, codebook: Tensor | None = None, base: Tensor | None = None,
        codes: Tensor | None = None,
    ) -> Tensor:
        """STE-quantised maps, (I, D, H, W) -> (I, D, H, W); with ``base``, base + STE(q(maps)).

        ``codes`` (I, H, W): the pixels' nearest codes when already known.
        """
        table = self.embedding if codebook is None else codebook
        codes = self.nearest_map(maps, table) if codes is None else codes
        quantized = F.embedding(codes, table.to(maps.dtype)).permute(0, 3, 1, 2)
        if base is not None:
            return add_straight_through(base, maps, quantized)
        return straight_through(maps, quantized)

    # ---------------------------------------------------------------- update
    def _ema_pass(self, codes: Tensor, own: Tensor, other: Tensor) -> None:
        gamma = self.decay
        counts = torch.bincount(codes, minlength=self.num_codes).to(self.ema_count.dtype)
        self.ema_count.mul_(gamma).add_(counts, alpha=1.0 - gamma)
        total = self.ema_count.sum()
        self.ema_count.add_(self.eps).div_(total + self.num_codes * self.eps).mul_(total)
        sums = torch.zeros_like(self.ema_weight)
        sums.index_add_(0, codes, own).index_add_(0, codes, other)
        self.ema_weight.mul_(gamma).add_(sums, alpha=0.5 * (1.0 - gamma))

    def _sync_initial_state(self) -> None:
        # Seeded init is already identical everywhere; the broadcast guards against a rank built with
        # another seed. It runs at the first update, when the buffers are on the training device (NCCL
        # cannot broadcast CPU tensors at construction time).
        if not self._synced and dist.is_available() and dist.is_initialized():
            for buffer in (self.embedding, self.ema_weight, self.ema_count, self.unactivated_count):
                dist.broadcast(buffer, src=0)
        self._synced = True

    @torch.no_grad()
    def update(self, points: Tensor, pixels: Tensor, point_codes: Tensor, pixel_codes: Tensor) -> None:
        """One EMA step from M pairs (point pass, then image pass), rank averaging, renormalisation.

        Args:
            points: P, (M, D) point features of the pairs (detached here).
            pixels: Vf, (M, D) pixel features of the same pairs.
            point_codes: kP, (M,) int64 codes of ``points`` on the step's starting codebook.
            pixel_codes: kV, (M,) int64 codes of ``pixels``.
        """
        if points.shape != pixels.shape or points.dim() != 2 or points.shape[1] != self.dim:
            raise ValueError(
                f"points and pixels must both be (M, {self.dim}); got {tuple(points.shape)}, "
                f"{tuple(pixels.shape)}"
            )
        if point_codes.shape != (points.shape[0],) or pixel_codes.shape != (points.shape[0],):
            raise ValueError(
                f"codes must be (M={points.shape[0]},); got {tuple(point_codes.shape)}, "
                f"{tuple(pixel_codes.shape)}"
            )
        self._sync_initial_state()
        with torch.autocast(device_type=points.device.type, enabled=False):
            p, v = points.detach().float(), pixels.detach().float()
            used = torch.zeros(self.num_codes, device=p.device)
            if p.shape[0] > 0:
                self._ema_pass(point_codes, p, v)
                self._ema_pass(pixel_codes, v, p)
                used.index_fill_(0, torch.cat([point_codes, pixel_codes]), 1.0)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # One collective for W, n and the usage flags; the mean keeps every rank identical.
                packed = torch.cat([self.ema_weight.reshape(-1), self.ema_count, used])
                dist.all_reduce(packed, op=dist.ReduceOp.SUM)
                packed /= dist.get_world_size()
                k, d = self.num_codes, self.dim
                self.ema_weight.copy_(packed[: k * d].reshape(k, d))
                self.ema_count.copy_(packed[k * d : k * d + k])
                used = packed[k * d + k :]
            # n is 0 only before any pair was seen; dividing by 1 there keeps C_k = normalize(W_k) (no
            # host synchronisation to test for it).
            count = torch.where(self.ema_count > 0, self.ema_count, torch.ones_like(self.ema_count))
            self.embedding.copy_(F.normalize(self.ema_weight / count.unsqueeze(1), dim=1))
            active = used > 0
            self.unactivated_count.add_(1.0).masked_fill_(active, 0.0)
            if self.dead_code_reset:
                self._reset_dead_codes(active)

    def _reset_dead_codes(self, active: Tensor) -> None:
        dead = self.unactivated_count > self.dead_code_threshold
        n_dead, n_active = int(dead.sum()), int(active.sum())
        if n_dead == 0 or n_active == 0:
            return
        # Same generator state and same (all-reduced) usage on every rank -> the same replacements.
        device = self.embedding.device
        pick = torch.randint(n_active, (n_dead,), generator=self.generator, device=device)
        noise = (torch.rand(n_dead, self.dim, generator=self.generator, device=device) * 2.0 - 1.0) / 1024
        source = self.embedding[active.nonzero().squeeze(1)[pick]]
        fresh = F.normalize(source + noise, dim=1)
        index = dead.nonzero().squeeze(1)
        self.embedding[index] = fresh
        scale = self.ema_count[index].unsqueeze(1)
        self.ema_weight[index] = fresh * scale  # keeps C_k = normalize(W_k / n_k) consistent
        self.unactivated_count[index] = 0.0

    def usage(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """(perplexity, active codes) of ``codes`` (any shape) over this codebook."""
        return codebook_usage(codes, self.num_codes)
