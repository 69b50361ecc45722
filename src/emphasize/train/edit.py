"""Train the world instruction-editing model: an 8-channel UNet (InstructPix2Pix layout: noisy latent + the
unscaled VAE posterior mode of the input image) on every world task family (segment, keypoint, edit, enhance).

Conditions are dropped as InstructDiffusion does, with one draw r ~ U(0, 1) per item: the instruction becomes ""
when r < `text_dropout`, the image condition becomes zeros when `text_dropout` <= r < `text_dropout` +
`image_dropout`, never both; so both guidance rules (InstructPix2Pix and InstructDiffusion) have their branches.
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
from emphasize.train.grounding import world_edit_grounding_targets

_tokenizer = functools.cache(load_clip_tokenizer)  # built once per process

FAMILIES = ("segment", "keypoint", "edit", "enhance")


def family_of(kind: str) -> str:
    """The world task family of an instruction kind ("recolour" -> "edit")."""
    from emphasize.world.tasks import KINDS

    for family, kinds in KINDS.items():
        if kind in kinds:
            return family
    valid = ", ".join(k for kinds in KINDS.values() for k in kinds)
    raise ValueError(f"unknown instruction kind {kind!r}; valid: {valid}")


def parse_kind_weights(text: str) -> tuple[tuple[str, float], ...]:
    """`"recolour=3,segment=2"` -> `(("recolour", 3.0), ("segment", 2.0))`; ValueError naming a bad entry."""
    pairs = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        name, sep, value = entry.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not weight >= 0 or weight == float("inf"):
            raise ValueError(f"kind weight {entry!r} is not KIND=WEIGHT with a finite weight >= 0")
        pairs.append((name.strip(), weight))
    return tuple(pairs)


@dataclass(frozen=True)
class EditConfig(DiffusionConfig):
    steps: int = 1500  # optimizer steps
    text_dropout: float = 0.075  # P(instruction -> "")
    image_dropout: float = 0.075  # P(image condition -> zeros), disjoint from the text dropout
    sample_steps: int = 25  # default DDIM steps recorded in the model card
    guidance_scale: float = 5.0  # default text guidance scale recorded in the model card
    image_guidance_scale: float = 1.5  # default image guidance scale recorded in the model card
    # (kind, weight) pairs: each item's instruction kind is drawn in proportion to these (kinds not named never
    # appear); empty: the four families uniformly, then their kinds uniformly (the recipe of the shipped models)
    kind_weights: tuple[tuple[str, float], ...] = ()
    grounding_words: bool = False  # also ground each word of the referring phrase on its own (not only the phrase)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "kind_weights", tuple((str(k), float(w)) for k, w in self.kind_weights))
        for kind, weight in self.kind_weights:
            family_of(kind)
            if not 0 <= weight < float("inf"):
                raise ValueError(f"kind_weights: {kind}={weight} is out of range; valid: a finite weight >= 0")
        if self.kind_weights and sum(w for _, w in self.kind_weights) <= 0:
            raise ValueError(f"kind_weights={self.kind_weights}: at least one weight must be > 0")
        if self.text_dropout < 0 or self.image_dropout < 0 or self.text_dropout + self.image_dropout >= 1:
            raise ValueError(
                f"text_dropout={self.text_dropout}, image_dropout={self.image_dropout}: each must be "
                ">= 0 and their sum < 1"
            )


def training_item(config: EditConfig, s: int):
    """The world instruction task of training seed `s`: its kind drawn from `config.kind_weights` (a draw of its
    own from `s`), or its family `s mod 4` and then a random kind of it when no weights are given."""
    import numpy as np

    from emphasize.world import sample_task

    if not config.kind_weights:
        return sample_task(FAMILIES[s % len(FAMILIES)], s, config.image_size)
    kinds = [k for k, _ in config.kind_weights]
    weights = np.array([w for _, w in config.kind_weights])
    kind = kinds[int(np.random.default_rng([s, 5]).choice(len(kinds), p=weights / weights.sum()))]
    return sample_task(family_of(kind), s, config.image_size, kind=kind)


def edit_batch(vae, config: EditConfig, step: int, generator: torch.Generator):
    """Step `step`'s scaled target latents, unscaled input latents (dropped to zeros) and instructions."""
    items = [
        training_item(config, train_seed(config.seed, step * config.batch_size + i)) for i in range(config.batch_size)
    ]
    device = next(vae.parameters()).device
    target = encode_images(vae, images_to_tensor([it.target for it in items]).to(device)) * vae.config.scaling_factor
    cond = encode_images(vae, images_to_tensor([it.input for it in items]).to(device))
    r = torch.rand(len(items), generator=generator)
    drop_text = r < config.text_dropout
    drop_image = (r >= config.text_dropout) & (r < config.text_dropout + config.image_dropout)
    cond = cond * (~drop_image).to(cond).view(-1, 1, 1, 1)
    prompts = ["" if d else it.instruction for it, d in zip(items, drop_text.tolist(), strict=True)]
    grounding = None
    if config.grounding_weight > 0:
        grounding = world_edit_grounding_targets(
            items, prompts, _tokenizer(), MAX_LENGTH, words=config.grounding_words
        )
    return DiffusionBatch(target, cond, prompts, grounding)


def train_edit(
    out: str | Path,
    vae: str | Path,
    config: EditConfig | None = None,
    *,
    text_encoder: str | Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    show_progress: bool = True,
    stop_at: int | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train the editing UNet; return the exported `StableDiffusionInstructPix2PixPipeline` directory.

    Args:
        out: run directory: `checkpoint.pt` and `model/` (the pipeline, EMA weights).
        vae: a trained VAE directory (`train_vae`'s --out, its `model/`, or a pipeline dir with `vae/`).
        config: recipe knobs.
        text_encoder: a trained CLIPTextModel directory (e.g. the t2i pipeline's), kept frozen; when None a fresh
            text encoder is trained jointly with the UNet.
        device: `cpu` or `cuda`.
        resume: continue from `out/checkpoint.pt` when it exists.
        show_progress: show the tqdm bar.
        stop_at: stop after this step of the `config.steps` schedule (see `train_diffusion`).
        init_from: a trained pipeline whose UNet and text encoder start this run: an editing pipeline (fine-tuning)
            or a text-to-image one, whose UNet is widened to 8 input channels with zero weights on the image
            channels as InstructPix2Pix starts from Stable Diffusion. Its text encoder is trained further, unless
            `text_encoder` is given (then that one is used, frozen).
    """
    config = config or EditConfig()
    device = torch.device(device)
    vae_model = load_vae(vae, device)
    encoder_dir = text_encoder or init_from
    encoder = load_text_encoder(encoder_dir, device) if encoder_dir else build_text_encoder(config).to(device)
    card = {
        "image_guidance_scale": config.image_guidance_scale,
        "vae_scaling_factor": vae_model.config.scaling_factor,
        "image_condition": "unscaled VAE posterior mode of the input image",
    }
    return train_diffusion(
        Path(out),
        config,
        kind="edit",
        vae=vae_model,
        text_encoder=encoder,
        train_text=text_encoder is None,
        make_batch=lambda step, g: edit_batch(vae_model, config, step, g),
        device=device,
        resume=resume,
        show_progress=show_progress,
        stop_at=stop_at,
        card=card,
        init_from=init_from,
    )
