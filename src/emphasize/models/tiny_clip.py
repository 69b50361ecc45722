"""A tiny random-weight `transformers.CLIPModel` built from a config, with the real CLIP tokenizer: for tests and
benchmarks of CLIP-guided code (SGOOL, DOODL, CLIP score) without downloads."""

from __future__ import annotations

import torch


def tiny_clip(seed: int = 0, image_size: int = 32, hidden_size: int = 32, projection_dim: int = 16):
    """Build `(clip_model, tokenizer)`: a 2-layer CLIP (ViT with 8-pixel patches) and the real CLIP BPE tokenizer.

    Args:
        seed: weights are drawn from this seed.
        image_size: the vision model's input side (images are resized to it by the CLIP loss).
        hidden_size: width of both towers.
        projection_dim: size of the joint embedding.
    """
    from transformers import CLIPConfig, CLIPModel

    from emphasize.models.tokenizer import MAX_LENGTH, load_clip_tokenizer

    tower = dict(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=49406,
            eos_token_id=49407,  # pooled output is taken at the first end-of-text token
            pad_token_id=49407,
            **tower,
        ),
        vision_config=dict(image_size=image_size, patch_size=8, **tower),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), load_clip_tokenizer()
