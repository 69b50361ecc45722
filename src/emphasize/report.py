"""What a run reports about attention: each word's share of the cross-attention mass, per-word heatmaps, and
AUTOMATIC1111-style `parameters` text for PNG files."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from emphasize.attention.store import AttentionStore, downsampled_size


def attention_shares(store: AttentionStore, groups: Sequence[Sequence[int]], num_tokens: int) -> list[float]:
    """Each group's share of the cross-attention mass over the prompt's non-special tokens (positions 1..n),
    averaged over the recorded steps and layers; in [0, 1].

    Args:
        store: the attention store with running statistics of the sampling pass.
        groups: token groups (text positions).
        num_tokens: prompt tokens without SOT/EOT.
    """
    mass = store.token_mass()  # (T,)
    content = mass[1 : num_tokens + 1].sum()
    return [float(mass[list(g)].sum() / content) if content > 0 else 0.0 for g in groups]


def attention_heatmaps(
    store: AttentionStore, groups: Sequence[Sequence[int]], latent_hw: tuple[int, int]
) -> torch.Tensor:
    """Per-group attention maps `(G, h, w)` at latent size: each level's running map, summed over the group's
    tokens, upsampled bilinearly and averaged over levels (weighted by their layer counts); each map scaled to [0, 1].
    """
    levels = {}
    for k in range(9):
        h, w = downsampled_size(latent_hw, 2**k)
        levels.setdefault(h * w, (h, w))
    total = torch.zeros(len(groups), *latent_hw)
    count = 0
    for pixels, summed in store.running.items():
        h, w = levels[pixels]
        per_token = summed.reshape(h, w, -1)  # (h, w, T), sum over this level's recorded layers
        maps = torch.stack([per_token[..., list(g)].sum(-1) for g in groups])  # (G, h, w)
        total += F.interpolate(maps[None], size=latent_hw, mode="bilinear", align_corners=False)[0]
        count += store.running_layers[pixels]
    total = total / max(count, 1)
    peak = total.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return total / peak


def a1111_parameters(prompt: str, negative_prompt: str, settings: dict[str, object]) -> str:
    """The `parameters` text AUTOMATIC1111 writes into PNGs: prompt, `Negative prompt:`, then `Key: value, ...`."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {value}" for key, value in settings.items() if value is not None))
    return "\n".join(lines)
