"""Relational distillation loss: match the student's cross- and intra-modal similarity structure.

Formulas (the relational distillation paper), with K the (N, D) student and Q the (N, D) frozen teacher, both
L2-normalised and row-paired::

    C = |K Qᵀ − Q Qᵀ|                       (N, N), element-wise absolute value
    l_cross_diag    = (1/N) Σ_i C_ii         (= similarity loss, since C_ii = 1 − k_i·q_i)
    l_cross_offdiag = (1/(N² − N)) Σ_{i≠j} C_ij
    A = |K Kᵀ − Q Qᵀ|
    l_intra         = (1/(N² − N)) Σ_{i≠j} A_ij
    L_rel = λ_cross·(l_cross_diag + l_cross_offdiag) + λ_intra·l_intra

Evidence tags and defaults:

* Cross-modal term [secondary] (a review of the paper; two bracketings of the reviewed formula agree).
* Intra-modal term: form [assumed] (the review describes it as penalising the difference between
  point–point and image–image similarities).
* λ_cross = λ_intra = 1 [assumed]; L1 (not squared) difference [secondary, "L1 as reported"]; no
  temperature [secondary].
* Unit-norm features [assumed; needed so that (QQᵀ)_ii = 1]; ``normalize=True`` by default.
* The teacher is frozen: Q is detached, no gradient reaches it.
* |·| has subgradient 0 at 0, as in PyTorch's ``abs`` backward; the block-wise path uses ``sign`` which
  gives the same.

Memory: the dense path materialises three N×N matrices (N = 4096 → ≈ 67 MB each in fp32, plus autograd
copies). With ``block_size`` set, the off-diagonal sums and their gradient are computed over row blocks
by a custom autograd function that saves only K and Q and recomputes the blocks in backward, so memory
is O(block_size·N) in forward and backward alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["relational_loss"]


def _row_blocks(n: int, block_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + block_size, n)) for start in range(0, n, block_size)]


def _zero_block_diagonal(block: Tensor, start: int) -> Tensor:
    """Zero the entries (r, start + r) of a (b, N) row block: the global diagonal i = j."""
    rows = torch.arange(block.shape[0], device=block.device)
    block[rows, rows + start] = 0
    return block


class _BlockwiseOffDiagonalL1(torch.autograd.Function):
    """Σ_{i≠j} |k_i·q_j − q_i·q_j| and Σ_{i≠j} |k_i·k_j − q_i·q_j|, computed over row blocks.

    Gradient w.r.t. K (Q is constant), with S_c = sign(KQᵀ − QQᵀ) and S_a = sign(KKᵀ − QQᵀ), both with
    a zero diagonal::

        ∂/∂K Σ|C_off| = S_c Q,        ∂/∂K Σ|A_off| = (S_a + S_aᵀ) K = 2 S_a K   (S_a symmetric)
    """

    @staticmethod
    def forward(ctx, k: Tensor, q: Tensor, block_size: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(k, q)
        ctx.block_size = block_size
        cross_sum = torch.zeros((), dtype=torch.float64, device=k.device)
        intra_sum = torch.zeros((), dtype=torch.float64, device=k.device)
        for start, stop in _row_blocks(k.shape[0], block_size):
            qq = q[start:stop] @ q.t()  # (b, N) teacher–teacher similarities of this row block
            cross = _zero_block_diagonal((k[start:stop] @ q.t()).sub_(qq).abs_(), start)
            intra = _zero_block_diagonal((k[start:stop] @ k.t()).sub_(qq).abs_(), start)
            # float64 accumulation: N² terms can reach 10⁸–10⁹ at large N.
            cross_sum += cross.sum(dtype=torch.float64)
            intra_sum += intra.sum(dtype=torch.float64)
        return torch.stack([cross_sum, intra_sum]).to(k.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        k, q = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grad_cross, grad_intra = grad_out[0], grad_out[1]
        grad_k = torch.empty_like(k)
        for start, stop in _row_blocks(k.shape[0], ctx.block_size):
            qq = q[start:stop] @ q.t()
            sign_cross = _zero_block_diagonal((k[start:stop] @ q.t()).sub_(qq).sign_(), start)
            sign_intra = _zero_block_diagonal((k[start:stop] @ k.t()).sub_(qq).sign_(), start)
            grad_k[start:stop] = grad_cross * (sign_cross @ q) + (2.0 * grad_intra) * (sign_intra @ k)
        return grad_k, None, None


def relational_loss(
    student: Tensor,
    teacher: Tensor,
    lambda_cross: float = 1.0,
    lambda_intra: float = 1.0,
    normalize: bool = True,
    block_size: int | None = None,
) -> dict[str, Tensor]:
    """Relational distillation loss and its logged components.

    Args:
        student: K, (N, D) student features, N ≥ 2.
        teacher: Q, (N, D) frozen teacher features, row-paired with ``student`` (detached here).
        lambda_cross: weight of the cross-modal term (diagonal + off-diagonal means).
        lambda_intra: weight of the intra-modal term.
        normalize: L2-normalise both inputs first.
        block_size: None → dense N×N computation; an int → row blocks of that many rows (bounded memory,
            same values and gradients up to float rounding).

    Returns:
        Dict of scalar tensors: ``loss`` (the weighted total), ``l_cross`` (= l_cross_diag +
        l_cross_offdiag), ``l_cross_diag``, ``l_cross_offdiag`` and ``l_intra`` (unweighted).
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(
            "relational_loss: student and teacher must be (N, D) tensors of the same shape; got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    n = student.shape[0]
    if n < 2:
        raise ValueError(f"relational_loss: needs N ≥ 2 pairs for the off-diagonal means, got N = {n}")
    if block_size is not None and block_size < 1:
        raise ValueError(f"relational_loss: block_size must be a positive int or None, got {block_size}")
    teacher = teacher.detach()
    if normalize:
        student = F.normalize(student, dim=1)
        teacher = F.normalize(teacher, dim=1)

    # C_ii = |k_i·q_i − q_i·q_i| is O(N·D); keep it in ordinary autograd on both paths.
    l_cross_diag = ((student * teacher).sum(dim=1) - (teacher * teacher).sum(dim=1)).abs().mean()
    num_off = float(n * n - n)
    if block_size is None:
        qq = teacher @ teacher.t()
        cross = (student @ teacher.t() - qq).abs()
        intra = (student @ student.t() - qq).abs()
        # Removing the diagonal by subtraction (not a boolean gather) avoids two N² copies; the
        # diagonal's gradient cancels exactly.
        l_cross_offdiag = (cross.sum() - cross.diagonal().sum()) / num_off
        l_intra = (intra.sum() - intra.diagonal().sum()) / num_off
    else:
        sums = _BlockwiseOffDiagonalL1.apply(student, teacher, block_size)
        l_cross_offdiag = sums[0] / num_off
        l_intra = sums[1] / num_off
    l_cross = l_cross_diag + l_cross_offdiag
    return {
        "loss": lambda_cross * l_cross + lambda_intra * l_intra,
        "l_cross": l_cross,
        "l_cross_diag": l_cross_diag,
        "l_cross_offdiag": l_cross_offdiag,
        "l_intra": l_intra,
    }
