"""Rasterise scenes: analytic antialiasing from signed distances, one small patch per object.

Coverage of a pixel is `clip(0.5 - d, 0, 1)` with `d` the signed distance (pixels) from the pixel centre to the
shape; the ground-truth mask of an object is "pixel centre inside the shape" (coverage >= 0.5). Only the patch
around each object's bounding box is evaluated, so rendering cost does not grow with the number of background
pixels. Everything is deterministic: the same scene gives the same bytes at a given size.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .palette import BACKGROUND, COLOURS, colour_rgb
from .scene import Scene, SceneObject
from .shapes import SDF

MIN_SIZE = 32
MAX_SIZE = 1024
TEXTURE_AMPLITUDE = 3.0  # grey levels per texture wave (4 waves)
_RGB = {name: np.array(rgb, dtype=np.float32) for name, rgb in COLOURS.items()}


def check_size(size: int) -> int:
    """Return `size` if it is a valid square image side, else raise ValueError with the valid range."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size={size!r} is out of range; valid: integer {MIN_SIZE}..{MAX_SIZE}")
    return int(size)


@cache
def _centres(size: int) -> np.ndarray:
    return np.arange(size, dtype=np.float32) + np.float32(0.5)


def object_coverage(obj: SceneObject, size: int) -> tuple[slice, slice, np.ndarray]:
    """Antialiased coverage of one object on the patch around its bounding box.

    Args:
        obj (`SceneObject`): the object.
        size (`int`): image side in pixels.

    Returns:
        `(rows, cols, coverage)`: slices into the image and a float32 (h, w) array in [0, 1].
    """
    half = obj.side * size / 2.0  # pixels per local unit
    cx, cy = obj.cx * size, obj.cy * size
    x0, x1 = max(int(cx - half) - 1, 0), min(int(cx + half) + 2, size)
    y0, y1 = max(int(cy - half) - 1, 0), min(int(cy + half) + 2, size)
    centres = _centres(size)
    inv = np.float32(1.0 / half)
    u = ((centres[x0:x1] - np.float32(cx)) * inv)[None, :]
    v = ((centres[y0:y1] - np.float32(cy)) * inv)[:, None]
    d = SDF[obj.shape](u, v)
    cov = np.minimum(np.maximum(np.float32(0.5) - d * np.float32(half), np.float32(0.0)), np.float32(1.0))
    return slice(y0, y1), slice(x0, x1), cov


@cache
def _plain(size: int) -> np.ndarray:
    out = np.empty((size, size, 3), dtype=np.float32)
    out[:] = BACKGROUND
    out.setflags(write=False)
    return out


def background(scene: Scene, size: int) -> np.ndarray:
    """Float32 (size, size, 3) background of a scene: plain light grey, or lightly textured (smooth waves)."""
    size = check_size(size)
    if scene.background == "plain":
        return _plain(size).copy()
    rng = np.random.default_rng(scene.texture_seed)
    t = _centres(size) / np.float32(size)
    field = np.zeros((size, size), dtype=np.float32)
    for _ in range(4):
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(2.0, 7.0) * 2 * np.pi
        phase = rng.uniform(0, 2 * np.pi)
        fx, fy = np.float32(freq * np.cos(angle)), np.float32(freq * np.sin(angle))
        field += np.float32(TEXTURE_AMPLITUDE) * np.sin(t[None, :] * fx + t[:, None] * fy + np.float32(phase))
    return _plain(size) + field[:, :, None]


def render_float(scene: Scene, size: int = 64) -> np.ndarray:
    """Float32 (size, size, 3) render in 0..255 before rounding (see `render`)."""
    img = background(scene, size)
    for obj in scene.objects:
        rows, cols, cov = object_coverage(obj, size)
        patch = img[rows, cols]
        patch += cov[:, :, None] * (_RGB[obj.colour] - patch)
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round a float image in 0..255 to uint8."""
    return np.minimum(np.maximum(img + np.float32(0.5), np.float32(0.0)), np.float32(255.0)).astype(np.uint8)


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """Render a scene to an RGB uint8 (size, size, 3) array.

    Args:
        scene (`Scene`): what to draw.
        size (`int`): image side in pixels, 32..1024 (64 by default; 128 and 256 are tested).
    """
    return to_uint8(render_float(scene, check_size(size)))


def object_masks(scene: Scene, size: int = 64) -> np.ndarray:
    """Ground-truth masks, bool (n_objects, size, size): pixel centre inside the object.

    Args:
        scene (`Scene`): the scene.
        size (`int`): image side in pixels.
    """
    size = check_size(size)
    masks = np.zeros((len(scene.objects), size, size), dtype=bool)
    for i, obj in enumerate(scene.objects):
        rows, cols, cov = object_coverage(obj, size)
        masks[i, rows, cols] = cov >= 0.5
    return masks


def ring_coverage(size: int, centre: tuple[float, float], radius: float, width: float) -> np.ndarray:
    """Antialiased float32 (size, size) coverage of a ring (annulus) centred at `centre` (pixels, x/y).

    Args:
        size (`int`): image side in pixels.
        centre: (x, y) in pixels.
        radius (`float`): mid-line radius in pixels.
        width (`float`): stroke width in pixels.
    """
    c = _centres(check_size(size))
    dx = (c - np.float32(centre[0]))[None, :]
    dy = (c - np.float32(centre[1]))[:, None]
    d = np.abs(np.sqrt(dx * dx + dy * dy) - np.float32(radius)) - np.float32(width / 2.0)
    return np.clip(np.float32(0.5) - d, 0.0, 1.0)


def draw_ring(image: np.ndarray, centre: tuple[float, float], radius: float, width: float, colour: str) -> np.ndarray:
    """Copy of a uint8 image with an antialiased ring of a named colour drawn at `centre` (pixels)."""
    cov = ring_coverage(image.shape[0], centre, radius, width)[:, :, None]
    img = image.astype(np.float32)
    img += cov * (np.asarray(colour_rgb(colour), dtype=np.float32) - img)
    return to_uint8(img)


def blend_mask(image: np.ndarray, mask: np.ndarray, colour: str, alpha: float) -> np.ndarray:
    """Copy of a uint8 image with `colour` alpha-blended over the pixels of a bool mask."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is out of range; valid: (0, 1]")
    img = image.astype(np.float32)
    img[mask] += np.float32(alpha) * (np.asarray(colour_rgb(colour), dtype=np.float32) - img[mask])
    return to_uint8(img)
