"""The device of the device-aware tests (`device`) and the error they allow against a float64 CPU oracle
(`tolerance`).

Device-aware tests take the `device` fixture and compute there; everything else stays on the CPU.
`CMCR_TEST_DEVICE` picks the device: `cpu` (the default, CI) or `cuda` (`cuda:N`):

    CMCR_TEST_DEVICE=cuda python -m pytest -q -m "gpu and not slow"     # the device-aware tests, on a GPU

Every test that uses `device` is marked `device` (`-m device` selects them on any device); with `cuda` also
`gpu` (so `-m gpu` selects exactly the tests that run on the GPU); `gpu` tests skip, with the reason,
where CUDA is not available. Tests that only make sense on a GPU carry the `gpu` marker themselves and use
CUDA directly. The root conftest calls the hooks below.

Float32 on CUDA: TF32 (a 10-bit mantissa in matmuls and cuDNN convolutions) is switched off for the whole
session, so float32 results are compared with float32 tolerances; reduced precision is tested explicitly
as bfloat16 under autocast. `tolerance` holds the error allowed against a float64 CPU oracle.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch

DEVICE_VARIABLE = "CMCR_TEST_DEVICE"

# Relative error allowed against a float64 CPU oracle, by dtype of the computation: sums of products in
# another order (oneDNN pieces, CUDA atomics) for float64 and float32; for bfloat16 the rounding of the
# inputs, of the outputs and of every addition of a scatter (2**-8 each), compounded by a few layers.
ORACLE_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 4e-2}
# The least relative error a float32 comparison allows off the CPU (`Tolerance.on`): the same few sums
# reduced in another order (tree reductions, atomic adds), 2**-24 per addition over up to ~100 terms.
DEVICE_FLOAT32 = 1e-5


def requested_device() -> str:
    """The value of CMCR_TEST_DEVICE, checked: "cpu", "cuda" or "cuda:N"."""
    value = os.environ.get(DEVICE_VARIABLE, "cpu").strip().lower() or "cpu"
    if value != "cpu" and value != "cuda" and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise pytest.UsageError(f"{DEVICE_VARIABLE}={value!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return value


def no_cuda_reason() -> str:
    """Why a `gpu` test is skipped here."""
    return (f"needs CUDA, and torch.cuda.is_available() is False here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}); run on a GPU machine with {DEVICE_VARIABLE}=cuda")


def configure(config: pytest.Config) -> None:
    """`pytest_configure`: TF32 off for a CUDA session."""
    if requested_device().startswith("cuda") and torch.cuda.is_available():
        # The flags every torch version has. (torch >= 2.9 also has `fp32_precision` settings; setting
        # cuDNN's conv one alone makes any later read of `cudnn.allow_tf32` raise, so they are not used.)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def mark_device_tests(items: list[pytest.Item]) -> None:
    """`pytest_collection_modifyitems`: every test that takes `device` is marked `device` (`-m device`
    selects the device-aware tests on any device), and under CUDA also `gpu`."""
    cuda = requested_device().startswith("cuda")
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
            if cuda:
                item.add_marker(pytest.mark.gpu)


def skip_gpu_without_cuda(item: pytest.Item) -> None:
    """`pytest_runtest_setup`: a `gpu` test skips, with the reason, where CUDA is missing."""
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip(no_cuda_reason())


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device of device-aware tests (CMCR_TEST_DEVICE, default CPU); CUDA with its index, so that it
    compares equal to the `.device` of tensors created there."""
    value = torch.device(requested_device())
    if value.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(no_cuda_reason())
        value = torch.device("cuda", torch.cuda.current_device() if value.index is None else value.index)
    return value


class Tolerance:
    """Error allowed against a float64 CPU oracle (`ORACLE_TOLERANCE`), and float32 tolerances by device
    (`on`).

    `check(actual, expected, dtype)`: `actual` (any device and dtype) against `expected` (float64):
    |a - e| <= tol * |e| + tol * max(1, max |e|), tol from the dtype the computation ran in (default:
    actual's dtype). The absolute part scales with the largest value because rounding errors of sums
    scale with the magnitude of their terms, not of each result.
    """

    def __call__(self, dtype: torch.dtype) -> float:
        if dtype not in ORACLE_TOLERANCE:
            raise KeyError(f"no oracle tolerance for {dtype}; known: {sorted(map(str, ORACLE_TOLERANCE))}")
        return ORACLE_TOLERANCE[dtype]

    def on(self, device: torch.device, cpu: float, other: float = DEVICE_FLOAT32) -> float:
        """A test's own float32 tolerance `cpu` where it runs on the CPU (unchanged), at least `other`
        (default `DEVICE_FLOAT32`; a whole network: `tolerance(torch.float32)`) on another device."""
        return cpu if device.type == "cpu" else max(cpu, other)

    def rerun(self, device: torch.device) -> float:
        """Relative error allowed between two runs of the same training: 0 on the CPU (bit-identical);
        elsewhere the bfloat16 tolerance (the scatters' atomic adds sum in another order each run, and
        bfloat16 autocast, on by default for CUDA pretraining, rounds those differences up to 2**-8)."""
        return 0.0 if device.type == "cpu" else ORACLE_TOLERANCE[torch.bfloat16]

    def same(self, device: torch.device, actual: Any, expected: Any, msg: str | None = None,
             dtype: torch.dtype | None = None) -> None:
        """`actual` and `expected` (tensors, arrays or lists of numbers) from two runs of the same computation
        on `device`: equal on the CPU; elsewhere within `rerun(device)`, or the oracle tolerance of `dtype`
        for a computation in that dtype (relative to the largest value)."""
        actual, expected = (torch.from_numpy(x) if isinstance(x, np.ndarray) else x
                            for x in (actual, expected))
        if device.type == "cpu":
            equal = torch.equal(actual, expected) if isinstance(actual, torch.Tensor) else actual == expected
            assert equal, msg or f"{actual} != {expected}"
            return
        tol = self.rerun(device) if dtype is None else self(dtype)
        expected = torch.as_tensor(expected).detach().to("cpu", torch.float64)
        scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
        torch.testing.assert_close(torch.as_tensor(actual).detach().to("cpu", torch.float64), expected,
                                   rtol=tol, atol=tol * scale, msg=msg)

    def check(self, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None,
              msg: str | None = None) -> None:
        tol = self(dtype or actual.dtype)
        expected = expected.detach().to("cpu", torch.float64)
        scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
        torch.testing.assert_close(actual.detach().to("cpu", torch.float64), expected, rtol=tol,
                                   atol=tol * scale, msg=msg)


@pytest.fixture(scope="session")
def tolerance() -> Tolerance:
    """`Tolerance`: per-dtype comparison of device results with a float64 CPU oracle."""
    return Tolerance()
