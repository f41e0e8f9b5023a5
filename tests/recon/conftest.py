"""ReCon tests: single-threaded torch, small synthetic objects shared by the session."""

from __future__ import annotations

import pytest
import torch

from cmcr_core.data.objects import SyntheticObjects, make_synthetic_objects

torch.set_num_threads(1)

CLASSES = ("box", "sphere", "cylinder", "torus")


@pytest.fixture(scope="session")
def small_objects() -> tuple[SyntheticObjects, SyntheticObjects]:
    """(train, test): 4 classes, 6 + 2 objects per class, 256 points, 16 x 16 renders."""
    train = make_synthetic_objects(6, 256, seed=3, classes=CLASSES, image_size=16)
    test = make_synthetic_objects(2, 256, seed=3, classes=CLASSES, image_size=16, first_index=24)
    return train, test
