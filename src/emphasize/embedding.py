"""Embedding-level prompt weighting as the tools people use do it, on the text encoder's output.

- AUTOMATIC1111 "Original" (`modules/sd_emphasis.py`, the default): `z <- z * w` per token, then the mean of the
  whole `(L, D)` embedding restored: `z <- z * mean(z_orig) / mean(z)`.
- AUTOMATIC1111 "No norm": `z <- z * w` per token, nothing restored.
- ComfyUI's default (`comfy/sd1_clip.py`, `encode_token_weights`): each weighted token moves away from the empty
  prompt's embedding at its position, `z <- z_empty + w (z - z_empty)`; unweighted tokens are left as they are.

SDXL's two encoders are weighted separately, as both tools do (A1111 restores each encoder's mean on its own);
the pooled embedding is the prompt's own, unweighted, in both tools.
"""

from __future__ import annotations

import torch

EMBED_MODES = ("original", "no-norm", "comfy")  # A1111 "Original", A1111 "No norm", ComfyUI's default


def weight_embeddings(embeds: torch.Tensor, token_weights: torch.Tensor, mean_restore: bool = True) -> torch.Tensor:
    """`z <- z * w_t` per text position, then `z <- z * mean(z_orig) / mean(z)` (the mean restore).

    Args:
        embeds: `(B, T, D)` text encoder hidden states (one encoder's).
        token_weights: `(T,)` weight per text position (1 where unweighted).
        mean_restore: rescale to the original mean (A1111 "Original"); False is A1111's "No norm".
    """
    weighted = embeds * token_weights.to(embeds).view(1, -1, 1)
    if not mean_restore:
        return weighted
    original_mean = embeds.float().mean(dim=(1, 2), keepdim=True)
    new_mean = weighted.float().mean(dim=(1, 2), keepdim=True)
    return (weighted.float() * (original_mean / new_mean)).to(embeds.dtype)


def interpolate_embeddings(embeds: torch.Tensor, empty: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """ComfyUI's weighting: `z <- z_empty + w_t (z - z_empty)` at the positions whose weight is not 1.

    Args:
        embeds: `(B, T, D)` hidden states of the prompt.
        empty: `(1, T, D)` hidden states of the empty prompt `""` through the same encoder(s).
        token_weights: `(T,)` weight per text position (1 where unweighted: those positions are kept bit for bit).
    """
    if empty.shape[1:] != embeds.shape[1:]:
        raise ValueError(
            f"the empty-prompt embedding {tuple(empty.shape)} does not match the prompt's {tuple(embeds.shape)}"
        )
    w = token_weights.to(embeds).view(1, -1, 1)  # (1, T, 1)
    empty = empty.to(embeds)
    moved = empty + w * (embeds - empty)  # (B, T, D)
    return torch.where(w != 1, moved, embeds)
