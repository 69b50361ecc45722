"""The saliency-detector contract shared by every detector, and the small helpers they all use.

A detector is any callable `detector(images) -> maps` with
    images: (B, 3, H, W) float in [0, 1], RGB
    maps:   (B, 1, H, W) in [0, 1], same dtype and device as `images`, detached (no graph is built)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SaliencyDetector(Protocol):
    """Anything that maps a batch of RGB images in [0, 1] to saliency maps in [0, 1] at image size."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def check_images(images: torch.Tensor) -> None:
    """Raise `ValueError` unless `images` is a floating (B, 3, H, W) tensor.

    Args:
        images: the tensor handed to a detector.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if images.shape[-1] < 1 or images.shape[-2] < 1:
        raise ValueError(f"images must have H, W >= 1, got {tuple(images.shape)}")


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalize each map of a batch to [0, 1]; a constant map becomes all zeros.

    Args:
        maps: (B, ...) float; every leading-index slice is normalized on its own.
        eps: spans (max - min) at or below this are treated as constant.
    """
    flat = maps.flatten(1)  # (B, N)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    out = torch.where(span > eps, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.clamp(0.0, 1.0).view_as(maps)
