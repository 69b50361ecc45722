"""The denoising loop shared by text-to-image and instruction editing: a pre-step hook for latent optimization
(A&E optimizes z_t, then predicts), one guided UNet pass (`GuidedBatch.predict`), one scheduler step. The loop
knows nothing of attention: a `before_prediction` hook (attention capture sets its pass there) is all it calls.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from emphasize.sampling.guidance_rules import GuidedBatch

PreStepHook = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]  # (z_t, step index, timestep) -> z_t
StepHook = Callable[[int], None]  # step index -> None, called just before the step's guided prediction
StepCallback = Callable[[int, int], None]  # (steps done, steps in all) -> None, called after each scheduler step


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
    before_prediction: StepHook | None = None,
    pre_step: PreStepHook | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample latents from unit Gaussian `noise` `(1, 4, h, w)`.

    Args:
        unet: the diffusers UNet (capture processors, if any, are installed by the caller).
        scheduler: a diffusers scheduler; `set_timesteps(steps)` is called here.
        batch: the guided batch (conditions and combination rule).
        noise: initial unit-variance latents; multiplied by `scheduler.init_noise_sigma` here.
        steps: number of sampling steps.
        before_prediction: called with the step index before each guided prediction (e.g. to set the attention
            capture's pass).
        pre_step: optional hook that returns an optimized z_t before the step's prediction.
        generator: for stochastic schedulers (Euler ancestral).
        progress: show a progress bar.
        callback: called with `(steps done, steps)` after each step (progress reports; an exception it raises
            stops sampling between steps).
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc="sampling", leave=False)):
        # 1. latent optimization on z_t (guidance methods), before the prediction
        if pre_step is not None:
            latents = pre_step(latents, i, t)
        # 2. guided prediction
        if before_prediction is not None:
            before_prediction(i)
        with torch.no_grad():
            eps = batch.predict(unet, scheduler.scale_model_input(latents, t), t)
        # 3. scheduler step
        latents = scheduler.step(eps, t, latents, generator=generator).prev_sample
        if callback is not None:
            callback(i + 1, steps)
    return latents
