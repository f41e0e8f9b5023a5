"""Write a synthetic world in the nuScenes v1.0-mini layout (with nuScenes-lidarseg), plus per-camera
class-index truth images, so that nuscenes-devkit loads, projects and evaluates it like the real thing.

Layout written under `root` (the nuScenes layout; docs/synthetic-world.md):

    v1.0-mini/*.json            13 base tables + lidarseg.json (category.json with "index")
    samples/LIDAR_TOP/*.pcd.bin 5 float32 columns x, y, z, intensity, ring (LiDAR frame)
    samples/CAM_*/*.jpg         RGB JPEG, quality JPEG_QUALITY
    lidarseg/v1.0-mini/<lidar sample_data token>_lidarseg.bin   uint8 fine index per point
    maps/<token>.png            semantic-prior mask the devkit requires
    truth/CAM_*/<jpeg stem>.png uint8 fine index per pixel (0 = sky); truth/index.json lists them
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from cmcr_core.data.labels import FINE_CLASS_NAMES
from cmcr_core.data.synthetic import nuscenes_tables as tb
from cmcr_core.data.synthetic.layout import Scene, generate_scene
from cmcr_core.data.synthetic.pinhole import pixel_directions
from cmcr_core.data.synthetic.sensors import (
    CAMERA_RIG,
    LIDAR_CHANNEL,
    LIDAR_ROTATION,
    LIDAR_TRANSLATION,
    LidarModel,
    lidar_sweep,
    sensor_to_world,
)
from cmcr_core.data.synthetic.shading import render_camera
from cmcr_core.ops.sizes import parse_size

SAMPLE_INTERVAL_US = 500_000
"""Keyframes at 2 Hz, as in nuScenes."""
JPEG_QUALITY = 90
MAX_SAMPLES_PER_SCENE = 100
MAX_IMAGE_SIDE = 4096
MANAGED = ("v1.0-mini", "samples", "sweeps", "lidarseg", "maps", "truth")
"""Top-level entries this writer owns under the output folder."""


@dataclass(frozen=True)
class WorldSummary:
    """What `write_nuscenes_world` wrote.

    Attributes:
        root: dataroot to pass to `NuScenes(version, dataroot)`; version: "v1.0-mini".
        scene_names: official names of the scenes written, in order.
        samples: number of keyframes; points_per_sweep: LiDAR points of each keyframe, in order.
        image_size: (width, height) of the camera images.
        truth_index: path of truth/index.json; bytes_written: total size of all files written.
    """

    root: Path
    version: str
    scene_names: tuple[str, ...]
    samples: int
    points_per_sweep: tuple[int, ...]
    image_size: tuple[int, int]
    truth_index: Path
    bytes_written: int


def parse_image_size(text: str) -> tuple[int, int]:
    """Parse "WIDTHxHEIGHT" (e.g. "1600x900") into (width, height) of the cameras; ValueError names the bad
    value."""
    size = parse_size(text, "--image-size")
    _check_image_size(size)
    return size


def _check_image_size(size: tuple[int, int]) -> None:
    if not all(16 <= v <= MAX_IMAGE_SIDE for v in size):
        raise ValueError(f"image size {size[0]}x{size[1]}: each side must be in 16..{MAX_IMAGE_SIDE} pixels")


@lru_cache(maxsize=4)
def _scene(seed: int, scene_index: int, samples_per_scene: int) -> Scene:
    # The layout covers the whole drive, including the last camera's delay after its keyframe.
    duration = (samples_per_scene - 1) * SAMPLE_INTERVAL_US / 1e6 + 0.05
    return generate_scene(seed, scene_index, duration)


@lru_cache(maxsize=8)
def _directions(channel: str, width: int, height: int) -> np.ndarray:
    cam = next(c for c in CAMERA_RIG if c.channel == channel)
    return pixel_directions(cam.intrinsic(width, height), width, height)


@dataclass(frozen=True)
class _SampleJob:
    root: Path
    seed: int
    scene_index: int
    sample_index: int
    samples_per_scene: int
    width: int
    height: int


def _write_sample(job: _SampleJob) -> dict:
    """Render one keyframe (LiDAR + 6 cameras), write its files and return its records and stats."""
    scene = _scene(job.seed, job.scene_index, job.samples_per_scene)
    seed, si, k = job.seed, job.scene_index, job.sample_index
    log = tb.log_name(si)
    t_key = tb.scene_start_us(si) + k * SAMPLE_INTERVAL_US
    sample_token = tb.make_token(seed, "sample", si, k)
    calib = tb.calibrated_sensor_records(seed, si, job.width, job.height)
    out: dict = {"sample": {"token": sample_token, "timestamp": t_key, "prev": "", "next": "",
                            "scene_token": tb.make_token(seed, "scene", si)},
                 "sample_data": {}, "ego_pose": [], "truth": [], "bytes": 0}

    def reading(channel: str, timestamp: int, fileformat: str, filename: str) -> tuple[np.ndarray, float]:
        """Add the ego pose and sample_data records of one reading; return the ego pose (world frame)."""
        position, yaw = scene.ego_pose((timestamp - tb.scene_start_us(si)) / 1e6)
        pose_token = tb.make_token(seed, "ego_pose", si, k, channel)
        g_pos, g_yaw = scene.to_global(position, yaw)
        out["ego_pose"].append(tb.ego_pose_record(pose_token, timestamp, g_pos, g_yaw))
        w, h = (0, 0) if fileformat == "pcd" else (job.width, job.height)
        out["sample_data"][channel] = tb.sample_data_record(
            tb.make_token(seed, "sample_data", si, k, channel), sample_token, pose_token,
            calib[channel]["token"], timestamp, fileformat, w, h, filename)
        return position, yaw

    lidar_file = f"samples/{LIDAR_CHANNEL}/{log}__{LIDAR_CHANNEL}__{t_key}.pcd.bin"
    position, yaw = reading(LIDAR_CHANNEL, t_key, "pcd", lidar_file)
    origin, rotation = sensor_to_world(position, yaw, LIDAR_TRANSLATION, np.asarray(LIDAR_ROTATION))
    sweep = lidar_sweep(scene.world, origin, rotation, LidarModel(), np.random.default_rng([seed, si, k, 1]))
    out["bytes"] += _write(job.root / lidar_file, sweep.points.tobytes())
    lidar_sd = out["sample_data"][LIDAR_CHANNEL]["token"]
    seg_file = f"lidarseg/{tb.VERSION}/{lidar_sd}_lidarseg.bin"
    out["bytes"] += _write(job.root / seg_file, sweep.labels.tobytes())
    out["lidarseg"] = {"token": lidar_sd, "sample_data_token": lidar_sd, "filename": seg_file}
    out["points"] = len(sweep.labels)

    for cam in CAMERA_RIG:
        t_cam = t_key + cam.time_offset_us
        stem = f"{log}__{cam.channel}__{t_cam}"
        image_file = f"samples/{cam.channel}/{stem}.jpg"
        position, yaw = reading(cam.channel, t_cam, "jpg", image_file)
        origin, rotation = sensor_to_world(position, yaw, cam.translation, cam.rotation)
        image = render_camera(scene.world, origin, rotation, cam.intrinsic(job.width, job.height), job.width,
                              job.height, scene.sun, scene.sky_tint,
                              directions_camera=_directions(cam.channel, job.width, job.height))
        truth_file = f"truth/{cam.channel}/{stem}.png"
        out["bytes"] += _save_image(job.root / image_file, Image.fromarray(image.rgb), "JPEG",
                                    quality=JPEG_QUALITY)
        out["bytes"] += _save_image(job.root / truth_file, Image.fromarray(image.classes), "PNG",
                                    compress_level=1)
        out["truth"].append({"sample_data_token": out["sample_data"][cam.channel]["token"],
                             "channel": cam.channel, "image": image_file, "truth": truth_file})
    return out


def _write(path: Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def _save_image(path: Path, image: Image.Image, fmt: str, **options) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **options)
    return path.stat().st_size


def write_nuscenes_world(
    out: str | Path,
    scenes: int = 10,
    samples_per_scene: int = 10,
    seed: int = 0,
    image_size: tuple[int, int] = (1600, 900),
    overwrite: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> WorldSummary:
    """Write a procedural world as a nuScenes v1.0-mini dataset (with lidarseg) and camera truth maps.

    Args:
        out: output folder (the devkit's dataroot); created if needed.
        scenes: number of scenes, 1..10 (they take the official v1.0-mini names, see SCENE_NAMES).
        samples_per_scene: keyframes per scene (0.5 s apart), 1..MAX_SAMPLES_PER_SCENE.
        seed: world seed (>= 0); the same arguments give byte-identical files.
        image_size: (width, height) of the camera images; intrinsics scale from 1600x900.
        overwrite: replace a world already written there (only the folders this writer owns).
        workers: processes rendering keyframes in parallel (1 = in this process).
        progress: called as progress(done, total) after each keyframe.

    Returns:
        A WorldSummary.

    Raises:
        ValueError: an argument is out of range. FileExistsError: `out` already holds a dataset and
        `overwrite` is false.
    """
    if not 1 <= scenes <= tb.MAX_SCENES:
        raise ValueError(f"scenes={scenes}: must be in 1..{tb.MAX_SCENES} (the v1.0-mini scene names)")
    if not 1 <= samples_per_scene <= MAX_SAMPLES_PER_SCENE:
        raise ValueError(f"samples_per_scene={samples_per_scene}: must be in 1..{MAX_SAMPLES_PER_SCENE}")
    if seed < 0:
        raise ValueError(f"seed={seed}: must be >= 0")
    if workers < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    width, height = image_size
    _check_image_size((width, height))
    root = Path(out)
    existing = [name for name in MANAGED if (root / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{root} already contains {', '.join(existing)}; "
            "pass overwrite=True (--overwrite) to replace them")
    for name in existing:
        shutil.rmtree(root / name)
    (root / tb.VERSION).mkdir(parents=True)

    jobs = [_SampleJob(root, seed, si, k, samples_per_scene, width, height)
            for si in range(scenes) for k in range(samples_per_scene)]
    if workers == 1:
        results = _run(map(_write_sample, jobs), len(jobs), progress)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = _run(pool.map(_write_sample, jobs), len(jobs), progress)
    return _write_tables(root, seed, scenes, samples_per_scene, (width, height), results)


def _run(results, total: int, progress: Callable[[int, int], None] | None) -> list[dict]:
    collected = []
    for result in results:
        collected.append(result)
        if progress is not None:
            progress(len(collected), total)
    return collected


def _write_tables(
    root: Path, seed: int, scenes: int, per_scene: int, size: tuple[int, int], results: list[dict]
) -> WorldSummary:
    """Assemble and write the 14 tables, the map mask and the truth index from the keyframe results."""
    tables: dict[str, list] = {name: [] for name in tb.TABLES}
    tables["category"] = tb.category_records(seed)
    tables["sensor"] = tb.sensor_records(seed)
    tables["visibility"] = tb.visibility_records()
    truth: list[dict] = []
    for si in range(scenes):
        part = results[si * per_scene : (si + 1) * per_scene]
        tables["log"].append(tb.log_record(seed, si))
        tables["calibrated_sensor"] += list(tb.calibrated_sensor_records(seed, si, *size).values())
        samples = [r["sample"] for r in part]
        tb.link(samples)
        tables["scene"].append({
            "token": tb.make_token(seed, "scene", si), "log_token": tb.make_token(seed, "log", si),
            "nbr_samples": len(samples), "first_sample_token": samples[0]["token"],
            "last_sample_token": samples[-1]["token"], "name": tb.SCENE_NAMES[si],
            "description": f"cmcr synthetic street scene {si} of world seed {seed}",
        })
        tables["sample"] += samples
        for channel in part[0]["sample_data"]:
            readings = [r["sample_data"][channel] for r in part]
            tb.link(readings)
            tables["sample_data"] += readings
        for r in part:
            tables["ego_pose"] += r["ego_pose"]
            tables["lidarseg"].append(r["lidarseg"])
            truth += r["truth"]
    tables["map"].append(tb.map_record(seed, [log["token"] for log in tables["log"]]))
    written = sum(r["bytes"] for r in results)
    # The devkit only checks that the mask exists; a small all-foreground mask is enough.
    mask = Image.fromarray(np.full((20, 20), 255, np.uint8))
    written += _save_image(root / tables["map"][0]["filename"], mask, "PNG")
    for name in tb.TABLES:
        written += tb.write_json(root / tb.VERSION / f"{name}.json", tables[name])
    index = root / "truth" / "index.json"
    written += tb.write_json(index, {"format": "cmcr-synthetic-truth/1", "version": tb.VERSION,
                                     "image_size": list(size), "classes": list(FINE_CLASS_NAMES),
                                     "frames": truth})
    return WorldSummary(root=root, version=tb.VERSION, scene_names=tb.SCENE_NAMES[:scenes],
                        samples=len(results), points_per_sweep=tuple(r["points"] for r in results),
                        image_size=size, truth_index=index, bytes_written=written)
