"""The two-line API: add word weights to your own diffusers pipeline.

    pipe = StableDiffusionPipeline.from_pretrained("runwayml/stable-diffusion-v1-5")
    result = emphasize.generate(pipe, "a (cat:1.8) and a (frog:0.6)", method="importance")

`pipe` may be any object with diffusers' component attributes (`unet`, `vae`, `text_encoder`, `tokenizer`,
`scheduler`; for Stable Diffusion XL also `text_encoder_2`, `tokenizer_2`); its modules are used as they are and
its attention processors are restored afterwards.
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
from emphasize.report import RunReport, WordReport, attention_heatmaps, attention_shares
from emphasize.sampling.common import (
    decode_latents,
    encode_image_condition,
    latent_size,
    pil_to_tensor,
    tensor_to_pil,
    vae_scale_factor,
)
from emphasize.sampling.conditioning import (
    Family,
    TextCondition,
    added_cond,
    encode_text,
    model_family,
    negative_text,
    sdxl_time_ids,
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
    record: RunReport | None = None  # the typed report `report` serialises (generate/edit; None for SGOOL/DOODL)


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


def _conditional_text(
    pipe, text: str, groups: list[TokenGroup], method: str, config: MethodConfig, family: Family
) -> TextCondition:
    """The prompt's text condition with the method's conditioning hook applied."""
    cond = encode_text(pipe, [text], family)
    return get_method(method).condition_text(config, groups, cond, lambda other: encode_text(pipe, [other], family))


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
    words = tuple(
        WordReport(g.text, g.weight, tuple(g.token_indices), None if shares is None else s)
        for g, s in zip(groups, shares or [None] * len(groups), strict=True)
    )
    if not torch.isfinite(latents).all():
        raise ValueError(
            "sampling produced NaN/inf latents (is a guidance step size too large?); no image was written"
        )
    image = tensor_to_pil(decode_latents(pipe.vae, latents, xl=model_family(pipe) == "sdxl"))[0]
    record = RunReport(
        settings=settings,
        seed=seed,
        steps=steps,
        scheduler=type(scheduler).__name__,
        method=method,
        config=asdict(config),
        words=words,
        guidance_steps=tuple(diagnostics.steps),
        stopped_early=diagnostics.stopped_early,
        seconds=round(time.perf_counter() - start, 3),
    )
    report = record.to_dict()
    return Result(image=image, latents=latents, report=report, heatmaps=heatmaps, groups=groups, record=record)


class EmphasizeWarning(UserWarning):
    """Something the user should know that does not stop the run (a prompt cut at the token limit, ...)."""


def _prepare_prompt(
    pipe, prompt: str | WeightedPrompt, family: Family = "sd"
) -> tuple[WeightedPrompt, list[TokenGroup]]:
    weighted = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    groups = align_spans(pipe.tokenizer, weighted)
    if family == "sdxl":  # one set of positions serves both encoders: their tokenizers must agree on it
        second = align_spans(pipe.tokenizer_2, weighted)
        if [g.token_indices for g in second] != [g.token_indices for g in groups]:
            first = {g.text: g.token_indices for g in groups}
            other = {g.text: g.token_indices for g in second}
            raise ValueError(
                f"SDXL's two tokenizers place the weighted words at different positions ({first} with tokenizer, "
                f"{other} with tokenizer_2); emphasize needs them to agree (both are CLIP BPE in SDXL)"
            )
        if pipe.tokenizer.model_max_length != pipe.tokenizer_2.model_max_length:
            raise ValueError(
                f"SDXL's tokenizers read {pipe.tokenizer.model_max_length} and {pipe.tokenizer_2.model_max_length} "
                "tokens; emphasize needs the same context length"
            )
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
        pipe: a `StableDiffusionPipeline` or `StableDiffusionXLPipeline` (or any object with its components).
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
    family = model_family(pipe)
    weighted, groups = _prepare_prompt(pipe, prompt, family)
    default = pipe.unet.config.sample_size * vae_scale_factor(pipe.vae)
    height = sampling.height or default
    width = sampling.width or height
    _check_size(pipe, height, width)
    h, w = latent_size(pipe.vae, height, width)
    dtype = pipe.unet.dtype

    cond = _conditional_text(pipe, weighted.text, groups, method, config, family).to(dtype)
    uncond = negative_text(pipe, sampling.negative_prompt, family).to(dtype)
    time_ids = sdxl_time_ids(pipe.unet, cond.pooled.shape[-1], (height, width)) if family == "sdxl" else None
    batch = text_to_image_batch(
        cond.embeds,
        uncond.embeds,
        sampling.guidance_scale,
        added_cond=added_cond(cond, time_ids),
        added_uncond=added_cond(uncond, time_ids),
    )
    settings = dict(
        prompt=prompt if isinstance(prompt, str) else weighted.text,
        text=weighted.text,
        height=height,
        width=width,
        guidance_scale=sampling.guidance_scale,
        negative_prompt=sampling.negative_prompt,
    )
    if family == "sdxl":  # SD reports stay as they were
        settings.update(model_family="sdxl", time_ids=[int(v) for v in time_ids[0].tolist()])
    return _run(
        pipe, weighted, groups, batch, method, config, seed=sampling.seed, latent_hw=(h, w), steps=sampling.steps,
        record_attention=record_attention, progress=progress, settings=settings, start=start, callback=callback,
    )  # fmt: skip


@dataclass(frozen=True)
class PromptEmbeds:
    """Weighted text embeddings for a diffusers pipeline's own call: `pipe(**embeds.kwargs(), ...)`."""

    prompt_embeds: torch.Tensor  # (1, 77, D) the weighted prompt's hidden states (SDXL: both encoders')
    negative_prompt_embeds: torch.Tensor  # (1, 77, D) the negative prompt's (SDXL, empty: zeros, as the pipeline)
    pooled_prompt_embeds: torch.Tensor | None = None  # (1, P) SDXL: the prompt's pooled embedding (unweighted,
    # as in AUTOMATIC1111 and ComfyUI); None for SD 1.x/2.x
    negative_pooled_prompt_embeds: torch.Tensor | None = None  # (1, P) SDXL: the negative prompt's
    groups: tuple[TokenGroup, ...] = ()  # the weighted words and their token positions

    def kwargs(self) -> dict[str, torch.Tensor]:
        """The embedding arguments of `StableDiffusionPipeline.__call__` / `StableDiffusionXLPipeline.__call__`."""
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@torch.no_grad()
def weighted_embeds(
    pipe,
    prompt: str | WeightedPrompt,
    *,
    config: MethodConfig | None = None,
    negative_prompt: str = "",
) -> PromptEmbeds:
    """Embedding-weighted prompt embeddings (the `embed` method's conditioning) for the user's own pipeline call,
    as compel builds them: `pipe(**emphasize.weighted_embeds(pipe, "a (cat:1.3)").kwargs(), ...)`.

    Args:
        pipe: a `StableDiffusionPipeline` or `StableDiffusionXLPipeline` (or any object with their components).
        prompt: a weighted prompt, e.g. `"a (red:1.5) circle"`, or a parsed `WeightedPrompt`.
        config: an `EmbedConfig` (its `mode`: "original", "no-norm" or "comfy"); the default one when None.
        negative_prompt: the negative prompt (`""`: SDXL's zeros when `force_zeros_for_empty_prompt`, else the
            encoding of `""`, as the pipelines do).
    """
    config = method_config("embed", config)
    family = model_family(pipe)
    weighted, groups = _prepare_prompt(pipe, prompt, family)
    cond = _conditional_text(pipe, weighted.text, groups, "embed", config, family)
    uncond = negative_text(pipe, negative_prompt, family)
    return PromptEmbeds(cond.embeds, uncond.embeds, cond.pooled, uncond.pooled, tuple(groups))


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
    if model_family(pipe) != "sd":
        raise ValueError(
            "editing supports InstructPix2Pix / InstructDiffusion (Stable Diffusion 1.x layout) pipelines, not SDXL"
        )
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

    cond = _conditional_text(pipe, weighted.text, groups, method, config, "sd").embeds
    uncond = encode_text(pipe, [""], "sd").embeds
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
