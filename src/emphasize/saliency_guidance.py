"""SGOOL and DOODL on a user's pipeline: saliency detector choice (including attention-derived saliency captured
from the EDICT chain itself), CLIP choice, and a `Result` like `generate`'s."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict

import torch

from emphasize.api import Result
from emphasize.attention.control import AttentionController
from emphasize.attention.install import capture_attention
from emphasize.attention.store import downsampled_size
from emphasize.prompts import parse_prompt
from emphasize.sampling.common import tensor_to_pil
from emphasize.sampling.conditioning import model_family
from emphasize.sgool.run import StepCallback
from emphasize.tokens import content_token_indices

STOP_WORDS = frozenset("a an the and of in on at to with its it is are this that".split())  # not salient content


def _content_words(tokenizer, text: str) -> list[int]:
    """Positions of the prompt's content tokens (stop words dropped; all tokens if nothing is left)."""
    positions = content_token_indices(tokenizer, text)
    ids = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids
    words = [i for i in positions if tokenizer.decode([ids[i]]).strip().lower() not in STOP_WORDS]
    return words or positions


def _attention_detector(tokenizer, text: str, controller: AttentionController, latent_hw: tuple[int, int]):
    """Saliency from the cross-attention of the last sampling chain (running maps, reset after each read)."""
    from emphasize.saliency import AttentionSaliencyDetector

    detector = AttentionSaliencyDetector(token_indices=_content_words(tokenizer, text))

    def saliency(images: torch.Tensor) -> torch.Tensor:
        store = controller.store
        if not store.running:
            raise ValueError("attention saliency: no cross-attention was recorded during sampling")
        pixels = max(store.running)  # the finest recorded level
        sizes = (downsampled_size(latent_hw, 2**k) for k in range(9))
        size = next((h, w) for h, w in sizes if h * w == pixels)
        detector.update(store.running_map(size))
        store.reset_running()
        return detector(images)

    return saliency


def optimize(
    pipe,
    prompt: str,
    *,
    method: str = "sgool",
    clip=None,
    saliency: str = "spectral",
    config=None,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> Result:
    """Optimize the initial latent with SGOOL (global + salient-crop CLIP loss) or DOODL (global CLIP loss).

    Args:
        pipe: a text-to-image pipeline (or any object with its components).
        prompt: the prompt; weighting syntax is stripped (SGOOL weighs regions, not words).
        method: "sgool" or "doodl".
        clip: `(CLIPModel, tokenizer)` as returned by `emphasize.models.load.load_clip`; the embedded world CLIP
            when None.
        saliency: "spectral", "attention" or "transalnet:PATH" (SGOOL only).
        config: an `emphasize.sgool.SGOOLConfig`.
        seed: seed of the initial latent and of DOODL's perturbation noise.
        height, width: image size (the model's when None).
        progress: a progress bar over the optimisation steps (loss, ETA); Ctrl-C returns the best image so far
            with `report["optimization"]["interrupted"]` set.
        callback: `callback(step, report) -> bool | None` after each optimisation step (`sgool.run.StepCallback`:
            the `SGOOLReport` so far); True stops there, keeping the best image so far.
    """
    from emphasize.methods import method_names
    from emphasize.models.load import load_clip
    from emphasize.sgool import SGOOLConfig, optimize_initial_latent

    saliency_methods = method_names(initial_latent=True)
    if method not in saliency_methods:
        raise ValueError(f"method={method!r} is not a saliency method; choose one of {', '.join(saliency_methods)}")
    if model_family(pipe) != "sd":
        raise ValueError(f"{method} runs on Stable Diffusion 1.x/2.x pipelines (its EDICT chain), not on SDXL")
    start = time.perf_counter()
    config = config or SGOOLConfig()
    text = parse_prompt(prompt).text
    clip_model, clip_tokenizer = clip if clip is not None else load_clip(None)
    generator = torch.Generator().manual_seed(seed)
    controller = None
    with contextlib.ExitStack() as stack:
        saliency_fn = None
        if method == "sgool":
            if saliency.strip().lower() == "attention":
                from emphasize.sampling.common import latent_size, vae_scale_factor

                native = pipe.unet.config.sample_size * vae_scale_factor(pipe.vae)
                latent_hw = latent_size(pipe.vae, height or native, width or native)
                controller = stack.enter_context(capture_attention(pipe.unet))
                controller.set_pass(rows=(1,), keep_running=True)  # EDICT's CFG batch is (uncond, cond)
                saliency_fn = _attention_detector(pipe.tokenizer, text, controller, latent_hw)
            else:
                from emphasize.saliency import get_detector

                saliency_fn = get_detector(saliency)
        last_map: list[torch.Tensor] = []
        if saliency_fn is not None:
            detect = saliency_fn

            def saliency_fn(images: torch.Tensor) -> torch.Tensor:  # remember the last map for `heatmaps`
                maps = detect(images)
                last_map[:] = [maps[0, 0].detach().cpu()]
                return maps

        result = optimize_initial_latent(
            pipe, text, clip_model, clip_tokenizer, saliency_fn, config,
            generator=generator, height=height, width=width, mode=method, progress=progress, callback=callback,
        )  # fmt: skip
    report = dict(
        prompt=prompt,
        text=text,
        method=method,
        seed=seed,
        steps=config.sampling_steps,
        height=result.image.shape[-2],
        width=result.image.shape[-1],
        saliency=saliency if method == "sgool" else None,
        config=asdict(config),
        words=[],
        optimization=asdict(result.report),
        seconds=round(time.perf_counter() - start, 3),
    )
    heatmaps = None
    if method == "sgool":  # the saliency of the returned image (attention: of the last sampled chain)
        heatmaps = last_map[0][None] if saliency.strip().lower() == "attention" else detect(result.image)[:, 0].cpu()
    image = tensor_to_pil(result.image)[0]
    return Result(image=image, latents=result.latents, report=report, heatmaps=heatmaps)
