"""MinkowskiEngine checkpoint hand-off (PROTOCOLS §7): prefixes on every key, codebook buffers, heads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from cmcr_core.models.convert import (
    convert_state_dict,
    is_codebook_key,
    load_minkowski_checkpoint,
    strip_prefix,
)
from cmcr_core.models.minkunet import MinkUNet34C

TINY = {"planes": (4, 6, 8, 10, 10, 8, 6, 6), "layers": (1, 1, 1, 1, 1, 1, 1, 1), "init_dim": 4}


def _source(out_channels: int = 64) -> dict[str, torch.Tensor]:
    """A pretrained-looking MinkowskiEngine-format state dict (distinct values per tensor)."""
    torch.manual_seed(0)
    model = MinkUNet34C(1, out_channels, **TINY)
    return {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v + 3
            for k, v in model.state_dict().items()}


def test_strip_prefix_and_codebook_rules() -> None:
    assert strip_prefix("module.model.conv0p1s1.kernel") == "conv0p1s1.kernel"
    assert strip_prefix("model_points.bn0.bn.weight") == "bn0.bn.weight"
    assert strip_prefix("encoder.block1.0.conv1.kernel") == "block1.0.conv1.kernel"
    assert strip_prefix("modelx.conv") == "modelx.conv"
    for key in ("codebook.embedding", "ema_weight", "quantizer.ema_count", "model.unactivated_count",
                "codebook.something"):
        assert is_codebook_key(strip_prefix(key)), key
    assert not is_codebook_key("block1.0.conv1.kernel")


def test_cmcr_state_dict_with_mixed_prefixes() -> None:
    """Every key is checked: a different prefix on every key still loads (the reference read only key 0)."""
    source = _source(64)
    prefixes = ["model.", "module.", "encoder.", "model_points.", "module.model."]
    state = {f"{prefixes[i % len(prefixes)]}{k}": v for i, (k, v) in enumerate(source.items())}
    state["model.codebook.embedding"] = torch.randn(400, 64)
    state["model.ema_weight"] = torch.randn(400, 64)
    state["model.ema_count"] = torch.zeros(400)
    state["model.unactivated_count"] = -torch.ones(400)
    state["model.final_class_level.kernel"] = torch.randn(6, 64)
    state["model.final_class_level.bias"] = torch.randn(1, 64)
    target = MinkUNet34C(1, 17, **TINY)
    final_before = target.final.kernel.detach().clone()
    report = load_minkowski_checkpoint(target, {"state_dict": state, "epoch": 3})
    loaded = target.state_dict()
    for key, value in source.items():
        if key.startswith("final."):
            continue
        assert key in report.loaded and torch.equal(loaded[key], value), key
    assert report.skipped["final.kernel"].startswith("shape mismatch: checkpoint (6, 64) vs model (6, 17)")
    assert report.skipped["final.bias"].startswith("shape mismatch")
    assert torch.equal(target.final.kernel, final_before)  # head stays freshly initialised
    for key in ("codebook.embedding", "ema_weight", "ema_count", "unactivated_count"):
        assert report.skipped[key] == "codebook buffer"
    assert report.skipped["final_class_level.kernel"] == "unknown key"
    assert report.missing == ["final.kernel", "final.bias"]


def test_slidr_model_points_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _source(64)
    path = tmp_path / "minkunet_slidr.pt"
    torch.save({"model_points": source, "state_dict": {"model.conv0p1s1.kernel": torch.zeros(1)}}, path)
    target = MinkUNet34C(1, 64, **TINY)
    with caplog.at_level(logging.INFO, logger="cmcr_core.models.convert"):
        report = load_minkowski_checkpoint(target, path)
    assert not report.skipped and not report.missing  # model_points wins over state_dict
    for key, value in target.state_dict().items():
        assert torch.equal(value, source[key]), key
    assert "loaded" in caplog.text


def test_convert_reports_missing_keys_and_rejects_collisions() -> None:
    target = MinkUNet34C(1, 64, **TINY).state_dict()
    selected, report = convert_state_dict({"bn0.bn.weight": torch.ones(4)}, target)
    assert list(selected) == ["bn0.bn.weight"] and len(report.missing) == len(target) - 1
    with pytest.raises(ValueError, match="two keys map to 'bn0.bn.weight'"):
        twice = {"model.bn0.bn.weight": torch.ones(4), "module.bn0.bn.weight": torch.ones(4)}
        convert_state_dict(twice, target)


def test_bad_checkpoints_are_rejected(tmp_path: Path) -> None:
    model = MinkUNet34C(1, 64, **TINY)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_minkowski_checkpoint(model, tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="no tensors"):
        load_minkowski_checkpoint(model, {"epoch": 1})
