"""The relational / similarity / contrastive pretraining methods: pair features, losses, builder, rebuild (the
forwards on the test device, CMCR_TEST_DEVICE)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support.pretraining import tiny_pretrain_recipe as tiny_recipe

from cmcr_core.data.batch import collate
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.pretrain_dataset import PretrainDataset
from cmcr_core.losses.contrastive_distill import contrastive_distill_loss
from cmcr_core.losses.point_info_nce import sample_pairs
from cmcr_core.losses.relational import relational_loss
from cmcr_core.losses.similarity import similarity_loss
from cmcr_core.methods.registry import build_method
from cmcr_core.methods.relational import FeatureSpaceDistillation
from cmcr_core.ops.pixels import bilinear_pixel_features
from cmcr_core.runs.pretrain import load_pretraining_run, pipeline_settings, run_pretraining


@pytest.fixture(scope="module")
def batch_and_recipe(prepared_world: Path):
    recipe = tiny_recipe("relational_synthetic", prepared_world)
    source = PreparedDataset(prepared_world, "mini_train")
    dataset = PretrainDataset(source, pipeline_settings(recipe), seed=0)
    return collate([dataset[0]]), recipe


def test_bilinear_pixel_features_equal_full_upsampling_with_align_corners(device) -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 4, 7, generator=g, dtype=torch.float64)
    height, width = 29, 52
    pairs = torch.stack([torch.randint(0, 3, (200,), generator=g),
                         torch.randint(0, height, (200,), generator=g),
                         torch.randint(0, width, (200,), generator=g)], dim=1)
    pairs[:4] = torch.tensor([[0, 0, 0], [1, height - 1, width - 1], [2, 0, width - 1], [0, height - 1, 0]])
    dense = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=True)
    expected = dense[pairs[:, 0], :, pairs[:, 1], pairs[:, 2]]
    actual = bilinear_pixel_features(maps.to(device), pairs.to(device), (height, width))
    assert actual.device == device
    torch.testing.assert_close(actual.cpu(), expected)


@pytest.mark.parametrize("loss", ["relational", "similarity", "contrastive"])
def test_forward_equals_the_losses_on_dense_oracle_pairs(batch_and_recipe, loss: str, device,
                                                         tolerance) -> None:
    batch, recipe = batch_and_recipe
    batch = batch.to(device)
    weights = {"relational": 0.0, "similarity": 0.0, "contrastive": 0.0, loss: 2.0}
    recipe = replace(recipe, method=loss, loss=replace(recipe.loss, **weights))
    torch.manual_seed(0)
    method = build_method(recipe).to(device)
    assert isinstance(method, FeatureSpaceDistillation)
    losses, metrics = method(batch)
    assert set(losses) == {loss} and losses[loss].device == device

    # Oracle: the same pairs (same seeded draw), the teacher map upsampled to the whole crop and indexed.
    chosen = sample_pairs(len(batch.pairing_points), recipe.loss.num_matches, device,
                          torch.Generator(device=device).manual_seed(recipe.train.seed))
    with torch.no_grad():
        maps = method.teacher(batch.images.float() / 255)
        full = F.interpolate(maps, size=batch.images.shape[-2:], mode="bilinear", align_corners=True)
        img, row, col = batch.pairing_images[chosen].unbind(1)
        q = F.normalize(full[img, :, row, col], dim=1)
        k = method.student_features(batch)[batch.pairing_points[chosen]]
    expected = {"relational": lambda: relational_loss(k, q)["loss"],
                "similarity": lambda: similarity_loss(k, q),
                "contrastive": lambda: contrastive_distill_loss(k, q, 0.07)}[loss]()
    close = {"atol": 1e-5, "rtol": tolerance.on(device, 1e-5)}
    torch.testing.assert_close(losses[loss].detach(), 2.0 * expected, **close)
    torch.testing.assert_close(metrics["pair_cosine"], (k * q).sum(1).mean(), **close)
    if loss == "relational":
        parts = relational_loss(k, q)
        for name in ("l_cross_diag", "l_cross_offdiag", "l_intra"):
            torch.testing.assert_close(metrics[name], parts[name], **close)
    # Only the student learns: gradients reach it, the teacher has none.
    losses[loss].backward()
    assert all(p.grad is not None for p in method.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in method.teacher.parameters())


@pytest.mark.parametrize("loss", ["relational", "similarity", "contrastive"])
def test_each_loss_falls_when_optimised_on_a_fixed_batch(batch_and_recipe, loss: str, device) -> None:
    batch, recipe = batch_and_recipe
    batch = batch.to(device)
    weights = {"relational": 0.0, "similarity": 0.0, "contrastive": 0.0, loss: 1.0}
    recipe = replace(recipe, method=loss, loss=replace(recipe.loss, **weights))
    torch.manual_seed(0)
    method = build_method(recipe).train().to(device)
    optimizer = torch.optim.Adam(method.student.parameters(), lr=1e-2)
    values = []
    for _ in range(5):
        method.pair_generator.manual_seed(0)  # the same pairs every step
        value = method(batch)[0][loss]
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(float(value.detach()))
    assert values[-1] < 0.9 * values[0], values


def test_builder_refuses_inconsistent_recipes(prepared_world: Path) -> None:
    recipe = tiny_recipe("relational_synthetic", prepared_world)
    with pytest.raises(ValueError, match=r"student.out_channels \(64\) must equal .* feature size \(128\)"):
        build_method(replace(recipe, student=replace(recipe.student, out_channels=64)))
    with pytest.raises(ValueError, match="set loss.point_nce and loss.superpixel_nce to 0"):
        build_method(replace(recipe, loss=replace(recipe.loss, point_nce=1.0)))
    with pytest.raises(ValueError, match=r"method 'similarity' needs loss.similarity > 0"):
        build_method(replace(recipe, method="similarity"))


def test_random_teacher_is_rebuilt_identically(prepared_world: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("contrastive_synthetic", prepared_world, ["train.max_steps=1", "train.seed=3"])
    seen = {}

    def capture(step: int, method) -> None:
        seen["teacher"] = {k: v.clone() for k, v in method.teacher.state_dict().items()}
        seen["student"] = {k: v.clone() for k, v in method.student.state_dict().items()}

    run_pretraining(recipe, tmp_path / "run", step_callback=capture)
    torch.manual_seed(123)  # the rebuild must not depend on the caller's RNG state ...
    random.seed(123)
    state, python_state = torch.random.get_rng_state(), random.getstate()
    loaded = load_pretraining_run(tmp_path / "run" / "checkpoint.pt")
    assert torch.equal(torch.random.get_rng_state(), state)  # ... and must not change it
    assert random.getstate() == python_state
    for key, value in seen["teacher"].items():
        assert torch.equal(loaded.method.teacher.state_dict()[key], value), key
    for key, value in seen["student"].items():
        assert torch.equal(loaded.method.student.state_dict()[key], value), key
    assert loaded.name == "run" and loaded.step == 1 and not loaded.method.training
