"""Reading the toolkit's own torch files (checkpoints, teacher files): on the CPU, tensors only, no code
runs; a file that cannot be read says which file it is and what was expected, never a raw traceback."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

__all__ = ["UnreadableFileError", "load_torch_file"]

TORCH_FILE = "a file written by torch.save (a cmcr checkpoint or teacher file)"


class UnreadableFileError(ValueError):
    """A file exists but cannot be read as what it should be (truncated, corrupt, another format)."""


def load_torch_file(path: str | Path, missing: str, expected: str = TORCH_FILE, trusted: bool = False) -> Any:
    """``torch.load(path)`` on the CPU, with ``weights_only=True`` unless ``trusted``.

    Raises ``FileNotFoundError(missing)`` when there is no such file (``missing`` may name ``{path}``), and
    ``UnreadableFileError`` naming the file and ``expected`` when torch cannot read it.
    """
    import torch  # here, so that importing cmcr_core.ops stays cheap

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing.format(path=path))
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        if not trusted and "weights_only" in str(error).lower().replace(" ", "_"):
            raise UnreadableFileError(
                f"{path} holds Python objects besides tensors and cannot be read with weights_only=True "
                f"(load it with trusted=True only if you trust its origin); expected {expected}") from error
        raise UnreadableFileError(_unreadable(path, expected, error)) from error
    except Exception as error:  # noqa: BLE001 - whatever torch raises on a damaged file, name the file
        raise UnreadableFileError(_unreadable(path, expected, error)) from error


def _unreadable(path: Path, expected: str, error: Exception) -> str:
    text = str(error).strip()
    reason = text.splitlines()[0].split(". ")[0][:120] if text else ""
    detail = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    return (f"{path} cannot be read ({path.stat().st_size:,} bytes; torch says {detail}): it is truncated or "
            f"damaged (an interrupted copy or download?) or not a PyTorch file; expected {expected}")
