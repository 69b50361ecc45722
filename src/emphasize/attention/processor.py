"""`AttentionCaptureProcessor`: diffusers' `AttnProcessor` maths with the probabilities captured (and optionally
rescaled, prompt-to-prompt style).

diffusers' default `AttnProcessor2_0` calls `F.scaled_dot_product_attention`, which never materialises the
probabilities, so capture takes the explicit path (`attn.get_attention_scores`). It is installed on
cross-attention layers only; self-attention keeps its fast processor.
"""

from __future__ import annotations

import torch

from emphasize.attention.control import AttentionController


class AttentionCaptureProcessor:
    """Cross-attention processor that records post-softmax probabilities into the controller's store.

    Args:
        controller: shared state of the current pass (which batch rows to record, whether to keep the graph,
            an optional per-token scale of the probabilities).
        name: the layer's key in `unet.attn_processors` (for diagnostics).
    """

    def __init__(self, controller: AttentionController, name: str) -> None:
        self.controller = controller
        self.name = name

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        query = attn.head_to_batch_dim(query)  # (B*heads, HW, d), batch-major
        key = attn.head_to_batch_dim(key)  # (B*heads, T, d)
        value = attn.head_to_batch_dim(value)

        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, HW, T)
        probs = self.controller.on_probs(probs, attn.heads)

        hidden_states = torch.bmm(probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
