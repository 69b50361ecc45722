"""Small pieces every sampling loop shares: prompt encoding, VAE encode/decode, latent shapes.

Components are taken from any object with diffusers' attribute names (`unet`, `vae`, `text_encoder`, `tokenizer`,
`scheduler`), so a user's own `StableDiffusionPipeline` or `StableDiffusionInstructPix2PixPipeline` works as is.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def vae_scale_factor(vae) -> int:
    """Pixel-to-latent downsampling factor of an `AutoencoderKL` (8 for Stable Diffusion)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_size(vae, height: int, width: int) -> tuple[int, int]:
    """Latent (h, w) for an image of `height` x `width`, validating divisibility.

    Args:
        vae: the pipeline's `AutoencoderKL`.
        height, width: image size in pixels; each must be a positive multiple of the VAE factor.
    """
    f = vae_scale_factor(vae)
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % f:
            raise ValueError(f"{name}={value} must be a positive multiple of {f} (the VAE's downsampling factor)")
    return height // f, width // f


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Encode prompts to CLIP text hidden states `(B, 77, D)` exactly as Stable Diffusion pipelines do.

    Args:
        tokenizer: a CLIP tokenizer (padding to `model_max_length`, truncating).
        text_encoder: a `transformers.CLIPTextModel`.
        prompts: plain prompt texts (no weighting syntax).
    """
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def decode_latents(vae, latents: torch.Tensor, *, xl: bool = False) -> torch.Tensor:
    """Latents `(B, 4, h, w)` -> images `(B, 3, H, W)` in [0, 1] (differentiable; wrap in no_grad if not needed).

    Args:
        vae: the pipeline's `AutoencoderKL`.
        latents: the sampled latents.
        xl: decode as `StableDiffusionXLPipeline` does: latents de-normalised with the VAE's `latents_mean` /
            `latents_std` when its config has them, and a float16 VAE with `force_upcast` (SDXL's VAE overflows in
            float16) run in float32 for the decode, then put back.
    """
    if not xl:
        images = vae.decode(latents / vae.config.scaling_factor).sample
        return (images / 2 + 0.5).clamp(0, 1)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:
        view = (1, len(mean), 1, 1)
        mean = torch.tensor(mean).view(view).to(latents)
        std = torch.tensor(std).view(view).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    dtype = vae.dtype
    upcast = dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        images = vae.decode(latents.to(vae.dtype)).sample
    finally:
        if upcast:
            vae.to(dtype)
    return (images / 2 + 0.5).clamp(0, 1).to(latents.dtype)


@torch.no_grad()
def encode_image_condition(vae, images: torch.Tensor) -> torch.Tensor:
    """Images `(B, 3, H, W)` in [0, 1] -> the InstructPix2Pix/InstructDiffusion image condition.

    Both models take the *unscaled* posterior mode (no `scaling_factor`), image in [-1, 1].
    """
    return vae.encode(images * 2 - 1).latent_dist.mode()


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> `(1, 3, H, W)` float tensor in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`(B, 3, H, W)` tensor in [0, 1] -> list of RGB PIL images."""
    array = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in array]
