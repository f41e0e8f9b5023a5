"""Ray-primitive intersection kernels, surface normals and small rotation helpers.

Every primitive lives in its own *local* frame: centred at the origin, axis-aligned after undoing its yaw,
with half extents `half = (hx, hy, hz)`:

* box: |x| <= hx, |y| <= hy, |z| <= hz;
* cylinder: vertical elliptic cylinder (x/hx)^2 + (y/hy)^2 <= 1, |z| <= hz (caps included);
* ellipsoid: (x/hx)^2 + (y/hy)^2 + (z/hz)^2 <= 1 (a flattened ellipsoid makes a wheel).

Kernels take one ray origin (3,) or one per ray (3, N) and directions (3, N) in that local frame
(components first: contiguous per-axis rows are far faster in numpy than (N, 3) rows; any (3, ...) shape
works, e.g. a (3, h, w) screen window) and return the ray parameter t (N,) (or (...)) float32 of the
first entry point (`inf` for a miss). Rays that start inside
a primitive never hit it: no sensor sits inside an object, and this keeps the kernels branch-free.
"""

from __future__ import annotations

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
KIND_NAMES = ("box", "cylinder", "ellipsoid")
T_MIN = np.float32(1e-3)
"""Hits closer than this (m) are ignored, so a ray never re-hits the surface it starts on."""


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about +z by `yaw` radians, mapping local to parent coordinates. Returns (3, 3) float64."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a unit quaternion (w, x, y, z), the nuScenes/pyquaternion order."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions (w, x, y, z): rotate by b first, then by a. Returns (4,)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation about +z by `yaw` radians. Returns (4,) float64."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def intersect_box(origin: np.ndarray, direction: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Slab test. origin (3,) or (3, N), direction (3, N), half (3,) -> t (N,) float32, inf on a miss."""
    t_near = np.full(direction[0].shape, -np.inf, dtype=np.float32)
    t_far = np.full(direction[0].shape, np.inf, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = np.float32(1.0) / direction[axis]
            t_a = (-half[axis] - origin[axis]) * inv
            t_b = (half[axis] - origin[axis]) * inv
            np.maximum(t_near, np.minimum(t_a, t_b), out=t_near)
            np.minimum(t_far, np.maximum(t_a, t_b), out=t_far)
    # NaN (a ray parallel to a slab and exactly on its plane) compares false and counts as a miss.
    hit = (t_near <= t_far) & (t_near > T_MIN)
    return np.where(hit, t_near, np.float32(np.inf))


def _entry(a: np.ndarray, t_mid: np.ndarray, c_mid: np.ndarray) -> np.ndarray:
    """Entry parameter of a ray into a unit quadric, solved about the ray's closest point to the axis/centre.

    With p(t) = p_mid + (t - t_mid) d and p_mid . d = 0, |p(t)|^2 - 1 = a (t - t_mid)^2 + c_mid, so the
    entry is t_mid - sqrt(-c_mid / a). Solving about p_mid avoids the float32 cancellation of the textbook
    b^2 - 4ac for distant origins (millimetres at 10 m for small objects). All (N,) -> (N,) float32, inf
    on a miss or behind the origin.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        t = t_mid - np.sqrt(-c_mid / a)
    return np.where((c_mid <= 0) & (t > T_MIN), t, np.float32(np.inf))


def intersect_ellipsoid(origin: np.ndarray, direction: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Ellipsoid with radii `half`. origin (3,) or (3, N), direction (3, N) -> t (N,) float32."""
    # Scaling space by 1/half maps the ellipsoid to the unit sphere and keeps the ray parameter t.
    o = [origin[i] / half[i] for i in range(3)]
    d = [direction[i] / half[i] for i in range(3)]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    t_mid = -(o[0] * d[0] + o[1] * d[1] + o[2] * d[2]) / a
    p = [o[i] + t_mid * d[i] for i in range(3)]
    return _entry(a, t_mid, p[0] * p[0] + p[1] * p[1] + p[2] * p[2] - 1.0)


def intersect_cylinder(origin: np.ndarray, direction: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Vertical elliptic cylinder with caps. origin (3,) or (3, N), direction (3, N) -> t (N,) float32."""
    ox, oy, oz = (origin[i] / half[i] for i in range(3))
    dx, dy, dz = (direction[i] / half[i] for i in range(3))
    a = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mid = -(ox * dx + oy * dy) / a
        px, py = ox + t_mid * dx, oy + t_mid * dy
        t_side = _entry(a, t_mid, px * px + py * py - 1.0)
        t_side[np.abs(oz + t_side * dz) > 1.0] = np.inf
        # The cap facing the ray: top (z = +1) when going down, bottom when going up.
        t_cap = (-np.sign(dz) - oz) / dz
        cx = ox + t_cap * dx
        cy = oy + t_cap * dy
        cap_ok = (cx * cx + cy * cy <= 1.0) & (t_cap > T_MIN)
    return np.minimum(t_side, np.where(cap_ok, t_cap, np.float32(np.inf)))


KERNELS = (intersect_box, intersect_cylinder, intersect_ellipsoid)
"""Kernel per kind code (BOX, CYLINDER, ELLIPSOID)."""


def local_normals(kind: np.ndarray, local_point: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Outward unit normals at hit points, in each primitive's local frame.

    Args:
        kind: (N,) int kind code per hit.
        local_point: (3, N) hit points in the local frame of the primitive that was hit.
        half: (3, N) half extents of that primitive.

    Returns:
        (3, N) float32 unit normals.
    """
    q = local_point / half
    aq = np.abs(q)
    positive = q > 0
    # Box: the face whose normalised coordinate is the largest in magnitude.
    x_face = (aq[0] >= aq[1]) & (aq[0] >= aq[2])
    y_face = ~x_face & (aq[1] >= aq[2])
    z_face = ~x_face & ~y_face
    # Cylinder: a cap when the point is closer (in metres) to the cap plane than to the side surface.
    radial = np.sqrt(q[0] * q[0] + q[1] * q[1])
    side_err = np.abs(radial - 1.0) * np.minimum(half[0], half[1])
    on_cap = np.abs(aq[2] - 1.0) * half[2] < side_err
    is_box = kind == BOX
    is_cyl = kind == CYLINDER
    ell = q / half  # ellipsoid gradient; its x, y parts are also the cylinder side's
    # Branch-free selection (np.where with scattered masks is ~10x slower than arithmetic).
    sign = np.float32(2.0) * positive - np.float32(1.0)
    box_n = [face * sign[i] for i, face in enumerate((x_face, y_face, z_face))]
    cap = is_cyl & on_cap
    n = np.empty_like(q)
    n[0] = is_box * box_n[0] + ~is_box * ~cap * ell[0]
    n[1] = is_box * box_n[1] + ~is_box * ~cap * ell[1]
    n[2] = is_box * box_n[2] + cap * sign[2] + ~is_box * ~is_cyl * ell[2]
    n /= np.maximum(np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), np.float32(1e-12))
    return n
