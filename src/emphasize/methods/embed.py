"""AUTOMATIC1111 embedding weighting: each token's text embedding times its weight, then the mean restored."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emphasize.embedding import weight_embeddings
from emphasize.methods.base import Method, register
from emphasize.tokens import TokenGroup, token_weight_vector


@dataclass(frozen=True)
class EmbedConfig:
    """AUTOMATIC1111 embedding weighting: z <- z * w per token, then the mean is restored."""

    mean_restore: bool = True  # rescale so the embedding's mean equals the unweighted one (A1111 "Original")


@register
class Embed(Method):
    name = "embed"
    config_class = EmbedConfig
    summary = "AUTOMATIC1111: scale the weighted words' text embeddings"

    def condition(self, config: EmbedConfig, groups: list[TokenGroup], embeds: torch.Tensor) -> torch.Tensor:
        if not groups:
            return embeds
        weights = torch.tensor(token_weight_vector(groups, embeds.shape[1]))
        return weight_embeddings(embeds, weights, config.mean_restore)
