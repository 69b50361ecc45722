"""What the text-to-image and the editing recipes share: configs, model builders, the DDPM training step, the
training loop with EMA and checkpoints, and the export of a diffusers pipeline directory.

Training follows Stable Diffusion: DDPM with scaled-linear betas (0.00085 -> 0.012, 1000 steps), epsilon prediction,
latents = VAE posterior mode x `scaling_factor`, the text condition is the text encoder's last hidden state. The
exported pipeline samples with DDIM by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from emphasize.attention.control import AttentionController
from emphasize.attention.install import capture_attention
from emphasize.models.load import SAMPLING_DEFAULTS_FILE, sampling_defaults
from emphasize.train.common import (
    EMA,
    TrainError,
    check_config,
    freeze,
    load_checkpoint,
    step_generator,
    train_steps,
)
from emphasize.train.grounding import (
    GroundingTargets,
    free_position_invariance,
    free_positions,
    grounding_loss,
    replace_free_positions,
)

MODEL_DIR = "model"  # the exported diffusers pipeline inside --out
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@dataclass(frozen=True)
class DiffusionConfig:
    steps: int = 1500  # optimizer steps
    batch_size: int = 32  # items per step
    lr: float = 6e-4  # AdamW peak learning rate (warmup, then cosine to 10%)
    warmup: int = 100  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    image_size: int = 64  # world image side in px
    unet_channels: tuple[int, ...] = (32, 64, 64)  # UNet widths; cross-attention in all blocks but the deepest
    attention_heads: int = 4  # cross-attention heads (diffusers' `attention_head_dim`)
    text_width: int = 64  # text encoder hidden size (= the UNet's cross_attention_dim)
    text_layers: int = 2  # text encoder depth
    ema_decay: float = 0.995  # EMA of the UNet and text encoder weights (the shipped weights)
    checkpoint_every: int = 250  # steps between checkpoints (and at the end)
    sample_steps: int = 25  # default DDIM steps recorded in the model card
    guidance_scale: float = 5.0  # default classifier-free guidance scale recorded in the model card
    seed: int = 0  # run seed: weights, data, noise, timesteps and dropout
    grounding_weight: float = 0.0  # weight of the TokenCompose-style grounding loss (`train.grounding`); 0: off
    grounding_factors: tuple[int, ...] = (1, 2)  # latent downsampling factors of the levels it grounds
    pad_dropout: float = 0.0  # P(the UNet sees the empty prompt's states from the first EOT on), per item
    pad_invariance: float = 0.0  # weight pulling the encoder's states from the first EOT on towards the empty's
    attention_factor: int | None = None  # guided attention level recorded in the model card; None: not recorded

    def __post_init__(self):
        check_config(
            self,
            {
                "steps": (1, 10**7),
                "batch_size": (1, 4096),
                "lr": (1e-7, 1.0),
                "warmup": (0, 10**6),
                "image_size": (16, 1024),
                "ema_decay": (0.0, 1.0),
                "checkpoint_every": (1, 10**7),
                "grounding_weight": (0.0, 100.0),
                "pad_dropout": (0.0, 1.0),
                "pad_invariance": (0.0, 100.0),
            },
        )
        if not self.grounding_factors or any(f < 1 or f & (f - 1) for f in self.grounding_factors):
            raise ValueError(f"grounding_factors={self.grounding_factors} must be powers of two >= 1")
        if any(c % 8 for c in self.unet_channels) or len(self.unet_channels) < 2:
            raise ValueError(f"unet_channels={self.unet_channels} must be >= 2 widths, each a multiple of 8")


def build_unet(config: DiffusionConfig, in_channels: int, sample_size: int):
    """A fresh UNet2DConditionModel with cross-attention at every resolution except the deepest."""
    from diffusers import UNet2DConditionModel

    n = len(config.unet_channels)
    torch.manual_seed(config.seed + 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=config.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=config.text_width,
        attention_head_dim=config.attention_heads,
        norm_num_groups=8,
    )


def build_text_encoder(config: DiffusionConfig):
    """A fresh CLIPTextModel over the 49408-token CLIP BPE vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from emphasize.models.tokenizer import MAX_LENGTH

    torch.manual_seed(config.seed + 2)
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=config.text_width,
            intermediate_size=4 * config.text_width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def model_dir(path: str | Path, what: str, marker: str) -> Path:
    """`path` or `path/model` (a recipe's --out), whichever holds `marker`; TrainError otherwise."""
    path = Path(path)
    for candidate in (path, path / what, path / MODEL_DIR, path / MODEL_DIR / what):
        if (candidate / marker).is_file():
            return candidate
    raise TrainError(f"{path}: no {what} found (expected {marker} there or in {path / MODEL_DIR})")


def load_vae(path: str | Path, device):
    from diffusers import AutoencoderKL

    directory = model_dir(path, "vae", "config.json")
    return freeze(AutoencoderKL.from_pretrained(str(directory), dtype=torch.float32).to(device))


def load_text_encoder(path: str | Path, device):
    from transformers import CLIPTextModel

    directory = model_dir(path, "text_encoder", "config.json")
    return CLIPTextModel.from_pretrained(str(directory), dtype=torch.float32).to(device)


def init_unet(unet, path: str | Path) -> None:
    """Load a trained UNet's weights into `unet` (a warm start), widening the first convolution when needed.

    A 4-channel text-to-image UNet initialises the 8-channel editing UNet as InstructPix2Pix initialises from
    Stable Diffusion: the weights of the extra input channels (the image condition) of `conv_in` start at zero, so
    the widened model computes exactly what the text-to-image model did. Every other tensor must match in shape.

    Args:
        unet: the freshly built UNet2DConditionModel to fill.
        path: a pipeline directory, its `unet/`, or a recipe's --out.
    """
    from diffusers import UNet2DConditionModel

    directory = model_dir(path, "unet", "config.json")
    source = UNet2DConditionModel.from_pretrained(str(directory), dtype=torch.float32).state_dict()
    target = unet.state_dict()
    if set(source) != set(target):
        raise TrainError(f"{directory}: its UNet has different layers from this recipe's (unet_channels, text_width)")
    for name, weight in source.items():
        want = target[name].shape
        if name == "conv_in.weight" and weight.shape[1] < want[1] and weight.shape[0] == want[0]:
            # (C_out, C_in, k, k): copy the latent channels, zeros for the image-condition channels
            widened = torch.zeros(want, dtype=weight.dtype)
            widened[:, : weight.shape[1]] = weight
            weight = widened
        if weight.shape != want:
            raise TrainError(f"{directory}: {name} has shape {tuple(weight.shape)}, this recipe needs {tuple(want)}")
        source[name] = weight
    unet.load_state_dict(source)


def init_card(path: str | Path) -> dict:
    """Model-card facts of a warm start: where it started and how many steps its UNet had already trained.

    Args:
        path: the `init_from` given to the recipe (a pipeline directory or a recipe's --out).

    Returns:
        `{"initialised_from": path}`, plus `"init_trained_steps"` when the starting model has an emphasize model
        card (its `total_trained_steps`, or its `trained_steps` when it was itself trained from scratch).
    """
    facts: dict = {"initialised_from": str(path)}
    try:
        defaults = sampling_defaults(model_dir(path, "model card", SAMPLING_DEFAULTS_FILE), "t2i")
    except (TrainError, OSError, ValueError):
        return facts
    steps = defaults.get("total_trained_steps", defaults.get("trained_steps"))
    if isinstance(steps, int):
        facts["init_trained_steps"] = steps
    return facts


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**BETAS, prediction_type="epsilon", clip_sample=False)


def sampling_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**BETAS, prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def token_ids(tokenizer, texts: list[str], device) -> torch.Tensor:
    """(B, 77) token ids, padded to the tokenizer's max length as the pipelines do."""
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def encode_text(text_encoder, tokenizer, texts: list[str], device) -> torch.Tensor:
    """(B, 77, D) last hidden states, padded to the tokenizer's max length as the pipelines do."""
    return text_encoder(token_ids(tokenizer, texts, device))[0]


@torch.no_grad()
def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> unscaled posterior modes (as InstructPix2Pix conditions on them)."""
    return vae.encode(images * 2 - 1).latent_dist.mode()


@dataclass(frozen=True)
class DiffusionBatch:
    """One training step's data, condition dropout already applied."""

    latents: torch.Tensor  # (B, 4, h, w) target latents x scaling_factor
    image_cond: torch.Tensor | None  # (B, 4, h, w) extra UNet input channels (editing), or None
    prompts: list[str]  # what the text encoder reads ("" where dropped)
    grounding: GroundingTargets | None = None  # phrases and object masks, when the recipe grounds attention


BatchFn = Callable[[int, torch.Generator], DiffusionBatch]


def train_diffusion(
    out: Path,
    config: DiffusionConfig,
    *,
    kind: str,
    vae,
    text_encoder,
    train_text: bool,
    make_batch: BatchFn,
    device,
    resume: bool,
    show_progress: bool,
    card: dict,
    stop_at: int | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """The shared loop: DDPM epsilon loss, AdamW, EMA, checkpoints; exports `out/model` (a pipeline dir).

    Args:
        out: run directory.
        config: recipe knobs.
        kind: `t2i` (4-channel UNet) or `edit` (8-channel UNet).
        vae: frozen AutoencoderKL on `device`.
        text_encoder: CLIPTextModel on `device`; trained when `train_text`, frozen otherwise.
        train_text: train the text encoder jointly with the UNet.
        make_batch: step, generator -> the step's `DiffusionBatch`.
        device: torch device.
        resume: continue from `out/checkpoint.pt` when it exists.
        show_progress: show the tqdm bar.
        stop_at: stop (checkpoint and export) after this step, on the schedule of `config.steps` (a time-boxed
            run; resuming with a later `stop_at` continues exactly).
        card: extra facts for the model card.
        init_from: a trained pipeline whose UNet starts this run (`init_unet`); a checkpoint in `out` wins.
    """
    from emphasize.models.tokenizer import load_clip_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_clip_tokenizer()
    sample_size = config.image_size // (2 ** (len(vae.config.block_out_channels) - 1))
    unet = build_unet(config, 8 if kind == "edit" else 4, sample_size)
    if init_from is not None:
        init_unet(unet, init_from)
        card = {**card, **init_card(init_from)}
    unet = unet.to(device).train()
    if train_text:
        text_encoder.train()
    else:
        freeze(text_encoder)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if train_text else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema_unet, ema_text = EMA(unet, config.ema_decay), EMA(text_encoder, config.ema_decay) if train_text else None
    scheduler = noise_scheduler()
    start = 0
    state = load_checkpoint(out, resume)
    if state is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        ema_unet.shadow = state["ema_unet"]
        if ema_text is not None:
            ema_text.shadow = state["ema_text"]
        start = state["step"]

    def export(step: int) -> Path:
        return export_pipeline(out, kind, vae, text_encoder, tokenizer, unet, ema_unet, ema_text, config, card, step)

    levels = [sample_size // f for f in config.grounding_factors]
    regularized = config.pad_dropout > 0 or config.pad_invariance > 0

    def loss_at(step: int) -> torch.Tensor:
        generator = step_generator(config.seed, step)
        # 1. data (with condition dropout drawn from the step's generator)
        batch = make_batch(step, generator)
        latents = batch.latents.to(device)
        # 2. forward diffusion at random timesteps
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator).to(device)
        noisy = scheduler.add_noise(latents, noise, t)
        if batch.image_cond is not None:
            noisy = torch.cat([noisy, batch.image_cond.to(device)], dim=1)
        # 3. text states; free positions (first EOT on) replaced by the empty prompt's for the drawn items
        extra = 0.0
        with torch.set_grad_enabled(train_text):
            ids = token_ids(tokenizer, batch.prompts, device)
            cond = text_encoder(ids)[0]
            if regularized:
                empty = text_encoder(token_ids(tokenizer, [""], device))[0]
                free = free_positions(ids, tokenizer.eos_token_id)
                if config.pad_invariance > 0 and train_text:
                    extra = extra + config.pad_invariance * free_position_invariance(cond, empty, free)
                if config.pad_dropout > 0:
                    drop = torch.rand(len(latents), generator=generator) < config.pad_dropout
                    cond = replace_free_positions(cond, empty, free & drop.to(device)[:, None])
        # 4. epsilon prediction (with the cross-attention maps when grounding) and loss
        if config.grounding_weight > 0 and batch.grounding is not None and bool(batch.grounding.valid.any()):
            controller = AttentionController()
            with capture_attention(unet, controller):
                controller.set_pass(rows=tuple(range(len(latents))), keep_pass=True)
                eps = unet(noisy, t, cond).sample
                maps = {side: controller.store.aggregate((side, side)).flatten(1, 2) for side in levels}
            extra = extra + config.grounding_weight * grounding_loss(maps, batch.grounding)
        else:
            eps = unet(noisy, t, cond).sample
        return F.mse_loss(eps, noise) + extra

    def update_ema(step: int) -> None:
        ema_unet.update(unet, step)
        if ema_text is not None:
            ema_text.update(text_encoder, step)

    def state() -> dict:
        return {
            "unet": unet.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema_unet": ema_unet.shadow,
            "ema_text": ema_text.shadow if ema_text is not None else None,
        }

    train_steps(
        out,
        config,
        name=kind,
        start=start,
        stop_at=stop_at,
        optimizer=optimizer,
        params=params,
        loss_at=loss_at,
        state=state,
        export=export,
        after_update=update_ema,
        show_progress=show_progress,
    )
    return out / MODEL_DIR


def export_pipeline(
    out: Path,
    kind: str,
    vae,
    text_encoder,
    tokenizer,
    unet,
    ema_unet: EMA,
    ema_text: EMA | None,
    config: DiffusionConfig,
    card: dict,
    step: int,
) -> Path:
    """Save a diffusers pipeline with the EMA weights (DDIM scheduler, safetensors) and a model card to `out/model`."""
    import copy

    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    unet_out = copy.deepcopy(unet).eval()
    ema_unet.copy_to(unet_out)
    text_out = copy.deepcopy(text_encoder).eval()
    if ema_text is not None:
        ema_text.copy_to(text_out)
    cls = StableDiffusionInstructPix2PixPipeline if kind == "edit" else StableDiffusionPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text_out,
        tokenizer=tokenizer,
        unet=unet_out,
        scheduler=sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    target = out / MODEL_DIR
    pipe.save_pretrained(str(target), safe_serialization=True)
    facts = {**card, "trained_steps": step}
    if "init_trained_steps" in card:
        facts["total_trained_steps"] = card["init_trained_steps"] + step
    write_card(target, kind, config, facts)
    return target


def write_card(target: Path, kind: str, config: DiffusionConfig, card: dict) -> None:
    """`sampling_defaults.json` (read by tools) and `README.md` (for people) next to model_index.json."""
    defaults = {
        "kind": kind,
        "num_inference_steps": config.sample_steps,
        "guidance_scale": config.guidance_scale,
        "scheduler": "DDIMScheduler",
        "height": config.image_size,
        "width": config.image_size,
        **({"attention_factor": config.attention_factor} if config.attention_factor is not None else {}),
        **card,
    }
    (target / SAMPLING_DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# emphasize embedded world model ({kind})",
        "",
        "Trained from scratch on the procedural world of `emphasize.world` by `emphasize train`.",
        "",
        "| default | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in defaults.items()]
    lines += ["", "Training recipe knobs:", "", "```json", json.dumps(config.__dict__, indent=2), "```", ""]
    (target / "README.md").write_text("\n".join(lines), encoding="utf-8")
