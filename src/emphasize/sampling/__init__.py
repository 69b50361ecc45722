"""Compact denoising loops over diffusers components (unet, vae, text encoder, scheduler)."""
