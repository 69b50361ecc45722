"""Train the world text-to-image model: a UNet and a CLIP text encoder from scratch on world captions, on top of a
frozen world VAE (`train_vae`). Captions are dropped (replaced by "") with probability `caption_dropout` so
classifier-free guidance works.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from emphasize.models.tokenizer import MAX_LENGTH, load_clip_tokenizer
from emphasize.train.common import images_to_tensor, train_seed
from emphasize.train.diffusion import (
    DiffusionBatch,
    DiffusionConfig,
    build_text_encoder,
    encode_images,
    load_text_encoder,
    load_vae,
    train_diffusion,
)
from emphasize.train.grounding import world_grounding_targets

_tokenizer = functools.cache(load_clip_tokenizer)  # built once per process (from_pretrained reads files)


@dataclass(frozen=True)
class T2IConfig(DiffusionConfig):
    caption_dropout: float = 0.1  # probability of training on the empty prompt (for classifier-free guidance)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout={self.caption_dropout} is out of range; valid: 0 to 1 (exclusive)")


def t2i_batch(vae, config: T2IConfig, step: int, generator: torch.Generator):
    """Step `step`'s scaled target latents and prompts (dropped to "" with the step's generator)."""
    from emphasize.world import sample_t2i

    items = [
        sample_t2i(train_seed(config.seed, step * config.batch_size + i), config.image_size)
        for i in range(config.batch_size)
    ]
    device = next(vae.parameters()).device
    latents = encode_images(vae, images_to_tensor([it.image for it in items]).to(device)) * vae.config.scaling_factor
    drop = torch.rand(len(items), generator=generator) < config.caption_dropout
    prompts = ["" if d else it.caption for it, d in zip(items, drop.tolist(), strict=True)]
    grounding = None
    if config.grounding_weight > 0:
        grounding = world_grounding_targets(items, prompts, _tokenizer(), MAX_LENGTH)
    return DiffusionBatch(latents, None, prompts, grounding)


def train_t2i(
    out: str | Path,
    vae: str | Path,
    config: T2IConfig | None = None,
    *,
    text_encoder: str | Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    show_progress: bool = True,
    stop_at: int | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train the text-to-image UNet (and text encoder); return the exported `StableDiffusionPipeline` dir.

    Args:
        out: run directory: `checkpoint.pt` and `model/` (the pipeline, EMA weights).
        vae: a trained VAE directory (`train_vae`'s --out, its `model/`, or a pipeline dir with `vae/`).
        config: recipe knobs.
        text_encoder: a trained CLIPTextModel directory to start from (trained further); fresh when None.
        device: `cpu` or `cuda`.
        resume: continue from `out/checkpoint.pt` when it exists.
        show_progress: show the tqdm bar.
        stop_at: stop after this step of the `config.steps` schedule (see `train_diffusion`).
        init_from: a trained text-to-image pipeline (or run --out) whose UNet and text encoder start this run
            (fine-tuning with a fresh optimizer and schedule); `text_encoder` overrides its text encoder.
    """
    config = config or T2IConfig()
    device = torch.device(device)
    vae_model = load_vae(vae, device)
    encoder_dir = text_encoder or init_from
    encoder = load_text_encoder(encoder_dir, device) if encoder_dir else build_text_encoder(config).to(device)
    card = {"vae_scaling_factor": vae_model.config.scaling_factor}
    return train_diffusion(
        Path(out),
        config,
        kind="t2i",
        vae=vae_model,
        text_encoder=encoder,
        train_text=True,
        make_batch=lambda step, g: t2i_batch(vae_model, config, step, g),
        device=device,
        resume=resume,
        show_progress=show_progress,
        stop_at=stop_at,
        card=card,
        init_from=init_from,
    )
