"""Frozen teacher: checkpoint formats round-trip bit-exactly, clear errors, refuses training."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from cmcr_core.models.frozen_teacher import FrozenTeacher, FrozenTeacherError
from cmcr_core.models.resnet import build_resnet
from cmcr_core.models.teacher import (
    TEACHER_ARCHS,
    build_teacher,
    infer_resnet_arch,
    load_teacher,
    register_teacher_arch,
    save_teacher,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source() -> nn.Module:
    torch.manual_seed(0)
    model = build_resnet("resnet18")
    with torch.no_grad():  # make every buffer informative, not just the parameters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(17)
    return model


def _fc() -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.randn(10, 512), "fc.bias": torch.randn(10)}


def _formats(model: nn.Module) -> dict[str, object]:
    state = model.state_dict()
    moco = {f"module.encoder_q.{k}": v for k, v in state.items()}
    moco |= {f"module.encoder_k.{k}": v + 1 for k, v in state.items()}
    moco |= {"module.encoder_q.fc.0.weight": torch.randn(512, 512),
             "module.encoder_q.fc.2.weight": torch.randn(8, 512),
             "module.queue": torch.randn(8, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {
        "plain": {**state, **_fc()},  # torchvision
        "dino-plain": dict(state),  # DINO ResNet-50 backbone file: plain keys, no fc
        "moco": {"epoch": 800, "arch": "resnet18", "state_dict": moco, "optimizer": {"state": {}}},
        "dino-train": {"teacher": {f"backbone.{k}": v for k, v in state.items()} | {"head.w": torch.ones(2)},
                       "epoch": 3},
        "wrapped": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    }


@pytest.mark.parametrize("name, detected", [("plain", "plain"), ("dino-plain", "plain"), ("moco", "moco"),
                                            ("dino-train", "dino-train"), ("wrapped", "wrapped")])
def test_third_party_formats_load_bit_identically(tmp_path, source, name, detected):
    path = tmp_path / f"{name}.pth"
    torch.save(_formats(source)[name], path)
    teacher = load_teacher(path)
    assert teacher.info.arch == "resnet18" and teacher.info.checkpoint_format == detected
    loaded, reference = teacher.encoder.state_dict(), source.state_dict()
    assert loaded.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(loaded[key], value), key
    if name == "plain":
        assert set(teacher.info.skipped) == {"fc.weight", "fc.bias"}
    if name == "moco":
        assert {"module.encoder_k.conv1.weight", "fc.0.weight"} <= set(teacher.info.skipped)
        assert not any(k.startswith("module.encoder_q.layer") for k in teacher.info.skipped)
    assert teacher.info.num_loaded == len(reference)


def test_own_teacher_file_round_trip_with_kwargs(tmp_path, source):
    dilated = {"replace_stride_with_dilation": (True, True, True)}
    path = save_teacher(tmp_path / "t.pt", source, "resnet18", dilated, meta={"trained_on": "synthetic"})
    teacher = load_teacher(path)
    assert teacher.info.checkpoint_format == "cmcr-teacher" and teacher.output_stride == 4
    assert all(torch.equal(teacher.encoder.state_dict()[k], v) for k, v in source.state_dict().items())
    plain = {"replace_stride_with_dilation": (False, False, False)}
    assert load_teacher(path, overrides=plain).output_stride == 32
    with pytest.raises(ValueError, match="resnet50"):
        load_teacher(path, arch="resnet50")
    assert teacher.info.to_dict()["kwargs"] == {"replace_stride_with_dilation": [True, True, True]}


def test_generic_registered_teacher(tmp_path):
    class Tiny(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1)
            self.out_channels = width

        def forward(self, images):
            return self.conv(images)

    register_teacher_arch("tiny_test_net", Tiny)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_teacher_arch("tiny_test_net", Tiny)
        net = Tiny(width=5)
        teacher = load_teacher(save_teacher(tmp_path / "tiny.pt", net, "tiny_test_net", {"width": 5}))
        images = torch.rand(2, 3, 6, 6)
        assert torch.equal(teacher(images), net(images).detach()) and teacher.out_channels == 5
    finally:
        TEACHER_ARCHS.pop("tiny_test_net")
    with pytest.raises(ValueError, match="unknown teacher arch 'tiny_test_net'"):
        load_teacher(tmp_path / "tiny.pt")


def test_arch_is_inferred_from_weights():
    assert infer_resnet_arch(build_resnet("resnet50").state_dict()) == "resnet50"
    assert infer_resnet_arch(build_resnet("resnet34").state_dict()) == "resnet34"
    assert infer_resnet_arch(build_resnet("resnet18").state_dict()) == "resnet18"


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "moco_v2_800ep_pretrain.pth.tar"
    with pytest.raises(FileNotFoundError, match="moco_v2_800ep_pretrain.pth.tar"):
        load_teacher(missing)


def test_file_without_matching_keys_is_an_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.weight": torch.ones(3)}, path)
    with pytest.raises(ValueError, match="no tensor of .*other.pth matches"):
        load_teacher(path, arch="resnet18")
    with pytest.raises(ValueError, match="other.pth: no known ResNet"):
        load_teacher(path)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: unrecognised checkpoint layout"):
        load_teacher(tmp_path / "list.pth")


def test_partial_or_mismatched_files_are_errors(tmp_path, source):
    state = source.state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ValueError, match="not in the checkpoint"):
        load_teacher(partial, arch="resnet18")
    assert load_teacher(partial, arch="resnet18", allow_missing=True).info.num_loaded < len(state)
    wrong = tmp_path / "r34.pth"
    torch.save(build_resnet("resnet34").state_dict(), wrong)
    with pytest.raises(ValueError, match="shape|not in the checkpoint"):
        load_teacher(wrong, arch="resnet50")


def test_pickled_objects_need_trust(tmp_path, source):
    path = tmp_path / "dino_full.pth"
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in source.state_dict().items()},
                "args": argparse.Namespace(arch="resnet18")}, path)
    with pytest.raises(ValueError, match="trusted=True"):
        load_teacher(path)
    assert load_teacher(path, trusted=True).info.checkpoint_format == "dino-train"


def test_frozen_teacher_refuses_training_and_gradients(device):
    source = build_resnet("resnet18").train()
    teacher = FrozenTeacher(source, build_teacher("resnet18").info).to(device)
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(FrozenTeacherError, match="frozen"):
        teacher.train()
    with pytest.raises(RuntimeError):
        teacher.train(True)
    assert teacher.eval() is teacher and teacher.train(False) is teacher
    stats = source.bn1.running_mean.clone()
    images = torch.rand(2, 3, 32, 32, device=device, requires_grad=True)
    out = teacher(images)
    assert not out.requires_grad and out.grad_fn is None and out.shape == (2, 512, 1, 1)
    assert torch.equal(source.bn1.running_mean, stats)  # eval mode: BN statistics untouched
    with pytest.raises(ValueError, match="out_channels"):
        FrozenTeacher(nn.ReLU(), teacher.info)


def test_a_method_holding_a_teacher_trains_and_checkpoints_without_it():
    from cmcr_core.engine.method import Method, trainable_state_dict
    from cmcr_core.models.image_decoders import build_image_decoder

    class TwoD(Method):
        def __init__(self) -> None:
            super().__init__()
            self.teacher = build_teacher("resnet18")
            self.decoder = build_image_decoder("ppkt", in_channels=512, out_channels=8)

    method = TwoD()
    method.train()  # must not reach FrozenTeacher.train(True)
    assert method.decoder.training and not method.teacher.training
    assert not any(m.training for m in method.teacher.modules())
    assert set(trainable_state_dict(method)) == {"decoder.conv.weight", "decoder.conv.bias"}
    with pytest.raises(FrozenTeacherError):
        nn.Sequential(build_teacher("resnet18")).train()  # a plain parent module is refused loudly
