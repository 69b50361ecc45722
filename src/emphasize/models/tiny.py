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


def _sharpen_cross_attention(unet, gain: float) -> None:
    """Scale the query and key weights of every cross-attention layer by `gain` (logits by gain^2), so random
    weights give peaked rather than uniform attention maps."""
    import torch

    with torch.no_grad():
        for module in unet.modules():
            if getattr(module, "is_cross_attention", False):
                module.to_q.weight.mul_(gain)
                module.to_k.weight.mul_(gain)


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
    _sharpen_cross_attention(unet, config.attention_gain)
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


@dataclass(frozen=True)
class TinySDXLConfig:
    """A tiny Stable Diffusion XL: SDXL's topology (no cross-attention at full latent resolution, two text encoders
    concatenated on the channel axis, pooled text and size conditioning through `addition_embed_type="text_time"`)
    at test width."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)  # UNet widths; SDXL: (320, 640, 1280)
    transformer_layers: tuple[int, ...] = (0, 1, 2)  # transformer blocks per level (0: no cross-attention);
    # SDXL: (0, 2, 10) with 1/2 and 1/4 of the latent attending to the text, and 10 in the mid block
    attention_heads: tuple[int, ...] = (2, 4, 8)  # heads per level (diffusers' `attention_head_dim`); SDXL (5, 10, 20)
    text_width: int = 32  # hidden size of text_encoder (SDXL: CLIP ViT-L, 768)
    text_width_2: int = 48  # hidden size of text_encoder_2 (SDXL: OpenCLIP ViT-bigG, 1280)
    projection_dim: int = 40  # text_encoder_2's pooled projection (SDXL: 1280)
    time_embed_dim: int = 8  # per-number embedding width of the six size/crop numbers (SDXL: 256)
    text_layers: int = 2  # CLIP text transformer depth of both encoders (SDXL reads the penultimate layer)
    layers_per_block: int = 1  # resnet (+ transformer) layers per UNet block (SDXL: 2)
    vae_levels: int = 2  # VAE blocks: the VAE downsamples by 2^(levels-1) (SDXL: 4, i.e. 8)
    sample_size: int = 32  # UNet latent size, so the default image is sample_size * VAE factor px (SDXL: 128)
    attention_gain: float = 1.0  # multiplies the cross-attention query/key weights (peaked attention when > 1)
    seed: int = 0  # weights are drawn from this seed


def tiny_sdxl_pipeline(config: TinySDXLConfig | None = None, scheduler: str = "euler"):
    """Build a tiny `StableDiffusionXLPipeline` from configs (random weights, the real CLIP BPE for both tokenizers,
    the second padding with `"!"` as SDXL's does).

    With the defaults a 64x64 image has a 32x32 latent with cross-attention at 16x16 (down 1, up 1) and 8x8 (down 2,
    mid, up 0): SDXL's 1/2 and 1/4 of the latent.

    Args:
        config: sizes and seed.
        scheduler: `euler` (SDXL's own `EulerDiscreteScheduler`), `ddim`, or any name accepted by
            `emphasize.sampling.schedulers.make_scheduler`.
    """
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from emphasize.models.tokenizer import load_clip_tokenizer
    from emphasize.sampling.schedulers import make_scheduler

    config = config or TinySDXLConfig()
    n = len(config.block_out_channels)
    if not len(config.transformer_layers) == len(config.attention_heads) == n:
        raise ValueError(
            f"transformer_layers {config.transformer_layers} and attention_heads {config.attention_heads} need one "
            f"entry per level of block_out_channels {config.block_out_channels}"
        )
    torch.manual_seed(config.seed)
    crossed = [k > 0 for k in config.transformer_layers]
    unet = UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in crossed),
        up_block_types=tuple("CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(crossed)),
        transformer_layers_per_block=tuple(max(k, 1) for k in config.transformer_layers),
        attention_head_dim=config.attention_heads,
        cross_attention_dim=config.text_width + config.text_width_2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=config.time_embed_dim,
        projection_class_embeddings_input_dim=6 * config.time_embed_dim + config.projection_dim,
        norm_num_groups=16,
    )
    _sharpen_cross_attention(unet, config.attention_gain)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32, 32)[: config.vae_levels],
        down_block_types=("DownEncoderBlock2D",) * config.vae_levels,
        up_block_types=("UpDecoderBlock2D",) * config.vae_levels,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=config.sample_size * 2 ** (config.vae_levels - 1),
        scaling_factor=0.13025,  # SDXL's VAE
    )

    def text_config(width: int, **extra) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            **extra,
        )

    text_encoder = CLIPTextModel(text_config(config.text_width))
    text_encoder_2 = CLIPTextModelWithProjection(
        text_config(config.text_width_2, projection_dim=config.projection_dim, hidden_act="gelu")
    )
    return StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=load_clip_tokenizer(),
        tokenizer_2=load_clip_tokenizer(pad_token="!"),
        unet=unet.eval(),
        scheduler=make_scheduler(scheduler),
        add_watermarker=False,
    )
