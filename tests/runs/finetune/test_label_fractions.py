"""Label-fraction subsets: the published scene selection (every skip-th train scene in scene.json order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nuscenes.utils.splits import create_splits_scenes

from cmcr_core.data.label_fractions import (
    LabelSubsetError,
    kitti_label_scans,
    nuscenes_label_scenes,
    skip_for_fraction,
)
from cmcr_core.data.prepared import PreparedDataset
from cmcr_core.runs.finetune import label_subset

PUBLISHED_COUNTS = {0.01: 7, 0.05: 35, 0.1: 70, 0.25: 175, 1.0: 700}  # PROTOCOLS.md §8.1


@pytest.mark.parametrize("fraction", sorted(PUBLISHED_COUNTS))
def test_nuscenes_subsets_follow_scene_json_order(fraction: float) -> None:
    splits = create_splits_scenes(verbose=False)
    everything = splits["train"] + splits["val"] + splits["test"]
    order = [everything[i] for i in np.random.default_rng(0).permutation(len(everything))]  # not sorted
    skip = skip_for_fraction(fraction)
    kept = nuscenes_label_scenes(order, splits["train"], skip)
    train_in_order = [s for s in order if s in set(splits["train"])]
    # The c-th train scene (c = 1..700) is kept when c % skip == 0: positions skip-1, 2*skip-1, ...
    assert kept == train_in_order[skip - 1::skip]
    assert len(kept) == PUBLISHED_COUNTS[fraction]
    if fraction == 0.01:
        assert kept[0] == train_in_order[99] and kept[-1] == train_in_order[699]


def test_kitti_one_percent_is_192_scans() -> None:
    scans = [f"{seq:02d}/{i:06d}" for seq, n in ((0, 9130), (5, 10000)) for i in range(n)]  # 19,130 scans
    kept = kitti_label_scans(list(reversed(scans)), skip_for_fraction(0.01))
    assert len(kept) == 192 and kept[0] == "00/000000" and kept[1] == "00/000100"


def test_empty_subset_and_unknown_fraction_are_errors() -> None:
    with pytest.raises(LabelSubsetError, match="empty"):  # defect D21: never a silent fallback
        nuscenes_label_scenes(["scene-0001", "scene-0002"], ["scene-0001"], skip=100)
    with pytest.raises(LabelSubsetError, match="published"):
        skip_for_fraction(0.02)


def test_prepared_subset_holds_every_keyframe_of_the_kept_scenes(tiny_recipe, prepared_world: Path) -> None:
    source = PreparedDataset(prepared_world, "mini_train")
    subset, info = label_subset(tiny_recipe, source)
    # mini_train of the 5-scene world in scene.json order: scene-0061, scene-1094, scene-0553; skip 3.
    assert info["scenes"] == ["scene-0553"] and info["skip"] == 3
    assert sorted(subset[i].token for i in range(len(subset))) == sorted(
        source[i].token for i in range(len(source)) if source[i].scene == "scene-0553")
    assert info["scans"] == len(subset) == 2
