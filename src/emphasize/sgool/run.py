"""SGOOL and DOODL: optimise the initial latent of a text-to-image model so that its image matches the prompt under
CLIP, back-propagating through the whole EDICT sampling chain at constant memory.

- `mode="doodl"` (Wallace et al., ICCV 2023): loss on the whole image, `L = d(E_I(x_0), E_T(c))`.
- `mode="sgool"` (Wang et al., arXiv 2410.10257): the whole image and its salient crops,
  `L = d(global) + lambda * mean_k d(crop_k)`, crops found by a saliency detector on the current image.

Each optimisation step: EDICT-sample (x_0, y_0) from the tied latent z, decode both, find salient boxes on the x
image (no gradient), CLIP loss averaged over the pair, gradient through the chain (`edict_sample_with_grad`), DOODL
update (`doodl_update`). The latent after the last update is evaluated too, and the best (lowest-loss) latent seen
is returned with its image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from emphasize.sampling.common import decode_latents, encode_prompt, latent_size, vae_scale_factor
from emphasize.sampling.edict import edict_sample, edict_sample_with_grad, edict_schedule, guided_noise_fn
from emphasize.sgool.clip_loss import (
    check_prompt_fits,
    clip_image_embeddings,
    clip_image_size,
    clip_text_embedding,
    sgool_loss,
)
from emphasize.sgool.crops import Box, salient_boxes, salient_crops
from emphasize.sgool.optimizer import SGOOLConfig, doodl_update

SaliencyFn = Callable[[torch.Tensor], torch.Tensor]  # images (B, 3, H, W) in [0, 1] -> maps (B, 1, H, W) in [0, 1]
StepCallback = Callable[[int, "SGOOLReport"], bool | None]  # (step, report so far) -> True to stop
MODES = ("sgool", "doodl")


@dataclass
class SGOOLReport:
    """What happened during one optimisation (returned, never logged)."""

    mode: str  # `sgool` or `doodl`
    losses: list[float] = field(default_factory=list)  # loss of the latent evaluated at each step (0 = initial)
    global_distances: list[float] = field(default_factory=list)  # d(global) per step, averaged over the pair
    crop_distances: list[float] = field(default_factory=list)  # mean_k d(crop_k) per step (0 without crops)
    boxes: list[list[Box]] = field(default_factory=list)  # salient boxes used at each step (empty: global only)
    fell_back: bool = False  # some step had no salient region and used the global loss only
    fallback_steps: list[int] = field(default_factory=list)  # the steps that fell back
    warnings: list[str] = field(default_factory=list)  # human-readable warnings (fallback, NaN/inf)
    stopped: str | None = None  # why optimisation stopped early (non-finite loss or gradient); None if it ran out
    best_step: int = 0  # index into `losses` of the returned latent
    best_loss: float = math.inf  # its loss
    interrupted: bool = False  # Ctrl-C stopped the optimisation; the best latent so far was returned
    step_seconds: list[float] = field(default_factory=list)  # wall time of each step (sample, loss, grad, update)
    total_seconds: float = 0.0  # wall time of the whole call


@dataclass
class SGOOLResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1], decoded from the best latent's x chain
    latents: torch.Tensor  # (1, 4, h, w) the best initial latent x_T
    report: SGOOLReport


def _ddim_scheduler(scheduler):
    """A fresh DDIM scheduler with the components' noise schedule (the user's scheduler is left untouched)."""
    from diffusers import DDIMScheduler

    config = dict(scheduler.config)
    overrides = {} if "set_alpha_to_one" in config else {"set_alpha_to_one": False}  # SD's training convention
    return DDIMScheduler.from_config(config, **overrides)


def _saliency_map(saliency_fn: SaliencyFn, image: torch.Tensor) -> torch.Tensor:
    """Run the detector on one image `(1, 3, H, W)` and return its map `(H, W)` at the image size."""
    with torch.no_grad():
        saliency = saliency_fn(image.detach())
    if saliency.dim() != 4 or saliency.shape[:2] != (1, 1):
        raise ValueError(f"saliency_fn returned shape {tuple(saliency.shape)}; expected (1, 1, H, W)")
    if saliency.shape[-2:] != image.shape[-2:]:
        saliency = F.interpolate(saliency.float(), size=image.shape[-2:], mode="bilinear")
    return saliency[0, 0]


def optimize_initial_latent(
    components,
    prompt: str,
    clip_model,
    clip_tokenizer,
    saliency_fn: SaliencyFn | None = None,
    config: SGOOLConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    height: int | None = None,
    width: int | None = None,
    mode: str = "sgool",
    progress: bool = False,
    callback: StepCallback | None = None,
) -> SGOOLResult:
    """Optimise the initial latent with SGOOL (global + salient crops) or DOODL (global only).

    Args:
        components: any object with diffusers' `unet` (4 input channels), `vae`, `text_encoder`, `tokenizer` and
            `scheduler`, e.g. a `StableDiffusionPipeline`. A fresh DDIM scheduler is built from the scheduler's
            config; the given one is not modified.
        prompt: the text prompt, used both for the diffusion model and as the CLIP target.
        clip_model: a `transformers.CLIPModel` (any size, any device).
        clip_tokenizer: its tokenizer. A prompt longer than either tokenizer's context raises ValueError.
        saliency_fn: `images (B, 3, H, W) in [0, 1] -> maps (B, 1, H, W)`; required for `sgool`, unused by `doodl`.
        config: the knobs (`SGOOLConfig()` when None).
        generator: seeds the initial latent (when `latents` is None) and the perturbation noise.
        latents: initial latent `(1, 4, h, w)` as the sampler sees it; drawn from N(0, I) when None.
        height, width: image size in pixels; the UNet's native size when None.
        mode: `sgool` or `doodl`.
        progress: show a progress bar over the optimisation steps (loss, best loss, ETA), and an estimate of the
            whole run after the first step when it exceeds a minute.
        callback: called as `callback(step, report)` after each step's latent was evaluated (its loss, boxes and
            the best so far are in `report`); returning True stops the optimisation there and returns the best
            latent seen (`report.stopped` says so). A live loss curve and cancellation between steps.

    Ctrl-C during the optimisation stops it and returns the best latent seen so far (`report.interrupted`); Ctrl-C
    before the first latent was evaluated propagates.
    """
    # 1. validate inputs
    config = config or SGOOLConfig()
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid; choose one of {', '.join(MODES)}")
    if mode == "sgool" and saliency_fn is None:
        raise ValueError("mode='sgool' needs a saliency_fn (images -> maps); use mode='doodl' for the global loss")
    unet, vae = components.unet, components.vae
    if unet.config.in_channels != 4:
        raise ValueError(f"the UNet has {unet.config.in_channels} input channels; SGOOL/DOODL need a 4-channel UNet")
    native = unet.config.sample_size * vae_scale_factor(vae)
    height, width = height or native, width or native
    h, w = latent_size(vae, height, width)
    check_prompt_fits(components.tokenizer, prompt)
    check_prompt_fits(components.tokenizer, config.negative_prompt)
    device, dtype = unet.device, unet.dtype
    shape = (1, unet.config.in_channels, h, w)
    if latents is not None and tuple(latents.shape) != shape:
        raise ValueError(f"latents of shape {tuple(latents.shape)} do not match {shape} for {height}x{width}")

    # 2. sampler, CLIP target, initial latent
    scheduler = _ddim_scheduler(components.scheduler)
    schedule = edict_schedule(scheduler, config.sampling_steps)
    text = encode_prompt(components.tokenizer, components.text_encoder, [config.negative_prompt, prompt])
    noise_fn = guided_noise_fn(unet, scheduler, text.to(device, dtype), config.guidance_scale)
    chain = dict(schedule=schedule, noise_fn=noise_fn, mix=config.mix, leapfrog=config.leapfrog)
    target = clip_text_embedding(clip_model, clip_tokenizer, prompt)  # (1, D)
    if latents is None:
        latents = torch.randn(shape, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma
    z = latents.to(device, dtype)
    initial_norm = float(z.norm())
    side = clip_image_size(clip_model)

    report = SGOOLReport(mode=mode)
    best_latent, best_image = z, None
    velocity, boxes = None, []
    start = time.perf_counter()
    bar = tqdm(total=config.optimization_steps + 1, desc=mode, disable=not progress, leave=False, dynamic_ncols=True)
    m = 0
    try:
        for m in range(config.optimization_steps + 1):
            tick = time.perf_counter()
            wants_grad = m < config.optimization_steps  # the latent after the last update is only evaluated

            # 3. EDICT chain from the tied latent z = x_T = y_T, decode the pair
            point = z.detach().requires_grad_(wants_grad)
            with torch.set_grad_enabled(wants_grad):
                sample = edict_sample_with_grad if wants_grad and config.constant_memory else edict_sample
                x0, y0 = sample(point, point, **chain)
                final = torch.cat([x0, y0]) if config.pair_loss else x0  # (P, 4, h, w), P = 2 or 1
                images = decode_latents(vae, final.to(vae.dtype))  # (P, 3, H, W) in [0, 1]

            # 4. salient boxes on the x image (no gradient), fixed for this step
            if mode == "sgool" and (config.saliency_every_step or m == 0):
                boxes = salient_boxes(
                    _saliency_map(saliency_fn, images[:1]),
                    threshold=config.crop_threshold,
                    max_boxes=config.num_crops,
                    padding=config.crop_padding,
                    min_size=config.min_crop_size,
                )
                if not boxes:
                    report.warnings.append(f"step {m}: no salient region found; global CLIP loss only")
            if mode == "sgool" and not boxes:
                report.fell_back = True
                report.fallback_steps.append(m)

            # 5. CLIP loss of the whole images and their salient crops, averaged over the pair
            with torch.set_grad_enabled(wants_grad):
                clip_images = images.to(clip_model.device)
                global_embeddings = clip_image_embeddings(clip_model, clip_images)  # (P, D)
                crop_embeddings = None
                if boxes:
                    crops = salient_crops(clip_images, boxes, side)  # (P, K, 3, side, side)
                    flat = clip_image_embeddings(clip_model, crops.flatten(0, 1))  # (P*K, D)
                    crop_embeddings = flat.unflatten(0, crops.shape[:2])  # (P, K, D)
                per_image, global_distance, crop_distance = sgool_loss(
                    global_embeddings,
                    crop_embeddings,
                    target,
                    salient_weight=config.salient_weight,
                    distance=config.distance,
                )
                loss = per_image.mean()
            value = float(loss.detach())
            report.losses.append(value)
            report.global_distances.append(float(global_distance.detach().mean()))
            report.crop_distances.append(float(crop_distance.detach().mean()))
            report.boxes.append(list(boxes))

            # 6. keep the best latent; stop on a non-finite loss
            if not math.isfinite(value):
                report.stopped = f"non-finite loss ({value}) at step {m}"
                report.warnings.append(f"step {m}: loss is {value}; stopped, keeping the best latent so far")
                report.step_seconds.append(time.perf_counter() - tick)
                if best_image is None:  # nothing better seen: return the initial latent and its image
                    best_image = images[:1].detach().float().cpu()
                break
            if best_image is None or value < report.best_loss:
                report.best_step, report.best_loss = m, value
                best_latent, best_image = z.detach().clone(), images[:1].detach().float().cpu()
            if callback is not None and callback(m, report) and wants_grad:
                report.stopped = (
                    f"stopped by the caller at step {m}; the best latent (step {report.best_step}) was kept"
                )
                report.step_seconds.append(time.perf_counter() - tick)
                break
            if not wants_grad:
                report.step_seconds.append(time.perf_counter() - tick)
                break

            # 7. gradient through the chain (constant memory); stop on NaN/inf
            (grad,) = torch.autograd.grad(loss, point)
            if not bool(torch.isfinite(grad).all()):
                report.stopped = f"non-finite gradient at step {m}"
                report.warnings.append(f"step {m}: gradient has NaN/inf; stopped, keeping the best latent so far")
                report.step_seconds.append(time.perf_counter() - tick)
                break

            # 8. DOODL update of the tied latent
            z, velocity = doodl_update(z, grad, velocity, initial_norm, config, generator)
            report.step_seconds.append(time.perf_counter() - tick)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", best=f"{report.best_loss:.4f}")
            if m == 0 and progress:
                estimate = report.step_seconds[0] * (config.optimization_steps + 1)
                if estimate > 60:
                    each = report.step_seconds[0]
                    bar.write(
                        f"{mode}: about {estimate / 60:.1f} min for {config.optimization_steps} steps "
                        f"({each:.1f} s each); Ctrl-C keeps the best image so far"
                    )
    except KeyboardInterrupt:
        if best_image is None:
            raise
        report.interrupted = True
        report.stopped = f"interrupted (Ctrl-C) at step {m}; the best latent so far (step {report.best_step}) was kept"
        report.warnings.append(report.stopped)
    finally:
        bar.close()
    report.total_seconds = time.perf_counter() - start
    return SGOOLResult(image=best_image, latents=best_latent, report=report)
