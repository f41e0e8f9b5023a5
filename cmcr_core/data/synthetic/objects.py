"""Procedural object templates (vehicles, people, street furniture, vegetation, buildings) built from
boxes, cylinders and ellipsoids, and the builder that places them into a `Primitives` table.

A template is a list of parts in the object's own frame: x forward (length), y left (width), z up from the
ground. Sizes are drawn from the generator passed in, so every object differs a little.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cmcr_core.data.labels import FINE_NAME_TO_INDEX
from cmcr_core.data.synthetic.geometry import BOX, CYLINDER, ELLIPSOID, yaw_matrix
from cmcr_core.data.synthetic.world import Primitives

Part = tuple[int, tuple[float, float, float], tuple[float, float, float], str, tuple[float, float, float]]
"""(kind, centre offset, half extents, lidarseg class name, tint RGB in [0, 1])."""

PAINT = ((0.85, 0.85, 0.86), (0.58, 0.6, 0.63), (0.08, 0.08, 0.09), (0.55, 0.07, 0.06), (0.1, 0.18, 0.45),
         (0.3, 0.31, 0.33), (0.72, 0.66, 0.52), (0.12, 0.3, 0.16))
GLASS = (0.12, 0.15, 0.19)
TYRE = (0.05, 0.05, 0.05)
FACADE = ((0.55, 0.27, 0.2), (0.66, 0.64, 0.6), (0.8, 0.72, 0.58), (0.86, 0.86, 0.83), (0.38, 0.46, 0.55),
          (0.45, 0.4, 0.36))
CLOTHES = ((0.1, 0.12, 0.3), (0.6, 0.1, 0.1), (0.15, 0.15, 0.15), (0.85, 0.85, 0.8), (0.2, 0.45, 0.25),
           (0.7, 0.55, 0.2), (0.35, 0.25, 0.45))
BARK = (0.3, 0.2, 0.12)
SKIN = ((0.87, 0.7, 0.55), (0.6, 0.43, 0.3), (0.35, 0.24, 0.17))


def _pick(rng: np.random.Generator, palette: tuple, jitter: float = 0.05) -> tuple[float, float, float]:
    base = np.asarray(palette[int(rng.integers(len(palette)))])
    return tuple(np.clip(base * (1 + rng.uniform(-jitter, jitter, 3)), 0, 1).tolist())


def _wheels(length: float, width: float, radius: float, cls: str, thick: float = 0.12) -> list[Part]:
    return [
        (ELLIPSOID, (sx * length, sy * (width / 2 - thick), radius), (radius, thick, radius), cls, TYRE)
        for sx in (-0.33, 0.33) for sy in (-1, 1)
    ]


def car(rng: np.random.Generator) -> list[Part]:
    """A passenger car: body, cabin (glass), four wheels."""
    length, width, body_h = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95), rng.uniform(0.6, 0.8)
    cab_l, cab_h = length * rng.uniform(0.45, 0.6), rng.uniform(0.45, 0.65)
    paint = _pick(rng, PAINT)
    cab_tint = tuple(0.6 * np.asarray(GLASS) + 0.4 * np.asarray(paint))
    return [
        (BOX, (0.0, 0.0, 0.3 + body_h / 2), (length / 2, width / 2, body_h / 2), "vehicle.car", paint),
        (BOX, (-0.05 * length, 0.0, 0.3 + body_h + cab_h / 2), (cab_l / 2, width / 2 - 0.08, cab_h / 2),
         "vehicle.car", cab_tint),
        *_wheels(length, width, 0.32, "vehicle.car"),
    ]


def truck(rng: np.random.Generator) -> list[Part]:
    """A rigid truck: cab and cargo box."""
    cargo_l, width, cargo_h = rng.uniform(4.5, 8.0), rng.uniform(2.3, 2.55), rng.uniform(2.4, 3.4)
    cab_l = 2.2
    total = cargo_l + cab_l + 0.2
    cab_x = total / 2 - cab_l / 2
    cargo_x = -total / 2 + cargo_l / 2
    return [
        (BOX, (cab_x, 0.0, 1.8), (cab_l / 2, width / 2 - 0.05, 1.3), "vehicle.truck", _pick(rng, PAINT)),
        (BOX, (cab_x + 0.6, 0.0, 2.55), (0.45, width / 2 - 0.04, 0.45), "vehicle.truck", GLASS),
        (BOX, (cargo_x, 0.0, 0.9 + cargo_h / 2), (cargo_l / 2, width / 2, cargo_h / 2), "vehicle.truck",
         _pick(rng, FACADE)),
        *_wheels(total, width, 0.5, "vehicle.truck", 0.2),
    ]


def bus(rng: np.random.Generator) -> list[Part]:
    """A rigid bus with a band of windows."""
    length, width, height = rng.uniform(10.0, 12.5), 2.55, rng.uniform(2.9, 3.3)
    paint = _pick(rng, ((0.85, 0.7, 0.1), (0.85, 0.85, 0.85), (0.7, 0.1, 0.1), (0.15, 0.35, 0.6)))
    return [
        (BOX, (0.0, 0.0, 0.35 + height / 2), (length / 2, width / 2, height / 2), "vehicle.bus.rigid", paint),
        (BOX, (0.1, 0.0, 0.35 + height * 0.68), (length / 2 - 0.35, width / 2 + 0.02, height * 0.17),
         "vehicle.bus.rigid", GLASS),
        *_wheels(length * 0.9, width, 0.5, "vehicle.bus.rigid", 0.2),
    ]


def trailer(rng: np.random.Generator) -> list[Part]:
    """A semi-trailer standing on its legs and rear wheels."""
    length, width, height = rng.uniform(6.0, 11.0), 2.5, rng.uniform(2.5, 3.0)
    return [
        (BOX, (0.0, 0.0, 1.2 + height / 2), (length / 2, width / 2, height / 2), "vehicle.trailer",
         _pick(rng, FACADE)),
        (BOX, (length * 0.3, 0.0, 0.6), (0.1, width / 2 - 0.2, 0.6), "vehicle.trailer", (0.2, 0.2, 0.2)),
        *[(ELLIPSOID, (-length * 0.35 + dx, sy * 1.0, 0.5), (0.5, 0.2, 0.5), "vehicle.trailer", TYRE)
          for dx in (0.0, 1.1) for sy in (-1, 1)],
    ]


def construction_vehicle(rng: np.random.Generator) -> list[Part]:
    """An excavator: tracks, turret, cabin, boom and bucket."""
    yellow = _pick(rng, ((0.88, 0.66, 0.05), (0.9, 0.45, 0.05)))
    cls = "vehicle.construction"
    return [
        (BOX, (0.0, 0.0, 0.45), (1.9, 1.35, 0.45), cls, (0.12, 0.12, 0.12)),
        (BOX, (-0.3, 0.0, 1.45), (1.5, 1.2, 0.55), cls, yellow),
        (BOX, (0.6, 0.55, 2.6), (0.6, 0.5, 0.6), cls, GLASS),
        (BOX, (2.3, -0.3, 2.5), (1.3, 0.2, 0.25), cls, yellow),
        (BOX, (3.5, -0.3, 1.4), (0.2, 0.2, 1.0), cls, yellow),
        (BOX, (3.6, -0.3, 0.35), (0.4, 0.5, 0.35), cls, (0.25, 0.22, 0.2)),
    ]


def motorcycle(rng: np.random.Generator) -> list[Part]:
    cls, paint = "vehicle.motorcycle", _pick(rng, PAINT)
    return [
        (ELLIPSOID, (0.72, 0.0, 0.32), (0.32, 0.07, 0.32), cls, TYRE),
        (ELLIPSOID, (-0.72, 0.0, 0.32), (0.32, 0.08, 0.32), cls, TYRE),
        (BOX, (0.0, 0.0, 0.65), (0.62, 0.17, 0.22), cls, paint),
        (BOX, (-0.25, 0.0, 0.92), (0.35, 0.15, 0.06), cls, (0.1, 0.1, 0.1)),
        (BOX, (0.62, 0.0, 1.05), (0.05, 0.38, 0.03), cls, (0.6, 0.6, 0.62)),
    ]


def bicycle(rng: np.random.Generator) -> list[Part]:
    cls, paint = "vehicle.bicycle", _pick(rng, PAINT + CLOTHES)
    return [
        (ELLIPSOID, (0.55, 0.0, 0.34), (0.34, 0.03, 0.34), cls, TYRE),
        (ELLIPSOID, (-0.55, 0.0, 0.34), (0.34, 0.03, 0.34), cls, TYRE),
        (BOX, (0.0, 0.0, 0.62), (0.5, 0.03, 0.04), cls, paint),
        (BOX, (-0.25, 0.0, 0.55), (0.03, 0.03, 0.3), cls, paint),
        (BOX, (-0.25, 0.0, 0.9), (0.12, 0.07, 0.03), cls, (0.1, 0.1, 0.1)),
        (BOX, (0.45, 0.0, 0.98), (0.03, 0.3, 0.03), cls, paint),
    ]


def pedestrian(rng: np.random.Generator, cls: str = "human.pedestrian.adult") -> list[Part]:
    """A standing person: legs, torso, head. Children are smaller; workers wear a high-visibility vest."""
    scale = rng.uniform(0.6, 0.75) if cls == "human.pedestrian.child" else rng.uniform(0.92, 1.08)
    shirt = (0.95, 0.55, 0.05) if cls == "human.pedestrian.construction_worker" else _pick(rng, CLOTHES)
    leg_h, torso_h, head_r = 0.85 * scale, 0.62 * scale, 0.11 * scale
    return [
        (BOX, (0.0, 0.0, leg_h / 2), (0.12 * scale, 0.17 * scale, leg_h / 2), cls, _pick(rng, CLOTHES)),
        (BOX, (0.0, 0.0, leg_h + torso_h / 2), (0.13 * scale, 0.23 * scale, torso_h / 2), cls, shirt),
        (ELLIPSOID, (0.0, 0.0, leg_h + torso_h + head_r * 1.1), (head_r, head_r * 0.9, head_r * 1.15), cls,
         _pick(rng, SKIN)),
    ]


def animal(rng: np.random.Generator) -> list[Part]:
    """A dog."""
    fur = _pick(rng, ((0.45, 0.3, 0.15), (0.1, 0.08, 0.07), (0.85, 0.8, 0.7)))
    return [
        (ELLIPSOID, (0.0, 0.0, 0.45), (0.38, 0.14, 0.15), "animal", fur),
        (ELLIPSOID, (0.42, 0.0, 0.6), (0.13, 0.09, 0.1), "animal", fur),
        *[(BOX, (sx, sy, 0.18), (0.04, 0.04, 0.18), "animal", fur)
          for sx in (-0.25, 0.25) for sy in (-0.08, 0.08)],
    ]


def barrier(rng: np.random.Generator) -> list[Part]:
    tint = _pick(rng, ((0.85, 0.85, 0.8), (0.6, 0.6, 0.58), (0.85, 0.3, 0.1)))
    return [(BOX, (0.0, 0.0, 0.45), (rng.uniform(0.9, 1.3), 0.2, 0.45), "movable_object.barrier", tint)]


def traffic_cone(rng: np.random.Generator) -> list[Part]:
    cls, orange = "movable_object.trafficcone", (0.95, 0.35, 0.05)
    return [
        (BOX, (0.0, 0.0, 0.02), (0.2, 0.2, 0.02), cls, orange),
        (CYLINDER, (0.0, 0.0, 0.2), (0.13, 0.13, 0.16), cls, orange),
        (CYLINDER, (0.0, 0.0, 0.44), (0.08, 0.08, 0.08), cls, (0.9, 0.9, 0.9)),
        (CYLINDER, (0.0, 0.0, 0.6), (0.05, 0.05, 0.08), cls, orange),
    ]


def small_item(rng: np.random.Generator, cls: str) -> list[Part]:
    """Bins (pushable_pullable), debris, benches (static.other) and bicycle racks."""
    if cls == "movable_object.pushable_pullable":
        bin_colour = _pick(rng, ((0.1, 0.35, 0.15), (0.3, 0.3, 0.3)))
        return [(BOX, (0.0, 0.0, 0.5), (0.3, 0.3, 0.5), cls, bin_colour)]
    if cls == "movable_object.debris":
        size = rng.uniform(0.15, 0.5, 3)
        return [(BOX, (0.0, 0.0, size[2] / 2), tuple((size / 2).tolist()), cls, _pick(rng, FACADE, 0.2))]
    if cls == "static_object.bicycle_rack":
        return [(BOX, (x, 0.0, 0.4), (0.03, 0.35, 0.4), cls, (0.5, 0.5, 0.52)) for x in (-1.0, 0.0, 1.0)]
    wood = (0.45, 0.3, 0.18)
    return [
        (BOX, (0.0, 0.0, 0.45), (0.9, 0.22, 0.04), cls, wood),
        (BOX, (0.0, 0.2, 0.7), (0.9, 0.03, 0.2), cls, wood),
        *[(BOX, (sx, 0.0, 0.22), (0.04, 0.2, 0.22), cls, (0.2, 0.2, 0.2)) for sx in (-0.8, 0.8)],
    ]


def tree(rng: np.random.Generator) -> list[Part]:
    """A trunk and one or two crown ellipsoids (all static.vegetation, as in nuScenes)."""
    cls = "static.vegetation"
    # Crowns start at least 2.5 m up, above every sensor of the ego (LiDAR at 1.84 m), whatever overhangs.
    trunk_r, trunk_h = rng.uniform(0.12, 0.25), rng.uniform(2.5, 4.0)
    crown = rng.uniform([1.3, 1.3, 1.2], [2.8, 2.8, 2.6])
    green = tuple(np.clip(rng.uniform([0.12, 0.3, 0.06], [0.3, 0.5, 0.16]), 0, 1).tolist())
    parts = [
        (CYLINDER, (0.0, 0.0, trunk_h / 2 + 0.3), (trunk_r, trunk_r, trunk_h / 2 + 0.3), cls, BARK),
        (ELLIPSOID, (0.0, 0.0, trunk_h + crown[2]), tuple(crown.tolist()), cls, green),
    ]
    if rng.random() < 0.5:
        top = (0.4 * crown[0], 0.0, trunk_h + 1.5 * crown[2])
        parts.append((ELLIPSOID, top, tuple((crown * 0.7).tolist()), cls, green))
    return parts


def hedge(rng: np.random.Generator, length: float) -> list[Part]:
    height, width = rng.uniform(0.7, 1.6), rng.uniform(0.6, 1.3)
    green = tuple(np.clip(rng.uniform([0.08, 0.22, 0.05], [0.2, 0.38, 0.12]), 0, 1).tolist())
    return [(BOX, (0.0, 0.0, height / 2), (length / 2, width / 2, height / 2), "static.vegetation", green)]


def street_light(rng: np.random.Generator) -> list[Part]:
    """Pole with an arm over the road (local +y points to the road). static.manmade."""
    h, grey = rng.uniform(6.0, 8.5), (0.45, 0.45, 0.47)
    return [
        (CYLINDER, (0.0, 0.0, h / 2), (0.08, 0.08, h / 2), "static.manmade", grey),
        (BOX, (0.0, 0.9, h - 0.1), (0.05, 0.9, 0.05), "static.manmade", grey),
        (BOX, (0.0, 1.75, h - 0.2), (0.15, 0.25, 0.08), "static.manmade", (0.8, 0.8, 0.7)),
    ]


def traffic_sign(rng: np.random.Generator) -> list[Part]:
    plate = _pick(rng, ((0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.9, 0.9, 0.9), (0.9, 0.75, 0.1)))
    return [
        (CYLINDER, (0.0, 0.0, 1.2), (0.04, 0.04, 1.2), "static.manmade", (0.5, 0.5, 0.52)),
        (BOX, (0.0, 0.0, 2.55), (0.03, 0.35, 0.35), "static.manmade", plate),
    ]


def building(rng: np.random.Generator, width: float, depth: float) -> list[Part]:
    """A block (local x along the street, y away from it) with an optional set-back upper storey."""
    height = float(np.clip(rng.lognormal(np.log(11.0), 0.5), 4.0, 40.0))
    tint = _pick(rng, FACADE)
    block = (width / 2, depth / 2, height / 2)
    parts: list[Part] = [(BOX, (0.0, 0.0, height / 2), block, "static.manmade", tint)]
    if rng.random() < 0.35 and width > 10:
        top = rng.uniform(3.0, 12.0)
        parts.append((BOX, (0.0, depth * 0.1, height + top / 2), (width * 0.35, depth * 0.35, top / 2),
                      "static.manmade", _pick(rng, FACADE)))
    return parts


@dataclass
class PrimitiveBuilder:
    """Collects placed templates and freezes them into `Primitives`."""

    rows: list[tuple] = field(default_factory=list)
    n_instances: int = 0

    def add(self, parts: list[Part], x: float, y: float, yaw: float) -> None:
        """Place a template with its origin at ground point (x, y), rotated by yaw (radians)."""
        rot = yaw_matrix(yaw)
        for kind, offset, half, cls, tint in parts:
            center = rot @ np.asarray(offset) + np.array([x, y, 0.0])
            self.rows.append((kind, center, half, yaw, FINE_NAME_TO_INDEX[cls], tint, self.n_instances))
        self.n_instances += 1

    def build(self) -> Primitives:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [[]] * 7
        return Primitives(
            kind=np.asarray(cols[0], dtype=np.int8),
            center=np.asarray(cols[1], dtype=np.float32).reshape(-1, 3),
            half=np.asarray(cols[2], dtype=np.float32).reshape(-1, 3),
            yaw=np.asarray(cols[3], dtype=np.float32),
            class_index=np.asarray(cols[4], dtype=np.uint8),
            tint=np.asarray(cols[5], dtype=np.float32).reshape(-1, 3),
            instance=np.asarray(cols[6], dtype=np.int32),
        )
