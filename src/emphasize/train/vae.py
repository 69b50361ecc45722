"""Train the world VAE (diffusers `AutoencoderKL`, downsampling factor 4: 64x64x3 <-> 16x16x4) from scratch.

Batches mix text-to-image renders with instruction-task inputs and targets (noise, blur, mask overlays, rings), so
the edit model's image condition and outputs are in the VAE's range too. Loss: MSE + L1 on pixels in [-1, 1] plus a
tiny KL term (as Stable Diffusion's VAE). After training, `scaling_factor` is set to 1 / std of the posterior means
of held-out images, so scaled latents have unit variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from emphasize.train.common import (
    check_config,
    eval_seeds,
    images_to_tensor,
    load_checkpoint,
    step_generator,
    train_seed,
    train_steps,
)

TASK_FAMILIES = ("segment", "keypoint", "edit", "enhance")
MODEL_DIR = "model"  # the trained AutoencoderKL inside --out


@dataclass(frozen=True)
class VAEConfig:
    steps: int = 1200  # optimizer steps
    batch_size: int = 16  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (warmup, then cosine to 10%)
    warmup: int = 50  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    image_size: int = 64  # world image side in px
    channels: tuple[int, ...] = (16, 32, 64)  # encoder/decoder widths; len - 1 = log2 of the downsampling factor
    latent_channels: int = 4  # latent channels (as Stable Diffusion)
    norm_groups: int = 8  # GroupNorm groups (must divide every width)
    kl_weight: float = 1e-6  # KL term relative to the per-pixel reconstruction loss
    l1_weight: float = 0.5  # L1 term next to MSE (sharper edges)
    task_fraction: float = 0.5  # share of each batch drawn from instruction-task inputs/targets
    checkpoint_every: int = 250  # steps between checkpoints (and at the end)
    seed: int = 0  # run seed: weights, data and noise

    def __post_init__(self):
        check_config(
            self,
            {
                "steps": (1, 10**7),
                "batch_size": (1, 4096),
                "lr": (1e-7, 1.0),
                "warmup": (0, 10**6),
                "image_size": (16, 1024),
                "task_fraction": (0.0, 1.0),
                "checkpoint_every": (1, 10**7),
            },
        )


def build_vae(config: VAEConfig):
    """A fresh AutoencoderKL; weights drawn from `config.seed`."""
    from diffusers import AutoencoderKL

    torch.manual_seed(config.seed)
    n = len(config.channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=config.image_size,
    )


def world_batch(seed: int, step: int, batch_size: int, size: int, task_fraction: float) -> torch.Tensor:
    """Step `step`'s images in [0, 1], (B, 3, size, size): renders, task inputs and task targets."""
    from emphasize.world import sample_t2i, sample_task

    images = []
    n_task = round(batch_size * task_fraction)
    for i in range(batch_size):
        s = train_seed(seed, step * batch_size + i)
        if i < n_task:
            task = sample_task(TASK_FAMILIES[s % len(TASK_FAMILIES)], s, size)
            images.append(task.input if (s // 7) % 2 == 0 else task.target)
        else:
            images.append(sample_t2i(s, size).image)
    return images_to_tensor(images)


def eval_images(n: int, size: int, task_fraction: float = 0.5) -> torch.Tensor:
    """`n` held-out images in [0, 1] mixed as the training batches are."""
    from emphasize.world import sample_t2i, sample_task

    images = []
    for i, s in enumerate(eval_seeds(n)):
        if i < round(n * task_fraction):
            task = sample_task(TASK_FAMILIES[i % len(TASK_FAMILIES)], s, size)
            images.append(task.input if i % 2 == 0 else task.target)
        else:
            images.append(sample_t2i(s, size).image)
    return images_to_tensor(images)


@torch.no_grad()
def latent_std(vae, images: torch.Tensor, batch: int = 64) -> float:
    """Std of the posterior means of `images` (in [0, 1]); 1 / this is the VAE's `scaling_factor`."""
    device = next(vae.parameters()).device
    latents = [
        vae.encode(images[i : i + batch].to(device) * 2 - 1).latent_dist.mode() for i in range(0, len(images), batch)
    ]
    return float(torch.cat(latents).std())


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor, batch: int = 64) -> float:
    """Mean PSNR (dB) of `images` (in [0, 1]) through encode (posterior mode) and decode, on uint8 pixels."""
    from emphasize.train.common import tensor_to_images
    from emphasize.world.metrics import psnr

    device = next(vae.parameters()).device
    scores = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device)
        recon = vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample
        for a, b in zip(tensor_to_images((recon + 1) / 2), tensor_to_images(x), strict=True):
            scores.append(psnr(a, b))
    return float(sum(scores) / len(scores))


def export_vae(vae, out: Path, config: VAEConfig) -> Path:
    """Set `scaling_factor` from held-out latents and save the VAE to `out/model` (config + safetensors)."""
    was_training = vae.training
    vae.eval()
    std = latent_std(vae, eval_images(256, config.image_size, config.task_fraction))
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    target = out / MODEL_DIR
    vae.save_pretrained(str(target), safe_serialization=True)
    vae.train(was_training)
    return target


def train_vae(
    out: str | Path,
    config: VAEConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    resume: bool = True,
    show_progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train the world VAE; return the directory of the saved AutoencoderKL (`out/model`).

    Args:
        out: run directory: `checkpoint.pt` (resumable state) and `model/` (the exported VAE).
        config: recipe knobs.
        device: `cpu` or `cuda`.
        resume: continue from `out/checkpoint.pt` when it exists.
        show_progress: show the tqdm bar.
        stop_at: stop (checkpoint and export) after this step, on the schedule of `config.steps` (a time-boxed
            run; resuming with a later `stop_at` continues exactly).
    """
    config = config or VAEConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    vae = build_vae(config).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    state = load_checkpoint(out, resume)
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]

    def loss_at(step: int) -> torch.Tensor:
        # 1. data and noise for this step, from (seed, step) only
        x = world_batch(config.seed, step, config.batch_size, config.image_size, config.task_fraction).to(device)
        x = x * 2 - 1
        generator = step_generator(config.seed, step)
        # 2. encode, sample the posterior with the step's noise, decode
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        # 3. reconstruction (MSE + L1) and a small KL
        kl = posterior.kl().mean() / x[0].numel()
        return F.mse_loss(recon, x) + config.l1_weight * F.l1_loss(recon, x) + config.kl_weight * kl

    train_steps(
        out,
        config,
        name="vae",
        start=start,
        stop_at=stop_at,
        optimizer=optimizer,
        params=list(vae.parameters()),
        loss_at=loss_at,
        state=lambda: {"model": vae.state_dict(), "optimizer": optimizer.state_dict()},
        export=lambda done: export_vae(vae, out, config),
        show_progress=show_progress,
    )
    return out / MODEL_DIR
