"""Named scene subsets of a nuScenes release: official splits, mini splits and the "parametrize" split.

Scene membership comes from the devkit (`nuscenes.utils.splits.create_splits_scenes`); the held-out list
of the SLidR/CMCR "parametrize" pretraining split is valeoai/SLidR's. Every subset is filtered to the
scenes present in the dataroot and kept in `scene.json` order (label fractions depend on that order).
"""

from __future__ import annotations

from collections.abc import Sequence

# valeoai/SLidR: 100 official-train scenes held out from pretraining (phase "verifying").
HELD_OUT_SCENE_NUMBERS: tuple[int, ...] = (
    8, 9, 19, 29, 32, 42, 45, 49, 52, 54, 56, 66, 67, 73, 131, 152, 166, 168, 183, 190,
    194, 208, 210, 211, 241, 243, 248, 259, 260, 261, 287, 292, 297, 305, 306, 350, 352, 358, 361, 365,
    368, 377, 388, 391, 395, 413, 427, 428, 438, 444, 452, 453, 459, 463, 464, 475, 513, 533, 544, 575,
    587, 589, 642, 652, 658, 669, 678, 687, 701, 703, 706, 710, 715, 726, 735, 740, 758, 786, 790, 804,
    806, 847, 856, 868, 882, 897, 899, 976, 996, 1012,
    1015, 1016, 1018, 1020, 1024, 1044, 1058, 1094, 1098, 1107,
)
HELD_OUT_SCENES: frozenset[str] = frozenset(f"scene-{n:04d}" for n in HELD_OUT_SCENE_NUMBERS)

# Devkit split names stored in every prepared index (detection/tracking variants are not needed here).
OFFICIAL_SPLITS: tuple[str, ...] = ("train", "val", "test", "mini_train", "mini_val")
PRETRAIN_SPLITS: tuple[str, ...] = ("parametrize", "verifying")


def pretraining_base_split(version: str) -> str:
    """The split that "parametrize"/"verifying" are carved from for a release version.

    The full releases use the official `train` split (as SLidR). v1.0-mini has only 6 official
    train scenes, so its explicit preset carves from `mini_train` instead (SLidR's code: pretraining on
    mini_train minus scene-1094 = 7 scenes; "verifying" = scene-1094).
    """
    return "mini_train" if version.endswith("mini") else "train"


def scene_subsets(scene_names_in_order: Sequence[str], version: str) -> dict[str, list[str]]:
    """Named scene subsets restricted to the given scenes, each in the given (scene.json) order.

    Args:
        scene_names_in_order: names of the scenes present in the dataroot, in `nusc.scene` order.
        version: release folder name, e.g. "v1.0-trainval" or "v1.0-mini".

    Returns:
        {split name: [scene names]} for OFFICIAL_SPLITS + PRETRAIN_SPLITS; subsets may be empty (an empty
        subset is an error only when it is read, see PreparedDataset).
    """
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes(verbose=False)
    members = {name: set(official[name]) for name in OFFICIAL_SPLITS}
    base = members[pretraining_base_split(version)]
    members["parametrize"] = base - HELD_OUT_SCENES
    members["verifying"] = base & HELD_OUT_SCENES
    return {name: [s for s in scene_names_in_order if s in scenes] for name, scenes in members.items()}
