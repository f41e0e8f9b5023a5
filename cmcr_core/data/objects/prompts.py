"""ReCon's text prompts: 20 prefixes × 3 suffixes around a category's text (qizekun/ReCon, its CLIP text
encoder wrapper).

Pretraining draws one prefix and one suffix at random for every object and step; zero-shot classification
sums the CLIP text features of all 60 combinations per class (unnormalised). Combination ``j`` (0 … 59) is
``PREFIXES[j % 20] + text + SUFFIXES[j // 20]``, the reference's indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["RECON_PREFIXES", "RECON_SUFFIXES", "prompt_set", "recon_prompts"]

RECON_PREFIXES: tuple[str, ...] = (
    "", "A ", "A model of ", "A model of a ", "A image of ", "A image of a ", "A 3D model of ",
    "A 3D model of a ", "A rendering model of ", "A rendering model of a ", "A point cloud of ",
    "A point cloud of a ", "A point cloud model of ", "A point cloud model of a ", "A 3D rendering model of ",
    "A 3D rendering model of a ", "A rendering image of ", "A rendering image of a ",
    "A 3D rendering image of ", "A 3D rendering image of a ",
)  # fmt: skip
RECON_SUFFIXES: tuple[str, ...] = (".", " with white background.", " with black context.")


def recon_prompts(text: str) -> list[str]:
    """The 60 prompts of one category text, in the reference's order (prefix varies fastest)."""
    return [RECON_PREFIXES[j % len(RECON_PREFIXES)] + text + RECON_SUFFIXES[j // len(RECON_PREFIXES)]
            for j in range(len(RECON_PREFIXES) * len(RECON_SUFFIXES))]


def prompt_set(texts: Sequence[str], kind: str = "recon") -> list[list[str]]:
    """Prompts per class: ``recon`` (the 60 above) or ``name`` (the text itself, one prompt)."""
    if kind == "recon":
        return [recon_prompts(t) for t in texts]
    if kind == "name":
        return [[t] for t in texts]
    raise ValueError(f"unknown prompt set {kind!r}; expected 'recon' or 'name'")
