"""Precomputed teacher targets for ReCon: per object id, image features and text features.

File format (``.npz``): ``ids`` (n str), ``img`` (n x M_img x D_img float32), ``text`` (n x M_text x D_text
float32). M > 1 stores several augmentations (image views / prompts) per object; the dataset draws one per
item (documented deviation: the reference re-augments renders and re-samples prompts at every step).

The real teachers (ViT-B/16 in21k tanh pre-logits, CLIP ViT-B/32 text) are connected by passing them as
the ``image_teacher`` callable and as ``text_features``. Stand-ins for tests and tiny recipes, needing no
download: ``cmcr_core.models.tiny_image_teacher.TinyImageTeacher`` (a small randomly initialised CNN with a
tanh output) on the rendered views, and ``class_text_vectors`` (fixed random unit vectors per class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TeacherTargets:
    """Teacher features keyed by object id: img n x M_img x D_img, text n x M_text x D_text (float32)."""

    ids: list[str]
    img: np.ndarray
    text: np.ndarray

    def __post_init__(self) -> None:
        self.img = np.asarray(self.img, dtype=np.float32)
        self.text = np.asarray(self.text, dtype=np.float32)
        if self.img.ndim != 3 or self.text.ndim != 3 or not len(self.ids) == len(self.img) == len(self.text):
            raise ValueError(
                f"expected ids n, img n x M x D, text n x M x D; got {len(self.ids)}, "
                f"{self.img.shape}, {self.text.shape}"
            )
        self._row = {obj_id: i for i, obj_id in enumerate(self.ids)}
        if len(self._row) != len(self.ids):
            raise ValueError("teacher target ids are not unique")

    def __contains__(self, obj_id: str) -> bool:
        return obj_id in self._row

    def lookup(self, obj_id: str, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D_img, D_text) features of one object: a random stored augmentation with ``rng``, else #0."""
        if obj_id not in self._row:
            raise KeyError(f"no teacher targets for object id {obj_id!r}")
        row = self._row[obj_id]
        i = int(rng.integers(self.img.shape[1])) if rng is not None else 0
        t = int(rng.integers(self.text.shape[1])) if rng is not None else 0
        return self.img[row, i], self.text[row, t]

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` file (``ids``, ``img``, ``text``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, ids=np.asarray(self.ids, dtype=str), img=self.img, text=self.text)
        return path


def load_teacher_targets(path: str | Path) -> TeacherTargets:
    """Read a targets ``.npz`` written by ``TeacherTargets.save``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing teacher targets file {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"ids", "img", "text"} - set(data.files)
        if missing:
            raise KeyError(f"{path} lacks arrays {sorted(missing)} (has {data.files})")
        return TeacherTargets([str(i) for i in data["ids"]], data["img"], data["text"])


def class_text_vectors(
    num_classes: int, dim: int, seed: int = 0, num_prompts: int = 1, prompt_noise: float = 0.05
) -> np.ndarray:
    """Stand-in text features: a fixed random unit vector per class, plus ``num_prompts - 1`` noisy copies.

    Returns:
        num_classes x num_prompts x dim float32 (prompt 0 is the clean class vector).
    """
    rng = np.random.default_rng([seed, 7919])
    base = rng.normal(size=(num_classes, 1, dim))
    noise = rng.normal(size=(num_classes, num_prompts, dim)) * prompt_noise
    noise[:, 0] = 0.0
    vectors = base / np.linalg.norm(base, axis=-1, keepdims=True) + noise
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def _random_resized_crop_box(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float] = (0.64, 1.0)
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop box (aspect ratio log-uniform in [3/4, 4/3])."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return 0, 0, height, width


def preprocess_views(
    image: np.ndarray,
    num_views: int,
    size: int,
    rng: np.random.Generator,
    bgr: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Teacher inputs for one render: view 0 plain resize, further views flip + RandomResizedCrop(0.64-1).

    ``bgr`` swaps the channels as the reference does (it reads PNGs with OpenCV and keeps BGR). RandAugment
    of the reference is not applied (documented deviation).

    Args:
        image: H x W x 3 uint8 RGB.

    Returns:
        num_views x 3 x size x size float32, normalised.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    if bgr:
        x = x.flip(0)
    views = []
    for v in range(num_views):
        crop = x
        if v > 0:
            top, left, h, w = _random_resized_crop_box(rng, x.shape[1], x.shape[2])
            crop = x[:, top : top + h, left : left + w]
            if rng.uniform() < 0.5:
                crop = crop.flip(2)
        views.append(F.interpolate(crop[None], size=(size, size), mode="bicubic", align_corners=False)[0])
    out = torch.stack(views).clamp(0.0, 1.0)
    return (out - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@torch.no_grad()
def precompute_teacher_targets(
    images: Sequence[np.ndarray] | np.ndarray,
    ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    image_teacher: Callable[[Tensor], Tensor],
    text_features: np.ndarray,
    num_views: int = 1,
    image_size: int = 224,
    seed: int = 0,
    bgr: bool = True,
    normalize: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> TeacherTargets:
    """Run a frozen image teacher on the rendered views and attach per-class text features.

    Args:
        images: n renders, H x W x 3 uint8 RGB.
        ids: n object ids.
        labels: n class indices into ``text_features``.
        image_teacher: B x 3 x S x S images -> B x D_img features, or a B x D x h x w map (averaged over
            h, w); run in eval mode without gradients.
        normalize: ImageNet mean/std normalisation of the inputs (off for teachers that take [0, 1]).
        text_features: classes x D_text or classes x M_text x D_text (e.g. one row per prompt).
        num_views: M_img augmentations stored per object.

    Returns:
        TeacherTargets with img n x M_img x D_img and text n x M_text x D_text.
    """
    if not len(images) == len(ids) == len(labels):
        raise ValueError(f"need one image, id and label per object: {len(images)}, {len(ids)}, {len(labels)}")
    text_features = np.asarray(text_features, dtype=np.float32)
    if text_features.ndim == 2:
        text_features = text_features[:, None, :]
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(text_features)):
        raise ValueError(
            f"labels range [{labels.min()}, {labels.max()}] exceeds {len(text_features)} text classes"
        )
    if isinstance(image_teacher, nn.Module):
        image_teacher.eval()
    rng = np.random.default_rng([seed, 104729])
    feats = []
    for start in range(0, len(images), batch_size):
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize else ((0.0,) * 3, (1.0,) * 3)
        chunk = [
            preprocess_views(im, num_views, image_size, rng, bgr, mean, std)
            for im in images[start : start + batch_size]
        ]
        out = image_teacher(torch.cat(chunk).to(device)).float()
        if out.dim() == 4:
            out = out.mean(dim=(2, 3))
        feats.append(out.cpu().reshape(len(chunk), num_views, -1))
    img = torch.cat(feats).numpy() if feats else np.zeros((0, num_views, 0), np.float32)
    return TeacherTargets(list(ids), img, text_features[labels])
