"""Shared training plumbing: per-step seeds, world batches, atomic checkpoints, EMA, the step loop's progress bar.

Determinism: nothing in a recipe draws from a global RNG. Step k's world items come from
`train_seed(seed, k * batch + i)` and its noise, timesteps and dropout from `step_generator(seed, k)`, so a run
resumed from a checkpoint at step k continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

TRAIN_SEEDS = 10**8  # training items use world seeds below this
EVAL_SEED_START = 10**9  # held-out evaluation items use world seeds from here on
CHECKPOINT = "checkpoint.pt"  # file name of the resumable training state inside --out


class TrainError(ValueError):
    """Bad recipe input (a missing component directory, an unusable value); reported on one line."""


def train_seed(seed: int, index: int) -> int:
    """World seed of training item `index` of a run seeded `seed` (always below `TRAIN_SEEDS`)."""
    return int(np.random.SeedSequence([int(seed), int(index), 7]).generate_state(1)[0]) % TRAIN_SEEDS


def eval_seeds(n: int, offset: int = 0) -> list[int]:
    """The first `n` held-out world seeds (never used in training)."""
    return [EVAL_SEED_START + offset + i for i in range(n)]


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for step `step`'s noise, timesteps and dropout draws."""
    state = np.random.SeedSequence([int(seed), int(step), int(salt), 11]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def resolve_device(device: str | None) -> torch.device:
    """`cpu`, `cuda` (an error when unavailable) or None for cuda-if-available."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise TrainError(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    return torch.device(device)


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> float (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of `lr`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a module's float parameters (the weights that are shipped)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short warmup so early averages track the weights
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict(self.shadow)


def public_mode(path: str | os.PathLike) -> None:
    """Give a file written through mkstemp (0600) the usual umask permissions, as a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    public_mode(tmp)
    os.replace(tmp, path)


def load_checkpoint(out: Path, resume: bool) -> dict | None:
    """The saved training state in `out`, or None to start fresh (no file, or resume=False)."""
    path = out / CHECKPOINT
    if not resume or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say so instead of silently restarting
        raise TrainError(f"{path}: cannot read the checkpoint ({type(e).__name__}); delete it to start over") from e


def save_checkpoint(out: Path, state: dict) -> None:
    atomic_torch_save(state, out / CHECKPOINT)


def check_config(config, fields: dict[str, tuple[float, float]]) -> None:
    """Raise ValueError naming the first knob of `config` outside its (low, high) range."""
    for name, (low, high) in fields.items():
        value = getattr(config, name)
        if not (low <= value <= high):
            raise ValueError(f"{name}={value!r} is out of range; valid: {low} to {high}")


def progress(total: int, initial: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def train_steps(
    out: Path,
    config,
    *,
    name: str,
    start: int,
    stop_at: int | None,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    loss_at: Callable[[int], torch.Tensor],
    state: Callable[[], dict],
    export: Callable[[int], object],
    after_update: Callable[[int], None] | None = None,
    show_progress: bool = True,
) -> None:
    """The step loop every recipe shares: loss, scheduled AdamW update, progress bar, checkpoint and export.

    Step k runs `loss_at(k)` (the recipe's data, forward and loss, drawing only from (seed, k)), sets the learning
    rate `lr_at(k)` of `config`'s schedule, steps the optimizer on the gradient clipped to norm 1, then calls
    `after_update(k)` (EMA). Every `config.checkpoint_every` steps and at the last step it saves
    `{"step", **state(), "config"}` atomically and calls `export(done)`; when nothing is left to train it only
    exports, so the model directory always exists.

    Args:
        out: run directory (holds `checkpoint.pt`).
        config: the recipe's config: `steps`, `lr`, `warmup`, `checkpoint_every` are read.
        name: progress bar label.
        start: first step (the resumed checkpoint's step, or 0).
        stop_at: stop after this step of the `config.steps` schedule (None: run to the end).
        optimizer: the recipe's optimizer over `params`.
        params: parameters whose gradient norm is clipped.
        loss_at: step -> scalar loss with a graph.
        state: the recipe's resumable state (module and optimizer state dicts).
        export: steps done -> write the model directory.
        after_update: called with the step after each optimizer step.
        show_progress: show the tqdm bar.
    """
    end = config.steps if stop_at is None else min(config.steps, stop_at)
    bar = progress(config.steps, start, name, show_progress)
    for step in range(start, end):
        loss = loss_at(step)
        set_lr(optimizer, lr_at(step, config.steps, config.lr, config.warmup))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if after_update is not None:
            after_update(step)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == end:
            save_checkpoint(out, {"step": done, **state(), "config": config.__dict__})
            export(done)
    bar.close()
    if start >= end:  # nothing left to train: make sure the export exists
        export(start)
