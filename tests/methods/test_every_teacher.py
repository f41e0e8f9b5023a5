"""Every pretraining method accepts every teacher kind (one builder, `models.teacher.build_teacher`): PPKT,
SLidR, CMCR and relational, each from a random ResNet, a torchvision file, a MoCo file, the semantic
teacher's file, a CLIP and a DINOv2 directory, build from their shipped recipe and take one training step
on a batch of the prepared synthetic world. PPKT also pretrains through `run_pretraining` from a tiny CLIP.
Both compute on the test device (CMCR_TEST_DEVICE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support import RECIPES
from support.hf import PROJECTION_DIM

from cmcr_core.config import load_recipe
from cmcr_core.data.batch import collate
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.data.pretrain_dataset import PretrainDataset
from cmcr_core.methods.registry import build_method
from cmcr_core.models.resnet import build_resnet
from cmcr_core.models.semantic_teacher import SEMANTIC_TEACHER_ARCH, CompactSemanticNet
from cmcr_core.models.teacher import save_teacher
from cmcr_core.runs.pretrain import extras_hook, pipeline_settings, run_pretraining

torch.set_num_threads(1)

METHODS = ("ppkt", "slidr", "cmcr", "relational")
TEACHERS = ("resnet18", "resnet18_file", "moco_file", "semantic_file", "hf_clip", "hf_dinov2")
FEATURES = {"resnet18": 512, "resnet18_file": 512, "moco_file": 512, "semantic_file": 16,
            "hf_clip": PROJECTION_DIM, "hf_dinov2": 32}  # what relational's decoder-free student must output
TINY = ["data.crop_size=[64,112]", "data.min_pairs=64", "data.num_workers=0", "data.split=mini_train",
        "data.batch_size=1", "loss.num_matches=64", "student.planes=[8,8,8,8,8,8,8,8]", "student.init_dim=8",
        "train.device=cpu"]


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """(arch, file) of the file-based teacher kinds, written here."""
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    state = build_resnet("resnet18").state_dict()
    torch.save(state, root / "resnet18.pth")
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}}, root / "moco.pth.tar")
    semantic = save_teacher(root / "semantic.pt", CompactSemanticNet(widths=(8, 8, 8, 16)),
                            SEMANTIC_TEACHER_ARCH, {"widths": [8, 8, 8, 16]})
    return {"resnet18_file": ("resnet18", root / "resnet18.pth"),
            "moco_file": ("resnet18", root / "moco.pth.tar"), "semantic_file": ("resnet18", semantic)}


def teacher_sets(kind: str, method: str, files: dict[str, tuple[str, Path]], request: pytest.FixtureRequest
                 ) -> list[str]:
    if kind == "resnet18":
        arch, weights = "resnet18", "''"
    elif kind in files:
        arch, weights = files[kind][0], str(files[kind][1])
    else:  # a transformers directory (the test is skipped without transformers)
        arch, weights = kind, str(request.getfixturevalue("clip_dir" if kind == "hf_clip" else "dinov2_dir"))
    sets = [f"teacher.arch={arch}", f"teacher.weights={weights}"]
    if method == "relational":
        sets.append(f"student.out_channels={FEATURES[kind]}")
    return sets


@pytest.mark.parametrize("kind", TEACHERS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_takes_a_step_with_every_teacher_kind(method: str, kind: str, prepared_world: Path,
                                                           teacher_files, request, device) -> None:
    sets = [f"data.path={prepared_world}", *TINY, *teacher_sets(kind, method, teacher_files, request)]
    recipe = load_recipe(RECIPES / f"{method}_synthetic.yaml", sets)
    torch.manual_seed(0)
    built = build_method(recipe)
    assert built.teacher.info.arch == ({"semantic_file": SEMANTIC_TEACHER_ARCH}.get(kind) or
                                       recipe.teacher.arch)
    dataset = PretrainDataset(PreparedDataset(prepared_world, "mini_train"), pipeline_settings(recipe),
                              seed=0, extras_hook=extras_hook(recipe))
    built.train().to(device)
    out = built(collate([dataset[0]]).to(device))
    losses = out[0] if isinstance(out, tuple) else out
    total = sum(losses.values())
    assert losses and bool(torch.isfinite(total)) and total.device == device
    total.backward()
    assert any(p.grad is not None for p in built.student.parameters())
    assert not any(p.requires_grad for p in built.teacher.parameters())


def test_ppkt_pretrains_from_a_tiny_clip(prepared_world: Path, clip_dir: Path, tmp_path: Path,
                                         device) -> None:
    sets = [f"data.path={prepared_world}", *TINY, "teacher.arch=hf_clip", f"teacher.weights={clip_dir}",
            "train.max_steps=3", "train.checkpoint_every=0", "train.log_every=1", f"train.device={device}"]
    recipe = load_recipe(RECIPES / "ppkt_synthetic.yaml", sets)
    run = run_pretraining(recipe, tmp_path / "ppkt_clip")
    assert run.result.position.step == 3
    assert all(np.isfinite(r["point_nce"]) for r in run.result.records)
    checkpoint = torch.load(tmp_path / "ppkt_clip" / "checkpoint.pt", weights_only=True)
    assert checkpoint["teacher"]["arch"] == "hf_clip" and checkpoint["teacher"]["source"] == str(clip_dir)
    assert not any(k.startswith("teacher.") for k in checkpoint["model"])
