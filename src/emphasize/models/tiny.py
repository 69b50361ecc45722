"""Tiny random-weight diffusers models built from configs: for tests, benchmarks and offline smoke runs.

They use the real CLIP BPE tokenizer, so word-to-token alignment behaves as on Stable Diffusion, and they are
ordinary diffusers pipelines: `save_pretrained` then `from_pretrained(dir)` reproduces them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TinyConfig:
    in_channels: int = 4  # UNet input channels: 4 for text-to-image, 8 for InstructPix2Pix/InstructDiffusion layout
    block_out_channels: tuple[int, ...] = (32, 64)  # UNet widths; one down/up block per entry
    cross_attention_dim: int = 32  # text hidden size seen by the UNet's cross-attention
    attention_heads: int = 8  # `attention_head_dim` in diffusers' UNet2DConditionModel is really the head count
    text_layers: int = 2  # CLIP text transformer depth
    seed: int = 0  # weights are drawn from this seed
    attention_gain: float = 1.0  # multiplies the cross-attention query/key weights: > 1 gives the peaked,
    # latent-dependent attention of a trained model (random init attends almost uniformly to every token)
    cross_attention_levels: int = 1  # down/up levels with cross-attention, from the top (SD 1.x: 3 of 4)
    layers_per_block: int = 1  # resnet (+ transformer) layers per UNet block (SD 1.x: 2)
    vae_levels: int = 2  # VAE blocks: the VAE downsamples by 2^(levels-1) (SD 1.x: 4, i.e. 8)
    sample_size: int = 32  # UNet latent size, so the default image is sample_size * VAE factor px


def sd_layout_config(seed: int = 0, attention_gain: float = 1.0) -> TinyConfig:
    """Stable Diffusion 1.x's topology at a small width: 4 UNet levels (cross-attention in the top 3), 2 layers per
    block, a VAE factor of 8, 512x512 images with 64x64 latents; attention maps at 64, 32, 16 and 8 (mid)."""
    return TinyConfig(
        block_out_channels=(32, 64, 128, 128),
        cross_attention_levels=3,
        layers_per_block=2,
        vae_levels=4,
        sample_size=64,
        seed=seed,
        attention_gain=attention_gain,
    )


def tiny_pipeline(config: TinyConfig | None = None, scheduler: str = "ddim"):
    """Build a tiny `StableDiffusionPipeline` (4-channel UNet) or `StableDiffusionInstructPix2PixPipeline` (8).

    Args:
        config: sizes and seed; the UNet has CrossAttnDownBlock2D/DownBlock2D and the VAE downsamples by 2, so a
            64x64 image has a 32x32 latent with cross-attention at 32x32 (down 0, up 1) and 16x16 (mid).
        scheduler: `ddim` or `euler` (any name accepted by `emphasize.sampling.schedulers.make_scheduler`).
    """
    from diffusers import (
        AutoencoderKL,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from emphasize.models.tokenizer import load_clip_tokenizer
    from emphasize.sampling.schedulers import make_scheduler

    config = config or TinyConfig()
    torch.manual_seed(config.seed)
    n, k = len(config.block_out_channels), config.cross_attention_levels
    if not 1 <= k <= n:
        raise ValueError(f"cross_attention_levels={k} must be in [1, {n}]")
    unet = UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=config.in_channels,
        out_channels=4,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * k + ("DownBlock2D",) * (n - k),
        up_block_types=("UpBlock2D",) * (n - k) + ("CrossAttnUpBlock2D",) * k,
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.attention_heads,
        norm_num_groups=16,
    )
    with torch.no_grad():
        for module in unet.modules():
            if getattr(module, "is_cross_attention", False):
                module.to_q.weight.mul_(config.attention_gain)
                module.to_k.weight.mul_(config.attention_gain)
    vae_widths = (
        (16, 32, 32, 32)[: config.vae_levels] if config.vae_levels <= 4 else (16,) + (32,) * (config.vae_levels - 1)
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=vae_widths,
        down_block_types=("DownEncoderBlock2D",) * config.vae_levels,
        up_block_types=("UpDecoderBlock2D",) * config.vae_levels,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=config.sample_size * 2 ** (config.vae_levels - 1),
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=config.cross_attention_dim,
            intermediate_size=4 * config.cross_attention_dim,
            num_hidden_layers=config.text_layers,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    parts = dict(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=load_clip_tokenizer(),
        scheduler=make_scheduler(scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    cls = StableDiffusionInstructPix2PixPipeline if config.in_channels == 8 else StableDiffusionPipeline
    return cls(**parts)
