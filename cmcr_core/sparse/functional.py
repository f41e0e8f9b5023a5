"""Sparse convolution as gather -> GEMM -> scatter, with a hand-written backward pass.

For a kernel map (see `kernel_map.KernelMap`) and weights W (K, C_in, C_out):

    forward      y[out_rows[p]] += x[in_rows[p]] @ W[k(p)]
    grad input   dx[in_rows[p]] += dy[out_rows[p]] @ W[k(p)]^T     (the same pairs read backwards)
    grad weight  dW[k]           = x[in_rows_k]^T @ dy[out_rows_k]

The identity offset of submanifold maps (centre: every row with itself) is a plain matmul that initialises
the output, so it never goes through a gather or a scatter.  The other offsets run in one of two ways:

* CPU float32 (oneDNN GEMMs, `gemm.py`): offset by offset, in pieces of at most 4096 rows whose GEMM row
  counts come from a fixed set (padded, so oneDNN reuses its compiled kernels): gather the piece into a
  reused workspace, one GEMM, scatter the piece (a last piece under 32 rows: an exact `torch.mm`).
  Workspaces stay in cache and are never reallocated (fresh multi-MB buffers cost page faults on every
  call), as in MinkowskiEngine's CPU kernels.
* otherwise (`torch.mm`: CUDA, float64, bfloat16): in chunks of consecutive offsets with at most
  `chunk_elements` gathered values: one `index_select`, one `torch.mm(out=...)` per offset into a second
  workspace, one `index_add_` per chunk.  On CUDA one chunk holds the whole map (one gather and one scatter
  per layer; the scatter's atomic additions make float sums run-to-run nondeterministic in the last bits).

Gathered values are never saved for the backward pass (recomputed there), so training memory is the layer
inputs plus the maps, as in MinkowskiEngine.

Under `torch.autocast` a convolution runs in autocast's dtype (bfloat16 or float16), as `F.conv3d` would:
`sparse_conv` casts features and weights and switches autocast off inside, because the `torch.mm(out=...)`
products are not autocast-eligible and `index_add_` needs one dtype on both sides (with autocast left on,
the identity matmul came out bfloat16 and the other offsets float32, and the scatter failed).  Weight
gradients flow back to the float32 parameters through the cast.  Neither pass synchronises with the device:
the pair ranges are Python ints counted when the map was built.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from cmcr_core.sparse import gemm
from cmcr_core.sparse.kernel_map import KernelMap

# Gathered values per chunk (rows * channels) on the torch.mm path: 2**18 floats = 1 MiB on CPU.
CPU_CHUNK_ELEMENTS = 1 << 18
CUDA_CHUNK_ELEMENTS = 1 << 62

_local = threading.local()


def _workspace(slot: int, rows: int, cols: int, like: Tensor) -> Tensor:
    """A (rows, cols) scratch matrix, contents undefined: on CPU reused per thread, dtype and slot (fresh
    multi-MB buffers page-fault on every call); elsewhere a fresh tensor, because the CUDA caching allocator
    hands back freed blocks without that cost, and a kept buffer would hold the largest layer's gathered
    pairs (hundreds of MB for a batch of scans) through the whole run, at the training peak included."""
    if like.device.type != "cpu":
        return torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    cache = getattr(_local, "buffers", None)
    if cache is None:
        cache = _local.buffers = {}
    key = (slot, like.device, like.dtype)
    need = rows * cols
    buf = cache.get(key)
    if buf is None or buf.numel() < need:
        buf = torch.empty(need, dtype=like.dtype, device=like.device)
        cache[key] = buf
    return buf[:need].view(rows, cols)


def _chunks(kmap: KernelMap, channels: int, device: torch.device) -> list[list[tuple[int, int, int]]]:
    """Split the offset groups into chunks of at most `chunk_elements / channels` rows.

    Each chunk is a list of (kernel index, start, end) pair ranges; consecutive ranges are contiguous, and
    a group larger than the budget is split over several chunks.
    """
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else CPU_CHUNK_ELEMENTS
    max_rows = max(budget // max(channels, 1), 1)
    chunks: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    rows = 0
    for g, k in enumerate(kmap.offsets):
        a, b = kmap.bounds[g], kmap.bounds[g + 1]
        while a < b:
            take = min(b - a, max_rows - rows)
            current.append((k, a, a + take))
            rows += take
            a += take
            if rows == max_rows:
                chunks.append(current)
                current, rows = [], 0
    if current:
        chunks.append(current)
    return chunks


def _destination(n: int, c: int, like: Tensor, identity: Tensor | None, once: bool) -> Tensor:
    """The (n, c) output to scatter into: the identity offset's product if any, else zeros (or an
    uninitialised tensor when every row will be written exactly once)."""
    if identity is not None:
        return identity
    if once:  # every destination row receives exactly one pair: written once, no zero fill
        return torch.empty(n, c, dtype=like.dtype, device=like.device)
    return torch.zeros(n, c, dtype=like.dtype, device=like.device)


def _forward(x: Tensor, weight: Tensor, kmap: KernelMap, inference: bool = False) -> Tensor:
    """y (n_out, C_out) = conv(x) for contiguous x (n_in, C_in) and weight (K, C_in, C_out); `inference`:
    no backward will follow (oneDNN for more layers, finer pieces: see gemm.py)."""
    c_in, c_out = weight.shape[1], weight.shape[2]
    onednn = gemm.use_onednn(x, c_in, c_out, inference)
    split = gemm.inference_pieces if inference else gemm.padded_pieces
    identity = None
    if kmap.identity is not None:
        identity = gemm.matmul(x, weight[kmap.identity], onednn)
    out = _destination(kmap.n_out, c_out, x, identity, kmap.out_once)
    scatter = out.index_copy_ if kmap.out_once and identity is None else out.index_add_
    if onednn:
        full = _workspace(0, kmap.max_call_rows(split), c_in, x)
        small = _workspace(1, gemm.EXACT_ROWS, c_out, x)
        w_t = weight.transpose(1, 2).unbind(0)  # (C_out, C_in) views: oneDNN's weight argument
        for k, in_rows, out_rows, rows, call_rows in kmap.pieces(split):
            buf = full[:call_rows]  # rows past `rows` hold stale values: their results are cut off
            torch.index_select(x, 0, in_rows, out=buf[:rows])
            if call_rows < gemm.ROW_SIZES[0]:  # short last piece: exact product (see gemm.EXACT_ROWS)
                scatter(0, out_rows, torch.mm(buf, weight[k], out=small[:rows]))
            else:
                scatter(0, out_rows, gemm.linear_t(buf, w_t[k])[:rows])
        return out
    for chunk in _chunks(kmap, max(c_in, c_out), x.device):
        a0, a1 = chunk[0][1], chunk[-1][2]
        gathered = _workspace(0, a1 - a0, c_in, x)
        torch.index_select(x, 0, kmap.in_rows[a0:a1], out=gathered)
        products = _workspace(1, a1 - a0, c_out, x)
        for k, a, b in chunk:
            torch.mm(gathered[a - a0:b - a0], weight[k], out=products[a - a0:b - a0])
        scatter(0, kmap.out_rows[a0:a1], products)
    return out


def _backward(x: Tensor, dy: Tensor, weight: Tensor, kmap: KernelMap, need_x: bool, need_w: bool
              ) -> tuple[Tensor | None, Tensor | None]:
    """(dx (n_in, C_in) or None, dW (K, C_in, C_out) or None); dy is gathered once for both."""
    c_in, c_out = weight.shape[1], weight.shape[2]
    onednn = gemm.use_onednn(dy, c_in, c_out)
    grad_w = torch.zeros_like(weight) if need_w else None
    grad_x = identity = None
    if kmap.identity is not None:
        if need_x:
            identity = gemm.matmul(dy, weight[kmap.identity].t(), onednn)
        if need_w:
            gemm.add_tn(grad_w[kmap.identity], x, dy, onednn)
    if need_x:
        grad_x = _destination(kmap.n_in, c_in, dy, identity, kmap.in_once)
        scatter = grad_x.index_copy_ if kmap.in_once and identity is None else grad_x.index_add_
    if onednn:
        rows_max = kmap.max_call_rows(gemm.padded_pieces)
        full_y = _workspace(0, rows_max, c_out, dy)
        full_x = _workspace(1, rows_max, c_in, dy)
        small = _workspace(2, gemm.EXACT_ROWS, c_in, dy)
        w = weight.unbind(0)  # (C_in, C_out) = the weight argument of dy @ W^T
        dw = grad_w.unbind(0) if need_w else ()
        for k, in_rows, out_rows, rows, call_rows in kmap.pieces(gemm.padded_pieces):
            exact = call_rows < gemm.ROW_SIZES[0]  # short last piece: exact products (gemm.EXACT_ROWS)
            gy = full_y[:call_rows]
            torch.index_select(dy, 0, out_rows, out=gy[:rows])
            if need_w:
                gx = full_x[:call_rows]
                torch.index_select(x, 0, in_rows, out=gx[:rows])
                if exact:
                    dw[k].addmm_(gx.t(), gy)
                else:
                    if call_rows > rows:  # the reduction runs over the padding rows: make them zero
                        gx[rows:].zero_()
                        gy[rows:].zero_()
                    dw[k].add_(gemm.linear_t(gx.t(), gy.t()))
            if need_x:
                if exact:
                    scatter(0, in_rows, torch.mm(gy, weight[k].t(), out=small[:rows]))
                else:
                    scatter(0, in_rows, gemm.linear_t(gy, w[k])[:rows])
        return grad_x, grad_w
    for chunk in _chunks(kmap, max(c_in, c_out), dy.device):
        a0, a1 = chunk[0][1], chunk[-1][2]
        gy = _workspace(0, a1 - a0, c_out, dy)
        torch.index_select(dy, 0, kmap.out_rows[a0:a1], out=gy)
        if need_w:
            gx = _workspace(1, a1 - a0, c_in, dy)
            torch.index_select(x, 0, kmap.in_rows[a0:a1], out=gx)
            for k, a, b in chunk:
                grad_w[k].addmm_(gx[a - a0:b - a0].t(), gy[a - a0:b - a0])
        if need_x:
            products = _workspace(2, a1 - a0, c_in, dy)
            for k, a, b in chunk:
                torch.mm(gy[a - a0:b - a0], weight[k].t(), out=products[a - a0:b - a0])
            scatter(0, kmap.in_rows[a0:a1], products)
    return grad_x, grad_w


class _SparseConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, kmap: KernelMap, inference: bool) -> Tensor:
        features = features.contiguous()
        ctx.kmap = kmap
        ctx.save_for_backward(features, weight)
        return _forward(features, weight, kmap, inference)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        features, weight = ctx.saved_tensors
        args = (features, grad_out.contiguous(), weight, ctx.kmap, ctx.needs_input_grad[0],
                ctx.needs_input_grad[1])
        device_type = grad_out.device.type
        if autocast_dtype(device_type) is None:
            return *_backward(*args), None, None
        # backward() called inside an autocast region: the same dtype rules as the forward.
        with torch.autocast(device_type, enabled=False):
            return *_backward(*args), None, None


def sparse_conv(features: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    """y = conv(features) over `kmap`.

    Args:
        features: (n_in, C_in) float tensor on the input set's rows.
        weight: (K, C_in, C_out), K = kmap.kernel_volume, MinkowskiEngine offset order.
        kmap: kernel map from a `CoordinateManager`.
    Returns:
        (n_out, C_out) features on the output set's rows; in autocast's dtype inside an autocast region
        (float64 features are left alone, as autocast does).
    """
    if features.dim() != 2 or features.shape[0] != kmap.n_in:
        raise ValueError(f"features: expected ({kmap.n_in}, C_in) rows of the input set, got "
                         f"{tuple(features.shape)}")
    if weight.dim() != 3 or weight.shape[0] != kmap.kernel_volume or weight.shape[1] != features.shape[1]:
        raise ValueError(f"weight: expected ({kmap.kernel_volume}, {features.shape[1]}, C_out), got "
                         f"{tuple(weight.shape)}")
    if weight.device != features.device or kmap.in_rows.device != features.device:
        raise ValueError(f"features on {features.device}, weight on {weight.device}, kernel map on "
                         f"{kmap.in_rows.device}: move the model and the input to one device")
    inference = not autograd_needed(features, weight)
    device_type = features.device.type
    cast = autocast_dtype(device_type) if features.dtype != torch.float64 else None
    if cast is not None:
        with torch.autocast(device_type, enabled=False):
            return _SparseConvolution.apply(features.to(cast), weight.to(cast), kmap, inference)
    if weight.dtype != features.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from features dtype {features.dtype}")
    return _SparseConvolution.apply(features, weight, kmap, inference)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs matmuls in on `device_type` ("cuda", "cpu", ...), or None outside autocast."""
    if hasattr(torch, "get_autocast_dtype"):
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    # torch < 2.4: per-device functions
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


def autograd_needed(*tensors: Tensor | None) -> bool:
    """Whether a backward pass can follow: grad mode on and some of `tensors` requires a gradient.  When it
    cannot, the layers take their inference paths (see gemm.py)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
