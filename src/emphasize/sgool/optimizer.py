"""DOODL's optimiser of the initial latent, and `SGOOLConfig`, every knob of an SGOOL/DOODL run.

One step (DOODL `gen()`, salesforce/DOODL@52a52da), on the tied initial latent z = x_T = y_T:

    g = -(grad_scale / 2) * dL/dz        # DOODL: -0.5 * grad of grad_scale * (L_x + L_y) w.r.t. the pair, then
                                         # averaged over the pair; with L = (L_x + L_y) / 2 and tied latents, this
    g = clamp(g, -clip, +clip)           # element-wise clamp of the step (1e-3)
    b = g (first step) else 0.9 b + g    # SGD momentum, no dampening, no Nesterov
    z = z + b + sigma * N(0, I)          # Gaussian perturbation (1e-4)
    z = z * ||z_0|| / ||z||              # norm restore to the initial latent's L2 norm
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emphasize.sgool.clip_loss import DISTANCES


@dataclass(frozen=True)
class SGOOLConfig:
    """Knobs of saliency-guided (SGOOL) and global (DOODL) optimisation of the initial latent."""

    # optimisation (DOODL gen() defaults)
    optimization_steps: int = 50  # updates of the initial latent (DOODL num_traversal_steps; SGOOL: 50)
    grad_scale: float = 1.0  # loss multiplier = learning rate (DOODL CLIP-text demo: 1)
    momentum: float = 0.9  # SGD momentum on the clamped step (DOODL: 0.9, no dampening); 0 = plain steps
    clip_grad_val: float = 1e-3  # element-wise clamp of each step before momentum (DOODL: 1e-3)
    perturbation: float = 1e-4  # std of the Gaussian noise added to the latent each step (DOODL: 1e-4)
    renormalize: bool = True  # rescale the latent to its initial L2 norm after each step (DOODL: True)
    # SGOOL loss [inferred: the paper's values are not public]
    salient_weight: float = 1.0  # lambda in L = d(global) + lambda * mean_k d(crop_k)
    num_crops: int = 3  # K, salient crops kept at most (largest saliency mass first)
    crop_threshold: float = 0.5  # salient pixels: S >= threshold * max(S)
    crop_padding: float = 0.1  # each box side grows by this fraction of the box size
    min_crop_size: float = 0.25  # smallest crop side, as a fraction of the shorter image side
    saliency_every_step: bool = True  # recompute saliency (and boxes) on every step's image, else on the first only
    distance: str = "spherical"  # CLIP distance: `spherical` (DOODL) or `cosine` (1 - cos)
    pair_loss: bool = True  # loss on both EDICT images (x and y) and averaged, as DOODL; False: x only
    # sampling (EDICT over DDIM)
    sampling_steps: int = 50  # EDICT/DDIM steps of the chain differentiated through (DOODL/SGOOL: 50)
    guidance_scale: float = 7.5  # classifier-free guidance scale (DOODL sd_guidance_scale: 7.5)
    mix: float = 0.93  # EDICT mixing weight p (EDICT/DOODL: 0.93; the paper suggests [0.9, 0.97] for 50 steps)
    leapfrog: bool = True  # alternate the order of EDICT's two sub-updates each step (EDICT/DOODL default)
    constant_memory: bool = True  # backprop by exact inversion (memory flat in sampling_steps); False: plain
    # autograd through the chain (memory grows with sampling_steps, ~1.2x faster on CPU; small models, benchmarks)
    negative_prompt: str = ""  # the unconditional prompt of classifier-free guidance (DOODL null_prompt: "")

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, valid: str) -> None:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; valid range: {valid}")

        check("optimization_steps", self.optimization_steps >= 0, "an integer >= 0")
        check("grad_scale", _finite(self.grad_scale) and self.grad_scale > 0, "a finite number > 0")
        check("momentum", _finite(self.momentum) and 0 <= self.momentum < 1, "[0, 1)")
        check("clip_grad_val", _finite(self.clip_grad_val) and self.clip_grad_val > 0, "a finite number > 0")
        check("perturbation", _finite(self.perturbation) and self.perturbation >= 0, "a finite number >= 0")
        check("salient_weight", _finite(self.salient_weight) and self.salient_weight >= 0, "a finite number >= 0")
        check("num_crops", self.num_crops >= 1, "an integer >= 1")
        check("crop_threshold", _finite(self.crop_threshold) and 0 < self.crop_threshold <= 1, "(0, 1]")
        check("crop_padding", _finite(self.crop_padding) and 0 <= self.crop_padding <= 1, "[0, 1]")
        check("min_crop_size", _finite(self.min_crop_size) and 0 < self.min_crop_size <= 1, "(0, 1]")
        check("distance", self.distance in DISTANCES, " or ".join(repr(d) for d in DISTANCES))
        check("sampling_steps", 1 <= self.sampling_steps <= 1000, "an integer in [1, 1000]")
        check("guidance_scale", _finite(self.guidance_scale) and self.guidance_scale >= 0, "a finite number >= 0")
        check("mix", _finite(self.mix) and 0.5 < self.mix <= 1, "(0.5, 1] (EDICT suggests [0.9, 0.97])")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and float("-inf") < value < float("inf")


def doodl_update(
    latent: torch.Tensor,
    grad: torch.Tensor,
    velocity: torch.Tensor | None,
    initial_norm: float,
    config: SGOOLConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DOODL step on the tied initial latent (module docstring); returns `(new_latent, new_velocity)`.

    Args:
        latent: `(B, C, h, w)` current initial latent z.
        grad: dL/dz, same shape, where L is the loss averaged over the EDICT pair.
        velocity: momentum buffer b from the previous step, None on the first step.
        initial_norm: ||z_0||, restored after the step when `config.renormalize`.
        config: `grad_scale`, `clip_grad_val`, `momentum`, `perturbation`, `renormalize`.
        generator: for the perturbation noise (on the latent's device).
    """
    step = (-0.5 * config.grad_scale * grad).clamp(-config.clip_grad_val, config.clip_grad_val)
    velocity = step if velocity is None else config.momentum * velocity + step
    latent = latent + velocity
    if config.perturbation:
        noise = torch.randn(latent.shape, generator=generator, device=latent.device, dtype=latent.dtype)
        latent = latent + config.perturbation * noise
    if config.renormalize:
        latent = latent * (initial_norm / latent.norm())
    return latent, velocity
