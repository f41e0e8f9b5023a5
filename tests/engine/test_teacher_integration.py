"""A tiny PPKT-shaped method (frozen ResNet-18 teacher + ppkt decoder + PointInfoNCE) through the engine, on
the test device (CMCR_TEST_DEVICE)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcr_core.engine import Method, TrainSettings, load_checkpoint, train
from cmcr_core.engine.distributed import single_process_context
from cmcr_core.losses.point_info_nce import PointInfoNCE
from cmcr_core.models.image_decoders import build_image_decoder
from cmcr_core.models.teacher import build_teacher


@dataclass
class PairBatch:
    images: Tensor  # (I, 3, H, W) in [0, 1]
    pairing_points: Tensor  # (P,)
    pairing_images: Tensor  # (P, 3)

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device) for t in (self.images, self.pairing_points, self.pairing_images)))


class TinyPPKT(Method):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Embedding(50, 8)  # stands in for the 3D network: one vector per voxel
        self.teacher = build_teacher("resnet18")
        self.decoder = build_image_decoder("ppkt", in_channels=512, out_channels=8)
        self.loss = PointInfoNCE(num_matches=16)
        self.seed_generators(1, "generator")  # on the method's device once it moved there

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:
        points = F.normalize(self.student.weight, dim=1)
        pixels = self.decoder(self.teacher(batch.images), output_size=batch.images.shape[-2:])
        return {"nce": self.loss(points, pixels, batch.pairing_points, batch.pairing_images, self.generator)}

    def handoff(self) -> dict[str, object]:
        return {"student": self.student.state_dict(), "teacher": self.teacher.info.to_dict()}


def _batches(epoch: int, start: int):
    for index in range(start, 3):
        g = torch.Generator().manual_seed(100 * epoch + index)
        pairs = torch.stack([torch.randint(0, n, (40,), generator=g) for n in (2, 32, 64)], dim=1)
        voxels = torch.randint(0, 50, (40,), generator=g)
        yield PairBatch(torch.rand(2, 3, 32, 64, generator=g), voxels, pairs)


def test_ppkt_shaped_method_trains_resumes_and_checkpoints_without_teacher(tmp_path, device, tolerance):
    settings = TrainSettings(total_steps=4, checkpoint_every=2)
    context = single_process_context(device)

    def run(out, **kwargs):
        method = TinyPPKT().to(device)  # before its generators are handed over (moving re-creates them)
        return method, train(method, _batches, out, settings, generators={"pairs": method.generator},
                             context=context, **kwargs).records

    _, straight = run(tmp_path / "a")
    _, first = run(tmp_path / "b", stop_at=2)
    method, resumed = run(tmp_path / "b", resume=True)
    assert method.generator.device == device
    tolerance.same(device, [r["nce"] for r in first + resumed], [r["nce"] for r in straight],
                   dtype=torch.float32)
    payload = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert set(payload["model"]) == {"student.weight", "decoder.conv.weight", "decoder.conv.bias"}
    assert payload["teacher"]["arch"] == "resnet18" and payload["student"]["weight"].shape == (50, 8)
    assert not method.teacher.training and all(not p.requires_grad for p in method.teacher.parameters())
