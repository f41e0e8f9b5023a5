"""ReCon's image teachers through transformers (a ViT's pre-logits, CLIP's image embedding) and its prompt
set, against hand-written references on tiny random models saved by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.hf import save_tiny_vit, vit_dir  # noqa: F401

from cmcr_core.data.objects.prompts import RECON_PREFIXES, RECON_SUFFIXES, recon_prompts
from cmcr_core.models.frozen_teacher import FrozenTeacherError
from cmcr_core.models.hf_global_teachers import load_global_teacher
from cmcr_core.models.hf_teachers import encode_clip_texts
from cmcr_core.runs.object_teachers import clip_prompt_features, parse_model_spec

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _images(seed: int, size: int, batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vit_pre_logits_are_tanh_of_the_pooled_class_token(vit_dir: Path) -> None:  # noqa: F811
    teacher = load_global_teacher("hf_vit", vit_dir)
    images = _images(0, 32)
    out = teacher(images)
    assert out.shape == (3, 32) and teacher.out_channels == 32
    assert float(out.abs().max()) < 1.0  # tanh
    model = transformers.ViTModel.from_pretrained(vit_dir, local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(pixel_values=(images - IMAGENET_MEAN) / IMAGENET_STD).last_hidden_state  # after LN
        expected = torch.tanh(model.pooler.dense(hidden[:, 0]))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # another input size: position embeddings are interpolated, one vector per image all the same
    assert teacher(_images(1, 48, batch=2)).shape == (2, 32)


def test_vit_teacher_is_deterministic_and_frozen(vit_dir: Path) -> None:  # noqa: F811
    images = _images(2, 32)
    first, second = load_global_teacher("hf_vit", vit_dir), load_global_teacher("hf_vit", vit_dir)
    torch.testing.assert_close(first(images), second(images), atol=0, rtol=0)
    torch.testing.assert_close(first(images), first(images), atol=0, rtol=0)
    assert not any(p.requires_grad for p in first.parameters())
    with pytest.raises(FrozenTeacherError):
        first.train()
    assert first.info.to_dict()["kwargs"] == {"path": str(vit_dir)}


def test_vit_without_its_pooler_is_refused(tmp_path: Path) -> None:
    save_tiny_vit(tmp_path / "no_pooler", pooler=False)
    with pytest.raises(ValueError, match="no pooler weights"):
        load_global_teacher("hf_vit", tmp_path / "no_pooler")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_global_teacher("hf_vit", tmp_path / "nowhere")


def test_clip_image_teacher_is_get_image_features(clip_dir: Path) -> None:
    teacher = load_global_teacher("hf_clip", clip_dir)
    images = _images(3, 32)
    model = transformers.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=(images - IMAGENET_MEAN) / IMAGENET_STD)
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
    torch.testing.assert_close(teacher(images), ref, atol=1e-5, rtol=1e-5)
    assert teacher.out_channels == 24


def test_recon_prompts_follow_the_reference_indexing() -> None:
    prompts = recon_prompts("chair")
    assert len(RECON_PREFIXES) == 20 and len(RECON_SUFFIXES) == 3 and len(prompts) == 60
    assert prompts[0] == "chair." and prompts[1] == "A chair."
    assert prompts[19] == "A 3D rendering image of a chair."
    assert prompts[20] == "chair with white background."
    assert prompts[59] == "A 3D rendering image of a chair with black context."
    assert len(set(prompts)) == 60


def test_clip_prompt_features_keep_class_and_prompt_order(clip_dir: Path) -> None:
    texts = ["chair", "night stand"]
    features = clip_prompt_features(clip_dir, texts)
    assert features.shape == (2, 60, 24)
    for c, text in enumerate(texts):
        for j in (0, 7, 41):
            expected = encode_clip_texts(clip_dir, [recon_prompts(text)[j]])[0].numpy()
            torch.testing.assert_close(torch.from_numpy(features[c, j]), torch.from_numpy(expected),
                                       atol=1e-5, rtol=1e-5)


def test_model_specs_are_parsed_strictly(tmp_path: Path) -> None:
    assert parse_model_spec("hf_vit:/models/vit", "--teacher", ("hf_vit", "hf_clip")) == (
        "hf_vit", Path("/models/vit"))
    assert parse_model_spec(str(tmp_path / "teacher.pt"), "--teacher", ("hf_vit",)) is None
    with pytest.raises(ValueError, match="unknown model kind 'hf_vitt'"):
        parse_model_spec("hf_vitt:/x", "--teacher", ("hf_vit", "hf_clip"))
    with pytest.raises(ValueError, match="local model directory"):
        parse_model_spec("hf_vit:", "--teacher", ("hf_vit",))
