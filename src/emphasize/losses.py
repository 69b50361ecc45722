"""Pure, batched losses on cross-attention maps, and a small name -> function registry.

Shapes: `maps` are aggregated cross-attention probabilities `(B, h, w, T)` (mean over layers and heads, T = 77
text positions, SOT at 0). Token groups are tuples of text positions (a word's BPE sub-words, or a phrase).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionLossConfig:
    temperature: float = 100.0  # A&E's token softmax sharpening: softmax(temperature * A) over text positions
    softmax_over: str = "all"  # "all": positions 1..T-2 as A&E on SD 1.4 ([1:-1]); "prompt": 1..n (SD 2.1 mode)
    smooth: bool = True  # Gaussian-smooth each map before taking its peak (A&E)
    kernel_size: int = 3  # smoothing kernel size (A&E: 3)
    sigma: float = 0.5  # smoothing sigma as A&E writes it (its kernel is exp(-((x-mu)/(2 sigma))^2))
    prominence: float = 1.0  # importance loss: weight of the attention-mass term of heavy groups (0: peak only)
    focus: float = 0.0  # importance loss: weight of the focus term of heavy groups (spatial entropy; 0: off)

    def __post_init__(self) -> None:
        if not (self.temperature > 0):
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if self.softmax_over not in ("all", "prompt"):
            raise ValueError(f"softmax_over={self.softmax_over!r} must be 'all' or 'prompt'")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size} must be a positive odd integer")
        if not (self.sigma > 0):
            raise ValueError(f"sigma={self.sigma} must be > 0")
        if not 0 <= self.prominence <= 10:
            raise ValueError(f"prominence={self.prominence} must be in [0, 10]")
        if not 0 <= self.focus <= 10:
            raise ValueError(f"focus={self.focus} must be in [0, 10]")


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor  # (B,) the loss to descend
    peaks: torch.Tensor  # (B, G) peak of each group's (smoothed, token-softmaxed) map, in [0, 1]
    masses: torch.Tensor  # (B, G) mean over pixels of each group's token-softmaxed map, in [0, 1]


@functools.lru_cache(maxsize=8)
def ae_gaussian_kernel(kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Attend-and-Excite's exact smoothing kernel `(k, k)`.

    The official `GaussianSmoothing` uses `exp(-((x - mu) / (2 sigma))^2)` (an effective sigma of sqrt(2) * sigma),
    normalised to sum 1; for k=3, sigma=0.5 the separable weights are about [0.212, 0.576, 0.212].
    """
    x = torch.arange(kernel_size, dtype=torch.float64)
    mean = (kernel_size - 1) / 2
    g = torch.exp(-(((x - mean) / (2 * sigma)) ** 2))
    kernel = g[:, None] * g[None, :]
    return (kernel / kernel.sum()).float()


def smooth_maps(maps: torch.Tensor, kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian-smooth `(N, h, w)` maps with A&E's kernel and reflect padding (replicate padding for maps too small
    to reflect, e.g. the 1x1 maps of a 16 px image: reflecting needs a side larger than the padding)."""
    kernel = ae_gaussian_kernel(kernel_size, sigma).to(maps)
    pad = kernel_size // 2
    mode = "reflect" if min(maps.shape[-2:]) > pad else "replicate"
    x = F.pad(maps[:, None], (pad, pad, pad, pad), mode=mode) if pad else maps[:, None]
    return F.conv2d(x, kernel[None, None])[:, 0]


def token_softmax(maps: torch.Tensor, num_tokens: int, config: AttentionLossConfig) -> torch.Tensor:
    """A&E's token renormalisation: `softmax(temperature * A[..., 1:last])` over text positions.

    Args:
        maps: `(B, h, w, T)` attention probabilities.
        num_tokens: number of prompt tokens without SOT/EOT (used when `softmax_over == "prompt"`).
        config: temperature and which positions enter the softmax.

    Returns:
        `(B, h, w, last - 1)`: column `k - 1` holds text position `k` (SOT dropped).
    """
    last = maps.shape[-1] - 1 if config.softmax_over == "all" else num_tokens + 1
    return torch.softmax(config.temperature * maps[..., 1:last], dim=-1)


def group_maps(soft: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Sum the token-softmaxed maps of each group's positions -> `(B, G, h, w)` (a group's share of attention)."""
    columns = [torch.stack([soft[..., i - 1] for i in group], dim=-1).sum(-1) for group in groups]
    return torch.stack(columns, dim=1)


def spatial_entropy(grouped: torch.Tensor) -> torch.Tensor:
    """Entropy of each `(B, G, h, w)` map normalised to a distribution over pixels, divided by log(h w): 1 for a
    uniform map, 0 for one pixel -> `(B, G)` (0 for a 1x1 map)."""
    p = grouped.flatten(2)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    pixels = p.shape[-1]
    return entropy / math.log(pixels) if pixels > 1 else torch.zeros_like(entropy)


def _group_stats(
    maps: torch.Tensor, groups: Sequence[Sequence[int]], num_tokens: int, config: AttentionLossConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for group in groups:
        if not group or min(group) < 1 or max(group) >= maps.shape[-1] - (config.softmax_over == "all"):
            raise ValueError(f"token group {tuple(group)} is outside the text positions 1..{maps.shape[-1] - 2}")
    soft = token_softmax(maps, num_tokens, config)
    grouped = group_maps(soft, groups)  # (B, G, h, w)
    b, g, h, w = grouped.shape
    smoothed = grouped
    if config.smooth:
        smoothed = smooth_maps(grouped.reshape(b * g, h, w), config.kernel_size, config.sigma).reshape(b, g, h, w)
    peaks = smoothed.flatten(2).amax(-1)  # (B, G)
    masses = grouped.flatten(2).mean(-1)  # (B, G)
    return peaks, masses, grouped


def attend_excite_loss(
    maps: torch.Tensor,
    groups: Sequence[Sequence[int]],
    weights: torch.Tensor,
    num_tokens: int,
    config: AttentionLossConfig,
) -> LossOutput:
    """Attend-and-Excite (Chefer et al. 2023, Eq. 2): `L = max_s max(0, 1 - max_ij G(A'_s))` over subject tokens.

    `weights` are ignored (A&E has none); each group is one subject token.
    """
    peaks, masses, _ = _group_stats(maps, groups, num_tokens, config)
    loss = torch.relu(1 - peaks).amax(dim=1)
    return LossOutput(loss=loss, peaks=peaks, masses=masses)


def importance_loss(
    maps: torch.Tensor,
    groups: Sequence[Sequence[int]],
    weights: torch.Tensor,
    num_tokens: int,
    config: AttentionLossConfig,
) -> LossOutput:
    """DynamicImportance loss (our design; the paper publishes none):

        L = sum_{g: w_g > 1} (w_g - 1) * [max(0, 1 - m_g) + rho * (1 - mu_g) + phi * H_g]
            + sum_{g: w_g < 1} (1 - w_g) * mu_g

    with `m_g = max_ij G(sum_{t in g} A'_t)` the peak of the group's smoothed, token-softmaxed attention (A&E's
    excitation quantity, for a whole word or phrase), `mu_g = mean_ij sum_{t in g} A'_t` the group's share of the
    image's attention, `H_g` the normalised spatial entropy of that map (`spatial_entropy`), `rho` =
    `config.prominence` and `phi` = `config.focus`. Heavy groups (w > 1) are excited until some patch attends to
    them fully (presence, as A&E), their share of the image grows (prominence) and, with `phi > 0`, their attention
    gathers where it already is (focus: for a word that should pick one object out of several, as a referring
    word of an edit instruction, rather than claim the whole image); light groups (w < 1) have their attention
    drained everywhere; w = 1 contributes nothing. The pull on each group grows linearly with its distance from 1.
    """
    peaks, masses, grouped = _group_stats(maps, groups, num_tokens, config)
    w = weights.to(peaks)
    excite = torch.clamp(w - 1, min=0)  # (G,)
    suppress = torch.clamp(1 - w, min=0)  # (G,)
    heavy = torch.relu(1 - peaks) + config.prominence * (1 - masses)
    if config.focus > 0:
        heavy = heavy + config.focus * spatial_entropy(grouped)
    loss = (excite * heavy).sum(dim=1)
    loss = loss + (suppress * masses).sum(dim=1)
    return LossOutput(loss=loss, peaks=peaks, masses=masses)


LossFn = Callable[[torch.Tensor, Sequence[Sequence[int]], torch.Tensor, int, AttentionLossConfig], LossOutput]
LOSSES: dict[str, LossFn] = {"attend-excite": attend_excite_loss, "importance": importance_loss}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss to `LOSSES` under `name`."""

    def add(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        return fn

    return add
