"""The synthetic world as nuscenes-devkit sees it: tables, files, point clouds, lidarseg evaluation,
projection, intrinsics and the camera truth maps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from nuscenes.eval.lidarseg.evaluate import LidarSegEval
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.data_io import load_bin_file
from nuscenes.utils.splits import create_splits_scenes
from PIL import Image
from pyquaternion import Quaternion

from cmcr_core.data.labels import FINE_CLASS_NAMES, FINE_NAME_TO_INDEX
from cmcr_core.data.synthetic import CAMERA_CHANNELS, CAMERA_RIG, SCENE_NAMES

CHANNELS = ("LIDAR_TOP", *CAMERA_CHANNELS)
TOKEN = re.compile(r"^[0-9a-f]{32}$")


def test_world_loads_with_official_names_and_all_channels(nusc, synthetic_world: Path, synthetic_world_args):
    n_scenes, per_scene = synthetic_world_args["scenes"], synthetic_world_args["samples_per_scene"]
    names = [scene["name"] for scene in nusc.scene]
    assert names == list(SCENE_NAMES[:n_scenes])
    splits = create_splits_scenes()
    assert set(names) <= set(splits["mini_train"]) | set(splits["mini_val"])
    assert set(splits["mini_val"]) <= set(names)
    assert len(nusc.sample) == n_scenes * per_scene
    for scene in nusc.scene:
        token, walked = scene["first_sample_token"], []
        while token:
            walked.append(token)
            token = nusc.get("sample", token)["next"]
        assert len(walked) == scene["nbr_samples"] == per_scene and walked[-1] == scene["last_sample_token"]
    for sample in nusc.sample:
        assert tuple(sample["data"]) == CHANNELS
        for channel, sd_token in sample["data"].items():
            sd = nusc.get("sample_data", sd_token)
            assert sd["is_key_frame"] and (synthetic_world / sd["filename"]).is_file()
            assert sd["filename"].startswith(f"samples/{channel}/")
    for table in ("sample", "sample_data", "ego_pose", "calibrated_sensor", "scene", "log", "category"):
        assert all(TOKEN.match(record["token"]) for record in getattr(nusc, table))
    # lidarseg records are keyed by the LiDAR sample_data token, one label file each (gotchas 1, 2).
    lidar_tokens = {s["data"]["LIDAR_TOP"] for s in nusc.sample}
    assert {r["token"] for r in nusc.lidarseg} == lidar_tokens
    assert all(r["token"] == r["sample_data_token"] for r in nusc.lidarseg)
    assert len(list((synthetic_world / "lidarseg" / "v1.0-mini").iterdir())) == len(lidar_tokens)
    assert [c["name"] for c in nusc.category] == list(FINE_CLASS_NAMES)
    assert [c["index"] for c in nusc.category] == list(range(32))


def test_point_clouds_are_nuscenes_sweeps(nusc, synthetic_world: Path):
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        raw = np.fromfile(synthetic_world / sd["filename"], dtype=np.float32).reshape(-1, 5)
        pc = LidarPointCloud.from_file(str(synthetic_world / sd["filename"]))
        labels = load_bin_file(str(synthetic_world / nusc.get("lidarseg", sd["token"])["filename"]))
        assert pc.points.shape == (4, len(raw)) and len(labels) == len(raw)
        assert 20_000 <= len(raw) <= 35_000
        intensity = raw[:, 3]
        assert intensity.min() >= 0 and intensity.max() <= 255
        assert np.array_equal(intensity, np.round(intensity))
        assert set(np.unique(raw[:, 4]).astype(int)) <= set(range(32))
        assert labels.max() < 31  # never the ego vehicle
        ranges = np.linalg.norm(raw[:, :3], axis=1)
        assert ranges.min() >= 0.95 and ranges.max() <= 80.5
        # In the ego frame no point lies on the ego body (the ego is not part of the world).
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ego = raw[:, :3] @ Quaternion(cs["rotation"]).rotation_matrix.T + cs["translation"]
        on_body = (ego[:, 0] > -1.0) & (ego[:, 0] < 3.8) & (np.abs(ego[:, 1]) < 1.0) & (ego[:, 2] > 0.1)
        assert not on_body.any()


def test_lidarseg_eval_of_ground_truth_gives_miou_one(nusc, synthetic_world: Path, tmp_path: Path):
    mapper = LidarsegClassMapper(nusc)
    lut = np.array([mapper.fine_idx_2_coarse_idx_mapping[i] for i in range(32)], dtype=np.uint8)
    out = tmp_path / "lidarseg" / "mini_val"
    out.mkdir(parents=True)
    classes = set()
    for sample in nusc.sample:
        token = sample["data"]["LIDAR_TOP"]
        coarse = lut[load_bin_file(str(synthetic_world / nusc.get("lidarseg", token)["filename"]))]
        classes |= set(coarse.tolist())
        coarse[coarse == 0] = 1  # predictions must be 1..16; ignored points do not count
        coarse.tofile(out / f"{token}_lidarseg.bin")
    results = LidarSegEval(nusc, str(tmp_path), "mini_val").evaluate()
    assert results["miou"] == 1.0
    assert len(classes - {0}) >= 8  # non-trivial: many classes take part


def test_devkit_projection_and_intrinsics(nusc, synthetic_world: Path, synthetic_world_args):
    width, height = synthetic_world_args["image_size"]
    sample = nusc.sample[0]
    for cam in CAMERA_RIG:
        sd = nusc.get("sample_data", sample["data"][cam.channel])
        k = np.array(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
        # The rig is defined at 1600x900; smaller images scale focal lengths and principal point.
        np.testing.assert_allclose(k[0], [cam.focal * width / 1600, 0, cam.principal[0] * width / 1600])
        np.testing.assert_allclose(k[1], [0, cam.focal * height / 900, cam.principal[1] * height / 900])
        assert (sd["width"], sd["height"]) == (width, height)
        assert Image.open(synthetic_world / sd["filename"]).size == (width, height)
        points, _, image = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sd["token"])
        assert points.shape[1] > 500 and image.size == (width, height)


def test_truth_index_covers_every_camera_image(nusc, synthetic_world: Path):
    index = json.loads((synthetic_world / "truth" / "index.json").read_text())
    assert index["classes"] == list(FINE_CLASS_NAMES)
    frames = {f["sample_data_token"]: f for f in index["frames"]}
    camera_tokens = {s["data"][ch] for s in nusc.sample for ch in CAMERA_CHANNELS}
    assert set(frames) == camera_tokens
    seen = set()
    for token in camera_tokens:
        sd, frame = nusc.get("sample_data", token), frames[token]
        assert frame["image"] == sd["filename"]
        assert frame["truth"] == f"truth/{frame['channel']}/{Path(sd['filename']).stem}.png"
        truth = Image.open(synthetic_world / frame["truth"])
        assert truth.mode == "L" and truth.size == (sd["width"], sd["height"])
        seen |= set(np.unique(np.asarray(truth)).tolist())
    required = ["flat.driveable_surface", "flat.sidewalk", "flat.terrain", "static.manmade",
                "static.vegetation", "vehicle.car", "human.pedestrian.adult", "movable_object.barrier",
                "movable_object.trafficcone"]
    assert {FINE_NAME_TO_INDEX[n] for n in required} <= seen
    assert max(seen) < 31


def test_images_are_textured_not_flat_class_colours(nusc, synthetic_world: Path):
    """Within one class the colour varies (texture, shading), so a class is not a lookup of one RGB value."""
    index = json.loads((synthetic_world / "truth" / "index.json").read_text())
    frame = next(f for f in index["frames"] if f["channel"] == "CAM_FRONT")
    rgb = np.asarray(Image.open(synthetic_world / frame["image"])).reshape(-1, 3).astype(float)
    truth = np.asarray(Image.open(synthetic_world / frame["truth"])).reshape(-1)
    for name in ("flat.driveable_surface", "static.manmade"):
        pixels = rgb[truth == FINE_NAME_TO_INDEX[name]]
        assert len(pixels) > 100 and pixels.std(axis=0).mean() > 4.0
