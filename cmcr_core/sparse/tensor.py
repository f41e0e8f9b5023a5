"""SparseTensor: features on the rows of one cached coordinate set, plus the shared coordinate manager."""

from __future__ import annotations

import torch
from torch import Tensor

from cmcr_core.sparse.manager import CoordinateManager, CoordinateSet


class SparseTensor:
    """Features (N, C) on the unique coordinates (N, 4) `[batch, x, y, z]` of one tensor stride.

    Build one from user data with `SparseTensor(features, coords)`: the coordinates must be unique integer
    voxels (see `voxelize`) with the batch index in column 0.  Layers return new SparseTensors that share
    the manager, so every coordinate set and kernel map is built once per forward pass.
    """

    __slots__ = ("features", "coordinate_set", "manager")

    def __init__(
        self,
        features: Tensor,
        coords: Tensor | None = None,
        stride: int = 1,
        manager: CoordinateManager | None = None,
        coordinate_set: CoordinateSet | None = None,
    ) -> None:
        if coordinate_set is None:
            if coords is None:
                raise ValueError("SparseTensor needs `coords` (N, 4) or an existing `coordinate_set`")
            if coords.device != features.device:
                raise ValueError(f"coords on {coords.device} but features on {features.device}")
            manager = manager if manager is not None else CoordinateManager()
            coordinate_set = manager.insert(coords, stride)
        elif manager is None:
            raise ValueError("a SparseTensor built from a coordinate_set needs its manager")
        if features.dim() != 2 or features.shape[0] != len(coordinate_set):
            raise ValueError(
                f"features: expected shape ({len(coordinate_set)}, C) for {len(coordinate_set)} coordinates, "
                f"got {tuple(features.shape)}"
            )
        self.features = features
        self.coordinate_set = coordinate_set
        self.manager = manager

    @property
    def coords(self) -> Tensor:
        """(N, 4) int32 `[batch, x, y, z]`, multiples of `stride`."""
        return self.coordinate_set.coords

    @property
    def stride(self) -> int:
        return self.coordinate_set.stride

    @property
    def F(self) -> Tensor:  # noqa: N802 - MinkowskiEngine spelling, convenient when porting code
        return self.features

    @property
    def C(self) -> Tensor:  # noqa: N802
        return self.coords

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def batch_size(self) -> int:
        """Number of samples = 1 + the largest batch index (0 for an empty tensor)."""
        return int(self.coords[:, 0].max()) + 1 if len(self) else 0

    def __len__(self) -> int:
        return self.features.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(n={len(self)}, channels={self.features.shape[1]}, stride={self.stride}, "
                f"device={self.device})")

    def replace(self, features: Tensor) -> SparseTensor:
        """Same coordinates, new features (N, C')."""
        return SparseTensor(features, manager=self.manager, coordinate_set=self.coordinate_set)
