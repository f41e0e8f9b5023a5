"""The scene model: culled ray casting (cone test, screen rectangles) against a brute-force caster, ground
lookup, procedural layouts (classes, seeds, a free ego corridor)."""

from __future__ import annotations

import numpy as np
import pytest

from cmcr_core.data.labels import FINE_NAME_TO_INDEX
from cmcr_core.data.synthetic import (
    CAMERA_RIG,
    LidarModel,
    cast_pinhole,
    generate_scene,
    pixel_directions,
    sensor_to_world,
)
from cmcr_core.data.synthetic.geometry import KERNELS
from cmcr_core.data.synthetic.sensors import LIDAR_ROTATION, LIDAR_TRANSLATION
from cmcr_core.data.synthetic.world import GROUND, GROUND_CLASS, NOTHING, ground_distance

REQUIRED = ["flat.driveable_surface", "flat.sidewalk", "flat.terrain", "static.manmade", "static.vegetation",
            "vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "human.pedestrian.adult",
            "movable_object.barrier", "movable_object.trafficcone", "vehicle.bicycle", "vehicle.motorcycle"]


@pytest.fixture(scope="module")
def scene():
    return generate_scene(seed=3, scene_index=1, duration_s=4.0)


def brute_force(world, origin: np.ndarray, d: np.ndarray, max_distance: float):
    """Every ray against every primitive, no culling. origin (3,), d (N, 3) unit -> (t, primitive)."""
    dt = np.ascontiguousarray(d.T.astype(np.float32))
    t = ground_distance(origin.astype(np.float32), dt)
    prim = np.where(np.isfinite(t), GROUND, NOTHING)
    p = world.primitives
    for i in range(len(p)):
        rot_t = p.rotation[i].T
        ti = KERNELS[p.kind[i]](rot_t @ (origin.astype(np.float32) - p.center[i]), rot_t @ dt, p.half[i])
        closer = ti < t
        t[closer], prim[closer] = ti[closer], i
    prim[t > max_distance] = NOTHING
    return t, prim


def test_cast_rays_matches_brute_force(scene):
    position, yaw = scene.ego_pose(1.0)
    origin, rotation = sensor_to_world(position, yaw, LIDAR_TRANSLATION, np.asarray(LIDAR_ROTATION))
    d_sensor, _ = LidarModel(azimuth_steps=360).directions(0.0)
    d = d_sensor @ rotation.T
    ref_t, ref_prim = brute_force(scene.world, origin, d, 80.0)
    shared = scene.world.cast_rays(origin, d, 80.0)
    per_ray = scene.world.cast_rays(np.repeat(origin[None], len(d), axis=0), d, 80.0)
    for hits in (shared, per_ray):
        np.testing.assert_array_equal(hits.primitive, ref_prim)
        hit = ref_prim != NOTHING
        np.testing.assert_allclose(hits.distance[hit], ref_t[hit], rtol=1e-5)
    assert (shared.primitive >= 0).sum() > 1000  # the sweep really sees objects, not only ground
    # Hit points lie at distance t along the ray, with unit normals facing the ray.
    hit = shared.primitive != NOTHING
    np.testing.assert_allclose(shared.point[hit], origin + shared.distance[hit, None] * d[hit], atol=1e-3)
    assert (np.einsum("ij,ij->i", shared.normal[hit], d[hit]) < 1e-6).all()


def test_pinhole_casting_matches_brute_force(scene):
    position, yaw = scene.ego_pose(2.0)
    for cam in (CAMERA_RIG[0], CAMERA_RIG[2]):
        origin, rotation = sensor_to_world(position, yaw, cam.translation, cam.rotation)
        k = cam.intrinsic(160, 90)
        hits = cast_pinhole(scene.world, origin, rotation, k, 160, 90)
        d = (rotation @ pixel_directions(k, 160, 90).reshape(3, -1)).T
        ref_t, ref_prim = brute_force(scene.world, origin, d, 400.0)
        assert (hits.primitive == ref_prim).mean() > 0.999  # exact ties between touching faces may differ
        hit = ref_prim != NOTHING
        np.testing.assert_allclose(hits.distance[hit], ref_t[hit], rtol=1e-4)
        # Pixel (row, col) is the ray through (u, v) = (col, row): reprojecting hit points gives it back.
        cam_pts = (hits.point[hit] - origin) @ rotation
        uv = cam_pts[:, :2] / cam_pts[:, 2:] * [k[0, 0], k[1, 1]] + k[:2, 2]
        rows, cols = np.divmod(np.flatnonzero(hit), 160)
        np.testing.assert_allclose(uv, np.column_stack([cols, rows]), atol=2e-2)


def test_ground_class_comes_from_the_material_map(scene):
    ground = scene.world.ground
    rng = np.random.default_rng(0)
    xy = np.column_stack([rng.uniform(-80, 100, 400), rng.uniform(-55, 55, 400)])
    origins = np.column_stack([xy, np.full(400, 50.0)])
    hits = scene.world.cast_rays(origins, np.tile([0.0, 0.0, -1.0], (400, 1)))
    on_ground = hits.primitive == GROUND
    assert on_ground.sum() > 200
    ix = ((xy[on_ground, 0] - ground.x0) / ground.resolution).astype(int)
    iy = ((xy[on_ground, 1] - ground.y0) / ground.resolution).astype(int)
    np.testing.assert_array_equal(hits.class_index[on_ground], GROUND_CLASS[ground.codes[ix, iy]])
    # The ego lane is road.
    lane = scene.world.cast_rays(np.array([10.0, scene.ego_y, 30.0]), np.array([[0.0, 0.0, -1.0]]))
    assert lane.class_index[0] == FINE_NAME_TO_INDEX["flat.driveable_surface"]


def test_layouts_cover_the_classes_and_depend_on_the_seed():
    classes = set()
    for index in range(5):
        classes |= set(generate_scene(0, index, 4.5).world.primitives.class_index.tolist())
        classes |= set(GROUND_CLASS.tolist())
    assert {FINE_NAME_TO_INDEX[n] for n in REQUIRED} <= classes
    a, b = generate_scene(0, 0, 4.5), generate_scene(0, 0, 4.5)
    np.testing.assert_array_equal(a.world.primitives.center, b.world.primitives.center)
    np.testing.assert_array_equal(a.world.ground.codes, b.world.ground.codes)
    for other in (generate_scene(1, 0, 4.5), generate_scene(0, 1, 4.5)):
        p, q = a.world.primitives, other.world.primitives
        assert len(p) != len(q) or not np.array_equal(p.center, q.center)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ego_corridor_is_free(seed):
    """No primitive overlaps the space swept by the ego body (4.8 x 2.0 x 2.2 m) during the drive."""
    for index in range(4):
        sc = generate_scene(seed, index, 4.5)
        p = sc.world.primitives
        for time_s in np.linspace(0.0, 4.5, 19):
            position, yaw = sc.ego_pose(time_s)
            # Ego body: rear axle at the origin, from 1 m behind to 3.8 m ahead, as in nuScenes.
            g = np.stack(np.meshgrid(np.linspace(-1.0, 3.8, 13), np.linspace(-1.0, 1.0, 7),
                                     np.linspace(0.05, 2.2, 7), indexing="ij"), -1).reshape(-1, 3)
            c, s = np.cos(yaw), np.sin(yaw)
            pts = g @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + position
            for i in np.flatnonzero(np.linalg.norm(p.center - position, axis=1) < p.radius + 6.0):
                local = (pts - p.center[i]) @ p.rotation[i]
                q = local / p.half[i]
                assert not (np.abs(q).max(axis=1) <= 1.0).any(), f"seed {seed} scene {index} primitive {i}"
