"""`cmcr prepare objects`: synthetic layouts and teacher targets checked against direct computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cmcr_cli.app import app
from cmcr_core.data.objects import (
    class_text_vectors,
    load_teacher_targets,
    read_scanobjectnn,
    read_shapenet55,
    read_shapenet_image,
)
from cmcr_core.models.tiny_image_teacher import TinyImageTeacher


def test_synthetic_layouts_and_stand_in_targets(objects_root: Path) -> None:
    shapenet = read_shapenet55(objects_root / "ShapeNet55-34", "whole")
    assert len(shapenet) == 8 * 6
    assert len(read_scanobjectnn(objects_root / "ScanObjectNN" / "h5_files", "test")) == 8 * 2
    targets = load_teacher_targets(objects_root / "teacher_targets.npz")
    assert targets.ids == shapenet.ids
    # text: the stand-in class vector of each object's class
    text = class_text_vectors(8, 24, seed=0)
    np.testing.assert_allclose(targets.text[:, 0], text[shapenet.labels, 0], atol=1e-6)
    # image view 0: no resize (32 px renders, 32 px input), RGB -> BGR, ImageNet normalisation, teacher
    obj = shapenet.ids[5]
    image = torch.from_numpy(read_shapenet_image(objects_root / "ShapeNet55-34", obj).copy()).float() / 255
    x = image.permute(2, 0, 1).flip(0)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = ((x - mean) / std)[None]
    expected = TinyImageTeacher(out_dim=32, seed=0)(x)[0].detach().numpy()
    np.testing.assert_allclose(targets.img[5, 0], expected, atol=1e-5)


def test_targets_from_text_embeddings_file(objects_root: Path, tmp_path: Path, runner) -> None:
    rows = np.arange(8 * 5, dtype=np.float32).reshape(8, 5)
    np.save(tmp_path / "text.npy", rows)
    out = tmp_path / "t.npz"
    result = runner.invoke(
        app,
        [
            "prepare",
            "objects",
            "--dataroot",
            str(objects_root / "ShapeNet55-34"),
            "--text-embeddings",
            str(tmp_path / "text.npy"),
            "--out",
            str(out),
            "--image-size",
            "32",
            "--views",
            "2",
            "--img-dim",
            "7",
        ],
    )
    assert result.exit_code == 0, result.output
    targets = load_teacher_targets(out)
    labels = read_shapenet55(objects_root / "ShapeNet55-34", "whole").labels
    np.testing.assert_array_equal(targets.text[:, 0], rows[labels])
    assert targets.img.shape == (48, 2, 7)


def test_text_embeddings_with_wrong_rows_fail_clearly(objects_root: Path, tmp_path: Path, runner) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), np.float32))
    result = runner.invoke(
        app,
        [
            "prepare",
            "objects",
            "--dataroot",
            str(objects_root / "ShapeNet55-34"),
            "--text-embeddings",
            str(tmp_path / "bad.npy"),
            "--out",
            str(tmp_path / "t.npz"),
        ],
    )
    assert result.exit_code == 2
    assert "bad.npy" in result.output and "3 rows" in result.output and "8 classes" in result.output


def test_a_teacher_file_gets_bgr_pixels_in_0_1_and_normalises_them_once(
    objects_root: Path, tmp_path: Path, runner
) -> None:
    from cmcr_core.models.resnet import build_resnet
    from cmcr_core.models.teacher import load_teacher

    torch.manual_seed(0)
    torch.save(build_resnet("resnet18").state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "t.npz"
    args = ["prepare", "objects", "--dataroot", str(objects_root / "ShapeNet55-34"), "--teacher",
            str(tmp_path / "resnet18.pth"), "--out", str(out), "--image-size", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    targets = load_teacher_targets(out)
    # the ResNet normalises its [0, 1] input itself (ImageNet mean/std): the target is its pooled feature map
    teacher = load_teacher(tmp_path / "resnet18.pth")
    obj = read_shapenet55(objects_root / "ShapeNet55-34", "whole").ids[3]
    image = torch.from_numpy(read_shapenet_image(objects_root / "ShapeNet55-34", obj).copy()).float() / 255
    expected = teacher(image.permute(2, 0, 1).flip(0)[None]).mean(dim=(2, 3))[0].numpy()
    assert targets.img.shape == (48, 1, expected.shape[0])
    np.testing.assert_allclose(targets.img[3, 0], expected, atol=1e-4)
