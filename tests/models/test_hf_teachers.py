"""CLIP (MaskCLIP dense + text) and DINOv2 teachers through transformers, against hand-written references."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.eval.zeroshot import clip_text_embeddings, format_prompts, text_classifier
from cmcr_core.models.frozen_teacher import FrozenTeacherError
from cmcr_core.models.hf_teachers import (
    CLIP_MEAN,
    CLIP_STD,
    HFNotInstalledError,
    load_hf_teacher,
)

transformers = pytest.importorskip("transformers")

PROJECTION_DIM, PATCH = 24, 8


def _images(seed: int, height: int, width: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_maskclip_dense_features_follow_the_value_path_definition(clip_dir: Path) -> None:
    teacher = load_hf_teacher("hf_clip", clip_dir)
    images = _images(0, 48, 64)  # a 6 × 8 patch grid: position embeddings are interpolated
    dense = teacher(images)
    assert dense.shape == (2, PROJECTION_DIM, 6, 8)
    assert teacher.out_channels == PROJECTION_DIM and teacher.output_stride == PATCH

    # Reference: HF's own forward gives the tokens entering the last block; the last block's value path,
    # residual and MLP, the final LayerNorm and the projection are applied by hand, token by token.
    model = transformers.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    with torch.no_grad():
        out = model.vision_model(pixel_values=_normalise(images, CLIP_MEAN, CLIP_STD),
                                 interpolate_pos_encoding=True, output_hidden_states=True)
        last = model.vision_model.encoder.layers[-1]
        for b in range(2):
            for i in range(6):
                for j in range(8):
                    x = out.hidden_states[-2][b, 1 + i * 8 + j]
                    v = x + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
                    v = v + last.mlp(last.layer_norm2(v))
                    ref = model.visual_projection(model.vision_model.post_layernorm(v))
                    expected = F.normalize(ref, dim=0)
                    torch.testing.assert_close(dense[b, :, i, j], expected, atol=1e-5, rtol=1e-5)


def test_clip_global_features_equal_get_image_features(clip_dir: Path) -> None:
    teacher = load_hf_teacher("hf_clip", clip_dir)
    images = _images(1, 32, 32)
    model = transformers.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=_normalise(images, CLIP_MEAN, CLIP_STD))
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
        torch.testing.assert_close(teacher.encoder.global_features(images), ref, atol=1e-5, rtol=1e-5)


def test_sides_not_multiple_of_the_patch_are_resized_to_the_nearest_grid(clip_dir: Path) -> None:
    teacher = load_hf_teacher("hf_clip", clip_dir)
    images = _images(2, 45, 70)  # 45/8 → 6 rows, 70/8 → 9 columns
    resized = F.interpolate(images, size=(48, 72), mode="bilinear", align_corners=False)
    torch.testing.assert_close(teacher(images), teacher(resized))
    assert teacher(images).shape[-2:] == (6, 9)


def test_text_embeddings_equal_get_text_features_and_ensemble(clip_dir: Path) -> None:
    names, templates = ["car", "construction vehicle"], ["a photo of a {}.", "there is a {} in the scene."]
    text = clip_text_embeddings(clip_dir, names, templates)
    assert text.shape == (2, 2, PROJECTION_DIM)
    model = transformers.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    prompts = format_prompts(names, templates)
    with torch.no_grad():
        for c in range(2):
            for p in range(2):
                tokens = tokenizer([prompts[c][p]], return_tensors="pt")
                ref = model.get_text_features(**tokens)
                ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
                torch.testing.assert_close(text[c, p], ref[0], atol=1e-5, rtol=1e-5)
    # Ensembling: normalise each template, average, renormalise.
    expected = F.normalize(F.normalize(text, dim=-1).mean(dim=1), dim=-1)
    torch.testing.assert_close(text_classifier(text), expected)


def test_dinov2_dense_features_are_the_patch_tokens_in_grid_order(dinov2_dir: Path) -> None:
    teacher = load_hf_teacher("hf_dinov2", dinov2_dir)
    images = _images(3, 40, 56)
    dense = teacher(images)
    assert dense.shape == (2, 32, 5, 7) and teacher.out_channels == 32
    model = transformers.Dinov2Model.from_pretrained(dinov2_dir, local_files_only=True).eval()
    with torch.no_grad():
        # preprocessor_config.json of the fixture sets mean 0.5, std 0.25
        tokens = model(pixel_values=(images - 0.5) / 0.25).last_hidden_state
    for i in range(5):
        for j in range(7):
            torch.testing.assert_close(dense[:, :, i, j], tokens[:, 1 + i * 7 + j], atol=1e-5, rtol=1e-5)


def test_teachers_are_frozen_and_record_their_directory(clip_dir: Path) -> None:
    teacher = load_hf_teacher("hf_clip", clip_dir)
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(FrozenTeacherError):
        teacher.train()
    info = teacher.info.to_dict()
    assert info["arch"] == "hf_clip" and info["kwargs"] == {"path": str(clip_dir)}
    assert info["source"] == str(clip_dir) and info["checkpoint_format"] == "transformers"


def test_missing_directory_and_missing_transformers_are_clear(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json.*never downloaded"):
        load_hf_teacher("hf_clip", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown transformers teacher"):
        load_hf_teacher("hf_vit", tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(HFNotInstalledError, match=r"pip install cmcr\[hf\]"):
        load_hf_teacher("hf_dinov2", tmp_path)
