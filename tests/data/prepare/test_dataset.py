"""PreparedDataset fields against the original files, superpixels against scikit-image, fork safety."""

from __future__ import annotations

import io
import multiprocessing as mp
import pickle
from fractions import Fraction

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from PIL import Image
from skimage.segmentation import slic

from cmcr_core.data.prepared import PreparedDataError, PreparedDataset, load_prepared_index
from cmcr_core.data.superpixels import (
    SlicParams,
    consecutive_ids,
    decode_jpeg,
    slic_superpixels,
    upsample_nearest,
)

from .conftest import VERSION

CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]


def test_items_expose_the_original_data(world, prepared_slic):
    nusc = NuScenes(VERSION, str(world), verbose=False)
    dataset = PreparedDataset(prepared_slic, "all", allow_incomplete=True)
    assert len(dataset) == 2 and dataset.camera_names == CAMERAS
    for i in range(len(dataset)):
        item = dataset[i]
        sample = nusc.get("sample", item.token)
        assert item.scene == nusc.get("scene", sample["scene_token"])["name"]
        assert item.timestamp == sample["timestamp"] and item.lidar_token == sample["data"]["LIDAR_TOP"]
        assert item.camera_tokens == [sample["data"][c] for c in CAMERAS]
        lidar = nusc.get("sample_data", item.lidar_token)
        assert item.lidar_timestamp == lidar["timestamp"]
        points = LidarPointCloud.from_file(f"{world}/{lidar['filename']}").points.T
        assert item.points.dtype == np.float32 and item.points.shape == points.shape
        np.testing.assert_array_equal(item.points, points)
        assert item.pairings.shape[1] == 4 and np.issubdtype(item.pairings.dtype, np.integer)
        for c, token in enumerate(item.camera_tokens):
            record = nusc.get("sample_data", token)
            raw = (world / record["filename"]).read_bytes()
            assert item.jpeg_bytes[c] == raw  # stored as is, never re-encoded
            decoded = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
            np.testing.assert_array_equal(item.images[c], decoded)
            assert tuple(item.image_hw[c]) == (record["height"], record["width"]) == decoded.shape[:2]
            assert item.camera_timestamps[c] == record["timestamp"]
            # scale 1 = SLidR's full-resolution SLIC, ids renumbered 0..n-1.
            reference = slic(decoded, n_segments=150, compactness=6, sigma=3.0, start_label=0)
            np.testing.assert_array_equal(item.superpixels[c], np.unique(reference, return_inverse=True)[1]
                                          .reshape(reference.shape))
        assert item.images.shape == (6, *item.image_hw[0], 3) and item.images.dtype == np.uint8
        assert item.superpixels.shape == (6, *item.image_hw[0]) and item.superpixels.dtype == np.uint16


def test_no_superpixels_and_lazy_fields(prepared_plain):
    item = PreparedDataset(prepared_plain, "all")[0]
    assert item.superpixels is None
    assert item.labels.shape == item.labels_fine.shape == (len(item.points),)


def _read_in_child(dataset: PreparedDataset, index: int, results) -> None:
    results.put(dataset[index].points.sum(dtype=np.float64))


def test_dataset_survives_fork_and_pickling(prepared_plain):
    dataset = PreparedDataset(prepared_plain, "all")
    expected = [dataset[i].points.sum(dtype=np.float64) for i in range(2)]  # opens handles in the parent
    results = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_read_in_child, args=(dataset, 1, results))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0 and results.get(timeout=5) == expected[1]
    clone = pickle.loads(pickle.dumps(dataset))  # spawn-style hand-over: no h5py handle travels
    assert clone._open == {} and clone[0].points.sum(dtype=np.float64) == expected[0]


def test_consecutive_ids_and_nearest_upsampling_against_references():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([3, 7, 7, 40, 250, 1000]), size=(30, 50))
    expected_ids = np.unique(labels, return_inverse=True)[1].reshape(30, 50)
    np.testing.assert_array_equal(consecutive_ids(labels), expected_ids)
    small = rng.integers(0, 255, size=(45, 80)).astype(np.uint8)
    for height, width in [(90, 160), (900, 1600), (135, 240)]:
        expected = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(upsample_nearest(small, height, width), expected)
    # Odd ratios: exact rational pixel-centre rule (PIL rounds some exact ties the other way).
    rows = [int(Fraction(2 * r + 1, 2) * Fraction(45, 137)) for r in range(137)]
    cols = [int(Fraction(2 * c + 1, 2) * Fraction(80, 211)) for c in range(211)]
    np.testing.assert_array_equal(upsample_nearest(small, 137, 211), small[np.ix_(rows, cols)])


def test_fast_slic_is_slic_on_the_downscaled_image():
    rng = np.random.default_rng(1)
    image = np.kron(rng.integers(0, 255, size=(9, 16, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    fast = slic_superpixels(image, SlicParams(scale=0.5))
    small = np.asarray(Image.fromarray(image).resize((80, 45), Image.Resampling.BILINEAR, reducing_gap=2.0))
    reference = slic(small, n_segments=150, compactness=6, sigma=1.5, start_label=0)
    reference = Image.fromarray(reference.astype(np.uint8)).resize((160, 90), Image.Resampling.NEAREST)
    reference = np.asarray(reference)
    np.testing.assert_array_equal(fast, np.unique(reference, return_inverse=True)[1].reshape(90, 160))


def test_reduced_jpeg_decoding_matches_a_full_decode_resized():
    rng = np.random.default_rng(2)
    image = np.kron(rng.integers(0, 255, size=(9, 16, 3)), np.ones((20, 20, 1))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    reduced, full_hw = decode_jpeg(buffer.getvalue(), 0.5)
    assert full_hw == (180, 320) and reduced.shape == (90, 160, 3)
    reference = np.asarray(Image.fromarray(image).resize((160, 90), Image.Resampling.BOX)).astype(float)
    assert np.abs(reduced - reference).mean() < 4.0


def test_unfinished_split_is_an_error_unless_allowed(prepared_slic):
    missing = load_prepared_index(prepared_slic).header["num_samples"] - 2
    with pytest.raises(PreparedDataError, match=f"incomplete: {missing} samples not prepared yet"):
        PreparedDataset(prepared_slic, "all")
