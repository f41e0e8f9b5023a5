"""A short manual AdamW pretraining loop on synthetic objects lowers every ReCon loss term (on the test
device, CMCR_TEST_DEVICE)."""

from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader

from cmcr_core.data.objects import (
    ObjectPointDataset,
    class_text_vectors,
    collate_objects,
    precompute_teacher_targets,
)
from cmcr_core.methods.recon import RECON_PRESETS, ReConMethod, recon_param_groups
from cmcr_core.models.tiny_image_teacher import TinyImageTeacher


def eval_losses(method: ReConMethod, batch) -> dict[str, float]:
    """Losses on a fixed batch with a fixed mask, on a copy (BatchNorm uses batch statistics, as in training,
    without touching the running statistics of the trained model)."""
    probe = copy.deepcopy(method).train()
    probe.mask_generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return {k: v.item() for k, v in probe(batch).items()}


def test_short_pretraining_lowers_every_loss(small_objects, device) -> None:
    train, _ = small_objects
    objects = train.objects
    teacher = TinyImageTeacher(out_dim=16, seed=0)
    text = class_text_vectors(len(objects.class_names), 12, seed=0)
    targets = precompute_teacher_targets(
        train.images, objects.ids, objects.labels, teacher, text, num_views=2, image_size=16
    )
    dataset = ObjectPointDataset(objects, 128, "random", True, "rotate_y", targets, seed=0)
    fixed = collate_objects([ObjectPointDataset(objects, 128, "fps", targets=targets)[i] for i in range(8)])
    fixed = fixed.to(device)

    torch.manual_seed(0)
    method = ReConMethod(**RECON_PRESETS["ci"], img_dim=16, text_dim=12, w_smc=0.5, drop_path_rate=0.0)
    method = method.to(device)
    optimizer = torch.optim.AdamW(recon_param_groups(method, 2e-3, weight_decay=0.05), lr=2e-3)
    before = eval_losses(method, fixed)
    assert set(before) == {"rec", "img", "text", "smc"}
    gen = torch.Generator().manual_seed(0)
    for epoch in range(10):
        dataset.set_epoch(epoch)
        for batch in DataLoader(dataset, 8, shuffle=True, collate_fn=collate_objects, generator=gen):
            losses = method(batch.to(device))
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
    after = eval_losses(method, fixed)
    for name in before:
        assert after[name] < before[name], (name, before[name], after[name])
    assert after["rec"] < 0.5 * before["rec"] and after["img"] < 0.5 * before["img"]
