"""The denoising loop shared by text-to-image and instruction editing: a pre-step hook for latent optimization
(A&E optimizes z_t, then predicts), one guided UNet pass with attention capture, one scheduler step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from emphasize.attention.control import AttentionController
from emphasize.sampling.guidance_rules import GuidedBatch

PreStepHook = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]  # (z_t, step index, timestep) -> z_t


def predict_noise(unet, batch: GuidedBatch, scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Guided noise prediction `(1, 4, h, w)` from scaled latents `(1, 4, h, w)` at timestep `t`."""
    x, embeds = batch.unet_input(scaled)
    eps = unet(x, t, encoder_hidden_states=embeds).sample  # (R, 4, h, w)
    return batch.combine(eps)


def input_scale(scheduler, latents: torch.Tensor, t: torch.Tensor) -> float:
    """The factor c of `scheduler.scale_model_input` at `t` (1 for DDIM, 1/sqrt(sigma^2+1) for Euler)."""
    probe = torch.ones_like(latents[:1, :1, :1, :1])
    return float(scheduler.scale_model_input(probe, t).flatten()[0])


def denoise(
    unet,
    scheduler,
    batch: GuidedBatch,
    noise: torch.Tensor,
    *,
    steps: int,
    controller: AttentionController | None = None,
    pre_step: PreStepHook | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample latents from unit Gaussian `noise` `(1, 4, h, w)`.

    Args:
        unet: the diffusers UNet (capture processors, if any, are installed by the caller).
        scheduler: a diffusers scheduler; `set_timesteps(steps)` is called here.
        batch: the guided batch (conditions and combination rule).
        noise: initial unit-variance latents; multiplied by `scheduler.init_noise_sigma` here.
        steps: number of sampling steps.
        controller: when given, each guided pass records the conditional row into its running statistics.
        pre_step: optional hook that returns an optimized z_t before the step's prediction.
        generator: for stochastic schedulers (Euler ancestral).
        progress: show a progress bar.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="sampling", leave=False)):
        # 1. latent optimization on z_t (guidance methods), before the prediction
        if pre_step is not None:
            latents = pre_step(latents, i, t)
        # 2. guided prediction; the conditional row's attention goes to the running statistics
        if controller is not None:
            controller.set_pass(rows=(batch.cond_row,), keep_running=True)
        with torch.no_grad():
            eps = predict_noise(unet, batch, scheduler.scale_model_input(latents, t), t)
        # 3. scheduler step
        latents = scheduler.step(eps, t, latents, generator=generator).prev_sample
    if controller is not None:
        controller.set_pass()
    return latents
