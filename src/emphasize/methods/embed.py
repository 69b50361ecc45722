"""Embedding weighting as AUTOMATIC1111 and ComfyUI do it: each weighted token's text embedding is scaled (A1111,
with or without the mean restored) or moved away from the empty prompt's (ComfyUI); see `emphasize.embedding`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from emphasize.embedding import EMBED_MODES, interpolate_embeddings, weight_embeddings
from emphasize.methods.base import Method, register
from emphasize.sampling.conditioning import TextCondition
from emphasize.tokens import TokenGroup, token_weight_vector


@dataclass(frozen=True)
class EmbedConfig:
    """Embedding weighting of the conditional text embeddings (SD and SDXL; each SDXL encoder on its own)."""

    mode: str = "original"  # "original": A1111's default, z * w then the mean restored; "no-norm": A1111's
    # "No norm", z * w only; "comfy": ComfyUI's default, z_empty + w (z - z_empty) at the weighted tokens

    def __post_init__(self) -> None:
        if self.mode not in EMBED_MODES:
            raise ValueError(f"mode={self.mode!r} must be one of {', '.join(EMBED_MODES)}")


def _no_encoder(text: str) -> TextCondition:
    raise ValueError("embed mode 'comfy' needs the empty prompt's embedding: call condition_text with an encoder")


@register
class Embed(Method):
    name = "embed"
    config_class = EmbedConfig
    summary = "AUTOMATIC1111 / ComfyUI: weight the marked words' text embeddings"

    def condition(self, config: EmbedConfig, groups: list[TokenGroup], embeds: torch.Tensor) -> torch.Tensor:
        """One text encoder's hidden states `(1, L, D)`, weighted ('original' and 'no-norm' only)."""
        return self.condition_text(config, groups, TextCondition(embeds), _no_encoder).embeds

    def condition_text(
        self,
        config: EmbedConfig,
        groups: list[TokenGroup],
        text: TextCondition,
        encode: Callable[[str], TextCondition],
    ) -> TextCondition:
        if not groups:
            return text
        weights = torch.tensor(token_weight_vector(groups, text.embeds.shape[1]))  # (L,)
        if config.mode == "comfy":  # elementwise, so the concatenated encoders are moved each on its own
            empty = encode("")
            return TextCondition(interpolate_embeddings(text.embeds, empty.embeds, weights), text.pooled, text.widths)
        parts = tuple(weight_embeddings(part, weights, config.mode == "original") for part in text.parts())
        return text.with_parts(parts)
