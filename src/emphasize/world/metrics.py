"""Metrics of the embedded world. Pure functions; every one is defined here in words.

Text-to-image (`t2i_metrics`, from a caption spec and the detections of the generated image):

- `object_recall`: share of the caption's objects found, one-to-one, with the right shape and colour (and size
  when the caption states it). `shape_recall` / `colour_recall`: the same, matching only shape / only colour.
- `all_present`: 1 if every object of the caption was found (object_recall == 1), else 0.
- `binding`: among the caption's objects whose shape and whose colour both occur somewhere in the image, the
  share found with the two on the same object (None when no such object). A red circle + blue square drawn as
  a blue circle + red square scores 0.
- `count_correct`: 1 if the image holds exactly as many objects as the caption, and for every (shape, colour)
  of the caption exactly as many of that kind, else 0.
- `relation_correct`: for captions with a relation, 1 if two distinct detected objects match the subject and the
  object and their bounding-box centres stand in the relation; None without a relation.

Instruction tasks (`task_metrics`, from the task item and the model's output image):

- `psnr` (dB, capped at `PSNR_CAP` for identical images) and `ssim` (Gaussian window, sigma 1.5, per channel,
  averaged) of the output against the exact target.
- `preservation_psnr`: PSNR to the target over the pixels the edit must not touch (where input and target are
  equal, minus a small dilation); None for enhancement, where every pixel changes.
- `mask_iou` (segment): the output's overlay mask is read from the blend itself: per pixel
  `beta = <out - in, m - in> / |m - in|^2` (m the mask colour), mask where `beta >= alpha / 2`; IoU with the
  ground-truth mask. Overlays in other colours do not count.
- `keypoint_error` (keypoint, px): pixels that moved at least half way from the input towards the ring colour
  are the ring; a least-squares circle fit (Kasa, one outlier-trimming pass) gives its centre; distance to the
  true keypoint. None (and `keypoint_found` 0) when no ring is found.
- `success`: segment: IoU >= `iou_success`; keypoint: ring found within `keypoint_tolerance`; edit and enhance:
  the detector finds exactly the objects of the target scene: unchanged objects (shape, colour, size) within
  `position_tolerance` of their place, an added object with its shape, colour (and size, if stated) on the
  requested side (centre in that half of the image), a moved object displaced at least half a grid cell in the
  requested direction and at most half a cell across it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .captions import CaptionSpec, ObjectSpec
from .detector import Detection, DetectorConfig, as_rgb, detect
from .palette import COLOUR_NAMES, PALETTE, colour_rgb
from .rendering import object_masks
from .scene import SceneObject, relation_holds

PSNR_CAP = 100.0


@dataclass(frozen=True)
class MetricConfig:
    """Knobs of the task metrics. Fractions are of the image side."""

    position_tolerance: float = 0.08  # an object that should stay may drift this far (5 px at 64 px)
    keypoint_tolerance: float = 0.05  # a keypoint ring within this distance is a success (3.2 px at 64 px)
    iou_success: float = 0.5  # a segmentation with at least this IoU is a success
    min_contrast: float = 40.0  # overlay / ring pixels are only decidable where |colour - input| >= this (sRGB)
    min_ring_pixels: int = 6  # fewer ring pixels than this: no ring found
    preserve_dilation: float = 0.03  # the edited region grows by this much before preservation is measured
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # detector used by success and t2i metrics

    def __post_init__(self):
        for name in ("position_tolerance", "keypoint_tolerance", "iou_success", "preserve_dilation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is out of range; valid: 0..1")
        if not 0.0 <= self.min_contrast <= 255.0:
            raise ValueError(f"min_contrast={self.min_contrast} is out of range; valid: 0..255")
        if self.min_ring_pixels < 3:
            raise ValueError(f"min_ring_pixels={self.min_ring_pixels} is out of range; valid: >= 3")


# ---------------------------------------------------------------- image metrics


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_rgb(a), as_rgb(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a, b, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB between two RGB images (255 peak), `PSNR_CAP` when identical.

    Args:
        a, b: RGB images of the same shape.
        mask (`np.ndarray`, *optional*): bool (H, W); only these pixels count.
    """
    a, b = _pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
        if diff.size == 0:
            raise ValueError("psnr: the mask selects no pixels")
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def ssim(a, b, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two RGB images, Gaussian window, averaged over channels.

    Args:
        a, b: RGB images of the same shape.
        sigma (`float`): Gaussian window sigma in pixels.
    """
    a, b = _pair(a, b)
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = (sigma, sigma, 0)

    def blur(z):
        return ndimage.gaussian_filter(z, s, truncate=3.5)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return float(np.mean(num / den))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def _towards(output: np.ndarray, input: np.ndarray, colour: str, min_contrast: float) -> np.ndarray:
    """Per pixel, how far the output moved from the input towards `colour` (0 = not, 1 = all the way).

    A pixel counts only where `colour` explains the change best: of all palette colours, the line from the input
    pixel towards `colour` passes closest to the output pixel (so a red ring is not an orange one).
    """
    out = output.astype(np.float32)[:, :, None, :]  # (H, W, 1, 3)
    inp = input.astype(np.float32)[:, :, None, :]
    direction = PALETTE[None, None] - inp  # (H, W, K, 3)
    norm2 = np.maximum((direction * direction).sum(-1), 1.0)  # (H, W, K)
    change = out - inp
    beta = (change * direction).sum(-1) / norm2
    along = np.clip(beta, 0.0, None)[..., None] * direction
    resid = ((change - along) ** 2).sum(-1)  # (H, W, K)
    colour_rgb(colour)  # validates the name
    k = COLOUR_NAMES.index(colour)
    best = resid.argmin(-1) == k
    return np.where(best & (norm2[..., k] >= min_contrast**2), beta[..., k], 0.0)


def overlay_mask(output, input, colour: str, alpha: float = 0.5, min_contrast: float = 40.0) -> np.ndarray:
    """The mask a segmentation output overlays in `colour`: pixels blended at least `alpha / 2` towards it.

    Args:
        output: the model's RGB image.
        input: the task's input image.
        colour (`str`): the mask colour named by the instruction.
        alpha (`float`): the overlay opacity of the targets.
        min_contrast (`float`): pixels whose input is closer than this to `colour` cannot be decided (not mask).
    """
    output, input = _pair(output, input)
    return _towards(output, input, colour, min_contrast) >= alpha / 2.0


def find_ring(output, input, colour: str, min_contrast: float = 40.0, min_pixels: int = 6):
    """Centre (x, y) in pixels of a ring drawn in `colour` (changes from input towards it), or None.

    Args:
        output: the model's RGB image.
        input: the task's input image.
        colour (`str`): the ring colour named by the instruction.
        min_contrast (`float`): pixels whose input is closer than this to `colour` are ignored.
        min_pixels (`int`): fewer ring pixels than this: None. None too when the fitted circle's centre lies
            outside the image or its radius exceeds half the image (the changed pixels are no ring).
    """
    output, input = _pair(output, input)
    gamma = _towards(output, input, colour, min_contrast)
    ys, xs = np.nonzero(gamma >= 0.5)
    if xs.size < min_pixels:
        return None
    x, y = xs + 0.5, ys + 0.5
    w = np.minimum(gamma[ys, xs], 1.0)
    # algebraic fit (Kasa) for a start, then geometric Gauss-Newton on sum w (|p - c| - r)^2, trimming outliers
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    sol, *_ = np.linalg.lstsq(a, -(x * x + y * y), rcond=None)
    cx, cy = -sol[0] / 2.0, -sol[1] / 2.0
    r = math.sqrt(max(cx * cx + cy * cy - sol[2], 1e-6))
    for it in range(20):
        dx, dy = x - cx, y - cy
        dist = np.maximum(np.hypot(dx, dy), 1e-9)
        res = dist - r
        if it == 4:  # drop pixels far off the circle (other changes towards the same colour)
            keep = np.abs(res) <= max(2.0, 3.0 * float(np.median(np.abs(res))))
            if keep.sum() >= min_pixels:
                x, y, w, dx, dy, dist, res = x[keep], y[keep], w[keep], dx[keep], dy[keep], dist[keep], res[keep]
        jac = np.stack([-dx / dist, -dy / dist, -np.ones_like(dist)], axis=1)
        jw = jac * w[:, None]
        step, *_ = np.linalg.lstsq(jw.T @ jac + 1e-9 * np.eye(3), -(jw.T @ res), rcond=None)
        cx, cy, r = cx + step[0], cy + step[1], r + step[2]
        if not np.all(np.isfinite((cx, cy, r))):
            return None
        if np.abs(step).max() < 1e-4:
            break
    height, width = gamma.shape
    if not (0 <= cx <= width and 0 <= cy <= height and r <= max(height, width) / 2):
        return None  # the changed pixels fit no ring inside the image (a stroke or a blob; the fit ran off)
    return (float(cx), float(cy))


# ---------------------------------------------------------------- text-to-image


def _matches(o: ObjectSpec, d: Detection, shape=True, colour=True) -> bool:
    return (
        (not shape or d.shape == o.shape)
        and (not colour or d.colour == o.colour)
        and (o.size is None or not (shape and colour) or d.size == o.size)
    )


def _max_matching(ok: np.ndarray) -> tuple[int, list[tuple[int, int]]]:
    """Maximum one-to-one matching of a bool (rows, cols) compatibility matrix."""
    if ok.size == 0:
        return 0, []
    rows, cols = linear_sum_assignment(-ok.astype(np.float64))
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]
    return len(pairs), pairs


def t2i_metrics(spec: CaptionSpec, detections: list[Detection]) -> dict:
    """Text-to-image metrics of one image (see the module docstring for the definitions).

    Args:
        spec (`CaptionSpec`): what the caption asks for.
        detections (`list[Detection]`): what `detect` found in the generated image.
    """
    objs, dets = spec.objects, detections
    n = len(objs)

    def compat(shape=True, colour=True):
        table = [[_matches(o, d, shape, colour) for d in dets] for o in objs]
        return np.array(table, dtype=bool).reshape(n, len(dets))

    full, _ = _max_matching(compat())
    shapes, _ = _max_matching(compat(colour=False))
    colours, _ = _max_matching(compat(shape=False))
    seen_shapes = {d.shape for d in dets}
    seen_colours = {d.colour for d in dets}
    bindable = sum(o.shape in seen_shapes and o.colour in seen_colours for o in objs)
    kinds: dict[tuple[str, str], int] = {}
    for o in objs:
        kinds[(o.shape, o.colour)] = kinds.get((o.shape, o.colour), 0) + 1
    count_ok = len(dets) == n and all(
        sum(d.shape == s and d.colour == c for d in dets) == k for (s, c), k in kinds.items()
    )
    relation = None
    if spec.relation is not None:
        rel = spec.relation
        subj, obj = objs[rel.subject], objs[rel.object]
        relation = int(
            any(
                _matches(subj, a) and _matches(obj, b) and relation_holds(rel.relation, a.center, b.center)
                for i, a in enumerate(dets)
                for j, b in enumerate(dets)
                if i != j
            )
        )
    return {
        "n_objects": n,
        "n_detected": len(dets),
        "object_recall": full / n if n else 1.0,
        "shape_recall": shapes / n if n else 1.0,
        "colour_recall": colours / n if n else 1.0,
        "all_present": int(full == n),
        "binding": (full / bindable) if bindable else None,
        "count_correct": int(count_ok),
        "relation_correct": relation,
    }


def score_t2i(spec: CaptionSpec, image, config: MetricConfig | None = None) -> dict:
    """Detect the objects of a generated image and compute `t2i_metrics` against a caption spec.

    Args:
        spec (`CaptionSpec`): what the caption asks for (e.g. `parse_caption(text)` or `item.spec`).
        image: the generated RGB image.
        config (`MetricConfig`, *optional*): detector knobs.
    """
    config = config or MetricConfig()
    return t2i_metrics(spec, detect(image, config.detector))


# ---------------------------------------------------------------- instruction tasks


def _px(o: SceneObject, size: int) -> tuple[float, float]:
    return (o.cx * size, o.cy * size)


def _same(o: SceneObject, d: Detection, size: int, tol: float) -> bool:
    return (
        d.shape == o.shape
        and d.colour == o.colour
        and d.size == o.size
        and math.dist(d.center, _px(o, size)) <= tol * size
    )


_HALF = {
    "left": lambda x, y: x < 0.5,
    "right": lambda x, y: x > 0.5,
    "top": lambda x, y: y < 0.5,
    "bottom": lambda x, y: y > 0.5,
}
_AXIS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def edit_success(item, detections: list[Detection], config: MetricConfig | None = None) -> int:
    """1 if the detections show exactly the target scene of an edit / enhance item (see module docstring).

    Args:
        item (`TaskItem`): the task item (its `edit`, `scene`, `target_scene` and `size` are used).
        detections (`list[Detection]`): what `detect` found in the output.
        config (`MetricConfig`, *optional*): tolerances.
    """
    config = config or MetricConfig()
    size, edit, after = item.size, item.edit, item.target_scene
    cell = 1.0 / after.grid
    if len(detections) != len(after.objects):
        return 0

    def ok(i: int, o: SceneObject, d: Detection) -> bool:
        if edit.kind == "add" and i == edit.target:
            x, y = d.center[0] / size, d.center[1] / size
            return (
                d.shape == o.shape
                and d.colour == o.colour
                and (edit.size is None or d.size == edit.size)
                and _HALF[edit.direction](x, y)
            )
        if edit.kind == "move" and i == edit.target:
            before = item.scene.objects[i]
            dx, dy = d.center[0] / size - before.cx, d.center[1] / size - before.cy
            ax, ay = _AXIS[edit.direction]
            along, across = dx * ax + dy * ay, abs(dx * ay - dy * ax)
            return (
                d.shape == o.shape
                and d.colour == o.colour
                and d.size == o.size
                and along >= cell / 2
                and across <= cell / 2
            )
        return _same(o, d, size, config.position_tolerance)

    compat = np.array([[ok(i, o, d) for d in detections] for i, o in enumerate(after.objects)], dtype=bool)
    matched, _ = _max_matching(compat.reshape(len(after.objects), len(detections)))
    return int(matched == len(after.objects))


def _edit_region(item, config: MetricConfig) -> np.ndarray:
    changed = np.any(item.input != item.target, axis=-1)
    steps = int(math.ceil(config.preserve_dilation * item.size))
    if steps and changed.any():
        changed = ndimage.binary_dilation(changed, structure=np.ones((3, 3), dtype=bool), iterations=steps)
    return changed


def task_metrics(item, output, config: MetricConfig | None = None) -> dict:
    """Metrics of one instruction-task output (see the module docstring for the definitions).

    Args:
        item (`TaskItem`): the task item (input, target, scenes, edit).
        output: the model's RGB output image, same size as the target.
        config (`MetricConfig`, *optional*): tolerances and detector knobs.
    """
    config = config or MetricConfig()
    out = as_rgb(output)
    if out.shape != item.target.shape:
        raise ValueError(
            f"output is {out.shape[1]}x{out.shape[0]}, expected {item.target.shape[1]}x{item.target.shape[0]}"
        )
    kind = item.edit.kind
    row: dict = {"kind": kind, "psnr": psnr(out, item.target), "ssim": ssim(out, item.target)}
    if item.task == "enhance":
        row["preservation_psnr"] = None
    else:
        keep = ~_edit_region(item, config)
        row["preservation_psnr"] = psnr(out, item.target, keep) if keep.any() else None
    if kind == "segment":
        gt = object_masks(item.scene, item.size)[item.edit.target]
        alpha = float(item.edit.strength) if item.edit.strength is not None else 0.5
        pred = overlay_mask(out, item.input, item.edit.colour, alpha, config.min_contrast)
        row["mask_iou"] = mask_iou(pred, gt)
        row["success"] = int(row["mask_iou"] >= config.iou_success)
    elif kind == "keypoint":
        centre = find_ring(out, item.input, item.edit.colour, config.min_contrast, config.min_ring_pixels)
        truth = (item.edit.point[0] * item.size, item.edit.point[1] * item.size)
        err = None if centre is None else math.dist(centre, truth)
        row["keypoint_found"] = int(centre is not None)
        row["keypoint_error"] = err
        row["success"] = int(err is not None and err <= config.keypoint_tolerance * item.size)
    else:
        row["success"] = edit_success(item, detect(out, config.detector), config)
    return row


def aggregate(rows: list[dict]) -> dict:
    """Mean of every numeric metric over the rows that define it (None is skipped), plus `n_items` and, for rows
    with a `kind`, `success_<kind>` means.

    Args:
        rows (`list[dict]`): per-item metric dicts.
    """
    out: dict = {"n_items": len(rows)}
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    for k in keys:
        values = [r[k] for r in rows if isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool)]
        values += [float(r[k]) for r in rows if isinstance(r.get(k), bool)]
        if values:
            out[k] = float(np.mean(values))
    kinds = sorted({r["kind"] for r in rows if "kind" in r and "success" in r})
    if len(kinds) > 1:
        for kind in kinds:
            out[f"success_{kind}"] = float(np.mean([r["success"] for r in rows if r.get("kind") == kind]))
    return out
