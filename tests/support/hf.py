"""Tiny randomly initialised CLIP (with a character-level tokenizer), DINOv2 and ViT models saved to local
directories: the transformers teachers are tested without downloading anything. A test that requests them
is skipped where transformers (the `hf` extra) is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

PROJECTION_DIM = 24
PATCH = 8


def _transformers():
    return pytest.importorskip("transformers", reason="transformers is an optional extra (cmcr[hf])")


def _byte_characters() -> list[str]:
    """The 256 printable stand-ins of GPT-2/CLIP byte-level BPE, in their usual order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer ViT CLIP (patch 8, 32-d, projection 24) and a character-level CLIP tokenizer."""
    transformers = _transformers()
    chars = _byte_characters()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                     "eos_token_id": vocab["<|endoftext|>"], "bos_token_id": vocab["<|startoftext|>"],
                     "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": PATCH},
        projection_dim=PROJECTION_DIM,
    )
    root = tmp_path_factory.mktemp("tiny_clip")
    transformers.CLIPModel(config).save_pretrained(root)
    transformers.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer DINOv2 (patch 8, 32-d)."""
    transformers = _transformers()
    torch.manual_seed(1)
    config = transformers.Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=PATCH)
    root = tmp_path_factory.mktemp("tiny_dinov2")
    transformers.Dinov2Model(config).save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                               "image_std": [0.25, 0.25, 0.25]}))
    return root


def save_tiny_vit(root: Path, pooler: bool = True) -> Path:
    """A 2-layer ViT (patch 8, 32-d, 32 px) saved with (or without) its pre-logits pooler."""
    transformers = _transformers()
    torch.manual_seed(2)
    config = transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, image_size=32, patch_size=PATCH)
    transformers.ViTModel(config, add_pooling_layer=pooler).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`save_tiny_vit` with its pooler (ReCon's image teacher is the ViT's pre-logits); import it into the
    test module that uses it."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))
