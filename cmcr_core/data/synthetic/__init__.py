"""A procedural driving world: the scene model (ray-castable primitives on a textured ground), the sensor
rig (32-beam LiDAR, six cameras), and writers that store it in real dataset layouts.

Scene model: `World` (`cast_rays`), `Primitives`, `GroundMap`, `RayHits`; `generate_scene` -> `Scene`
(world + global placement + ego trajectory + lighting). Sensors: `LidarModel`, `lidar_sweep`, `CAMERA_RIG`,
`render_camera`, `cast_pinhole`. Writers: `write_nuscenes_world` -> `WorldSummary`.
"""

from cmcr_core.data.synthetic.layout import Scene, generate_scene
from cmcr_core.data.synthetic.nuscenes_tables import SCENE_NAMES, make_token
from cmcr_core.data.synthetic.nuscenes_writer import WorldSummary, parse_image_size, write_nuscenes_world
from cmcr_core.data.synthetic.pinhole import cast_pinhole, pixel_directions
from cmcr_core.data.synthetic.sensors import (
    CAMERA_CHANNELS,
    CAMERA_RIG,
    LIDAR_CHANNEL,
    CameraSpec,
    LidarModel,
    LidarSweep,
    lidar_sweep,
    sensor_to_world,
)
from cmcr_core.data.synthetic.shading import CameraImage, render_camera
from cmcr_core.data.synthetic.world import GroundMap, Primitives, RayHits, World

__all__ = [
    "CAMERA_CHANNELS",
    "CAMERA_RIG",
    "LIDAR_CHANNEL",
    "SCENE_NAMES",
    "CameraImage",
    "CameraSpec",
    "GroundMap",
    "LidarModel",
    "LidarSweep",
    "Primitives",
    "RayHits",
    "Scene",
    "World",
    "WorldSummary",
    "cast_pinhole",
    "generate_scene",
    "lidar_sweep",
    "make_token",
    "parse_image_size",
    "pixel_directions",
    "render_camera",
    "sensor_to_world",
    "write_nuscenes_world",
]
