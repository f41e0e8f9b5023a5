"""`cmcr zeroshot --objects`: zero-shot classification of object clouds with a ReCon pretraining.

As in ReCon's zero-shot runner (qizekun/ReCon): the pretrained encoder and its image / text projections give
each test cloud the feature ``ratio · text_proj(q_text) + img_proj(q_img)`` (``zeroshot.feature: full``; or
one of the terms); each class's embedding is the sum of the text features of its prompts; the prediction is
the class of highest cosine. The clouds are sampled as ``data`` says (ReCon: a random subset of an FPS pool,
seeded here by ``train.seed``), normalised as ``data.normalize`` says, not augmented.

Class embeddings, one of:

* ``text_embeddings``: a ``.npy`` of C x D or C x P x D rows in the dataset's class order (e.g. the
  ``<targets>.class_text.npy`` that `cmcr prepare objects` writes for the classes it pretrained on);
* ``clip``: a local CLIP directory whose text tower encodes ReCon's 60 prompts (``zeroshot.prompts``) of
  every class name of the evaluated dataset (ScanObjectNN's "toilet" spelt right, where the reference code
  has "toile").

Only the test split is scored (ReCon's released runner merges train and test; its paper's later numbers are
test only). Without ``weights`` the encoder and projections are a random initialisation (seed
``train.seed``): the chance-level baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr_core.config import ObjectClassifyRecipe
from cmcr_core.data.objects import ObjectPointDataset
from cmcr_core.engine import distributed
from cmcr_core.engine.checkpoint import load_checkpoint
from cmcr_core.eval.classification import (
    class_prompt_sum,
    cosine_logits,
    overall_accuracy,
    per_class_accuracy,
    zero_shot_features,
)
from cmcr_core.methods.recon import ReConMethod
from cmcr_core.methods.registry import recon_model_sizes
from cmcr_core.runs.object_teachers import clip_prompt_features
from cmcr_core.runs.objects import fps_pool_size, read_objects
from cmcr_core.runs.report import Line, Report
from cmcr_core.runs.run_folder import METRICS_JSON, write_json

__all__ = ["class_embeddings", "run_object_zeroshot", "zeroshot_model", "zeroshot_report"]


def class_embeddings(class_names: list[str], text_embeddings: str | Path | None, clip: str | Path | None,
                     prompts: str = "recon", device: str = "cpu") -> tuple[torch.Tensor, str]:
    """C x D class embeddings (prompts summed) and their source."""
    if (text_embeddings is None) == (clip is None):
        raise ValueError("zero-shot on objects needs the class embeddings: give --text-embeddings FILE or "
                         "--clip DIR (one of them)")
    if clip is not None:
        features = torch.from_numpy(clip_prompt_features(clip, class_names, prompts, device))
        source = f"CLIP text tower {clip}, {features.shape[1]} prompts per class ({prompts})"
    else:
        path = Path(text_embeddings)
        if path.suffix != ".npy" or not path.is_file():
            raise FileNotFoundError(f"--text-embeddings: no .npy file {path}")
        features = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        source = str(path)
    if features.dim() not in (2, 3) or len(features) != len(class_names):
        raise ValueError(f"class embeddings from {source}: need one row per class ({len(class_names)}: "
                         f"{', '.join(class_names[:5])}, ...), got shape {tuple(features.shape)}")
    return class_prompt_sum(features), source


def zeroshot_model(recipe: ObjectClassifyRecipe, weights: str | Path | None) -> ReConMethod:
    """The encoder and projections of a ReCon pretraining checkpoint (sizes from the recipe's preset, teacher
    sizes from the checkpoint), or a random initialisation without ``weights``."""
    dims = {"img_dim": recipe.model.img_dim, "text_dim": recipe.model.text_dim}
    state = {}
    if weights is not None:
        payload = load_checkpoint(weights)
        if not isinstance(payload.get("student"), dict) or not isinstance(payload.get("model"), dict):
            raise ValueError(f"{weights}: not a ReCon pretraining checkpoint (no 'student' / 'model' entry)")
        state = payload["model"]
        for name in ("img", "text"):
            if f"{name}_proj.weight" in state:
                dims[f"{name}_dim"] = int(state[f"{name}_proj.weight"].shape[0])
    distributed.seed_process(recipe.train.seed)
    method = ReConMethod(**recon_model_sizes(recipe.model), drop_path_rate=0.0, w_rec=0.0, w_img=1.0,
                         w_text=1.0, stop_grad=False, **dims)
    if weights is not None:
        method.encoder.load_state_dict(payload["student"])
        for name, head in (("img", method.img_proj), ("text", method.text_proj)):
            prefix = f"{name}_proj."
            keys = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            if keys:
                head.load_state_dict(keys)
            elif recipe.zeroshot.feature in ("full", name):
                raise ValueError(f"{weights}: the pretraining had no {name} projection (loss.{name} = 0); "
                                 f"zeroshot.feature={recipe.zeroshot.feature} needs it")
    return method.eval()


def run_object_zeroshot(recipe: ObjectClassifyRecipe, out_dir: str | Path, weights: str | Path | None = None,
                        text_embeddings: str | Path | None = None, clip: str | Path | None = None,
                        device: str = "cpu") -> dict[str, Any]:
    """Zero-shot accuracy on ``data.test_split`` -> ``out_dir/metrics.json`` (see the module docstring)."""
    z, d = recipe.zeroshot, recipe.data
    test = read_objects(d, d.test_split)
    embeddings, source = class_embeddings(test.class_names, text_embeddings, clip, z.prompts, device)
    method = zeroshot_model(recipe, weights).to(device)
    sizes = {"img": method.img_proj.out_features, "text": method.text_proj.out_features}
    if z.feature == "full" and sizes["img"] != sizes["text"]:
        raise ValueError(f"zeroshot.feature=full adds the image projection ({sizes['img']}-d) to the text "
                         f"one ({sizes['text']}-d): pretrain with an image teacher in the text space "
                         "(CLIP's, ReCon's zero-shot variant) or set zeroshot.feature=text")
    out_dim = sizes["img"] if z.feature == "image" else sizes["text"]
    if embeddings.shape[1] != out_dim:
        raise ValueError(f"class embeddings are {embeddings.shape[1]}-d, the zero-shot features {out_dim}-d")
    pool = fps_pool_size(d) if d.sampling == "fps_random" else None
    dataset = ObjectPointDataset(test, d.num_points, d.sampling, d.normalize, "none", None, pool,
                                 seed=recipe.train.seed)
    points = torch.from_numpy(np.stack([dataset[i]["points"] for i in range(len(dataset))]))
    features = zero_shot_features(method.encoder, method.img_proj, method.text_proj, points.to(device),
                                  z.feature, z.ratio, d.eval_batch_size).cpu()
    logits, labels = cosine_logits(features, embeddings), torch.from_numpy(test.labels)
    metrics = {
        "recipe": recipe.name, "weights": str(weights) if weights is not None else None,
        "split": d.test_split, "objects": len(test), "feature": z.feature, "ratio": z.ratio,
        "class_embeddings": source, "overall_accuracy": overall_accuracy(logits, labels),
        "per_class_accuracy": per_class_accuracy(logits.argmax(1), labels, test.class_names),
    }
    write_json(Path(out_dir) / METRICS_JSON, metrics, indent=2, newline=False)
    return metrics


def zeroshot_report(metrics: dict[str, Any], out_dir: str | Path) -> Report:
    """The command's last line."""
    return Report((Line(
        f"[green]done[/]: zero-shot accuracy {metrics['overall_accuracy']:.4f} on {metrics['objects']} "
        f"{metrics['split']} objects ({metrics['feature']} feature); {Path(out_dir) / METRICS_JSON}"),))
