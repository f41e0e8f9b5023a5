"""SLIC superpixels for camera images, at full resolution (SLidR) or on a downscaled image (fast).

SLidR computes `slic(image, n_segments=150, compactness=6, sigma=3, start_label=0)` on the full 1600×900 image
(valeoai/SLidR `superpixel_segmenter.py`), about 1.4 s per image. SLIC's cost is linear in the pixel count and
its compactness term is normalised by the grid step, so running it on an image downscaled by `scale` with
`sigma * scale` and the same `n_segments` gives the same kind of segmentation about 1/scale² times faster; the
labels are brought back to full resolution by nearest-neighbour upsampling. JPEGs are decoded directly at the
reduced size (libjpeg DCT scaling), which also skips most of the decoding work.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class SlicParams:
    """SLIC settings; the defaults are SLidR's (`superpixel_segmenter.py`). `scale` < 1 is the fast path."""

    n_segments: int = 150
    compactness: float = 6.0
    sigma: float = 3.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"superpixel scale must be in (0, 1], got {self.scale}")
        if self.n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")


def consecutive_ids(labels: np.ndarray) -> np.ndarray:
    """Renumber non-negative integer labels to 0..n-1 keeping their order (SLIC may leave gaps).

    Args:
        labels: (H, W) non-negative integers.

    Returns:
        (H, W) uint16 with the same partition and ids 0..n-1.
    """
    flat = labels.ravel()
    present = np.zeros(int(flat.max()) + 1, dtype=bool)
    present[flat] = True
    # A lookup table instead of np.unique: O(pixels) instead of a sort of 1.44 M values.
    lut = np.cumsum(present, dtype=np.int64) - 1
    if lut[-1] >= np.iinfo(np.uint16).max:
        raise ValueError(f"too many superpixels for uint16 ids: {lut[-1] + 1}")
    return lut.astype(np.uint16)[labels]


def upsample_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map, pixel centres aligned (like PIL/torch "nearest-exact").

    Args:
        labels: (h, w) array.
        height, width: output size.

    Returns:
        (height, width) array of the same dtype; output pixel (r, c) takes input pixel
        (floor((r + 0.5) * h / height), floor((c + 0.5) * w / width)).
    """
    h, w = labels.shape
    # Integer arithmetic: floor((2r + 1) * h / (2 * height)) exactly, no float ties.
    rows = (2 * np.arange(height, dtype=np.int64) + 1) * h // (2 * height)
    cols = (2 * np.arange(width, dtype=np.int64) + 1) * w // (2 * width)
    return labels[rows[:, None], cols[None, :]]


def slic_superpixels(image: np.ndarray, params: SlicParams = SlicParams()) -> np.ndarray:
    """SLIC superpixels of an RGB image, optionally computed on a downscaled copy.

    Args:
        image: (H, W, 3) uint8 RGB.
        params: SLIC settings; `params.scale` < 1 runs SLIC at that scale with sigma scaled alike.

    Returns:
        (H, W) uint16 superpixel ids 0..n-1.
    """
    height, width = image.shape[:2]
    work = image
    if params.scale < 1.0:
        size = _scaled_size(width, height, params.scale)
        work = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    return segment_scaled(work, (height, width), params)


def decode_jpeg(data: bytes, scale: float = 1.0) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode (and thereby verify) JPEG bytes, optionally straight at a reduced size.

    Args:
        data: the JPEG file content.
        scale: target scale in (0, 1]; below 1 the decoder's DCT scaling is used and the result is
            resized to exactly round(W * scale) × round(H * scale).

    Returns:
        ((h, w, 3) uint8 RGB at the requested scale, (H, W) of the original image).

    Raises:
        OSError / ValueError (from Pillow) for a truncated or corrupt file.
    """
    with Image.open(io.BytesIO(data)) as img:
        if img.format != "JPEG":
            raise ValueError(f"not a JPEG file (format {img.format})")
        width, height = img.size
        if scale < 1.0:
            size = _scaled_size(width, height, scale)
            img.draft("RGB", size)
            decoded = img.convert("RGB")
            if decoded.size != size:
                decoded = decoded.resize(size, Image.Resampling.BILINEAR)
        else:
            decoded = img.convert("RGB")
        return np.asarray(decoded), (height, width)


def segment_scaled(image: np.ndarray, full_hw: tuple[int, int], params: SlicParams) -> np.ndarray:
    """SLIC on an image already brought to `params.scale`, returned at the full size `full_hw`.

    Args:
        image: (h, w, 3) uint8 RGB at the working scale (e.g. from `decode_jpeg(data, params.scale)`).
        full_hw: (H, W) of the original image.
        params: SLIC settings (sigma is multiplied by `params.scale`).

    Returns:
        (H, W) uint16 ids 0..n-1.
    """
    labels = _run_slic(image, params)
    if labels.shape != tuple(full_hw):
        labels = upsample_nearest(labels, *full_hw)
    return consecutive_ids(labels)


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _run_slic(image: np.ndarray, params: SlicParams) -> np.ndarray:
    from skimage.segmentation import slic

    return slic(
        image,
        n_segments=params.n_segments,
        compactness=params.compactness,
        sigma=params.sigma * params.scale,
        start_label=0,
        channel_axis=-1,
    )
