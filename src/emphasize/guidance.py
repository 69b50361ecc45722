"""Attention guidance as a pre-step hook of the denoising loop: Attend-and-Excite and DynamicImportance.

At each guided step the hook runs the UNet once on the fully conditional row with capture (the loss pass, with
`scheduler.scale_model_input` applied, unlike the published A&E code), aggregates the cross-attention maps at the
chosen level, computes the loss on the token groups, and moves z_t along its gradient (`optimize_latents`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch

from emphasize.attention.control import AttentionController, StopForward
from emphasize.attention.store import resolve_attention_size
from emphasize.losses import AttentionLossConfig, LossFn, LossOutput
from emphasize.optimize import GuidanceDiagnostics, GuidanceSchedule, NonFiniteGuidance, optimize_latents
from emphasize.sampling.denoise import PreStepHook, input_scale
from emphasize.sampling.guidance_rules import GuidedBatch


@contextlib.contextmanager
def frozen_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Turn off `requires_grad` on a module's parameters for the block (only the latent is optimized; this saves
    the tensors autograd would keep for weight gradients), restoring each flag afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def attention_guidance(
    unet,
    scheduler,
    batch: GuidedBatch,
    controller: AttentionController,
    *,
    groups: Sequence[Sequence[int]],
    weights: torch.Tensor,
    loss_fn: LossFn,
    loss_config: AttentionLossConfig,
    schedule: GuidanceSchedule,
    attention_factor: int | None,
    num_tokens: int,
    steps: int,
    latent_hw: tuple[int, int],
    refine_groups: list[int] | None,
    diagnostics: GuidanceDiagnostics,
) -> PreStepHook:
    """Build the pre-step hook that optimizes z_t with an attention loss.

    Args:
        unet, scheduler: diffusers components (capture processors installed by the caller).
        batch: the guided batch; its conditional row is used for the loss pass.
        controller: the capture controller.
        groups: token groups (text positions) the loss sees; `weights` `(G,)` their weights.
        loss_fn, loss_config: the attention loss and its token-softmax / smoothing settings.
        schedule: step sizes, guidance window and refinement thresholds.
        attention_factor: latent downsampling of the optimized maps (None: `default_attention_factor`).
        num_tokens: prompt tokens without SOT/EOT.
        steps: number of sampling steps.
        latent_hw: latent size, to resolve the attention map size.
        refine_groups: groups whose peaks must reach refinement thresholds (None: all).
        diagnostics: filled in place with per-step losses and early stops.
    """
    conditional = batch.conditional()
    size: list[tuple[int, int]] = []  # resolved on the first loss pass
    stop_after: list[tuple[int, int]] = []  # (HW, layers at that size): later passes end after the last one

    def loss_pass(z: torch.Tensor, t: torch.Tensor) -> LossOutput:
        controller.set_pass(rows=(0,), keep_pass=True, stop_after=stop_after[0] if stop_after else None)
        try:
            conditional.unet_output(unet, scheduler.scale_model_input(z, t), t)
        except StopForward:  # every map the loss needs is recorded; the rest of the UNet is not needed
            pass
        if not size:
            size.append(resolve_attention_size(controller.store.seen_pixels(), latent_hw, attention_factor))
            pixels = size[0][0] * size[0][1]
            stop_after.append((pixels, len(controller.store.pass_maps[pixels])))
        maps = controller.store.aggregate(size[0]).float()  # (1, h, w, T)
        controller.set_pass()
        return loss_fn(maps, groups, weights, num_tokens, loss_config)

    def pre_step(latents: torch.Tensor, i: int, t: torch.Tensor) -> torch.Tensor:
        threshold = schedule.threshold(i, steps)
        update = schedule.active(i, steps)
        if diagnostics.stopped_early is not None or not (update or threshold is not None):
            return latents
        try:
            new, diag = optimize_latents(
                latents,
                lambda z: loss_pass(z, t),
                step=i,
                step_size=schedule.step_size(i, steps),
                update=update,
                threshold=threshold,
                max_refinement_steps=schedule.max_refinement_steps,
                input_scale=input_scale(scheduler, latents, t),
                refine_groups=refine_groups,
                refinement_check=schedule.refinement_check,
            )
        except NonFiniteGuidance as err:
            diagnostics.stopped_early = f"step {i}: {err}; guidance stopped, sampling went on"
            warnings.warn(f"emphasize: {diagnostics.stopped_early}", RuntimeWarning, stacklevel=2)
            return latents
        diagnostics.steps.append(diag)
        return new.to(latents.dtype)

    return pre_step
