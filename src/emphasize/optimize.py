"""The latent update loop of Attend-and-Excite-style guidance: gradient steps on z_t, schedules as 0..1 fractions,
iterative refinement thresholds, and diagnostics returned rather than logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from emphasize.losses import LossOutput

REFINEMENT_CHECKS = ("reference", "fresh")


@dataclass(frozen=True)
class GuidanceSchedule:
    """When and how hard the latent is moved. Steps are given as fractions of the sampling run (0 = pure noise)."""

    scale_factor: float = 20.0  # step size alpha_0 (A&E: 20)
    scale_range: tuple[float, float] = (1.0, 0.5)  # alpha_i = scale_factor * sqrt(linspace(*scale_range)[i])
    stop: float = 0.5  # guide while i < stop * steps (A&E: 25 of 50 steps)
    thresholds: tuple[tuple[float, float], ...] = ((0.0, 0.05), (0.2, 0.5), (0.4, 0.8))  # (fraction, T): refine
    # at step round(fraction * steps) until every group's peak attention >= T (A&E: {0: .05, 10: .5, 20: .8})
    max_refinement_steps: int = 20  # cap on refinement iterations at a threshold step (A&E: 20)
    refinement_check: str = "reference"  # "reference": A&E's loop, which tests the loss measured before its latest
    # update and so takes one more update after the threshold is met; "fresh": stop as soon as it is met

    def __post_init__(self) -> None:
        if not (self.scale_factor >= 0 and math.isfinite(self.scale_factor)):
            raise ValueError(f"scale_factor={self.scale_factor} must be a finite number >= 0")
        if len(self.scale_range) != 2 or not all(0 <= s <= 10 for s in self.scale_range):
            raise ValueError(f"scale_range={self.scale_range} must be two numbers in [0, 10]")
        if not 0 <= self.stop <= 1:
            raise ValueError(f"stop={self.stop} must be a fraction in [0, 1]")
        for fraction, threshold in self.thresholds:
            if not 0 <= fraction <= 1:
                raise ValueError(f"threshold step fraction {fraction} must be in [0, 1]")
            if not 0 <= threshold <= 1:
                raise ValueError(f"refinement threshold {threshold} must be in [0, 1]")
        if self.max_refinement_steps < 0:
            raise ValueError(f"max_refinement_steps={self.max_refinement_steps} must be >= 0")
        if self.refinement_check not in REFINEMENT_CHECKS:
            raise ValueError(
                f"refinement_check={self.refinement_check!r} must be one of {', '.join(REFINEMENT_CHECKS)}"
            )

    def step_size(self, i: int, steps: int) -> float:
        """alpha_i = scale_factor * sqrt(linspace(scale_range[0], scale_range[1], steps)[i])."""
        lo, hi = self.scale_range
        frac = i / (steps - 1) if steps > 1 else 0.0
        return self.scale_factor * math.sqrt(lo + (hi - lo) * frac)

    def active(self, i: int, steps: int) -> bool:
        return i < round(self.stop * steps)

    def threshold(self, i: int, steps: int) -> float | None:
        """The refinement threshold at step i, if step i is a threshold step."""
        for fraction, threshold in self.thresholds:
            if round(fraction * steps) == i:
                return threshold
        return None


class NonFiniteGuidance(RuntimeError):
    """The guidance loss or its gradient became NaN/inf; the caller stops optimizing and keeps sampling."""


@dataclass
class StepDiagnostics:
    step: int  # sampling step index
    loss: float  # loss before the update
    peaks: list[float]  # per-group peak attention before the update
    refinement_iterations: int = 0  # extra {forward, update} iterations spent reaching the threshold
    step_size: float = 0.0  # alpha_i used


@dataclass
class GuidanceDiagnostics:
    steps: list[StepDiagnostics] = field(default_factory=list)
    stopped_early: str | None = None  # why guidance stopped (non-finite values), if it did


def _descend(latents: torch.Tensor, out: LossOutput, step_size: float, input_scale: float) -> torch.Tensor:
    loss = out.loss.sum()
    if not torch.isfinite(loss):
        raise NonFiniteGuidance(f"guidance loss is {loss.item()}")
    if loss.item() == 0:
        return latents.detach()
    (grad,) = torch.autograd.grad(loss, [latents])
    if not torch.isfinite(grad).all():
        raise NonFiniteGuidance("guidance gradient has NaN/inf values")
    # step in the UNet's input space (scale_model_input): z' = z - alpha * grad / c^2, so alpha means the same for
    # DDIM (c = 1) and Euler-type schedulers (c = 1 / sqrt(sigma^2 + 1))
    updated = (latents - step_size * grad / input_scale**2).detach()
    if not torch.isfinite(updated).all():
        raise NonFiniteGuidance(f"the updated latent has NaN/inf values (step size {step_size:g} is too large)")
    return updated


def optimize_latents(
    latents: torch.Tensor,
    loss_pass: Callable[[torch.Tensor], LossOutput],
    *,
    step: int,
    step_size: float,
    update: bool,
    threshold: float | None,
    max_refinement_steps: int,
    input_scale: float = 1.0,
    refine_groups: list[int] | None = None,
    refinement_check: str = "reference",
) -> tuple[torch.Tensor, StepDiagnostics]:
    """One step of Attend-and-Excite-style latent optimization at sampling step `step`.

    Args:
        latents: z_t `(B, C, h, w)`; not modified.
        loss_pass: runs the UNet with capture on a latent that requires grad and returns the loss (with graph).
        step: sampling step index (for diagnostics).
        step_size: alpha_i.
        update: take the gradient step (False outside the guidance window: loss is only measured).
        threshold: refinement threshold T (loop {forward, update} until every group's peak >= T), or None.
        max_refinement_steps: cap on refinement iterations.
        input_scale: `scale_model_input`'s factor c at this step (1 for DDIM), see `_descend`.
        refine_groups: indices of the groups whose peaks must reach the threshold (all groups when None).
        refinement_check: "reference" (A&E's published loop: it tests the loss measured before its latest update,
            so once an update meets the threshold it still takes one more, within the cap) or "fresh" (stop as soon
            as the threshold is met: one update and one UNet pass fewer per refinement).

    Returns:
        The updated latents (detached) and the step's diagnostics.

    Raises:
        NonFiniteGuidance: the loss or its gradient is not finite.
    """
    with torch.enable_grad():
        z = latents.detach().requires_grad_(True)
        out = loss_pass(z)
        loss, peaks = float(out.loss.detach().sum()), out.peaks[0].detach().tolist()
        diag = StepDiagnostics(step=step, loss=loss, peaks=peaks, step_size=step_size)
        # 1. iterative refinement (A&E's updates, without its redundant re-computation of the first pass)
        if threshold is not None and refine_groups != []:
            cols = slice(None) if refine_groups is None else refine_groups
            while diag.refinement_iterations < max_refinement_steps and bool((out.peaks[:, cols] < threshold).any()):
                z = _descend(z, out, step_size, input_scale).requires_grad_(True)
                out = loss_pass(z)
                diag.refinement_iterations += 1
            if refinement_check == "reference" and 0 < diag.refinement_iterations < max_refinement_steps:
                # A&E's loop condition reads the loss from before its last update: one more update follows
                z = _descend(z, out, step_size, input_scale).requires_grad_(True)
                out = loss_pass(z)
                diag.refinement_iterations += 1
        # 2. the regular gradient step of this sampling step
        if update:
            z = _descend(z, out, step_size, input_scale)
    return z.detach(), diag
