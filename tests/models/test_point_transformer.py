"""ReCon model: shapes, stop-gradient, gradient coverage, block semantics, sizes, checkpoint hand-off (the
forward/backward tests on the test device, CMCR_TEST_DEVICE)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmcr_core.data.objects import ObjectBatch
from cmcr_core.methods.recon import RECON_PRESETS, ReConMethod, convert_reference_state_dict
from cmcr_core.models.point_transformer import (
    DecoderBlock,
    PointTransformerClassifier,
    ReConBlock,
    ReConEncoder,
)

CI = RECON_PRESETS["ci"]
IMG_DIM, TEXT_DIM = 12, 10


def make_batch(seed: int = 0, b: int = 6, n: int = 128, device="cpu") -> ObjectBatch:
    gen = torch.Generator().manual_seed(seed)
    return ObjectBatch(
        torch.rand(b, n, 3, generator=gen) * 2 - 1,
        torch.tensor([0, 1, 0, 2, 1, 2][:b]),
        [f"o{i}" for i in range(b)],
        torch.rand(b, IMG_DIM, generator=gen) * 2 - 1,
        torch.randn(b, TEXT_DIM, generator=gen),
    ).to(device)


def make_method(seed: int = 0, device="cpu", **overrides) -> ReConMethod:
    torch.manual_seed(seed)
    kwargs = dict(CI, img_dim=IMG_DIM, text_dim=TEXT_DIM, drop_path_rate=0.0)
    kwargs.update(overrides)
    return ReConMethod(**kwargs).to(device)


def is_patch_stream(name: str) -> bool:
    if name.startswith(("encoder.encoder.", "encoder.pos_embed.")):
        return True
    return name.startswith("encoder.blocks.") and "_contrast" not in name and ".drop_path" not in name


def is_query_stream(name: str) -> bool:
    return (
        name.startswith(("img_proj.", "text_proj."))
        or "_contrast" in name
        or name in ("encoder.img_token", "encoder.img_pos", "encoder.text_token", "encoder.text_pos")
    )


def test_shapes_contract(device) -> None:
    method = make_method(device=device)
    batch = make_batch(device=device)
    neigh, centres = method.encoder.group(batch.points)
    assert neigh.shape == (6, 8, 16, 3) and centres.shape == (6, 8, 3)
    mask = method.make_mask(centres)
    queries, tokens = method.encoder(neigh, centres, mask)
    num_masked = int(0.6 * 8)
    assert queries.shape == (6, 3, 32) and tokens.shape == (6, 8 - num_masked, 32)
    vis_c, mask_c = centres[~mask].reshape(6, -1, 3), centres[mask].reshape(6, -1, 3)
    assert method.decoder(tokens, vis_c, mask_c).shape == (6, num_masked, 16, 3)
    assert set(method(batch)) == {"rec", "img", "text"}


@pytest.mark.parametrize("stop_grad", [True, False])
def test_query_losses_give_exactly_zero_gradient_to_patch_stream(stop_grad: bool, device) -> None:
    method = make_method(stop_grad=stop_grad, device=device)
    losses = method(make_batch(device=device))
    (losses["img"] + losses["text"]).backward()
    grads = {n: p.grad for n, p in method.named_parameters()}
    patch = [n for n in grads if is_patch_stream(n)]
    query = [n for n in grads if is_query_stream(n)]
    assert len(patch) > 10 and len(query) > 10
    for name in query + ["encoder.norm.weight", "encoder.norm.bias"]:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    if stop_grad:
        for name in patch:
            assert grads[name] is None or torch.count_nonzero(grads[name]) == 0, name
    else:
        # control: without the stop-gradient the same losses reach the patch stream (all but the last
        # block's attn/norm2/mlp, whose outputs no query reads)
        last = f"encoder.blocks.{CI['depth'] - 1}."
        reached = [n for n in patch if not n.startswith(last) or ".norm1." in n]
        assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in reached)
        assert any(n.startswith("encoder.encoder.") for n in reached)
    # queries never attend to each other: cls gets nothing from the img/text losses
    assert grads["encoder.cls_token"] is None or torch.count_nonzero(grads["encoder.cls_token"]) == 0


def test_every_parameter_gets_a_gradient_and_no_nan(device) -> None:
    method = make_method(w_smc=1.0, device=device)
    losses = method(make_batch(device=device))
    assert set(losses) == {"rec", "img", "text", "smc"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_cls_gets_no_gradient_when_smc_is_off(device) -> None:
    method = make_method(device=device)
    assert method.cls_proj is None
    sum(method(make_batch(device=device)).values()).backward()
    for name, p in method.named_parameters():
        if name in ("encoder.cls_token", "encoder.cls_pos"):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_weights_switch_terms_and_heads() -> None:
    method = make_method(w_img=0.0, w_text=2.0)
    assert method.img_proj is None
    losses = method(make_batch())
    assert set(losses) == {"rec", "text"}
    unweighted = make_method(w_img=0.0, w_text=1.0)
    torch.manual_seed(1)
    a = method(make_batch())["text"]
    torch.manual_seed(1)
    b = unweighted(make_batch())["text"]
    assert a.item() == pytest.approx(2 * b.item(), rel=1e-6)
    with pytest.raises(ValueError, match="img_target"):
        make_method()(ObjectBatch(make_batch().points, make_batch().labels, list("abcdef")))


def test_deterministic_with_fixed_seed() -> None:
    results = []
    for _ in range(2):
        method = make_method(seed=4, drop_path_rate=0.1)
        torch.manual_seed(9)
        losses = method(make_batch())
        sum(losses.values()).backward()
        results.append(
            (
                {k: v.item() for k, v in losses.items()},
                [p.grad.clone() for p in method.parameters() if p.grad is not None],
            )
        )
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def manual_attention(q, k, v, heads):
    b, lq, c = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, c // heads).transpose(1, 2)  # noqa: E731
    attn = (split(q) @ split(k).transpose(-1, -2)) * (c // heads) ** -0.5
    return (attn.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, lq, c)


def test_recon_block_is_normalise_then_residual() -> None:
    torch.manual_seed(0)
    block = ReConBlock(16, 2).eval()
    for p in block.parameters():  # non-trivial LayerNorm affine parameters
        p.data.normal_(0, 0.3)
    gen = torch.Generator().manual_seed(1)
    q_in, x_in = torch.randn(2, 3, 16, generator=gen), torch.randn(2, 5, 16, generator=gen)
    q_out, x_out = block(q_in, x_in, stop_grad=True)

    def mlp(m, t):
        return m.fc2(F.gelu(m.fc1(t)))

    x = block.norm1(x_in)
    qkv = block.attn.qkv(x)
    x = x + block.attn.proj(manual_attention(*qkv.chunk(3, -1), 2))
    x = block.norm2(x)
    x = x + mlp(block.mlp, x)
    q = block.norm1_contrast(q_in)
    k, v = block.attn_contrast.kv(block.norm1(x_in)).chunk(2, -1)
    q = q + block.attn_contrast.proj(manual_attention(block.attn_contrast.q(q), k, v, 2))
    q = block.norm2_contrast(q)
    q = q + mlp(block.mlp_contrast, q)
    assert torch.allclose(x_out, x, atol=1e-5) and torch.allclose(q_out, q, atol=1e-5)


def test_decoder_block_is_pre_norm() -> None:
    torch.manual_seed(0)
    block = DecoderBlock(16, 4).eval()
    x_in = torch.randn(2, 5, 16)
    x = x_in + block.attn.proj(manual_attention(*block.attn.qkv(block.norm1(x_in)).chunk(3, -1), 4))
    x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
    assert torch.allclose(block(x_in), x, atol=1e-5)


def test_tokens_never_attend_to_queries() -> None:
    encoder = ReConEncoder(32, 2, 2, 8, 16, drop_path_rate=0.0).eval()
    neigh, centres = encoder.group(make_batch().points)
    _, tokens = encoder(neigh, centres)
    with torch.no_grad():
        encoder.img_token.add_(1.0)
        encoder.cls_pos.mul_(-3.0)
    queries2, tokens2 = encoder(neigh, centres)
    assert torch.equal(tokens, tokens2)


@pytest.mark.parametrize(
    ("preset", "finetune_m", "pretrain_m"),
    [("tiny", 11.4, None), ("small", 19.7, None), ("base", 43.6, 50.8)],
)
def test_parameter_counts_match_published_sizes(preset, finetune_m, pretrain_m) -> None:
    cfg = RECON_PRESETS[preset]
    enc = {k: v for k, v in cfg.items() if not k.startswith("decoder")}
    classifier = PointTransformerClassifier(15, **enc)
    assert sum(p.numel() for p in classifier.parameters()) / 1e6 == pytest.approx(finetune_m, abs=0.05)
    if pretrain_m is not None:
        method = ReConMethod(**cfg)
        assert sum(p.numel() for p in method.parameters()) / 1e6 == pytest.approx(pretrain_m, abs=0.05)


def test_pretrained_encoder_loads_into_classifier() -> None:
    method = make_method()
    enc = {k: v for k, v in CI.items() if not k.startswith("decoder")}
    classifier = PointTransformerClassifier(5, **{**enc, "num_groups": 16})  # fine-tuning uses its own G
    classifier.encoder.load_state_dict(method.handoff()["student"], strict=True)
    result = classifier.load_state_dict(method.state_dict(), strict=False)
    assert {k.split(".")[0] for k in result.missing_keys} == {"head"}
    assert {k.split(".")[0] for k in result.unexpected_keys} == {"decoder", "img_proj", "text_proj"}
    assert torch.equal(classifier.encoder.img_token, method.encoder.img_token)
    assert classifier(make_batch().points).shape == (6, 5)


def test_reference_checkpoint_keys_map_onto_method() -> None:
    method = make_method()
    ours = set(method.state_dict())
    reference_keys = [
        "module.MAE_encoder.cls_token",
        "module.MAE_encoder.encoder.first_conv.0.weight",
        "module.MAE_encoder.encoder.second_conv.3.bias",
        "module.MAE_encoder.pos_embed.2.weight",
        "module.MAE_encoder.blocks.blocks.1.attn.qkv.weight",
        "module.MAE_encoder.blocks.blocks.0.attn_contrast.kv.weight",
        "module.MAE_encoder.blocks.blocks.0.mlp_contrast.fc2.bias",
        "module.MAE_encoder.norm.weight",
        "module.mask_token",
        "module.decoder_pos_embed.0.weight",
        "module.MAE_decoder.blocks.0.norm1.weight",
        "module.MAE_decoder.norm.bias",
        "module.increase_dim.0.weight",
        "module.img_proj.weight",
        "module.text_proj.bias",
    ]
    fake = {k: torch.zeros(1) for k in reference_keys + ["module.img_encoder.head.weight"]}
    converted = convert_reference_state_dict(fake)
    assert len(converted) == len(reference_keys)
    assert set(converted) <= ours
