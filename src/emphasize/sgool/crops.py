"""Salient crops: boxes around the salient regions of a saliency map, and differentiable crops of an image.

Boxes come from the map alone (no gradient): pixels with `S >= threshold * max(S)` are grouped into 8-connected
components, ranked by saliency mass (the sum of S over the component), and the top `max_boxes` become boxes.
Each box is padded by a fraction of its own size, grown to a square (so the resize to CLIP's square input does not
distort it) of at least `min_size` of the shorter image side, and clamped to the image. Crops are plain slicing
plus `F.interpolate` of the decoded image, so the loss gradient flows through them to the latents while the boxes
stay fixed for the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    """A salient box in pixel coordinates of the image: rows `top:bottom`, columns `left:right` (end exclusive)."""

    top: int
    left: int
    bottom: int
    right: int
    mass: float  # saliency mass of the component the box was built from (sum of S over its pixels)

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def _square_span(start: float, end: float, side: float, limit: int) -> tuple[int, int]:
    """Grow [start, end) symmetrically to length `side` (at most `limit`), shifted to lie inside [0, limit)."""
    side = min(max(side, end - start), limit)
    center = (start + end) / 2
    lo = int(round(center - side / 2))
    lo = min(max(lo, 0), limit - int(round(side)))
    return lo, lo + int(round(side))


def salient_boxes(
    saliency: torch.Tensor,
    *,
    threshold: float = 0.5,
    max_boxes: int = 3,
    padding: float = 0.1,
    min_size: float = 0.25,
) -> list[Box]:
    """Boxes around the most salient connected regions of one saliency map, sorted by saliency mass (largest first).

    Args:
        saliency: `(H, W)`, `(1, H, W)` or `(1, 1, H, W)` map, non-negative; same size as the image to crop.
        threshold: a pixel is salient if `S >= threshold * max(S)`; in (0, 1].
        max_boxes: K, the number of boxes kept at most.
        padding: each side of a component's bounding box grows by this fraction of the box's height/width.
        min_size: smallest box side, as a fraction of the shorter image side.

    Returns:
        Up to `max_boxes` boxes; empty when the map has no positive, finite maximum (nothing salient).
    """
    s = saliency.detach().float().cpu()
    while s.dim() > 2:
        if s.shape[0] != 1:
            raise ValueError(f"saliency of shape {tuple(saliency.shape)} must hold one map: (H, W) or (1, 1, H, W)")
        s = s[0]
    s = torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0).numpy()
    peak = float(s.max()) if s.size else 0.0
    if peak <= 0:
        return []
    height, width = s.shape
    labels, count = ndimage.label(s >= threshold * peak, structure=np.ones((3, 3)))  # 8-connected components
    masses = ndimage.sum_labels(s, labels, index=np.arange(1, count + 1))
    slices = ndimage.find_objects(labels)
    order = sorted(range(count), key=lambda k: -masses[k])[:max_boxes]
    boxes = []
    for k in order:
        rows, cols = slices[k]
        pad_h, pad_w = padding * (rows.stop - rows.start), padding * (cols.stop - cols.start)
        top, bottom = rows.start - pad_h, rows.stop + pad_h
        left, right = cols.start - pad_w, cols.stop + pad_w
        side = max(bottom - top, right - left, min_size * min(height, width))
        top, bottom = _square_span(top, bottom, side, height)
        left, right = _square_span(left, right, side, width)
        boxes.append(Box(top, left, bottom, right, float(masses[k])))
    return boxes


def salient_crops(images: torch.Tensor, boxes: Sequence[Box], size: int | tuple[int, int]) -> torch.Tensor:
    """Crop every box from every image and resize to `size` (bilinear, antialiased), differentiably.

    Args:
        images: `(B, 3, H, W)` decoded images.
        boxes: K boxes (the same boxes for all B images, e.g. the two images of an EDICT pair).
        size: output size `(h, w)` or a side for square crops (the CLIP input size).

    Returns:
        `(B, K, 3, h, w)` crops; K may be 0.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch, channels = images.shape[:2]
    crops = [
        F.interpolate(images[:, :, b.top : b.bottom, b.left : b.right], size=size, mode="bilinear", antialias=True)
        for b in boxes
    ]  # K x (B, 3, h, w)
    if not crops:
        return images.new_zeros(batch, 0, channels, *size)
    return torch.stack(crops, dim=1)  # (B, K, 3, h, w)
