"""Dense GEMMs of the sparse convolutions: oneDNN on CPU float32, `torch.mm` otherwise.

Why: `torch.mm` calls MKL, which runs its AVX2 code path on AMD CPUs, while oneDNN's fp32 matmul (reached
through `torch.ops.mkldnn._linear_pointwise`, the op behind PyTorch's CPU inductor linear) picks AVX-512
kernels from the CPU's features: 2.3x the rate on the 2-core AMD EPYC used for development
(docs/sparse-engine.md).  oneDNN compiles one kernel ("primitive") per problem shape, ~0.7 ms and
~0.65 MB each, and caches up to 1024 of them.  A kernel map has arbitrary row counts per offset, so rows
are cut into pieces whose GEMM row counts come from the 7 powers of two in `ROW_SIZES`, padding the last
piece of an offset by at most 15 % (or < 64 rows); the caller gathers into a workspace of the padded size
and drops the padded output rows (or zeroes the padding when the GEMM reduces over rows).  A last piece of
fewer than `EXACT_ROWS` rows is not padded but run exactly by `torch.mm`: a oneDNN call has ~12 us of
fixed cost (MKL's: ~2 us), so below 32 rows MKL's exact product is faster than a padded 64-row oneDNN one
(and the padding of such tails was 3 % of MinkUNet34C's GEMM FLOPs).  Only layers with at least
`ONEDNN_MIN_MACS` weights use oneDNN: the small ones carry ~5 % of MinkUNet34C's FLOPs but
would add compiled kernels.  A training step of MinkUNet34C then needs ~140 kernels (each holds ~0.6 MB of
heap: ~80 MB), a bounded, one-off cost that counts against the training memory budget.

Without autograd (inference) the trade is made the other way: convolutions from 64 x 64 weights up use
oneDNN, and pieces come from the finer ladder `INFERENCE_ROW_SIZES` (x1.5 steps: one call per offset
more often, less padding), at the price of more compiled kernels in processes that run inference.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)

ROW_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
INFERENCE_ROW_SIZES = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
MAX_PAD_ROWS = 256
EXACT_ROWS = 32
ONEDNN_MIN_MACS = 96 * 96
ONEDNN_MIN_MACS_INFERENCE = 64 * 64
_PAD_FRACTION = 0.15

_state: dict[str, bool] = {}


def set_cpu_gemm(backend: str) -> None:
    """Choose the CPU float32 GEMM: "onednn" (the default where it works) or "torch" (MKL)."""
    if backend not in ("onednn", "torch"):
        raise ValueError(f"CPU GEMM backend must be 'onednn' or 'torch', got {backend!r}")
    _state["enabled"] = backend == "onednn" and _onednn_works()


def linear(a: Tensor, b: Tensor) -> Tensor:
    """a (m, k) @ b (k, n) through oneDNN (any strides; allocates the result).  CPU only: callers decide
    with `use_onednn`, which is False for every other device."""
    if a.device.type != "cpu":
        raise ValueError(f"gemm.linear is oneDNN's CPU matmul, got a tensor on {a.device}; use torch.mm")
    return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")


def linear_t(a: Tensor, b_t: Tensor) -> Tensor:
    """a (m, k) @ b_t.T for b_t (n, k): `linear` without the transpose or the device check (hot loop; only
    reached after `use_onednn`)."""
    return torch.ops.mkldnn._linear_pointwise.default(a, b_t, None, "none", [], "")


def _onednn_works() -> bool:
    """Probe once: the op exists and agrees with torch.mm on a small problem."""
    if "works" not in _state:
        ok = False
        try:
            if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
                g = torch.Generator().manual_seed(0)
                a, b = torch.randn(37, 19, generator=g), torch.randn(19, 11, generator=g)
                ok = bool(torch.allclose(linear(a[5:], b), a[5:] @ b, rtol=1e-4, atol=1e-5))
        except (RuntimeError, AttributeError) as exc:
            log.info("oneDNN matmul unavailable, sparse convolutions use torch.mm: %s", exc)
        _state["works"] = ok
    return _state["works"]


def use_onednn(like: Tensor, c_in: int, c_out: int, inference: bool = False) -> bool:
    """Whether the GEMMs of a (c_in -> c_out) layer on tensors like `like` go through oneDNN: CPU float32,
    at least `ONEDNN_MIN_MACS` weights (`ONEDNN_MIN_MACS_INFERENCE` without autograd; small layers carry
    few FLOPs but would add compiled kernels), and the probe passed."""
    least = ONEDNN_MIN_MACS_INFERENCE if inference else ONEDNN_MIN_MACS
    if like.device.type != "cpu" or like.dtype != torch.float32 or c_in * c_out < least:
        return False
    if "enabled" not in _state:
        _state["enabled"] = _onednn_works()
    return _state["enabled"]


def _cover(m: int, sizes: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """Cover m rows by (start, rows, call_rows) pieces: call_rows in `sizes` and call_rows - rows <= 256 (and
    <= 15 % of rows, or < sizes[0]), except a last piece of rows < EXACT_ROWS, which has call_rows == rows
    (an exact `torch.mm`)."""
    pieces = []
    start = 0
    while start < m:
        left = m - start
        if left < EXACT_ROWS:
            pieces.append((start, left, left))
            break
        up = next((s for s in sizes if s >= left), None)
        if up is not None and (up == sizes[0] or up - left <= min(_PAD_FRACTION * left, MAX_PAD_ROWS)):
            pieces.append((start, left, up))
            break
        down = max(s for s in sizes if s <= left)
        pieces.append((start, down, down))
        start += down
    return tuple(pieces)


@functools.lru_cache(maxsize=65536)
def padded_pieces(m: int) -> tuple[tuple[int, int, int], ...]:
    """`_cover` with `ROW_SIZES`: the pieces of training-mode convolutions (forward and backward)."""
    return _cover(m, ROW_SIZES)


@functools.lru_cache(maxsize=65536)
def inference_pieces(m: int) -> tuple[tuple[int, int, int], ...]:
    """`_cover` with `INFERENCE_ROW_SIZES`: the pieces of convolutions run without autograd."""
    return _cover(m, INFERENCE_ROW_SIZES)


@functools.lru_cache(maxsize=65536)
def exact_pieces(m: int) -> tuple[tuple[int, int], ...]:
    """Cover m rows by exact (start, rows) pieces: rows in ROW_SIZES, then a last piece of < 32 rows."""
    pieces = []
    start = 0
    while m - start >= ROW_SIZES[0]:
        rows = max(s for s in ROW_SIZES if s <= m - start)
        pieces.append((start, rows))
        start += rows
    if start < m:
        pieces.append((start, m - start))
    return tuple(pieces)


def matmul(a: Tensor, b: Tensor, onednn: bool) -> Tensor:
    """a (m, k) @ b (k, n) for any m (no slack rows needed)."""
    if not onednn:
        return torch.mm(a, b)
    m = a.shape[0]
    pieces = exact_pieces(m)
    if len(pieces) == 1 and pieces[0][1] >= ROW_SIZES[0]:
        return linear(a, b)
    out = torch.empty(m, b.shape[1], dtype=a.dtype, device=a.device)
    for start, rows in pieces:
        if rows >= ROW_SIZES[0]:
            out[start:start + rows] = linear(a[start:start + rows], b)
        else:
            torch.mm(a[start:start + rows], b, out=out[start:start + rows])
    return out


def add_tn(acc: Tensor, x: Tensor, y: Tensor, onednn: bool) -> None:
    """acc (k, n) += x^T @ y for x (m, k), y (m, n): the reduction over rows of a weight gradient."""
    if not onednn:
        acc.addmm_(x.t(), y)
        return
    for start, rows in exact_pieces(x.shape[0]):
        xs, ys = x[start:start + rows], y[start:start + rows]
        if rows >= ROW_SIZES[0]:
            acc.add_(linear(xs.t(), ys))
        else:
            acc.addmm_(xs.t(), ys)
