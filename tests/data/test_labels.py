"""Label constants against the devkit (colour map order, LidarsegClassMapper by name)."""

from __future__ import annotations

import pytest
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from nuscenes.utils.color_map import get_colormap

from cmcr_core.data import labels


def test_fine_names_are_the_official_32_in_index_order():
    assert labels.FINE_CLASS_NAMES == tuple(get_colormap().keys())
    assert labels.NUM_FINE_CLASSES == 32
    assert labels.FINE_NAME_TO_INDEX["flat.sidewalk"] == 26
    assert labels.FINE_NAME_TO_INDEX["static.vegetation"] == 30


def test_fine_to_coarse_matches_the_devkit_mapper(nusc):
    mapper = LidarsegClassMapper(nusc)
    assert mapper.coarse_name_2_coarse_idx_mapping == labels.COARSE_NAME_TO_INDEX
    assert mapper.fine_name_2_coarse_name_mapping == labels.FINE_TO_COARSE_NAME
    assert mapper.fine_idx_2_coarse_idx_mapping == dict(enumerate(labels.FINE_TO_COARSE))
    assert labels.NUM_COARSE_CLASSES == 16 and labels.COARSE_CLASS_NAMES[labels.IGNORE_INDEX] == "ignore"


def test_fine_to_coarse_lut_is_built_by_name():
    # A dataset whose category.json lists classes in another order must map by name, not position.
    names = ["vehicle.car", "flat.sidewalk", "noise", "static.vegetation"]
    lut = labels.fine_to_coarse_lut({name: i + 3 for i, name in enumerate(names)})
    coarse = labels.COARSE_NAME_TO_INDEX
    assert lut == [0, 0, 0, coarse["car"], coarse["sidewalk"], 0, coarse["vegetation"]]
    with pytest.raises(ValueError, match="vehicle.spaceship"):
        labels.fine_to_coarse_lut({"vehicle.spaceship": 1})
