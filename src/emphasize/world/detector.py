"""Analytic detector: any RGB image in, world objects out. No learning.

Pipeline (all vectorised numpy, one `scipy.ndimage.label` call):

1. Background: per-channel median of the image border (robust to objects touching the border and to texture).
2. Colour: every pixel `p` is projected on the segment from the background `b` to each palette colour `c`,
   `alpha = <p - b, c - b> / |c - b|^2` (clipped to 0..1); the colour whose segment passes closest wins. A pixel is
   foreground when it lies at least half way along that segment (`alpha >= 0.5`, which for a render is exactly
   "coverage >= 0.5", the ground-truth mask) and not too far off it (`residual <= max_residual * |c - b|`).
   Antialiased edges (mixtures of one colour with the background) therefore never take a neighbouring colour.
3. Objects: 8-connected components of the foreground; components smaller than `min_area` are speckles and are
   dropped; a component whose pixels split into two colour groups of at least `min_area` each is split by colour.
4. Shape: the component's coverage of its colour (alpha, with the 2-pixel rim of background pixels around it),
   cropped to its bounding box, is resampled (exact area weights) to a `grid x grid` map and compared (mean
   absolute difference, plus the bbox aspect ratio) with a template bank: the six analytic shapes rasterised by
   their signed distances, exactly as the renderer does, at the two pixel sizes around the object's, four
   sub-pixel offsets and four blur levels (built once, ~0.2 s). The nearest template wins; too far is "unknown".
5. Size: the side implied by the coverage mass (blur keeps mass while it erodes tips) and the shape's fill ratio,
   against `size_threshold` ("small" / "large"); implausibly small or large objects are "other".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy import ndimage

from .palette import COLOUR_NAMES, PALETTE
from .shapes import SDF, SHAPES

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class DetectorConfig:
    """Knobs of the analytic detector. Fractions are of the image side (or area)."""

    min_area: float = 0.0035  # smallest kept component, fraction of the image area (14 px at 64 px): speckle filter
    fg_alpha: float = 0.5  # foreground when at least this far along background -> colour (0.5 = half coverage)
    max_residual: float = 0.5  # foreground only if at most this far (fraction of |colour - bg|) off that line
    border: int = 2  # width in pixels of the image border used to estimate the background
    size_threshold: float = 0.23  # object side separating "small" (below) from "large" (renders: 0.18 / 0.28)
    min_side: float = 0.08  # object sides below this are size "other"
    max_side: float = 0.45  # object sides above this are size "other"
    grid: int = 8  # occupancy-map resolution for shape matching
    aspect_weight: float = 0.5  # weight of |log aspect ratio| difference in the shape distance
    max_shape_distance: float = 0.2  # shape distance above which the shape is "unknown"

    def __post_init__(self):
        checks = {
            "min_area": (0.0, 0.5),
            "fg_alpha": (0.05, 1.0),
            "max_residual": (0.0, 2.0),
            "size_threshold": (0.0, 1.0),
            "min_side": (0.0, 1.0),
            "max_side": (0.0, 1.0),
            "aspect_weight": (0.0, 10.0),
            "max_shape_distance": (0.0, 10.0),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name}={value} is out of range; valid: {lo}..{hi}")
        if not 1 <= self.border <= 16:
            raise ValueError(f"border={self.border} is out of range; valid: 1..16")
        if not 4 <= self.grid <= 32:
            raise ValueError(f"grid={self.grid} is out of range; valid: 4..32")


@dataclass(frozen=True)
class Detection:
    """One object found in an image. Pixel coordinates, origin top left, x right."""

    shape: str  # one of SHAPES, or "unknown"
    colour: str  # one of COLOUR_NAMES
    size: str  # "small", "large" or "other"
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    centroid: tuple[float, float]  # area centroid (x, y) of the mask, pixel centres at +0.5
    area: int  # mask pixels
    shape_distance: float  # distance to the nearest shape template (0 = perfect)
    mask: np.ndarray = field(repr=False, compare=False)  # bool (H, W)

    @property
    def center(self) -> tuple[float, float]:
        """Bounding-box centre (x, y) in pixels: the position a scene object's (cx, cy) refers to."""
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


def as_rgb(image) -> np.ndarray:
    """An image as a uint8 (H, W, 3) array.

    Args:
        image: a PIL image (any mode), or an array: uint8 (H, W, 3|4) or (H, W), or float in 0..1.
    """
    if hasattr(image, "convert") and hasattr(image, "size"):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0.0 or np.nanmax(arr) > 1.0):
            raise ValueError("float images must lie in 0..1")
        return np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"image dtype must be uint8 or float, got {arr.dtype}")


def estimate_background(image: np.ndarray, border: int = 2) -> np.ndarray:
    """Per-channel median (float32, 3) of a border `border` pixels wide: the background colour."""
    img = np.asarray(image)
    b = max(1, min(border, img.shape[0] // 2, img.shape[1] // 2))
    ring = np.concatenate(
        [
            img[:b].reshape(-1, 3),
            img[-b:].reshape(-1, 3),
            img[b:-b, :b].reshape(-1, 3),
            img[b:-b, -b:].reshape(-1, 3),
        ]
    )
    planar = np.ascontiguousarray(ring.T)  # (3, M)
    n = planar.shape[1]
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(planar, [lo, hi], axis=1)
    return ((part[:, lo].astype(np.float32) + part[:, hi]) / 2).astype(np.float32)


@cache
def _resample_matrix(n: int, g: int) -> np.ndarray:
    # (g, n): share of pixel i inside bin r, rows normalised to sum 1 (exact area weights)
    edges = np.arange(g + 1) * (n / g)
    lo = np.maximum(edges[:-1, None], np.arange(n)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n)[None, :] + 1)
    w = np.clip(hi - lo, 0.0, None)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def occupancy(mask: np.ndarray, grid: int) -> np.ndarray:
    """A (h, w) mask or coverage map resampled to (grid, grid) by exact area weights."""
    h, w = mask.shape
    return _resample_matrix(h, grid) @ mask.astype(np.float32, copy=False) @ _resample_matrix(w, grid).T


# template bank: pixel sides, sub-pixel centre offsets and blur levels the analytic shapes are rasterised at
_BANK_SIDES = (8.0, 10.0, 12.0, 14.5, 17.5, 21.0, 26.0, 32.0, 40.0, 52.0, 70.0, 96.0)
_BANK_OFFSETS = ((0.0, 0.0), (0.5, 0.25), (0.25, 0.5), (0.5, 0.5))
_BANK_BLURS = (0.0, 0.6, 1.0, 1.3)


def _raster(shape: str, side: float, offset: tuple[float, float], blur: float) -> np.ndarray:
    n = int(np.ceil(side + 6 * blur + 6))
    half = side / 2.0
    c = np.arange(n, dtype=np.float32) + 0.5 - n / 2.0
    u = ((c - offset[0]) / half)[None, :]
    v = ((c - offset[1]) / half)[:, None]
    cov = np.clip(0.5 - SDF[shape](u, v) * half, 0.0, 1.0)
    if blur > 0:
        cov = ndimage.gaussian_filter(cov, blur, mode="constant")
    rows, cols = np.nonzero(cov >= 0.5)
    return cov[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


@cache
def shape_templates(grid: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Template bank of the analytic shapes, rasterised as the detector would see them.

    Returns `(log_sides, banks)`: `banks[j]` holds the templates of pixel sides j and j + 1 over all shapes,
    sub-pixel offsets and blur levels, as flattened occupancy maps (T, grid * grid), log aspect ratios (T,) and
    shape indices (T,).
    """
    per_side = []
    for side in _BANK_SIDES:
        maps, aspects, index = [], [], []
        for k, shape in enumerate(SHAPES):
            for offset in _BANK_OFFSETS:
                for blur in _BANK_BLURS:
                    crop = _raster(shape, side, offset, blur)
                    maps.append(occupancy(crop, grid))
                    aspects.append(np.log(crop.shape[0] / crop.shape[1]))
                    index.append(k)
        per_side.append((np.stack(maps).reshape(len(maps), -1), np.array(aspects, dtype=np.float32), np.array(index)))
    # the two bank sides nearest (in log scale) to any side are adjacent: one merged bank per adjacent pair
    banks = [
        tuple(np.concatenate([a, b]) for a, b in zip(per_side[j], per_side[j + 1], strict=True))
        for j in range(len(per_side) - 1)
    ]
    return np.log(np.array(_BANK_SIDES)), banks


def classify_shape(mask: np.ndarray, config: DetectorConfig | None = None) -> tuple[str, float]:
    """Nearest shape of a coverage map cropped to its bounding box, and its distance.

    The map is compared with the template banks of the two pixel sides around its longer side.

    Args:
        mask (`np.ndarray`): float coverage in 0..1 (or bool) (h, w), cropped to the box where coverage >= 0.5.
        config (`DetectorConfig`, *optional*): grid, aspect weight and "unknown" threshold.
    """
    config = config or DetectorConfig()
    log_sides, banks = shape_templates(config.grid)
    occ = occupancy(mask, config.grid).reshape(1, -1)
    aspect = np.log(mask.shape[0] / mask.shape[1])
    # the bank pair around the mask's longer side (clamped at both ends of the bank)
    j = int(np.clip(np.searchsorted(log_sides, np.log(max(mask.shape))) - 1, 0, len(banks) - 1))
    maps, aspects, index = banks[j]
    dist = np.abs(maps - occ).sum(axis=1) * np.float32(1.0 / occ.size)
    dist += config.aspect_weight * np.abs(aspects - aspect)
    t = int(np.argmin(dist))
    best_d = float(dist[t])
    return (SHAPES[int(index[t])] if best_d <= config.max_shape_distance else "unknown"), best_d


def colour_labels(image: np.ndarray, config: DetectorConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel palette index (int8 (H, W), -1 for background) and the estimated background colour (3,).

    Args:
        image (`np.ndarray`): uint8 (H, W, 3).
        config (`DetectorConfig`, *optional*): foreground thresholds and border width.
    """
    config = config or DetectorConfig()
    h, w = image.shape[:2]
    bg = estimate_background(image, config.border)
    p = np.array(image.reshape(-1, 3).T, dtype=np.float32, order="C")  # (3, N) planar: fast per-channel maths
    p -= bg[:, None]
    d2 = p[0] * p[0]
    d2 += p[1] * p[1]
    d2 += p[2] * p[2]  # (N,) squared distance to the background
    delta = PALETTE - bg  # (K, 3)
    norm2 = np.maximum((delta * delta).sum(1), 1.0)  # (K,); a colour equal to the background is never found
    # alpha >= fg_alpha needs |p - bg| >= fg_alpha * |c - bg|: skip the pixels too close to the background
    cand = np.flatnonzero(d2 >= (config.fg_alpha**2 * 0.99) * norm2.min())
    labels = np.full(h * w, -1, dtype=np.int8)
    if cand.size:
        raw = (delta / norm2[:, None]) @ p[:, cand]  # (K, M) unclipped alpha
        alpha = np.minimum(np.maximum(raw, 0.0), 1.0)
        # squared residual off each background->colour segment, minus d2 (the same for every colour)
        resid2 = alpha * norm2[:, None] * (alpha - 2.0 * raw)
        k = resid2.argmin(0)
        cols = np.arange(cand.size)
        ok = (alpha[k, cols] >= config.fg_alpha) & (resid2[k, cols] + d2[cand] <= (config.max_residual**2) * norm2[k])
        labels[cand[ok]] = k[ok]
    return labels.reshape(h, w), bg


def detect(image, config: DetectorConfig | None = None) -> list[Detection]:
    """Find the objects in an image.

    Args:
        image: RGB image (uint8 (H, W, 3) array, float array in 0..1, or PIL image).
        config (`DetectorConfig`, *optional*): detector knobs.

    Returns:
        Detections sorted top-to-bottom, then left-to-right by bounding-box centre. An empty or uniform image
        gives an empty list.
    """
    config = config or DetectorConfig()
    img = as_rgb(image)
    h, w = img.shape[:2]
    if h < 4 or w < 4:
        return []
    labels, bg = colour_labels(img, config)
    fg = labels >= 0
    comp, n = ndimage.label(fg, structure=_EIGHT)
    if n == 0:
        return []
    side = float(max(h, w))
    min_area = max(3, int(round(config.min_area * h * w)))
    pad = 2  # rim of antialiased / blurred pixels around a component that still carries its colour
    out: list[Detection] = []
    for i, sl in enumerate(ndimage.find_objects(comp), start=1):
        if sl is None:
            continue
        local = comp[sl] == i
        area = int(local.sum())
        if area < min_area:
            continue
        win = (
            slice(max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)),
            slice(max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)),
        )
        comp_win, labels_win = comp[win], labels[win]
        counts = np.bincount(labels[sl][local], minlength=len(COLOUR_NAMES))
        order = np.argsort(counts)[::-1]
        if counts[order[1]] >= min_area:
            # two colour groups in one component: split it by colour
            for k in order[counts[order] >= min_area]:
                sub, m = ndimage.label((comp_win == i) & (labels_win == k), structure=_EIGHT)
                for j in range(1, m + 1):
                    part = sub == j
                    if part.sum() >= min_area:
                        out.append(_make(part, win, int(k), img, bg, labels_win, side, config))
        else:
            out.append(_make(comp_win == i, win, int(order[0]), img, bg, labels_win, side, config))
    out.sort(key=lambda d: (d.center[1], d.center[0]))
    return out


@cache
def _fills() -> dict[str, float]:
    # area of each shape / area of the square on its longer side
    n = 400
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    return {shape: float((SDF[shape](c[None, :], c[:, None]) <= 0.0).mean()) for shape in SHAPES}


_FILL = _fills()


def _make(
    member: np.ndarray,
    win: tuple[slice, slice],
    k: int,
    img: np.ndarray,
    bg: np.ndarray,
    labels_win: np.ndarray,
    side: float,
    config: DetectorConfig,
) -> Detection:
    """One detection from its member pixels (bool, window coordinates) in an image window."""
    rows, cols = np.nonzero(member)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    # coverage of colour k on the member and on background pixels of the window (antialiased / blurred rim)
    delta = PALETTE[k] - bg
    alpha = ((img[win].astype(np.float32) - bg) @ delta) * np.float32(1.0 / max(float(delta @ delta), 1.0))
    keep = member | (labels_win < 0)
    cov = np.where(keep, np.minimum(np.maximum(alpha, 0.0), 1.0), np.float32(0.0))
    shape, dist = classify_shape(cov[r0:r1, c0:c1], config)
    y0, x0 = win[0].start + r0, win[1].start + c0
    y1, x1 = win[0].start + r1, win[1].start + c1
    if shape in _FILL:
        # side from the coverage mass (blur keeps mass, while it erodes thin tips and so the bbox)
        longest = float(np.sqrt(cov.sum() / _FILL[shape])) / side
    else:
        longest = max(x1 - x0, y1 - y0) / side
    if longest < config.min_side or longest > config.max_side:
        size = "other"
    else:
        size = "small" if longest < config.size_threshold else "large"
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[win] = member
    n = rows.size
    centroid = (float(cols.sum() / n + win[1].start + 0.5), float(rows.sum() / n + win[0].start + 0.5))
    return Detection(shape, COLOUR_NAMES[k], size, (x0, y0, x1, y1), centroid, int(n), dist, mask)
