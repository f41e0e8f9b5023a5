"""nuScenes table records for synthetic worlds: deterministic tokens, names, the static tables, and JSON
writing with a fixed key order (the nuScenes schema as nuscenes-devkit reads it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cmcr_core.data.labels import FINE_CLASS_NAMES
from cmcr_core.data.synthetic.sensors import CAMERA_RIG, LIDAR_CHANNEL, LIDAR_ROTATION, LIDAR_TRANSLATION

VERSION = "v1.0-mini"
SCENE_NAMES: tuple[str, ...] = (
    "scene-0061", "scene-0103", "scene-1094", "scene-0916", "scene-0553",
    "scene-0655", "scene-0757", "scene-1077", "scene-1100", "scene-0796",
)
"""Official v1.0-mini names in the order scenes are written. Any prefix of length >= 2 holds a mini_val
scene and a mini_train scene of the official train split; from 4 scenes on both mini_val scenes (the
devkit's LidarSegEval(..., 'mini_val') walks every scene of the split by name); 5 scenes add the edge
cases of SLidR's splits: scene-1094 (held out of "parametrize") and scene-0553 (mini_train, official val)."""
MAX_SCENES = len(SCENE_NAMES)
TABLES = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
    "sample_annotation", "sample_data", "scene", "sensor", "visibility", "lidarseg",
)
BASE_TIMESTAMP_US = 1533151603547590
"""First keyframe of scene 0 (µs, an August 2018 time like the real logs); scenes start 10 min apart."""
SCENE_SPACING_US = 600_000_000
LOCATION = "boston-seaport"
CATEGORY_DESCRIPTIONS = {
    "noise": "Points that are not part of any object or surface.",
    "vehicle.ego": "The ego vehicle.",
}
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


def make_token(seed: int, *parts: object) -> str:
    """32-hex token, a pure function of the world seed and a record name (never random)."""
    name = "/".join(str(p) for p in (seed, *parts))
    return hashlib.md5(f"cmcr-synthetic/{name}".encode()).hexdigest()


def log_name(scene_index: int) -> str:
    """Log name like the real ones (vehicle, local date and time, zone), from the scene's start time."""
    start = datetime.fromtimestamp(scene_start_us(scene_index) / 1e6, tz=timezone.utc)
    return "n008-" + start.strftime("%Y-%m-%d-%H-%M-%S") + "-0400"


def scene_start_us(scene_index: int) -> int:
    return BASE_TIMESTAMP_US + scene_index * SCENE_SPACING_US


def sensor_records(seed: int) -> list[dict]:
    channels = [(LIDAR_CHANNEL, "lidar")] + [(c.channel, "camera") for c in CAMERA_RIG]
    return [{"token": make_token(seed, "sensor", ch), "channel": ch, "modality": mod} for ch, mod in channels]


def calibrated_sensor_records(seed: int, scene_index: int, width: int, height: int) -> dict[str, dict]:
    """One calibration per sensor per log (as in nuScenes). Returns channel -> record."""
    records = {
        LIDAR_CHANNEL: {
            "token": make_token(seed, "calibrated_sensor", scene_index, LIDAR_CHANNEL),
            "sensor_token": make_token(seed, "sensor", LIDAR_CHANNEL),
            "translation": list(LIDAR_TRANSLATION),
            "rotation": list(LIDAR_ROTATION),
            "camera_intrinsic": [],
        }
    }
    for cam in CAMERA_RIG:
        records[cam.channel] = {
            "token": make_token(seed, "calibrated_sensor", scene_index, cam.channel),
            "sensor_token": make_token(seed, "sensor", cam.channel),
            "translation": list(cam.translation),
            "rotation": [float(v) for v in cam.rotation],
            "camera_intrinsic": cam.intrinsic(width, height).tolist(),
        }
    return records


def category_records(seed: int) -> list[dict]:
    """The lidarseg category.json: all 32 official names with their index."""
    return [
        {"token": make_token(seed, "category", name), "name": name,
         "description": CATEGORY_DESCRIPTIONS.get(name, f"Synthetic {name}."), "index": index}
        for index, name in enumerate(FINE_CLASS_NAMES)
    ]


def visibility_records() -> list[dict]:
    return [{"description": f"visibility of whole object is between {lv[1:].replace('-', ' and ')} %",
             "token": token, "level": lv} for token, lv in VISIBILITY]


def log_record(seed: int, scene_index: int) -> dict:
    start = datetime.fromtimestamp(scene_start_us(scene_index) / 1e6, tz=timezone.utc)
    return {"token": make_token(seed, "log", scene_index), "logfile": log_name(scene_index),
            "vehicle": "n008", "date_captured": start.strftime("%Y-%m-%d"), "location": LOCATION}


def map_record(seed: int, log_tokens: list[str]) -> dict:
    token = make_token(seed, "map")
    return {"category": "semantic_prior", "token": token, "filename": f"maps/{token}.png",
            "log_tokens": log_tokens}


def ego_pose_record(token: str, timestamp: int, translation: np.ndarray, yaw: float) -> dict:
    return {"token": token, "timestamp": timestamp, "rotation": [float(np.cos(yaw / 2)), 0.0, 0.0,
            float(np.sin(yaw / 2))], "translation": [float(v) for v in translation]}


def sample_data_record(
    token: str, sample_token: str, ego_pose_token: str, calibrated_sensor_token: str, timestamp: int,
    fileformat: str, width: int, height: int, filename: str,
) -> dict:
    """A keyframe reading; prev/next are linked per channel after the scene is complete."""
    return {"token": token, "sample_token": sample_token, "ego_pose_token": ego_pose_token,
            "calibrated_sensor_token": calibrated_sensor_token, "timestamp": timestamp,
            "fileformat": fileformat, "is_key_frame": True, "height": height, "width": width,
            "filename": filename, "prev": "", "next": ""}


def link(records: list[dict]) -> None:
    """Set prev/next of consecutive records in place ("" at the ends)."""
    for i, rec in enumerate(records):
        rec["prev"] = records[i - 1]["token"] if i > 0 else ""
        rec["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""


def write_json(path: Path, records: object) -> int:
    """Write JSON with the records' own key order and fixed formatting. Returns bytes written."""
    data = (json.dumps(records, indent=1, ensure_ascii=True) + "\n").encode()
    path.write_bytes(data)
    return len(data)
