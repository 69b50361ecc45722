"""The attention store: cross-attention probabilities recorded during one UNet pass, and running statistics.

Two kinds of record, both filled by `AttentionCaptureProcessor`:
- *pass maps* (`pass_maps`): every cross-attention layer's probabilities of the current UNet pass, kept with their
  autograd graph so that a loss on them can be back-propagated to the latent (the Attend-and-Excite loss pass).
  Cleared by `reset()` before each pass, so memory is bounded by one pass.
- *running maps* (`running`): a detached sum over passes and layers of head-averaged maps per spatial size, used
  for reporting (`attention_share`) and for `--save-attention` heatmaps. Cheap: one `(HW, T)` tensor per size.

Diffusers flattens spatial tokens row-major `(H, W)`, so a map of `HW` pixels reshapes to `(h, w)` of the latent
downsampled by a power of two with ceil rounding (stride-2 convolutions with padding 1).
"""

from __future__ import annotations

import math

import torch


def downsampled_size(latent_hw: tuple[int, int], factor: int) -> tuple[int, int]:
    """Spatial size of a UNet level that downsamples the latent `(h, w)` by `factor` (ceil, as strided convs do)."""
    return math.ceil(latent_hw[0] / factor), math.ceil(latent_hw[1] / factor)


MIN_GUIDED_SIDE = 8  # the default level's maps are at least this many cells on the shorter side, when possible


def default_attention_factor(available: dict[int, tuple[int, int]]) -> int:
    """The level attention guidance optimizes when neither the user nor the model card names one.

    Attend-and-Excite optimizes SD 1.x's 16x16 maps at 512 px, a quarter of the 64x64 latent; the rule keeps that
    choice wherever it makes sense: the available level closest to a quarter of the latent (in log2; ties go to the
    coarser level) among levels whose maps are at least `MIN_GUIDED_SIDE` cells on the shorter side, since a 4x4
    map (the mid block of a 16x16 latent) cannot place an object. SD 1.x/2.x at 512-768 px and SDXL at 1024 px
    get their quarter-latent level (16x16, 24x24, 32x32); the embedded 64 px world model (16x16 latent) gets 8x8.
    When no level is that fine, the finest one.

    Args:
        available: factor -> `(h, w)` of the cross-attention levels the UNet has at this latent size.
    """
    fine = {f: hw for f, hw in available.items() if min(hw) >= MIN_GUIDED_SIDE}
    if not fine:
        return min(available)
    return min(fine, key=lambda f: (abs(math.log2(f) - 2), -f))


def resolve_attention_size(
    seen_pixels: set[int], latent_hw: tuple[int, int], factor: int | None, max_level: int = 8
) -> tuple[int, int]:
    """Choose the spatial size `(h, w)` of the cross-attention maps to optimize.

    Args:
        seen_pixels: the `HW` sizes of the cross-attention layers seen in one UNet pass.
        latent_hw: the latent's `(h, w)`.
        factor: requested downsampling of the latent (4 gives Attend-and-Excite's 16x16 at 512 px on SD 1.x);
            None: `default_attention_factor`.
        max_level: largest power of two searched.

    Raises:
        ValueError: when the UNet has no cross-attention at the requested level.
    """
    levels = {2**k: downsampled_size(latent_hw, 2**k) for k in range(max_level + 1)}
    available = {f: hw for f, hw in levels.items() if hw[0] * hw[1] in seen_pixels}
    if not available:
        raise ValueError(f"the UNet has no cross-attention layers for a {latent_hw[0]}x{latent_hw[1]} latent")
    if factor is None:
        factor = default_attention_factor(available)
    if factor not in available:
        sizes = ", ".join(f"{f} ({h}x{w})" for f, (h, w) in sorted(available.items()))
        h, w = levels.get(factor, (0, 0))
        raise ValueError(
            f"the UNet has no cross-attention at downsampling factor {factor} ({h}x{w} maps for a "
            f"{latent_hw[0]}x{latent_hw[1]} latent); available factors: {sizes}"
        )
    return available[factor]


class AttentionStore:
    """Holds cross-attention maps recorded by the capture processors. Tensors only, no references to the UNet."""

    def __init__(self) -> None:
        self.pass_maps: dict[int, list[torch.Tensor]] = {}  # HW -> [(B, heads, HW, T)] of the current pass
        self.running: dict[int, torch.Tensor] = {}  # HW -> detached sum over passes & layers of (HW, T)
        self.running_layers: dict[int, int] = {}  # HW -> number of (layer, pass) maps summed in `running`

    def reset(self) -> None:
        """Forget the current pass's maps (call before every UNet pass whose maps you will read)."""
        self.pass_maps = {}

    def reset_running(self) -> None:
        """Forget the running statistics (call before the sampling pass whose statistics you will report)."""
        self.running, self.running_layers = {}, {}

    def record(self, probs: torch.Tensor, heads: int, keep_pass: bool, keep_running: bool) -> None:
        """Record one layer's post-softmax probabilities.

        Args:
            probs: `(B, heads, HW, T)` attention probabilities of the rows being captured.
            heads: number of heads (for validation).
            keep_pass: keep the maps (with graph) for a loss on this pass.
            keep_running: add the detached head-and-batch mean to the running statistics.
        """
        if probs.shape[1] != heads:
            raise ValueError(f"expected {heads} heads in the attention probabilities, got shape {tuple(probs.shape)}")
        pixels = probs.shape[2]
        if keep_pass:
            self.pass_maps.setdefault(pixels, []).append(probs)
        if keep_running:
            mean = probs.detach().float().mean(dim=(0, 1))  # (HW, T)
            if pixels in self.running:
                self.running[pixels] += mean
            else:
                self.running[pixels] = mean.clone()
            self.running_layers[pixels] = self.running_layers.get(pixels, 0) + 1

    def seen_pixels(self) -> set[int]:
        return set(self.pass_maps) | set(self.running)

    def aggregate(self, size: tuple[int, int]) -> torch.Tensor:
        """Mean over layers and heads of this pass's maps at spatial `size` -> `(B, h, w, T)` (keeps the graph).

        Args:
            size: `(h, w)` of the maps, e.g. from `resolve_attention_size`.
        """
        h, w = size
        maps = self.pass_maps.get(h * w)
        if not maps:
            raise ValueError(f"no cross-attention maps of size {h}x{w} were recorded in this pass")
        stacked = torch.cat(maps, dim=1)  # (B, layers*heads, HW, T)
        mean = stacked.mean(dim=1)  # (B, HW, T)
        return mean.reshape(mean.shape[0], h, w, mean.shape[-1])  # (B, h, w, T), row-major (H, W) as diffusers

    def token_mass(self) -> torch.Tensor:
        """Per-token attention mass `(T,)` averaged over the recorded layers and passes (each layer counts once)."""
        if not self.running:
            raise ValueError("no running attention statistics were recorded")
        total = sum(self.running[p].mean(dim=0) for p in self.running)  # sum over sizes of per-layer means
        return total / sum(self.running_layers.values())

    def running_map(self, size: tuple[int, int]) -> torch.Tensor:
        """Average head-mean map `(h, w, T)` at spatial `size` over the recorded layers and passes."""
        h, w = size
        if h * w not in self.running:
            raise ValueError(f"no running attention statistics of size {h}x{w}")
        return (self.running[h * w] / self.running_layers[h * w]).reshape(h, w, -1)
