"""Zero-shot core: prompt ensembling, cosine argmax, prototypes, prompt constants (PROTOCOLS §12); the tensors
on the test device (CMCR_TEST_DEVICE), the references on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcr_core.eval.zeroshot import (
    CLIP2SCENE_CLASS_NAMES,
    CLIP2SCENE_TEMPLATES,
    CLIP_IMAGENET_TEMPLATES,
    NUSCENES_CLASSES,
    OPENSCENE_CLASS_NAMES,
    OPENSCENE_TEMPLATES,
    SCENE_TEMPLATES,
    class_prototypes,
    format_prompts,
    text_classifier,
    zero_shot_logits,
    zero_shot_predict,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _clusters(num_classes: int, per_class: int, dim: int, noise: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(
        torch.randn(num_classes, dim, generator=g, dtype=torch.float64), dim=1
    )
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    feats = means[labels] + noise * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return means, labels, feats


def _nearest_by_cosine(feats: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Independent reference: explicit loop over points and classes."""
    out = []
    for f in feats:
        cos = [float(f @ c) / (np.linalg.norm(f) * np.linalg.norm(c)) for c in classes]
        out.append(int(np.argmax(cos)))
    return np.asarray(out)


def test_prompt_constants():
    assert len(CLIP_IMAGENET_TEMPLATES) == 80 and len(set(CLIP_IMAGENET_TEMPLATES)) == 80
    assert (
        CLIP2SCENE_TEMPLATES == CLIP_IMAGENET_TEMPLATES + SCENE_TEMPLATES and len(CLIP2SCENE_TEMPLATES) == 85
    )
    assert all(t.count("{}") == 1 for t in CLIP2SCENE_TEMPLATES + OPENSCENE_TEMPLATES)
    assert "a photo of a {}." in CLIP_IMAGENET_TEMPLATES and "itap of my {}." in CLIP_IMAGENET_TEMPLATES
    assert OPENSCENE_TEMPLATES == ("a {} in a scene",)
    assert len(NUSCENES_CLASSES) == len(CLIP2SCENE_CLASS_NAMES) == len(OPENSCENE_CLASS_NAMES) == 16
    assert NUSCENES_CLASSES[0] == "barrier" and NUSCENES_CLASSES[-1] == "vegetation"
    assert CLIP2SCENE_CLASS_NAMES[4] == "construction vehicle" and OPENSCENE_CLASS_NAMES[6] == "person"
    prompts = format_prompts(CLIP2SCENE_CLASS_NAMES, CLIP2SCENE_TEMPLATES)
    assert len(prompts) == 16 and all(len(p) == 85 for p in prompts)
    assert prompts[3][-1] == "this is one car in the scene."
    with pytest.raises(ValueError, match="exactly one"):
        format_prompts(["car"], ["no placeholder"])


def test_template_ensembling_matches_manual_loop(device):
    g = torch.Generator().manual_seed(0)
    text = torch.randn(5, 7, 12, generator=g, dtype=torch.float64)
    scales = torch.rand(5, 7, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    expected = []
    for c in range(5):
        mean = sum(text[c, p] / text[c, p].norm() for p in range(7)) / 7
        expected.append(mean / mean.norm())
    expected = torch.stack(expected).to(device)
    text, scales = text.to(device), scales.to(device)
    torch.testing.assert_close(text_classifier(text), expected, rtol=1e-12, atol=1e-12)
    # Per-template normalisation makes template scales irrelevant.
    torch.testing.assert_close(text_classifier(text * scales), expected, rtol=1e-12, atol=1e-12)
    # (C, D) input: plain normalisation.
    torch.testing.assert_close(text_classifier(text[:, 0]), text[:, 0] / text[:, 0].norm(dim=1, keepdim=True))


def test_logits_are_cosines(device):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(9, 6, generator=g, dtype=torch.float64)
    text = torch.randn(4, 6, generator=g, dtype=torch.float64)
    logits = zero_shot_logits(feats.to(device), text.to(device)).cpu()
    for i in range(9):
        for c in range(4):
            cos = float(feats[i] @ text[c]) / float(feats[i].norm() * text[c].norm())
            assert float(logits[i, c]) == pytest.approx(cos, rel=1e-12)


def test_separated_clusters_give_full_accuracy(device):
    means, labels, feats = _clusters(16, 40, 32, noise=0.05, seed=2)
    pred = zero_shot_predict(feats.to(device), means.to(device))
    assert torch.equal(pred.cpu(), labels)


def test_predictions_equal_independent_nearest_class_with_templates(device):
    means, labels, feats = _clusters(6, 30, 8, noise=0.6, seed=3)  # overlapping classes
    g = torch.Generator().manual_seed(4)
    templates = means[:, None, :] + 0.2 * torch.randn(6, 5, 8, generator=g, dtype=torch.float64)
    classifier = np.stack(
        [sum(t / np.linalg.norm(t) for t in templates[c].numpy()) for c in range(6)]
    )  # direction of the mean of normalised templates
    expected = _nearest_by_cosine(feats.numpy(), classifier)
    pred = zero_shot_predict(feats.to(device), templates.to(device), chunk_size=7).cpu()
    assert pred.tolist() == expected.tolist()
    assert 0.3 < float((pred == labels).double().mean()) < 1.0  # the case is not trivial


def test_prototypes_and_absent_classes(device):
    means, labels, feats = _clusters(5, 20, 10, noise=0.3, seed=5)
    keep = labels != 2  # class 2 absent
    labels_kept = labels.clone()
    labels_kept[~keep] = -1
    protos = class_prototypes(feats.to(device), labels_kept.to(device), num_classes=5, ignore_index=-1)
    protos = type(protos)(*(t.cpu() for t in protos))
    assert protos.present.tolist() == [True, True, False, True, True]
    assert torch.count_nonzero(protos.embeddings[2]) == 0
    for c in (0, 1, 3, 4):
        sel = feats[labels == c]
        mean = (sel / sel.norm(dim=1, keepdim=True)).mean(0)
        torch.testing.assert_close(protos.embeddings[c], mean / mean.norm(), rtol=1e-12, atol=1e-12)
    pred = zero_shot_predict(feats, protos.embeddings, valid_classes=protos.present)
    assert not bool((pred == 2).any())
    present_ids = np.array([0, 1, 3, 4])
    expected = present_ids[_nearest_by_cosine(feats.numpy(), protos.embeddings[present_ids].numpy())]
    assert pred.tolist() == expected.tolist()
    with pytest.raises(ValueError, match=r"classes \[2\] have a zero embedding"):
        zero_shot_predict(feats, protos.embeddings)  # the zero row cannot be normalised
    with pytest.raises(ValueError, match="no class"):
        zero_shot_logits(feats, protos.embeddings[[0, 1]], valid_classes=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        class_prototypes(feats, labels + 1, num_classes=5)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="D = 4"):
        zero_shot_logits(torch.zeros(3, 5), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\(C, D\) or \(C, P, D\)"):
        text_classifier(torch.ones(4))
