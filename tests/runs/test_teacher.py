"""Teacher training through the engine: it learns, the file loads frozen, prototypes, metrics and resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.teacher import tiny_teacher_recipe as tiny_recipe

from cmcr_core.data.labels import (
    COARSE_NAME_TO_INDEX,
    EVALUATED_CLASS_NAMES,
    FINE_CLASS_NAMES,
    FINE_TO_COARSE_NAME,
)
from cmcr_core.data.truth_images import coarse_pixel_counts, read_truth_world
from cmcr_core.engine import load_checkpoint
from cmcr_core.eval.segmentation import pixel_scores
from cmcr_core.eval.zeroshot import class_prototypes
from cmcr_core.models.frozen_teacher import FrozenTeacher, FrozenTeacherError
from cmcr_core.models.semantic_teacher import SEMANTIC_TEACHER_ARCH, CompactSemanticNet
from cmcr_core.models.teacher import load_teacher
from cmcr_core.runs.teacher import (
    cell_pixels,
    evaluate_teacher_file,
    inverse_sqrt_class_weights,
    normalised_prototypes,
    read_teacher_file,
    run_teacher_training,
)


def test_training_lowers_the_loss_and_beats_the_majority_class(trained, synthetic_world: Path):
    losses = [r["cross_entropy"] for r in trained.result.records]
    assert trained.result.position.step == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
    holdout = trained.metrics["holdout"]
    assert holdout["scenes"] == ["scene-0553"]
    counts = coarse_pixel_counts(read_truth_world(synthetic_world).frames_of(["scene-0553"]))[1:]
    majority = counts.max() / counts.sum()  # always predicting the most frequent class
    assert holdout["pixels"] == counts.sum()
    assert holdout["pixel_accuracy"] > majority + 0.08 > 4 / 16
    assert 0 < holdout["miou"] < 1 and holdout["prototype_pixel_accuracy"] > 1 / 16


def test_teacher_file_loads_frozen_with_the_trained_encoder(trained):
    teacher = load_teacher(trained.teacher)
    assert isinstance(teacher, FrozenTeacher) and teacher.info.arch == SEMANTIC_TEACHER_ARCH
    assert teacher.info.checkpoint_format == "cmcr-teacher" and teacher.output_stride == 8
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    with pytest.raises(FrozenTeacherError):
        teacher.train(True)
    checkpoint = load_checkpoint(trained.out_dir / "checkpoint.pt")  # the engine's hand-off copy
    reference = CompactSemanticNet(**checkpoint["recipe"]["model"]).eval()
    reference.load_state_dict(checkpoint["encoder"])
    images = torch.rand(2, 3, 48, 80)
    assert torch.equal(teacher(images), reference(images))


def _naive_prototypes(teacher: FrozenTeacher, frames) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Per class: sum of unit feature cells over the cells whose pixel has that class (plain loops)."""
    sums = np.zeros((16, teacher.out_channels))
    counts = np.zeros(16, dtype=np.int64)
    cells, labels = [], []
    for frame in frames:
        rgb = np.asarray(Image.open(frame.image).convert("RGB"), dtype=np.float32) / 255.0
        fine = np.asarray(Image.open(frame.truth))
        features = teacher(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].double().numpy()
        (h, w), (height, width) = features.shape[1:], fine.shape
        for i in range(h):
            row = round(i * (height - 1) / (h - 1))
            for j in range(w):
                col = round(j * (width - 1) / (w - 1))
                coarse = COARSE_NAME_TO_INDEX[FINE_TO_COARSE_NAME[FINE_CLASS_NAMES[fine[row, col]]]]
                if coarse == 0:
                    continue
                vector = features[:, i, j]
                cells.append(vector)
                labels.append(coarse - 1)
                sums[coarse - 1] += vector / max(np.linalg.norm(vector), 1e-12)
                counts[coarse - 1] += 1
    return sums, counts, cells, labels


def test_prototypes_are_the_normalised_class_means_of_the_features(trained, synthetic_world: Path):
    payload = read_teacher_file(trained.teacher)
    meta = payload["meta"]
    assert meta["class_names"] == list(EVALUATED_CLASS_NAMES) and len(EVALUATED_CLASS_NAMES) == 16
    assert meta["world"]["train_scenes"] == ["scene-0061", "scene-0103", "scene-1094", "scene-0916"]
    assert meta["world"]["holdout_scenes"] == ["scene-0553"]
    teacher = load_teacher(trained.teacher)
    frames = read_truth_world(synthetic_world).frames_of(meta["world"]["train_scenes"])
    sums, counts, cells, labels = _naive_prototypes(teacher, frames)
    present = counts > 0
    expected = np.where(present[:, None], sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True),
                                                            1e-300), 0.0)
    prototypes = meta["prototypes"]
    assert prototypes.shape == (16, teacher.out_channels) and prototypes.dtype == torch.float32
    assert meta["prototype_present"] == present.tolist() and meta["prototype_cells"] == counts.tolist()
    np.testing.assert_allclose(prototypes.numpy(), expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(prototypes.numpy()[present], axis=1), 1.0, atol=1e-5)
    # The toolkit's own stand-in for text embeddings agrees.
    other = class_prototypes(torch.tensor(np.stack(cells)), torch.tensor(labels), 16)
    np.testing.assert_allclose(prototypes.numpy(), other.embeddings.numpy(), atol=1e-5)


def test_absent_classes_get_zero_rows_and_are_flagged():
    sums = torch.zeros(16, 3, dtype=torch.float64)
    sums[0] = torch.tensor([3.0, 4.0, 0.0])
    counts = torch.zeros(16, dtype=torch.int64)
    counts[0] = 2
    prototypes, present = normalised_prototypes(sums, counts)
    assert present.tolist() == [True] + [False] * 15
    assert torch.allclose(prototypes[0], torch.tensor([0.6, 0.8, 0.0])) and prototypes[1:].eq(0).all()


def test_cell_pixels_are_where_upsampling_puts_each_cell():
    # The feature map is one channel per cell row; bilinear align_corners upsampling (the decoders')
    # must make cell i the dominant one at the pixel cell_pixels assigns to it.
    for cells, pixels in ((23, 180), (34, 270), (1, 9), (60, 480)):
        rows, _ = cell_pixels((cells, 1), (pixels, 1))
        onehot = torch.eye(cells).view(1, cells, cells, 1)
        up = torch.nn.functional.interpolate(onehot, size=(pixels, 1), mode="bilinear", align_corners=True)
        assert rows.min() >= 0 and rows.max() < pixels
        assert torch.equal(up[0, :, rows, 0].argmax(dim=0), torch.arange(cells))
        assert (up[0, torch.arange(cells), rows, 0] >= 0.5).all()


def test_scores_match_a_naive_count():
    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 5, 2000), rng.integers(0, 5, 2000)
    truth[truth == 4] = 3  # class 4 never in the truth: excluded from the mean
    confusion = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(truth, predicted, strict=True):
        confusion[t, p] += 1
    scores = pixel_scores(confusion, ["a", "b", "c", "d", "e"])
    ious = [np.sum((truth == k) & (predicted == k)) / np.sum((truth == k) | (predicted == k))
            for k in range(4)]
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(truth == predicted))
    assert scores["miou"] == pytest.approx(np.mean(ious)) and scores["iou"]["e"] is None
    assert scores["iou"]["b"] == pytest.approx(ious[1]) and scores["pixels"] == 2000


def test_inverse_sqrt_class_weights_are_analytic():
    counts = [500, 100, 400, 0] + [0] * 13  # ignore pixels do not count
    weights = inverse_sqrt_class_weights(counts)
    assert weights.shape == (16,)
    frequency = np.array([0.2, 0.8])
    raw = frequency ** -0.5
    expected = raw / (frequency * raw).sum()
    np.testing.assert_allclose(weights[:2].numpy(), expected, rtol=1e-6)
    assert weights[2:].eq(0).all() and weights[0] == pytest.approx(2 * weights[1])


def test_the_file_alone_reproduces_the_recorded_scores(trained, synthetic_world: Path, device):
    recorded = trained.metrics["holdout"]
    scores = evaluate_teacher_file(trained.teacher, synthetic_world, scenes=["scene-0553"],
                                   device=str(device))
    assert scores["same_world"] is True
    for key in ("pixel_accuracy", "miou", "prototype_pixel_accuracy", "prototype_miou", "pixels"):
        assert scores[key] == pytest.approx(recorded[key]), key
    with pytest.raises(ValueError, match="scene-9999"):
        evaluate_teacher_file(trained.teacher, synthetic_world, scenes=["scene-9999"])


def test_resumed_run_writes_the_same_teacher(synthetic_world: Path, tmp_path: Path, device, tolerance):
    # One training scene (12 frames, 3 batches per epoch): 5 steps cross an epoch boundary.
    recipe = tiny_recipe(synthetic_world, "data.holdout_scenes=4", "train.max_steps=5",
                         f"train.device={device}")
    straight = run_teacher_training(recipe, tmp_path / "straight")
    stopped = run_teacher_training(recipe, tmp_path / "split", stop_at=2)
    assert stopped.teacher is None and stopped.result.position.step == 2
    with pytest.raises(FileExistsError, match="--resume"):
        run_teacher_training(recipe, tmp_path / "split")
    resumed = run_teacher_training(recipe, tmp_path / "split", resume=True)
    a, b = read_teacher_file(straight.teacher), read_teacher_file(resumed.teacher)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        tolerance.same(device, b["state_dict"][k], a["state_dict"][k], msg=k)
    tolerance.same(device, b["meta"]["prototypes"], a["meta"]["prototypes"])
    accuracy = [run["meta"]["metrics"]["holdout"]["pixel_accuracy"] for run in (a, b)]
    tolerance.same(device, accuracy[1], accuracy[0])
    assert math.isfinite(a["meta"]["training"]["seconds"])
