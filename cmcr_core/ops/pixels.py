"""Pixel-side indexing shared by data, losses and methods: paired pixels and superpixel ids.

* ``gather_pixel_features``: per-pixel feature maps read at the paired pixels (PointInfoNCE, CMCR);
* ``bilinear_pixel_features``: a low-resolution map read at image pixels by bilinear interpolation, as
  ``align_corners=True`` upsampling would (relational distillation, analysis);
* ``offset_superpixel_ids``: per-image superpixel ids made unique across a batch (collate, SLidR's loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bilinear_pixel_features", "gather_pixel_features", "offset_superpixel_ids"]


def gather_pixel_features(image_features: Tensor, pairing_images: Tensor) -> Tensor:
    """Teacher vectors at paired pixels.

    Args:
        image_features: (I, D, H, W) per-pixel features of the I images of the batch.
        pairing_images: (P, 3) int64 rows of [image index, row, col].

    Returns:
        (P, D) features ``image_features[img, :, row, col]``.
    """
    if image_features.dim() != 4 or pairing_images.dim() != 2 or pairing_images.shape[1] != 3:
        raise ValueError(
            "expected image_features (I, D, H, W) and pairing_images (P, 3); got "
            f"{tuple(image_features.shape)} and {tuple(pairing_images.shape)}"
        )
    image, row, col = pairing_images.unbind(1)
    # The advanced indices are split by the channel slice, so the pair dimension comes first: (P, D).
    return image_features[image, :, row, col]


def bilinear_pixel_features(maps: Tensor, pairing_images: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Teacher vectors at image pixels, read from a low-resolution map by bilinear interpolation.

    Equal to ``F.interpolate(maps, image_size, mode="bilinear", align_corners=True)[img, :, row, col]``
    without materialising the full-resolution maps: pixel (r, c) of an H×W image sits at
    (r·(h − 1)/(H − 1), c·(w − 1)/(W − 1)) of the h×w map.

    Args:
        maps: (I, D, h, w) feature maps.
        pairing_images: (P, 3) int64 [image index, row, col] in image pixels.
        image_size: (H, W) of the images the pairs refer to.

    Returns:
        (P, D) features in the dtype of ``maps``.
    """
    if maps.dim() != 4 or pairing_images.dim() != 2 or pairing_images.shape[1] != 3:
        raise ValueError(
            f"expected maps (I, D, h, w) and pairing_images (P, 3); got {tuple(maps.shape)} and "
            f"{tuple(pairing_images.shape)}"
        )
    (height, width), (h, w) = image_size, maps.shape[-2:]
    image, row, col = pairing_images.unbind(1)

    def axis(coord: Tensor, size: int, low_res: int) -> tuple[Tensor, Tensor, Tensor]:
        scale = (low_res - 1) / (size - 1) if size > 1 else 0.0
        pos = coord.to(maps.dtype) * scale
        lo = pos.floor().long().clamp(0, low_res - 1)
        hi = (lo + 1).clamp(max=low_res - 1)
        return lo, hi, (pos - lo.to(maps.dtype)).unsqueeze(1)

    y0, y1, wy = axis(row, height, h)
    x0, x1, wx = axis(col, width, w)
    top = maps[image, :, y0, x0] * (1 - wx) + maps[image, :, y0, x1] * wx
    bottom = maps[image, :, y1, x0] * (1 - wx) + maps[image, :, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def offset_superpixel_ids(superpixels: Tensor) -> Tensor:
    """Make per-image ids unique in the batch.

    The reference offsets image i by 150·i although SLIC can return ids ≥ 150 (D14, docs/differences.md); here
    image i starts where image i − 1's largest id ends.

    Args:
        superpixels: (I, H, W) integer ids ≥ 0, local to each image (SLIC may exceed ``n_segments``).

    Returns:
        (I, H, W) int64 ids; image i's ids are shifted by Σ_{j<i} (max id of image j + 1).
    """
    if superpixels.dim() != 3:
        raise ValueError(f"superpixels must be (I, H, W), got {tuple(superpixels.shape)}")
    ids = superpixels.long()
    sizes = ids.flatten(1).amax(dim=1) + 1
    offsets = torch.cumsum(sizes, 0) - sizes
    return ids + offsets.view(-1, 1, 1)
