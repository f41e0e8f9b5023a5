"""Linear probe on frozen ReCon global features: briefly pretrained encoder vs random initialisation.

Synthetic objects (8 parametric classes), stand-in teachers (a random tiny CNN on the rendered views for
the image targets, fixed random unit vectors per class for the text targets), AdamW pretraining
through the shared engine (``cmcr_core.engine.train`` with ``recon_param_groups``), then a
logistic-regression probe on the SVM-protocol features (2C: max over the queries, max + mean
pool of the patch tokens) of FPS-sampled, un-augmented clouds. Everything on the CPU.

Usage:

    python benchmarks/recon_probe.py --threads 1
    python benchmarks/recon_probe.py --epochs 40 --preset ci64 --seeds 0 1 2

Prints one line per (seed, encoder) and the mean over seeds. Note that the text targets are class vectors,
so ``rec+img+text`` sees class identity through its text teacher, as ReCon does through category texts;
``rec+img`` (w_text = 0) and ``rec`` (reconstruction only) show what is learnt without it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcr_core.data.objects import (
    SHAPE_CLASSES,
    ObjectPointDataset,
    TinyImageTeacher,
    class_text_vectors,
    collate_objects,
    make_synthetic_objects,
    precompute_teacher_targets,
)
from cmcr_core.engine import OptimizerSettings, TrainSettings, train
from cmcr_core.methods.recon import (
    RECON_PRESETS,
    ReConMethod,
    extract_global_features,
    linear_probe,
    recon_param_groups,
)

IMG_DIM, TEXT_DIM = 32, 24
VARIANTS = {
    "random": None,
    "rec+img+text": dict(w_rec=1.0, w_img=1.0, w_text=1.0),
    "rec+img": dict(w_rec=1.0, w_img=1.0, w_text=0.0),
    "rec": dict(w_rec=1.0, w_img=0.0, w_text=0.0),
}


def pretrain(
    method: ReConMethod, dataset: ObjectPointDataset, epochs: int, batch_size: int, lr: float, seed: int
) -> list[dict[str, float]]:
    """Pretrain with the shared engine (AdamW, reference param groups, constant lr); mean losses per epoch."""
    steps_per_epoch = len(dataset) // batch_size

    def batches(epoch: int, start: int):
        dataset.set_epoch(epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        loader = DataLoader(
            dataset,
            batch_size,
            sampler=order[start * batch_size :].tolist(),
            drop_last=True,
            collate_fn=collate_objects,
        )
        return loader

    settings = TrainSettings.for_epochs(
        epochs,
        steps_per_epoch,
        optimizer=OptimizerSettings(name="adamw", lr=lr, weight_decay=0.05),
        checkpoint_every=0,
        log_every=1,
        display_every=10**9,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(method, batches, run_dir, settings, param_groups=recon_param_groups(method, lr, 0.05))
    history = []
    for epoch in range(epochs):
        rows = [r for r in result.records if (r["step"] - 1) // steps_per_epoch == epoch]
        history.append(
            {k: sum(r[k] for r in rows) / len(rows) for k in ("rec", "img", "text") if k in rows[0]}
        )
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ci64", choices=sorted(RECON_PRESETS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    classes = SHAPE_CLASSES
    train = make_synthetic_objects(
        args.train_per_class, 1024, seed=100, classes=classes, image_size=args.image_size
    )
    test = make_synthetic_objects(
        args.test_per_class,
        1024,
        seed=100,
        classes=classes,
        image_size=args.image_size,
        first_index=len(train.objects),
    )
    teacher = TinyImageTeacher(out_dim=IMG_DIM, seed=0)
    text = class_text_vectors(len(classes), TEXT_DIM, seed=0, num_prompts=4)
    targets = precompute_teacher_targets(
        train.images,
        train.objects.ids,
        train.objects.labels,
        teacher,
        text,
        num_views=4,
        image_size=args.image_size,
    )
    pretrain_set = ObjectPointDataset(train.objects, args.points, "random", True, "rotate_y", targets)

    def probe_points(objects):
        ds = ObjectPointDataset(objects, args.points, sampling="fps", normalize=True)
        return torch.from_numpy(np.stack([ds[i]["points"] for i in range(len(ds))]))

    train_x, test_x = probe_points(train.objects), probe_points(test.objects)
    train_y = torch.from_numpy(train.objects.labels)
    test_y = torch.from_numpy(test.objects.labels)
    print(
        f"{len(classes)} classes, {len(train_y)} train / {len(test_y)} test objects, N={args.points}, "
        f"preset={args.preset}, epochs={args.epochs}, batch={args.batch}, lr={args.lr}, "
        f"threads={args.threads}; chance = {1 / len(classes):.3f}"
    )
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for variant in args.variants:
            torch.manual_seed(seed)
            weights = VARIANTS[variant] or {}
            method = ReConMethod(**RECON_PRESETS[args.preset], img_dim=IMG_DIM, text_dim=TEXT_DIM, **weights)
            start = time.perf_counter()
            history = (
                pretrain(method, pretrain_set, args.epochs, args.batch, args.lr, seed) if weights else []
            )
            elapsed = time.perf_counter() - start
            feats_train = extract_global_features(method.encoder, train_x, kind="svm")
            feats_test = extract_global_features(method.encoder, test_x, kind="svm")
            probe = linear_probe(feats_train, train_y, feats_test, test_y, len(classes), seed=seed)
            results[variant].append(probe["test_acc"])
            losses = ""
            if history:
                first, last = history[0], history[-1]
                losses = " ".join(f"{k} {first[k]:.3f}->{last[k]:.3f}" for k in first)
            print(
                f"seed {seed} {variant:13s} probe train {probe['train_acc']:.3f} test {probe['test_acc']:.3f}"
                f"  pretrain {elapsed:5.1f}s {losses}"
            )
    for variant, accs in results.items():
        print(
            f"mean over {len(accs)} seed(s): {variant:13s} test acc {np.mean(accs):.3f} +- {np.std(accs):.3f}"
        )


if __name__ == "__main__":
    main()
