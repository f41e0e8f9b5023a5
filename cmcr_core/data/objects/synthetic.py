"""Synthetic object point clouds: parametric shapes of several classes plus one rendered view each.

Every object: class-specific random proportions, random anisotropic scale U[0.7, 1.3] per axis, random
rotation about the y (up) axis, area-weighted surface samples with normals, normalised to the unit sphere.
The view is an orthographic splat of a dense surface sample with a z-buffer and Lambert shading, from a
fixed camera (azimuth 30 deg, elevation 25 deg) like the fixed-view renders of the reference. All randomness
comes from ``np.random.default_rng([seed, index])``, so object i is the same whatever else is generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmcr_core.data.objects.readers import ObjectSet

SHAPE_CLASSES = ("box", "sphere", "cylinder", "cone", "torus", "chair", "table", "airplane")
# Twelve classes in confusable pairs and triples (chair / stool, table / desk / bench, box / cabinet / shelf,
# cylinder / lamp / cone): the class set of the harder benchmark (``synthetic_classes("confusable")``).
CONFUSABLE_CLASSES = ("box", "cabinet", "shelf", "chair", "stool", "table", "desk", "bench", "cylinder",
                      "cone", "lamp", "sphere")
CLASS_SETS = {"basic": SHAPE_CLASSES, "confusable": CONFUSABLE_CLASSES}

# a part: (kind, parameters, offset); kinds: box (half extents), ellipsoid (radii),
# cylinder (radius, half length, axis), cone (radius, height), torus (major, minor radius)
Part = tuple[str, tuple, tuple[float, float, float]]


def _box_area(half: np.ndarray) -> float:
    hx, hy, hz = half
    return 8.0 * (hx * hy + hy * hz + hx * hz)


def _part_area(kind: str, p: tuple) -> float:
    if kind == "box":
        return _box_area(np.asarray(p[0]))
    if kind == "ellipsoid":
        a, b, c = p[0]
        # Knud Thomsen's approximation, good to ~1 %: only used to split samples between parts
        q = 1.6075
        return 4 * np.pi * (((a * b) ** q + (a * c) ** q + (b * c) ** q) / 3) ** (1 / q)
    if kind == "cylinder":
        r, h = p[0], p[1]
        return 2 * np.pi * r * 2 * h + 2 * np.pi * r * r
    if kind == "cone":
        r, h = p
        return np.pi * r * np.hypot(r, h) + np.pi * r * r
    if kind == "torus":
        big, small = p
        return 4 * np.pi**2 * big * small
    raise ValueError(f"unknown part kind {kind!r}")


def _sample_box(rng: np.random.Generator, n: int, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = np.asarray(half, dtype=np.float64)
    face_area = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]]).repeat(2)
    face = rng.choice(6, size=n, p=face_area / face_area.sum())
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    pts = rng.uniform(-1, 1, size=(n, 3)) * half
    pts[np.arange(n), axis] = sign * half[axis]
    normals = np.zeros((n, 3))
    normals[np.arange(n), axis] = sign
    return pts, normals


def _sample_ellipsoid(rng: np.random.Generator, n: int, radii: tuple) -> tuple[np.ndarray, np.ndarray]:
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    radii = np.asarray(radii, dtype=np.float64)
    normals = u / radii
    return u * radii, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _sample_cylinder(
    rng: np.random.Generator, n: int, radius: float, half: float, axis: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    side, cap = 2 * np.pi * radius * 2 * half, np.pi * radius**2
    part = rng.choice(3, size=n, p=np.array([side, cap, cap]) / (side + 2 * cap))
    theta = rng.uniform(0, 2 * np.pi, n)
    rad = np.where(part == 0, radius, radius * np.sqrt(rng.uniform(0, 1, n)))
    along = np.where(part == 0, rng.uniform(-half, half, n), np.where(part == 1, half, -half))
    local = np.stack([rad * np.cos(theta), along, rad * np.sin(theta)], 1)
    nrm = np.where(
        (part == 0)[:, None],
        np.stack([np.cos(theta), np.zeros(n), np.sin(theta)], 1),
        np.stack([np.zeros(n), np.where(part == 1, 1.0, -1.0), np.zeros(n)], 1),
    )
    order = {0: [1, 0, 2], 1: [0, 1, 2], 2: [0, 2, 1]}[axis]  # move the local y axis onto ``axis``
    return local[:, order], nrm[:, order]


def _sample_cone(
    rng: np.random.Generator, n: int, radius: float, height: float
) -> tuple[np.ndarray, np.ndarray]:
    slant = np.hypot(radius, height)
    lateral, base = np.pi * radius * slant, np.pi * radius**2
    on_side = rng.uniform(0, lateral + base, n) < lateral
    theta = rng.uniform(0, 2 * np.pi, n)
    # lateral area grows linearly with the distance t from the apex: t = sqrt(u)
    t = np.sqrt(rng.uniform(0, 1, n))
    rad = np.where(on_side, radius * t, radius * np.sqrt(rng.uniform(0, 1, n)))
    y = np.where(on_side, height / 2 - height * t, -height / 2)
    pts = np.stack([rad * np.cos(theta), y, rad * np.sin(theta)], 1)
    side_n = np.stack([height * np.cos(theta), np.full(n, radius), height * np.sin(theta)], 1) / slant
    nrm = np.where(on_side[:, None], side_n, np.array([0.0, -1.0, 0.0]))
    return pts, nrm


def _sample_torus(
    rng: np.random.Generator, n: int, big: float, small: float
) -> tuple[np.ndarray, np.ndarray]:
    out_u, out_v = [], []
    count = 0
    while count < n:
        # area element is proportional to (R + r cos v): rejection sampling keeps the density uniform
        u = rng.uniform(0, 2 * np.pi, 2 * n)
        v = rng.uniform(0, 2 * np.pi, 2 * n)
        keep = rng.uniform(0, 1, 2 * n) < (big + small * np.cos(v)) / (big + small)
        out_u.append(u[keep])
        out_v.append(v[keep])
        count += int(keep.sum())
    u, v = np.concatenate(out_u)[:n], np.concatenate(out_v)[:n]
    nrm = np.stack([np.cos(v) * np.cos(u), np.sin(v), np.cos(v) * np.sin(u)], 1)
    centre = np.stack([big * np.cos(u), np.zeros(n), big * np.sin(u)], 1)
    return centre + small * nrm, nrm


def _sample_part(rng: np.random.Generator, n: int, kind: str, p: tuple) -> tuple[np.ndarray, np.ndarray]:
    if kind == "box":
        return _sample_box(rng, n, np.asarray(p[0]))
    if kind == "ellipsoid":
        return _sample_ellipsoid(rng, n, p[0])
    if kind == "cylinder":
        return _sample_cylinder(rng, n, p[0], p[1], p[2])
    if kind == "cone":
        return _sample_cone(rng, n, *p)
    return _sample_torus(rng, n, *p)


def shape_parts(name: str, rng: np.random.Generator) -> list[Part]:
    """Parts of one random instance of class ``name`` in its canonical pose (y up)."""
    u = rng.uniform
    if name == "box":
        return [("box", (u(0.5, 1.0, 3),), (0, 0, 0))]
    if name == "sphere":
        return [("ellipsoid", ((1.0, 1.0, 1.0),), (0, 0, 0))]
    if name == "cylinder":
        return [("cylinder", (u(0.35, 0.6), u(0.6, 1.0), 1), (0, 0, 0))]
    if name == "cone":
        return [("cone", (u(0.5, 0.8), u(1.2, 1.8)), (0, 0, 0))]
    if name == "torus":
        return [("torus", (u(0.7, 0.9), u(0.18, 0.32)), (0, 0, 0))]
    if name in ("chair", "table"):
        chair = name == "chair"
        w, d = (u(0.4, 0.55), u(0.4, 0.55)) if chair else (u(0.8, 1.1), u(0.5, 0.8))
        t, leg_h, leg = u(0.03, 0.06), (u(0.4, 0.55) if chair else u(0.6, 0.8)), u(0.03, 0.05)
        parts: list[Part] = [("box", ((w, t, d),), (0, 0, 0))]
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(
                    ("box", ((leg, leg_h / 2, leg),), (sx * (w - leg), -t - leg_h / 2, sz * (d - leg)))
                )
        if chair:
            back_h = u(0.45, 0.7)
            parts.append(("box", ((w, back_h / 2, t),), (0, t + back_h / 2, -d + t)))
        return parts
    if name in ("stool", "desk", "bench", "shelf", "cabinet", "lamp"):
        return _furniture_parts(name, rng)
    if name == "airplane":
        length, radius = u(0.9, 1.1), u(0.08, 0.13)
        span, chord = u(0.8, 1.1), u(0.15, 0.25)
        return [
            ("cylinder", (radius, length, 0), (0, 0, 0)),
            ("box", ((chord, 0.02, span),), (u(-0.1, 0.15), 0, 0)),
            ("box", ((chord * 0.6, u(0.18, 0.3), 0.02),), (-length + chord * 0.6, 0.2, 0)),
            ("box", ((chord * 0.5, 0.02, span * 0.35),), (-length + chord * 0.5, 0.02, 0)),
        ]
    raise ValueError(f"unknown synthetic shape class {name!r}; expected one of "
                     f"{sorted(set(SHAPE_CLASSES) | set(CONFUSABLE_CLASSES))}")


def _legs(w: float, d: float, top: float, height: float, leg: float) -> list[Part]:
    """Four square legs of ``height`` under a top of half extents (w, d) whose underside is at ``top``."""
    return [("box", ((leg, height / 2, leg),), (sx * (w - leg), top - height / 2, sz * (d - leg)))
            for sx in (-1, 1) for sz in (-1, 1)]


def _furniture_parts(name: str, rng: np.random.Generator) -> list[Part]:
    """The look-alikes of the confusable class set, y up (half extents, like ``shape_parts``)."""
    u = rng.uniform
    t, leg = u(0.03, 0.06), u(0.03, 0.05)
    if name == "stool":  # a chair without a back: smaller seat, taller legs
        w = u(0.3, 0.42)
        return [("box", ((w, t, w),), (0, 0, 0)), *_legs(w, w, -t, u(0.6, 0.9), leg)]
    if name == "bench":  # a long, narrow, low table
        w, d, height = u(1.0, 1.4), u(0.2, 0.3), u(0.35, 0.5)
        return [("box", ((w, t, d),), (0, 0, 0)), *_legs(w, d, -t, height, leg)]
    if name == "desk":  # a table with a drawer pedestal under one side
        w, d, height = u(0.8, 1.1), u(0.45, 0.6), u(0.6, 0.8)
        pedestal = u(0.2, 0.3)
        legs = [p for p in _legs(w, d, -t, height, leg) if p[2][0] < 0]
        return [("box", ((w, t, d),), (0, 0, 0)), *legs,
                ("box", ((pedestal, height / 2, d * 0.95),), (w - pedestal, -t - height / 2, 0))]
    if name == "shelf":  # an open frame: two sides, a back and 3-5 boards
        w, h, d = u(0.5, 0.8), u(0.8, 1.3), u(0.2, 0.35)
        parts: list[Part] = [("box", ((t, h, d),), (sx * (w - t), 0, 0)) for sx in (-1, 1)]
        parts.append(("box", ((w, h, t / 2),), (0, 0, -d + t / 2)))
        boards = np.linspace(-h, h, int(rng.integers(3, 6)))
        parts += [("box", ((w - 2 * t, t / 2, d),), (0, float(y), 0)) for y in boards]
        return parts
    if name == "cabinet":  # a closed box on a plinth with an overhanging top
        w, h, d = u(0.4, 0.7), u(0.6, 1.1), u(0.3, 0.5)
        return [("box", ((w, h, d),), (0, 0, 0)), ("box", ((w * 0.9, 0.05, d * 0.9),), (0, -h - 0.05, 0)),
                ("box", ((w + 0.04, t, d + 0.04),), (0, h + t, 0))]
    # lamp: a base disc, a thin pole and a cone shade
    pole = u(0.4, 0.6)
    return [("cylinder", (u(0.2, 0.3), 0.02, 1), (0, -pole, 0)), ("cylinder", (0.025, pole, 1), (0, 0, 0)),
            ("cone", (u(0.25, 0.4), u(0.3, 0.45)), (0, pole + 0.1, 0))]


def sample_surface(
    parts: list[Part], rng: np.random.Generator, num_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted surface samples of a union of parts: (P x 3 points, P x 3 unit normals)."""
    areas = np.array([_part_area(kind, p) for kind, p, _ in parts])
    counts = rng.multinomial(num_points, areas / areas.sum())
    pts, nrms = [], []
    for (kind, p, offset), count in zip(parts, counts, strict=True):
        if count:
            x, n = _sample_part(rng, int(count), kind, p)
            pts.append(x + np.asarray(offset))
            nrms.append(n)
    order = rng.permutation(num_points)
    return np.concatenate(pts)[order], np.concatenate(nrms)[order]


def rotation_y(angle: float) -> np.ndarray:
    """3 x 3 rotation about the y axis (row vectors are multiplied on the right by its transpose)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def render_view(
    points: np.ndarray,
    normals: np.ndarray,
    colour: np.ndarray,
    image_size: int = 32,
    azimuth: float = np.pi / 6,
    elevation: float = np.pi * 25 / 180,
) -> np.ndarray:
    """Orthographic z-buffered splat of surface samples (one pixel each) with Lambert shading.

    Args:
        points: P x 3 inside the unit sphere.
        normals: P x 3 unit normals.
        colour: 3 floats in [0, 1], the object's albedo.

    Returns:
        image_size x image_size x 3 uint8 RGB on a white background.
    """
    ca, sa, ce, se = np.cos(azimuth), np.sin(azimuth), np.cos(elevation), np.sin(elevation)
    yaw = np.array([[ca, 0, -sa], [0, 1, 0], [sa, 0, ca]])
    pitch = np.array([[1, 0, 0], [0, ce, -se], [0, se, ce]])
    view = pitch @ yaw
    cam, cam_n = points @ view.T, normals @ view.T
    px = np.clip(((cam[:, 0] + 1.1) / 2.2 * image_size).astype(int), 0, image_size - 1)
    py = np.clip(((1.1 - cam[:, 1]) / 2.2 * image_size).astype(int), 0, image_size - 1)
    pixel = py * image_size + px
    # nearest sample per pixel: camera looks along -z, so the largest z is closest
    order = np.lexsort((-cam[:, 2], pixel))
    first = order[np.unique(pixel[order], return_index=True)[1]]
    light = np.array([0.4, 0.7, 0.6]) / np.linalg.norm([0.4, 0.7, 0.6])
    shade = 0.3 + 0.7 * np.abs(cam_n[first] @ light)
    image = np.ones((image_size * image_size, 3))
    image[pixel[first]] = shade[:, None] * np.asarray(colour)[None, :]
    return (image.reshape(image_size, image_size, 3) * 255).round().astype(np.uint8)


@dataclass
class SyntheticObjects:
    """Generated objects (``objects``) and their rendered views (n x H x W x 3 uint8)."""

    objects: ObjectSet
    images: np.ndarray


def make_object(
    name: str,
    rng: np.random.Generator,
    num_points: int,
    image_size: int = 32,
    render_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random instance of class ``name``: (P x 3 points, P x 3 normals, H x W x 3 uint8 view).

    The view splats ``render_points`` extra samples (default max(8192, 6 H W), dense enough to close the
    surface at one pixel per sample).
    """
    render_points = max(8192, 6 * image_size**2) if render_points is None else render_points
    parts = shape_parts(name, rng)
    scale = rng.uniform(0.7, 1.3, 3)
    rot = rotation_y(rng.uniform(0, 2 * np.pi))
    colour = rng.uniform(0.25, 0.95, 3)
    pts, nrm = sample_surface(parts, rng, num_points + render_points)
    pts = (pts * scale) @ rot.T
    nrm = (nrm / scale) @ rot.T
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    pts = pts - pts[:num_points].mean(0)
    pts = pts / np.linalg.norm(pts[:num_points], axis=1).max()
    image = render_view(pts, nrm, colour, image_size)
    return pts[:num_points].astype(np.float32), nrm[:num_points].astype(np.float32), image


def make_synthetic_objects(
    num_per_class: int,
    num_points: int = 1024,
    seed: int = 0,
    classes: tuple[str, ...] | list[str] = SHAPE_CLASSES,
    image_size: int = 32,
    first_index: int = 0,
    id_prefix: str = "syn",
) -> SyntheticObjects:
    """``num_per_class`` objects of every class, interleaved by class (labels 0, 1, ..., 0, 1, ...).

    Object ``k`` (global index ``first_index + k``) uses ``np.random.default_rng([seed, first_index + k])``,
    so train/test sets drawn with disjoint index ranges never share an object.
    """
    if num_per_class < 0 or num_points < 1:
        raise ValueError(f"need num_per_class >= 0 and num_points >= 1, got {num_per_class}, {num_points}")
    points, normals, labels, ids, images = [], [], [], [], []
    for k in range(num_per_class * len(classes)):
        index = first_index + k
        label = k % len(classes)
        pts, nrm, image = make_object(
            classes[label], np.random.default_rng([seed, index]), num_points, image_size
        )
        points.append(pts)
        normals.append(nrm)
        labels.append(label)
        ids.append(f"{id_prefix}{index:06d}")
        images.append(image)
    empty = np.zeros((0, image_size, image_size, 3), np.uint8)
    return SyntheticObjects(
        ObjectSet(points, np.asarray(labels), ids, list(classes), normals),
        np.stack(images) if images else empty,
    )
