"""The six shapes of the embedded world as signed distance functions, plus their named keypoints.

Every shape lives in a local frame (u right, v down) normalised so that its bounding box has its longer side
from -1 to 1 and is centred on the origin. Signed distances are in those units (negative inside); multiplying by
the half side in pixels gives pixel distances, from which the renderer takes analytic antialiased coverage.
Shapes are upright (never rotated), so "top vertex" and friends are well defined.
"""

from __future__ import annotations

from functools import cache

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
PLURALS: dict[str, str] = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}

_SQRT2 = float(np.sqrt(2.0))

# star: five points, inner radius / outer radius
_STAR_INNER = 0.5
_STAR_R = 2.0 / (2.0 * np.sin(np.deg2rad(72.0)))  # outer radius so that the width is 2
_STAR_CY = -(_STAR_R * (1.0 + np.cos(np.deg2rad(36.0))) / 2.0) + _STAR_R  # star centre, bbox centred on 0
# heart: a diamond (square turned 45 degrees, half diagonal _HEART_T) with two circles on its upper sides
_HEART_T = 2.0 / (1.0 + _SQRT2)  # width = 2 * (t / 2 + t / sqrt 2) = 2
_HEART_CY = _HEART_T * (1.0 / _SQRT2 - 0.5) / 2.0  # diamond centre, so that the bbox is centred on 0
# cross: plus sign, arm half-width
_CROSS_ARM = 0.36


def _box(u: np.ndarray, v: np.ndarray, bu: float, bv: float) -> np.ndarray:
    qu = np.abs(u) - bu
    qv = np.abs(v) - bv
    outside = np.sqrt(np.maximum(qu, 0.0) ** 2 + np.maximum(qv, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sqrt(u * u + v * v) - 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 1.0, 1.0)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # isosceles, apex (0, -1), base from (-1, 1) to (1, 1) (Inigo Quilez, sdTriangleIsosceles with q = (1, 2))
    px = np.abs(u)
    py = v + 1.0
    qx, qy = 1.0, 2.0
    t = np.minimum(np.maximum((px * qx + py * qy) * (1.0 / (qx * qx + qy * qy)), 0.0), 1.0)
    ax = px - qx * t
    ay = py - qy * t
    bx = px - qx * np.minimum(px / qx, 1.0)
    by = py - qy
    d = np.minimum(ax * ax + ay * ay, bx * bx + by * by)
    s = np.minimum(py * qx - px * qy, qy - py)  # > 0 inside
    return np.sqrt(d) * np.where(s > 0.0, -1.0, 1.0)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # five-pointed star, one point up (Inigo Quilez, sdStar5); his frame is y-up
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = np.abs(u)
    py = -(v - _STAR_CY)
    dot = np.maximum(k1x * px + k1y * py, 0.0)
    px, py = px - 2.0 * dot * k1x, py - 2.0 * dot * k1y
    dot = np.maximum(k2x * px + k2y * py, 0.0)
    px, py = px - 2.0 * dot * k2x, py - 2.0 * dot * k2y
    px = np.abs(px)
    py = py - _STAR_R
    bax, bay = _STAR_INNER * _STAR_R * -k1y, _STAR_INNER * _STAR_R * k1x - _STAR_R
    h = np.minimum(np.maximum((px * bax + py * bay) * (1.0 / (bax * bax + bay * bay)), 0.0), 1.0)
    dx, dy = px - bax * h, py - bay * h
    return np.sqrt(dx * dx + dy * dy) * np.where(py * bax - px * bay > 0.0, 1.0, -1.0)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    t = _HEART_T
    w = v - _HEART_CY
    diamond = _box((u + w) / _SQRT2, (w - u) / _SQRT2, t / _SQRT2, t / _SQRT2)
    au = np.abs(u) - t / 2.0
    aw = w + t / 2.0
    lobes = np.sqrt(au * au + aw * aw) - t / _SQRT2
    return np.minimum(diamond, lobes)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, 1.0, _CROSS_ARM), _box(u, v, _CROSS_ARM, 1.0))


SDF = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "heart": _heart,
    "cross": _cross,
}


def check_shape(shape: str) -> str:
    """Return `shape` if it is a known shape, else raise ValueError listing the valid ones."""
    if shape not in SDF:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")
    return shape


def signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to `shape` in its local frame (negative inside, bbox longer side spans -1..1).

    Args:
        shape (`str`): one of `SHAPES`.
        u (`np.ndarray`): x coordinates, local units (right positive); broadcasts with `v`.
        v (`np.ndarray`): y coordinates, local units (down positive).
    """
    return SDF[check_shape(shape)](u, v)


@cache
def _centroid(shape: str) -> tuple[float, float]:
    n = 400
    g = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    inside = SDF[shape](g[None, :], g[:, None]) <= 0.0
    rows, cols = np.nonzero(inside)
    return float(g[cols].mean()), float(g[rows].mean())


def _star_point(angle_deg: float) -> tuple[float, float]:
    # outer point at `angle_deg` clockwise from straight up
    a = np.deg2rad(angle_deg)
    return float(_STAR_R * np.sin(a)), float(_STAR_CY - _STAR_R * np.cos(a))


# shape -> keypoint name -> (u, v) in the local frame; "center" is the area centroid
KEYPOINTS: dict[str, dict[str, tuple[float, float]]] = {
    "circle": {
        "center": (0.0, 0.0),
        "top point": (0.0, -1.0),
        "bottom point": (0.0, 1.0),
        "leftmost point": (-1.0, 0.0),
        "rightmost point": (1.0, 0.0),
    },
    "square": {
        "center": (0.0, 0.0),
        "top left corner": (-1.0, -1.0),
        "top right corner": (1.0, -1.0),
        "bottom left corner": (-1.0, 1.0),
        "bottom right corner": (1.0, 1.0),
    },
    "triangle": {
        "center": _centroid("triangle"),
        "top vertex": (0.0, -1.0),
        "bottom left vertex": (-1.0, 1.0),
        "bottom right vertex": (1.0, 1.0),
    },
    "star": {
        "center": _centroid("star"),
        "top point": _star_point(0.0),
        "left point": _star_point(-72.0),
        "right point": _star_point(72.0),
        "bottom left point": _star_point(-144.0),
        "bottom right point": _star_point(144.0),
    },
    "heart": {
        "center": _centroid("heart"),
        "bottom tip": (0.0, float(_HEART_CY + _HEART_T)),
        "top notch": (0.0, float(_HEART_CY - _HEART_T)),
    },
    "cross": {
        "center": (0.0, 0.0),
        "top end": (0.0, -1.0),
        "bottom end": (0.0, 1.0),
        "left end": (-1.0, 0.0),
        "right end": (1.0, 0.0),
    },
}


def keypoint(shape: str, name: str) -> tuple[float, float]:
    """Local (u, v) of a named keypoint of `shape`.

    Args:
        shape (`str`): one of `SHAPES`.
        name (`str`): one of `KEYPOINTS[shape]`.
    """
    points = KEYPOINTS[check_shape(shape)]
    if name not in points:
        raise ValueError(f"shape {shape!r} has no keypoint {name!r}; valid: {', '.join(points)}")
    return points[name]
