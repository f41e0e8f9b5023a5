"""Reading the toolkit's own torch files (checkpoints, teacher files): on the CPU, tensors only, no code
runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_torch_file"]


def load_torch_file(path: str | Path, missing: str) -> Any:
    """``torch.load(path)`` on the CPU with ``weights_only=True``.

    Raises ``FileNotFoundError(missing)`` when there is no such file; ``missing`` may name ``{path}``.
    """
    import torch  # here, so that importing cmcr_core.ops stays cheap

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing.format(path=path))
    return torch.load(path, map_location="cpu", weights_only=True)
