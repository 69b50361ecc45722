"""Attention-derived saliency: where the prompt's content tokens looked during the last sampling pass.

The cross-attention store (`emphasize.attention`) aggregates maps over heads and layers into (B, h, w, T); this
module only turns such maps into image-sized saliency, so it needs no model and no weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from emphasize.saliency.base import check_images, normalize_maps


def attention_saliency(maps: torch.Tensor, token_indices: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Saliency from aggregated cross-attention maps: mean over the chosen tokens, upsampled, normalized.

    Args:
        maps: (h, w, T) or (B, h, w, T) cross-attention probabilities per spatial position and text token
            (spatial tokens in row-major (h, w) order, as diffusers flattens them).
        token_indices: indices into the last axis (the prompt's content tokens, e.g. without <sot>/<eot>/padding);
            at least one, each in [0, T). Repeats count twice in the mean.
        size: (H, W) of the output, usually the image size.

    Returns:
        (B, 1, H, W) float32: bilinear upsampling, then per-map min-max normalization, so each map spans [0, 1]
        exactly (a constant map gives zeros). Differentiable in `maps`; callers that only need values detach.
    """
    if maps.ndim == 3:
        maps = maps.unsqueeze(0)  # (1, h, w, T)
    if maps.ndim != 4:
        raise ValueError(f"maps must have shape (h, w, T) or (B, h, w, T), got {tuple(maps.shape)}")
    num_tokens = maps.shape[-1]
    indices = [int(i) for i in token_indices]
    if not indices:
        raise ValueError("token_indices must name at least one token, got an empty list")
    bad = [i for i in indices if not 0 <= i < num_tokens]
    if bad:
        raise ValueError(f"token_indices {bad} out of range [0, {num_tokens}) for maps of shape {tuple(maps.shape)}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {tuple(size)}")

    index = torch.tensor(indices, device=maps.device)
    sal = maps.float().index_select(-1, index).mean(dim=-1)  # (B, h, w)
    sal = F.interpolate(sal.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)
    return normalize_maps(sal)  # (B, 1, H, W)


class AttentionSaliencyDetector:
    """Saliency detector (the `SaliencyDetector` contract) that holds the last pass's attention maps.

    The images only fix the output size (and batch size); the saliency comes from the held maps. Call `update`
    after each sampling pass with fresh maps from the attention store.
    """

    def __init__(self, maps: torch.Tensor | None = None, token_indices: Sequence[int] | None = None) -> None:
        """Optionally hold maps and token indices right away.

        Args:
            maps: (h, w, T) or (B, h, w, T) aggregated cross-attention maps, or None to set them later.
            token_indices: the content tokens to average over, or None to set them later.
        """
        self.maps: torch.Tensor | None = None
        self.token_indices: list[int] | None = None
        if maps is not None or token_indices is not None:
            self.update(maps, token_indices)

    def update(self, maps: torch.Tensor | None, token_indices: Sequence[int] | None = None) -> None:
        """Hold new maps (detached) and, when given, new token indices.

        Args:
            maps: (h, w, T) or (B, h, w, T); None keeps the current maps.
            token_indices: None keeps the current indices.
        """
        if maps is not None:
            if maps.ndim not in (3, 4):
                raise ValueError(f"maps must have shape (h, w, T) or (B, h, w, T), got {tuple(maps.shape)}")
            self.maps = maps.detach()
        if token_indices is not None:
            self.token_indices = [int(i) for i in token_indices]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Saliency maps at image size from the held attention maps.

        Args:
            images: (B, 3, H, W); only their batch size, size, dtype and device are used.

        Returns:
            (B, 1, H, W) in [0, 1], dtype and device of `images`. Unbatched maps are shared by the whole batch.
        """
        check_images(images)
        if self.maps is None or self.token_indices is None:
            raise RuntimeError(
                "AttentionSaliencyDetector has no attention maps yet: call update(maps, token_indices) with the "
                "aggregated cross-attention maps of the last sampling pass first"
            )
        batch = images.shape[0]
        sal = attention_saliency(self.maps, self.token_indices, tuple(images.shape[-2:]))  # (b, 1, H, W)
        if sal.shape[0] == 1 and batch > 1:
            sal = sal.expand(batch, -1, -1, -1)
        elif sal.shape[0] != batch:
            raise ValueError(f"attention maps hold batch {sal.shape[0]} but images have batch {batch}")
        return sal.to(device=images.device, dtype=images.dtype)

    def __repr__(self) -> str:
        shape = None if self.maps is None else tuple(self.maps.shape)
        return f"AttentionSaliencyDetector(maps={shape}, token_indices={self.token_indices})"
