"""What a run reports: the typed run report (`RunReport`, serialised to the report JSON), each word's share of the
cross-attention mass, per-word heatmaps, and AUTOMATIC1111-style `parameters` text for PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from emphasize.attention.store import AttentionStore, downsampled_size


@dataclass(frozen=True)
class WordReport:
    """One weighted word or phrase of the prompt."""

    text: str  # the word or phrase as the prompt wrote it
    weight: float  # its weight
    tokens: tuple[int, ...]  # its text positions (SOT at 0)
    attention_share: float | None = None  # its share of the prompt tokens' attention mass (None: not recorded)


@dataclass(frozen=True)
class RunReport:
    """What one `generate` / `edit` run did, typed; `to_dict()` is the report JSON (`Result.report`, `--report`)."""

    settings: dict[str, Any]  # the caller's settings (prompt sizes, guidance scales, model family, ...), first
    seed: int  # the noise seed
    steps: int  # sampling steps
    scheduler: str  # the scheduler's class name
    method: str  # the method's registry name
    config: dict[str, Any]  # the method config as a dict (`dataclasses.asdict`)
    words: tuple[WordReport, ...]  # the weighted words in prompt order
    guidance_steps: tuple[Any, ...]  # `optimize.StepDiagnostics` of each guided step (empty without guidance)
    stopped_early: str | None  # why guidance stopped early, or None
    seconds: float  # wall time of the run

    def to_dict(self) -> dict[str, Any]:
        """The report JSON: the settings first, then the run's fields (the layout every consumer reads)."""
        words = [dict(asdict(w), tokens=list(w.tokens)) for w in self.words]
        guidance = dict(steps=[asdict(d) for d in self.guidance_steps], stopped_early=self.stopped_early)
        return dict(**self.settings, seed=self.seed, steps=self.steps, scheduler=self.scheduler, method=self.method,
                    config=self.config, words=words, guidance=guidance, seconds=self.seconds)  # fmt: skip


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
