"""The two-line API: add word weights to your own diffusers pipeline.

    pipe = StableDiffusionPipeline.from_pretrained("runwayml/stable-diffusion-v1-5")
    result = emphasize.generate(pipe, "a (cat:1.8) and a (frog:0.6)", method="importance")

`pipe` may be any object with diffusers' component attributes (`unet`, `vae`, `text_encoder`, `tokenizer`,
`scheduler`); its modules are used as they are and its attention processors are restored afterwards.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image, ImageOps

from emphasize.attention.control import AttentionController
from emphasize.attention.install import capture_attention
from emphasize.config import EditSamplingConfig, MethodConfig, SamplingConfig, method_config
from emphasize.guidance import frozen_parameters
from emphasize.methods import MethodInputs, get_method
from emphasize.optimize import GuidanceDiagnostics
from emphasize.prompts import WeightedPrompt, parse_prompt
from emphasize.report import attention_heatmaps, attention_shares
from emphasize.sampling.common import (
    decode_latents,
    encode_image_condition,
    encode_prompt,
    latent_size,
    pil_to_tensor,
    tensor_to_pil,
    vae_scale_factor,
)
from emphasize.sampling.denoise import StepCallback, denoise
from emphasize.sampling.guidance_rules import GuidedBatch, edit_batch, text_to_image_batch
from emphasize.tokens import TokenGroup, align_spans, truncation_message


@dataclass
class Result:
    """One generated or edited image with what was measured while making it."""

    image: Image.Image  # the output image
    latents: torch.Tensor  # (1, 4, h, w) final latents
    report: dict  # method, seed, steps, seconds, words (text, weight, tokens, attention_share), guidance log
    heatmaps: torch.Tensor | None = None  # (G, h, w) per-word attention at latent size, in [0, 1]
    groups: list[TokenGroup] = field(default_factory=list)  # the weighted words and their token positions


def size_multiple(pipe) -> int:
    """Image sizes must be multiples of this: the VAE factor times the UNet's total downsampling."""
    return vae_scale_factor(pipe.vae) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def _check_size(pipe, height: int, width: int) -> None:
    m = size_multiple(pipe)
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % m:
            raise ValueError(f"{name}={value} must be a positive multiple of {m} for this model")


def card_factor(pipe) -> int | None:
    """The attention level the model card of `pipe` (`sampling_defaults.json` where it was loaded from) says the
    methods should guide, or None (no card, or the card names none)."""
    import json
    from pathlib import Path

    source = getattr(pipe, "name_or_path", None) or getattr(getattr(pipe, "config", None), "_name_or_path", None)
    card = Path(source) / "sampling_defaults.json" if isinstance(source, str) and source else None
    if card is None or not card.is_file():
        return None
    try:
        factor = json.loads(card.read_text(encoding="utf-8")).get("attention_factor")
    except (OSError, ValueError, AttributeError):
        return None
    return int(factor) if isinstance(factor, int) and factor >= 1 else None


def initial_noise(seed: int, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """Unit Gaussian latents drawn on CPU from `seed` (identical on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def _num_tokens(tokenizer, text: str) -> int:
    """Prompt tokens without SOT/EOT, within the model's context."""
    ids = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return len(ids) - 2


def _conditional_embeds(pipe, text: str, groups: list[TokenGroup], method: str, config: MethodConfig) -> torch.Tensor:
    cond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [text])
    return get_method(method).condition(config, groups, cond)


def _run(
    pipe,
    prompt: WeightedPrompt,
    groups: list[TokenGroup],
    batch: GuidedBatch,
    method: str,
    config: MethodConfig,
    *,
    seed: int,
    latent_hw: tuple[int, int],
    steps: int,
    record_attention: bool,
    progress: bool,
    settings: dict,
    start: float,
    callback: StepCallback | None = None,
) -> Result:
    """Sample with the method's plan from the seed's noise, decode, and assemble the report (`settings` first)."""
    unet, scheduler = pipe.unet, pipe.scheduler
    noise = initial_noise(seed, (1, unet.config.out_channels, *latent_hw), unet.device, unet.dtype)
    num_tokens = _num_tokens(pipe.tokenizer, prompt.text)
    diagnostics = GuidanceDiagnostics()
    # 1. the method's hooks
    impl = get_method(method)
    impl.check(config, groups)
    inputs = MethodInputs(pipe, groups, batch, steps, latent_hw, num_tokens, diagnostics, card_factor(pipe))
    plan = impl.prepare(config, inputs)
    controller = plan.controller or (AttentionController() if record_attention else None)

    # 2. denoise with them installed (processors and requires_grad restored on the way out)
    with contextlib.ExitStack() as stack:
        if controller is not None:
            stack.enter_context(capture_attention(unet, controller))
        if plan.freeze_unet:
            stack.enter_context(frozen_parameters(unet))
        latents = denoise(
            unet, scheduler, batch, noise, steps=steps, pre_step=plan.pre_step, progress=progress,
            before_prediction=None if controller is None else controller.recorder(batch.cond_row), callback=callback,
        )  # fmt: skip
        if controller is not None:
            controller.set_pass()
        shares, heatmaps = None, None
        if record_attention and groups:
            shares = attention_shares(controller.store, [g.token_indices for g in groups], num_tokens)
            heatmaps = attention_heatmaps(controller.store, [g.token_indices for g in groups], latent_hw)
    # 3. decode and report
    words = [
        dict(text=g.text, weight=g.weight, tokens=list(g.token_indices), attention_share=None if shares is None else s)
        for g, s in zip(groups, shares or [None] * len(groups), strict=True)
    ]
    if not torch.isfinite(latents).all():
        raise ValueError(
            "sampling produced NaN/inf latents (is a guidance step size too large?); no image was written"
        )
    image = tensor_to_pil(decode_latents(pipe.vae, latents))[0]
    report = dict(
        **settings,
        seed=seed,
        steps=steps,
        scheduler=type(scheduler).__name__,
        method=method,
        config=asdict(config),
        words=words,
        guidance=dict(steps=[asdict(d) for d in diagnostics.steps], stopped_early=diagnostics.stopped_early),
        seconds=round(time.perf_counter() - start, 3),
    )
    return Result(image=image, latents=latents, report=report, heatmaps=heatmaps, groups=groups)


class EmphasizeWarning(UserWarning):
    """Something the user should know that does not stop the run (a prompt cut at the token limit, ...)."""


def _prepare_prompt(pipe, prompt: str | WeightedPrompt) -> tuple[WeightedPrompt, list[TokenGroup]]:
    weighted = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    groups = align_spans(pipe.tokenizer, weighted)
    message = truncation_message(pipe.tokenizer, weighted.text)
    if message is not None:
        warnings.warn(message, EmphasizeWarning, stacklevel=3)
    return weighted, groups


@torch.no_grad()
def generate(
    pipe,
    prompt: str | WeightedPrompt,
    *,
    method: str = "importance",
    config: MethodConfig | None = None,
    sampling: SamplingConfig | None = None,
    record_attention: bool = True,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> Result:
    """Text-to-image with word weights.

    Args:
        pipe: a `StableDiffusionPipeline` (or any object with its components).
        prompt: a weighted prompt, e.g. `"a (red:1.5) circle and a [blue] square"`, or a parsed `WeightedPrompt`.
        method: "plain", "attend-excite", "importance", "reweight" or "embed".
        config: the method's config (its defaults when None).
        sampling: steps, CFG scale, size, seed, negative prompt.
        record_attention: capture attention during sampling to report each word's attention share and heatmap.
        progress: show a progress bar.
        callback: called with `(steps done, steps)` after each sampling step; an exception it raises (a cancelled
            request) stops sampling between steps, with the attention processors restored.
    """
    start = time.perf_counter()
    config = method_config(method, config)
    sampling = sampling or SamplingConfig()
    weighted, groups = _prepare_prompt(pipe, prompt)
    default = pipe.unet.config.sample_size * vae_scale_factor(pipe.vae)
    height = sampling.height or default
    width = sampling.width or height
    _check_size(pipe, height, width)
    h, w = latent_size(pipe.vae, height, width)
    dtype = pipe.unet.dtype

    cond = _conditional_embeds(pipe, weighted.text, groups, method, config)
    uncond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [sampling.negative_prompt])
    batch = text_to_image_batch(cond.to(dtype), uncond.to(dtype), sampling.guidance_scale)
    settings = dict(
        prompt=prompt if isinstance(prompt, str) else weighted.text,
        text=weighted.text,
        height=height,
        width=width,
        guidance_scale=sampling.guidance_scale,
        negative_prompt=sampling.negative_prompt,
    )
    return _run(
        pipe, weighted, groups, batch, method, config, seed=sampling.seed, latent_hw=(h, w), steps=sampling.steps,
        record_attention=record_attention, progress=progress, settings=settings, start=start, callback=callback,
    )  # fmt: skip


def working_size(
    image_size: tuple[int, int], multiple: int, native: int, height: int | None = None, width: int | None = None
) -> tuple[int, int]:
    """The `(width, height)` an input image is edited at.

    Without an explicit size, InstructPix2Pix's rule: the longer side becomes the model's native side and the other
    keeps the aspect ratio, each rounded down to `multiple` (at least one multiple), so a 4000 px photo is edited
    at the model's size, not its own. A given side is used as it is (the other follows the aspect ratio).

    Args:
        image_size: the input's `(width, height)`.
        multiple: sides must be multiples of this (`size_multiple(pipe)`).
        native: the model's native image side (`unet.config.sample_size` x the VAE factor).
        height, width: the requested working size, or None.
    """
    w0, h0 = image_size

    def down(x: float) -> int:
        return max(multiple, int(x) // multiple * multiple)

    if width is None and height is None:
        factor = native / max(w0, h0)
        return down(w0 * factor), down(h0 * factor)
    if width is None:
        return down(w0 * height / h0), height
    if height is None:
        return width, down(h0 * width / w0)
    return width, height


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize/crop an input image to the working `(width, height)` (InstructDiffusion's `ImageOps.fit`, LANCZOS)."""
    image = image.convert("RGB")
    if image.size == size:
        return image
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)


def native_side(pipe) -> int:
    """The model's native image side in pixels."""
    return pipe.unet.config.sample_size * vae_scale_factor(pipe.vae)


@torch.no_grad()
def edit(
    pipe,
    image: Image.Image,
    instruction: str | WeightedPrompt,
    *,
    method: str = "importance",
    config: MethodConfig | None = None,
    sampling: EditSamplingConfig | None = None,
    record_attention: bool = True,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> Result:
    """Instruction editing with word weights (InstructPix2Pix / InstructDiffusion: an 8-channel UNet).

    Args:
        pipe: a `StableDiffusionInstructPix2PixPipeline` (or any object with its components); InstructDiffusion
            checkpoints load into the same layout.
        image: the input image (RGB); fit to the working size.
        instruction: weighted instruction, e.g. `"encircle the man's (left shoulder:2) in red"`.
        method: "plain", "attend-excite", "importance", "reweight" or "embed".
        config: the method's config (its defaults when None).
        sampling: steps, guidance rule and scales, working size, seed.
        record_attention: capture attention to report each word's attention share and heatmap.
        progress: show a progress bar.
        callback: called with `(steps done, steps)` after each sampling step; an exception it raises (a cancelled
            request) stops sampling between steps, with the attention processors restored.
    """
    start = time.perf_counter()
    config = method_config(method, config)
    sampling = sampling or EditSamplingConfig()
    if pipe.unet.config.in_channels != 2 * pipe.unet.config.out_channels:
        raise ValueError(
            f"editing needs an image-conditioned UNet (in_channels = 2 x out_channels), this one has "
            f"in_channels={pipe.unet.config.in_channels}"
        )
    weighted, groups = _prepare_prompt(pipe, instruction)
    fitted = fit_image(
        image, working_size(image.size, size_multiple(pipe), native_side(pipe), sampling.height, sampling.width)
    )
    _check_size(pipe, fitted.height, fitted.width)
    h, w = latent_size(pipe.vae, fitted.height, fitted.width)
    dtype, device = pipe.unet.dtype, pipe.unet.device

    cond = _conditional_embeds(pipe, weighted.text, groups, method, config)
    uncond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [""])
    image_latents = encode_image_condition(pipe.vae, pil_to_tensor(fitted).to(device=device, dtype=pipe.vae.dtype))
    text_scale, image_scale = sampling.scales
    batch = edit_batch(
        cond.to(dtype), uncond.to(dtype), image_latents.to(dtype), sampling.guidance_rule, text_scale, image_scale
    )
    settings = dict(
        instruction=instruction if isinstance(instruction, str) else weighted.text,
        text=weighted.text,
        height=fitted.height,
        width=fitted.width,
        guidance_rule=sampling.guidance_rule,
        text_scale=text_scale,
        image_scale=image_scale,
    )
    output_size = image.size if sampling.restore_size else fitted.size
    settings["output_size"] = list(output_size)
    result = _run(
        pipe, weighted, groups, batch, method, config, seed=sampling.seed, latent_hw=(h, w), steps=sampling.steps,
        record_attention=record_attention, progress=progress, settings=settings, start=start, callback=callback,
    )  # fmt: skip
    if result.image.size != output_size:
        # InstructDiffusion fits the edited image back to the input's size (LANCZOS)
        result.image = ImageOps.fit(result.image, output_size, method=Image.Resampling.LANCZOS)
    return result
