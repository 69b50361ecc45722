"""The latent update loop: Attend-and-Excite's iterative refinement against a transcription of the published loop,
and non-finite updates."""

from __future__ import annotations

import pytest
import torch

from emphasize.losses import LossOutput
from emphasize.optimize import GuidanceSchedule, NonFiniteGuidance, optimize_latents


def _loss_pass(z: torch.Tensor) -> LossOutput:
    """A toy subject whose peak attention grows by 0.1 per unit of z: loss = 1 - peak, as A&E's max-over-subjects."""
    peak = (0.1 * z.sum()).clamp(max=1.0)
    return LossOutput(loss=(1 - peak).reshape(1), peaks=peak.reshape(1, 1), masses=peak.reshape(1, 1))


def _reference_refinement(z: torch.Tensor, threshold: float, step_size: float, max_steps: int):
    """Attend-and-Excite's `_perform_iterative_refinement_step`, transcribed: the loop condition reads `loss` as
    computed at the start of the iteration, before that iteration's update. Returns (z, updates)."""
    loss = float(_loss_pass(z).loss)
    target = max(0.0, 1.0 - threshold)
    iteration = 0
    while loss > target:
        iteration += 1
        z = z.detach().requires_grad_(True)
        out = _loss_pass(z)
        loss = float(out.loss.detach())
        if loss != 0:
            (grad,) = torch.autograd.grad(out.loss.sum(), [z])
            z = z - step_size * grad
        if iteration >= max_steps:
            break
    return z.detach(), iteration


@pytest.mark.parametrize("threshold, max_steps", [(0.5, 20), (0.8, 20), (0.8, 3), (0.05, 20)])
def test_reference_refinement_takes_the_published_updates(threshold, max_steps):
    z0 = torch.zeros(1, 1, 2, 2)
    want, updates = _reference_refinement(z0, threshold, step_size=1.0, max_steps=max_steps)
    got, diag = optimize_latents(z0, _loss_pass, step=0, step_size=1.0, update=False, threshold=threshold,
                                 max_refinement_steps=max_steps, refinement_check="reference")  # fmt: skip
    assert diag.refinement_iterations == updates
    assert torch.allclose(got, want)
    fresh, fresh_diag = optimize_latents(z0, _loss_pass, step=0, step_size=1.0, update=False, threshold=threshold,
                                         max_refinement_steps=max_steps, refinement_check="fresh")  # fmt: skip
    if 0 < fresh_diag.refinement_iterations < max_steps:  # the reference loop takes one update more
        assert updates == fresh_diag.refinement_iterations + 1
    else:
        assert updates == fresh_diag.refinement_iterations


def test_an_update_that_overflows_is_non_finite_guidance():
    def huge(z):
        return LossOutput(loss=(z.sum() * 1e30).reshape(1), peaks=torch.zeros(1, 1), masses=torch.zeros(1, 1))

    with pytest.raises(NonFiniteGuidance, match="step size"):
        optimize_latents(torch.ones(1, 1, 2, 2), huge, step=0, step_size=1e300, update=True, threshold=None,
                         max_refinement_steps=0)  # fmt: skip


def test_refinement_check_is_validated():
    with pytest.raises(ValueError, match="refinement_check='stale'"):
        GuidanceSchedule(refinement_check="stale")
