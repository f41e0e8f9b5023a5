"""Data: synthetic worlds, dataset readers, prepared HDF5 shards, transforms, label maps.

Heavy submodules are imported lazily so `import cmcr_core.data` stays cheap.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"PreparedDataset": "cmcr_core.data.prepared"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cmcr_core.data' has no attribute {name!r}")
