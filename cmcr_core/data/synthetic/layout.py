"""Procedural street scenes: a straight road along +x with lanes, parking lanes, sidewalks, terrain,
an optional cross street and construction zone, buildings, vegetation, street furniture, parked and
stopped vehicles and people; plus the ego trajectory and the lighting.

World frame of a scene: x along the road, y to the left, z up, ground z = 0. Traffic keeps right; the ego
drives in a +x lane whose corridor is kept free of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmcr_core.data.synthetic import objects as ob
from cmcr_core.data.synthetic.world import (
    ASPHALT,
    GRASS,
    GRAVEL,
    PAINT_WHITE,
    PAINT_YELLOW,
    PAVING,
    GroundMap,
    World,
)

GROUND_RESOLUTION = 0.1
GROUND_HALF_WIDTH = 60.0


@dataclass(frozen=True)
class Scene:
    """One procedural scene: the world, where it sits in the global frame, the ego motion and lighting.

    Attributes:
        world: static geometry in the scene's world frame.
        global_xy: (2,) position of the world origin in the global frame (m).
        global_yaw: rotation of the world frame in the global frame (rad).
        ego_y: lateral position of the ego lane centre (m); ego_speed: m/s along +x from x = 0.
        sway: (amplitude m, period s) of a gentle lateral drift inside the lane.
        sun: (3,) unit vector towards the sun (world frame); sky_tint: RGB multiplier of the sky.
    """

    world: World
    global_xy: tuple[float, float]
    global_yaw: float
    ego_y: float
    ego_speed: float
    sway: tuple[float, float]
    sun: tuple[float, float, float]
    sky_tint: tuple[float, float, float]

    def ego_pose(self, time_s: float) -> tuple[np.ndarray, float]:
        """Ego position (3,) and yaw (rad) in the world frame, `time_s` seconds after the scene starts."""
        amp, period = self.sway
        w = 2 * np.pi / period
        x = self.ego_speed * time_s
        y = self.ego_y + amp * np.sin(w * time_s)
        yaw = float(np.arctan2(amp * w * np.cos(w * time_s), self.ego_speed))
        return np.array([x, y, 0.0]), yaw

    def to_global(self, position: np.ndarray, yaw: float) -> tuple[np.ndarray, float]:
        """Map a world-frame position (3,) and yaw to the global frame."""
        c, s = np.cos(self.global_yaw), np.sin(self.global_yaw)
        x, y = position[0], position[1]
        gx = self.global_xy[0] + c * x - s * y
        gy = self.global_xy[1] + s * x + c * y
        return np.array([gx, gy, position[2]]), yaw + self.global_yaw


class _Ground:
    """Mutable material raster used while laying out a scene."""

    def __init__(self, x_lo: float, x_hi: float) -> None:
        nx = int(np.ceil((x_hi - x_lo) / GROUND_RESOLUTION))
        ny = int(np.ceil(2 * GROUND_HALF_WIDTH / GROUND_RESOLUTION))
        self.x0, self.y0 = x_lo, -GROUND_HALF_WIDTH
        self.codes = np.full((nx, ny), GRASS, dtype=np.uint8)

    def _index(self, v: float, origin: float, n: int) -> int:
        return int(np.clip(round((v - origin) / GROUND_RESOLUTION), 0, n))

    def fill(self, x0: float, x1: float, y0: float, y1: float, code: int) -> None:
        nx, ny = self.codes.shape
        xa, xb = sorted((self._index(x0, self.x0, nx), self._index(x1, self.x0, nx)))
        ya, yb = sorted((self._index(y0, self.y0, ny), self._index(y1, self.y0, ny)))
        self.codes[xa:xb, ya:yb] = code

    def dashed(self, x0: float, x1: float, y: float, code: int, dash: float, gap: float) -> None:
        for start in np.arange(x0, x1, dash + gap):
            self.fill(start, min(start + dash, x1), y - 0.07, y + 0.07, code)

    def freeze(self) -> GroundMap:
        return GroundMap(self.codes, self.x0, self.y0, GROUND_RESOLUTION)


def _free(x0: float, x1: float, blocked: list[tuple[float, float]]) -> bool:
    return all(x1 <= b0 or x0 >= b1 for b0, b1 in blocked)


def generate_scene(seed: int, scene_index: int, duration_s: float) -> Scene:
    """Lay out scene `scene_index` of world `seed` for an ego drive of `duration_s` seconds.

    The layout depends only on (seed, scene_index) and the road length needed for the drive.
    """
    rng = np.random.default_rng([seed, scene_index, 7])
    speed = float(rng.uniform(3.0, 6.0))
    travel = speed * duration_s
    x_lo, x_hi = -90.0, travel + 110.0
    lanes = int(rng.integers(1, 3))
    lane_w = float(rng.uniform(3.1, 3.6))
    park = [bool(rng.random() < 0.65) for _ in range(2)]  # index 0 right (y < 0), 1 left
    edge = [lanes * lane_w + 2.4 * p for p in park]
    walk = rng.uniform(2.0, 4.5, 2)
    terrain = rng.uniform(1.0, 7.0, 2)
    ego_y = -(int(rng.integers(lanes)) + 0.5) * lane_w
    ground = _Ground(x_lo, x_hi)
    builder = ob.PrimitiveBuilder()
    blocked: list[list[tuple[float, float]]] = [[], []]  # x-intervals where a side has no kerb-side objects

    # Road surface and sidewalks.
    ground.fill(x_lo, x_hi, -edge[0], edge[1], ASPHALT)
    for side, sgn in ((0, -1), (1, 1)):
        ground.fill(x_lo, x_hi, sgn * edge[side], sgn * (edge[side] + walk[side]), PAVING)
    cross = None
    if rng.random() < 0.7:
        xc, wc = float(rng.uniform(25.0, travel + 60.0)), float(rng.uniform(8.0, 13.0))
        cross = (xc - wc / 2, xc + wc / 2)
        for side, sgn in ((0, -1), (1, 1)):
            ground.fill(cross[0] - 3, cross[0], sgn * edge[side], sgn * GROUND_HALF_WIDTH, PAVING)
            ground.fill(cross[1], cross[1] + 3, sgn * edge[side], sgn * GROUND_HALF_WIDTH, PAVING)
        ground.fill(cross[0], cross[1], -GROUND_HALF_WIDTH, GROUND_HALF_WIDTH, ASPHALT)
        blocked[0].append((cross[0] - 4, cross[1] + 4))
        blocked[1].append((cross[0] - 4, cross[1] + 4))

    # Markings: centre line, lane dashes, edge lines; a zebra crossing before the cross street.
    marked = [(x_lo, cross[0]), (cross[1], x_hi)] if cross else [(x_lo, x_hi)]
    for m0, m1 in marked:
        for y in (-0.12, 0.12):
            ground.fill(m0, m1, y - 0.06, y + 0.06, PAINT_YELLOW)
        for k in range(1, lanes):
            ground.dashed(m0, m1, -k * lane_w, PAINT_WHITE, 3.0, 6.0)
            ground.dashed(m0, m1, k * lane_w, PAINT_WHITE, 3.0, 6.0)
        for y in (-lanes * lane_w, lanes * lane_w):
            ground.fill(m0, m1, y - 0.07, y + 0.07, PAINT_WHITE)
    if cross:
        for y in np.arange(-edge[0] + 0.3, edge[1] - 0.3, 1.2):
            ground.fill(cross[0] - 4.5, cross[0] - 1.0, y, y + 0.6, PAINT_WHITE)

    # Construction zone: gravel, an excavator, barriers and cones along it, workers, debris.
    if rng.random() < 0.65:
        side = int(rng.integers(2))
        sgn = 1 if side else -1
        z0 = float(rng.uniform(10.0, travel + 50.0))
        z1 = z0 + float(rng.uniform(14.0, 24.0))
        if _free(z0 - 2, z1 + 2, blocked[side]):
            y_in = edge[side] + walk[side]
            y_out = y_in + terrain[side] + 8.0
            terrain[side] = terrain[side] + 8.0
            ground.fill(z0, z1, sgn * y_in, sgn * y_out, GRAVEL)
            mid = sgn * (y_in + y_out) / 2
            builder.add(ob.construction_vehicle(rng), (z0 + z1) / 2, mid, float(rng.uniform(-np.pi, np.pi)))
            for x in np.arange(z0 + 1.2, z1 - 1.0, 2.4):
                builder.add(ob.barrier(rng), float(x), sgn * (y_in + 0.5), 0.0)
            # Cones stand in the parking lane, or on the kerb where there is none (the ego lane stays free).
            cone_y = edge[side] - 0.4 if park[side] else edge[side] + 0.3
            for x in np.arange(z0, z1, 3.0):
                builder.add(ob.traffic_cone(rng), float(x), sgn * cone_y, 0.0)
            for _ in range(int(rng.integers(1, 4))):
                builder.add(ob.pedestrian(rng, "human.pedestrian.construction_worker"),
                            float(rng.uniform(z0 + 1, z1 - 1)), sgn * (y_out - rng.uniform(1.0, 3.0)),
                            float(rng.uniform(-np.pi, np.pi)))
            for _ in range(int(rng.integers(2, 6))):
                builder.add(ob.small_item(rng, "movable_object.debris"), float(rng.uniform(z0, z1)),
                            mid + rng.uniform(-3.0, 3.0), float(rng.uniform(-np.pi, np.pi)))
            blocked[side].append((z0 - 1, z1 + 1))

    for side, sgn in ((0, -1), (1, 1)):
        _populate_side(rng, builder, ground, side, sgn, x_lo, x_hi, edge[side], walk[side], terrain[side],
                       lanes, lane_w, park[side], blocked[side], cross)
    _populate_lanes(rng, builder, lanes, lane_w, ego_y, travel, x_lo, x_hi, cross)

    sun_az, sun_el = rng.uniform(-np.pi, np.pi), rng.uniform(0.35, 1.1)
    sun = (np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el))
    return Scene(
        world=World(builder.build(), ground.freeze()),
        global_xy=(float(300.0 + 700.0 * (scene_index % 4) + rng.uniform(0, 50)),
                   float(400.0 + 700.0 * (scene_index // 4) + rng.uniform(0, 50))),
        global_yaw=float(rng.uniform(-np.pi, np.pi)),
        ego_y=float(ego_y),
        ego_speed=speed,
        sway=(float(rng.uniform(0.0, 0.35)), float(rng.uniform(6.0, 14.0))),
        sun=tuple(float(v) for v in sun),
        sky_tint=tuple(float(v) for v in rng.uniform(0.85, 1.1, 3)),
    )


def _populate_side(rng, builder, ground, side, sgn, x_lo, x_hi, edge, walk, terrain, lanes, lane_w, park,
                   blocked, cross) -> None:
    """Kerb-side objects, sidewalk life, terrain vegetation and the row of buildings of one side."""
    yaw_road = 0.0 if sgn < 0 else np.pi  # parked vehicles face the direction of traffic
    kerb, walk_out, front = edge + 0.5, edge + walk, edge + walk + terrain
    if park:
        x = x_lo + rng.uniform(0.0, 5.0)
        while x < x_hi - 10:
            kind = rng.choice(["car", "truck", "bus", "motorcycle", "trailer", "gap"],
                              p=[0.58, 0.08, 0.04, 0.08, 0.05, 0.17])
            length = {"car": 5.0, "truck": 10.5, "bus": 12.5, "motorcycle": 2.2, "trailer": 11.0,
                      "gap": float(rng.uniform(4, 15))}[kind]
            if kind != "gap" and _free(x, x + length, blocked):
                # Yaw jitter shrinks with length so no vehicle pokes out of the parking lane.
                builder.add(getattr(ob, kind)(rng), x + length / 2, sgn * (lanes * lane_w + 1.2),
                            yaw_road + rng.uniform(-0.1, 0.1) / length)
            x += length + rng.uniform(0.6, 4.0)
    elif rng.random() < 0.6:
        x0 = float(rng.uniform(x_lo + 20, x_hi - 40))
        if _free(x0, x0 + 14, blocked):
            for k in range(6):
                builder.add(ob.barrier(rng), x0 + 2.4 * k, sgn * (edge + 0.4), 0.0)
    # Sidewalk: street lights and signs at the kerb, trees, people, bins, benches, bicycles, dogs.
    for x in np.arange(x_lo + rng.uniform(0, 10), x_hi, rng.uniform(22.0, 34.0)):
        if _free(x - 1, x + 1, blocked):
            builder.add(ob.street_light(rng), float(x), sgn * kerb, 0.0 if sgn < 0 else np.pi)
    for x in np.arange(x_lo + rng.uniform(0, 10), x_hi, rng.uniform(7.0, 14.0)):
        if rng.random() < 0.75 and _free(x - 2, x + 2, blocked):
            builder.add(ob.tree(rng), float(x + rng.uniform(-1, 1)), sgn * (kerb + 0.4), 0.0)
    for _ in range(int(rng.poisson(2))):
        x = float(rng.uniform(x_lo, x_hi))
        if _free(x - 1, x + 1, blocked):
            builder.add(ob.traffic_sign(rng), x, sgn * (kerb + 0.1), np.pi / 2)
    for _ in range(int(rng.poisson(9))):
        cls = "human.pedestrian.child" if rng.random() < 0.15 else "human.pedestrian.adult"
        builder.add(ob.pedestrian(rng, cls), float(rng.uniform(x_lo, x_hi)),
                    sgn * rng.uniform(edge + 1.0, walk_out - 0.3), float(rng.uniform(-np.pi, np.pi)))
    items = ["movable_object.pushable_pullable", "static.other", "static_object.bicycle_rack", "bicycle",
             "animal", "motorcycle"]
    for cls in items:
        for _ in range(int(rng.poisson(1.5))):
            x = float(rng.uniform(x_lo, x_hi))
            y = sgn * (walk_out - 0.6)
            if cls == "bicycle":
                builder.add(ob.bicycle(rng), x, y, float(rng.uniform(-0.3, 0.3)))
            elif cls == "motorcycle":
                builder.add(ob.motorcycle(rng), x, sgn * (edge + 0.9), float(rng.uniform(-0.5, 0.5)))
            elif cls == "animal":
                builder.add(ob.animal(rng), x, sgn * rng.uniform(edge + 1.0, walk_out - 0.5),
                            float(rng.uniform(-np.pi, np.pi)))
            else:
                builder.add(ob.small_item(rng, cls), x, y, 0.0)
    # Terrain strip: hedges, a patch of flat.other; then buildings.
    if terrain > 1.8:
        for x in np.arange(x_lo, x_hi, rng.uniform(12.0, 30.0)):
            length = float(rng.uniform(4.0, 12.0))
            if rng.random() < 0.5 and _free(x, x + length, blocked):
                builder.add(ob.hedge(rng, length), float(x + length / 2), sgn * (walk_out + terrain / 2), 0.0)
    px = float(rng.uniform(x_lo, x_hi - 20))
    if terrain > 2.0 and _free(px, px + 15, blocked):
        ground.fill(px, px + float(rng.uniform(6, 15)), sgn * walk_out, sgn * front, GRAVEL)
    x = x_lo
    while x < x_hi:
        width = float(rng.uniform(8.0, 30.0))
        depth = float(rng.uniform(8.0, 22.0))
        setback = float(rng.uniform(0.0, 3.0))
        clear = cross is None or x + width < cross[0] - 4 or x > cross[1] + 4
        if clear and rng.random() < 0.9:
            builder.add(ob.building(rng, width, depth), x + width / 2, sgn * (front + setback + depth / 2),
                        0.0 if sgn > 0 else np.pi)
        x += width + float(rng.choice([rng.uniform(0.0, 3.0), rng.uniform(6.0, 16.0)]))


def _populate_lanes(rng, builder, lanes, lane_w, ego_y, travel, x_lo, x_hi, cross) -> None:
    """Stopped traffic: oncoming lanes anywhere, the ego's direction only outside the ego's corridor."""
    kinds, probs = ["car", "truck", "bus", "motorcycle"], [0.75, 0.12, 0.06, 0.07]
    for k in range(lanes):
        x = x_lo + rng.uniform(0, 20)
        while x < x_hi - 15:
            kind = str(rng.choice(kinds, p=probs))
            in_cross = cross is not None and cross[0] - 6 < x < cross[1] + 6
            if not in_cross:
                builder.add(getattr(ob, kind)(rng), float(x), (k + 0.5) * lane_w, np.pi)
            x += float(rng.uniform(12.0, 45.0))
        y = -(k + 0.5) * lane_w
        # Vehicles in the ego's direction stay ahead of (or behind) the whole drive, never on its path.
        if abs(y - ego_y) < 0.1 and rng.random() < 0.5:
            builder.add(ob.car(rng), float(travel + rng.uniform(25.0, 45.0)), y, 0.0)
        elif abs(y - ego_y) >= 0.1:
            for x in (-rng.uniform(15.0, 40.0), travel + rng.uniform(20.0, 60.0)):
                builder.add(getattr(ob, str(rng.choice(kinds, p=probs)))(rng), float(x), y, 0.0)
