"""Embedding-level prompt weighting as AUTOMATIC1111 does it (`modules/sd_emphasis.py`, "Original")."""

from __future__ import annotations

import torch


def weight_embeddings(embeds: torch.Tensor, token_weights: torch.Tensor, mean_restore: bool = True) -> torch.Tensor:
    """`z <- z * w_t` per text position, then `z <- z * mean(z_orig) / mean(z)` (the mean restore).

    Args:
        embeds: `(B, T, D)` text encoder hidden states.
        token_weights: `(T,)` weight per text position (1 where unweighted).
        mean_restore: rescale to the original mean (A1111 "Original"); False is A1111's "No norm".
    """
    weighted = embeds * token_weights.to(embeds).view(1, -1, 1)
    if not mean_restore:
        return weighted
    original_mean = embeds.float().mean(dim=(1, 2), keepdim=True)
    new_mean = weighted.float().mean(dim=(1, 2), keepdim=True)
    return (weighted.float() * (original_mean / new_mean)).to(embeds.dtype)
