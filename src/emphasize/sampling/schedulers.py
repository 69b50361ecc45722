"""Scheduler choice by name, with Stable Diffusion's noise schedule (scaled-linear betas 0.00085 -> 0.012)."""

from __future__ import annotations

SCHEDULERS = ("ddim", "euler", "euler-ancestral", "dpm", "pndm", "lms")
SD_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)  # the training schedule of SD 1.x/2.x, InstructPix2Pix and InstructDiffusion


def make_scheduler(name: str, base_config: dict | None = None):
    """Build a diffusers scheduler by short name.

    Args:
        name: one of `SCHEDULERS`.
        base_config: an existing scheduler's `config` to inherit the noise schedule from (betas, prediction type);
            Stable Diffusion's schedule when None.
    """
    import diffusers

    classes = {
        "ddim": diffusers.DDIMScheduler,
        "euler": diffusers.EulerDiscreteScheduler,
        "euler-ancestral": diffusers.EulerAncestralDiscreteScheduler,
        "dpm": diffusers.DPMSolverMultistepScheduler,
        "pndm": diffusers.PNDMScheduler,
        "lms": diffusers.LMSDiscreteScheduler,
    }
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    config = dict(base_config) if base_config is not None else dict(SD_SCHEDULE)
    if name == "ddim" and base_config is None:
        config.update(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if name == "pndm" and base_config is None:
        config.update(skip_prk_steps=True, steps_offset=1)
    return classes[name].from_config(config)
