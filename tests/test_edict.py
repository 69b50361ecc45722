"""EDICT: coefficients equal DDIM's, exact inversion, constant-memory gradients equal plain autograd."""

from __future__ import annotations

import types

import pytest
import torch

from emphasize.sampling.edict import (
    edict_inverse_step,
    edict_invert,
    edict_sample,
    edict_sample_with_grad,
    edict_schedule,
    edict_step,
    guided_noise_fn,
)
from emphasize.sampling.schedulers import make_scheduler
from emphasize.sgool.memory import SavedTensorMeter

SMALL = dict(block_out_channels=(16, 32), cross_attention_dim=16, attention_heads=2)  # ~30 ms per UNet call


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads contend and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chain64():
    """A tiny pipeline cast to float64, its CFG noise function and a 16x16 initial latent."""
    from emphasize.models.tiny import TinyConfig, tiny_pipeline
    from emphasize.sampling.common import encode_prompt

    pipe = tiny_pipeline(TinyConfig(**SMALL))
    pipe.unet.to(torch.float64)
    pipe.text_encoder.to(torch.float64)
    text = encode_prompt(pipe.tokenizer, pipe.text_encoder, ["", "a red circle left of a blue square"])
    noise_fn = guided_noise_fn(pipe.unet, pipe.scheduler, text, guidance_scale=7.5)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return types.SimpleNamespace(pipe=pipe, noise_fn=noise_fn, z=z)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_coefficients_reproduce_ddim_step(set_alpha_to_one):
    scheduler = make_scheduler("ddim")
    scheduler = type(scheduler).from_config(scheduler.config, set_alpha_to_one=set_alpha_to_one)
    schedule = edict_schedule(scheduler, 7)
    assert torch.equal(schedule.timesteps, scheduler.timesteps)
    generator = torch.Generator().manual_seed(1)
    latent, eps = torch.randn(2, 1, 4, 8, 8, generator=generator, dtype=torch.float64)
    for i, t in enumerate(schedule.timesteps):
        reference = scheduler.step(eps, t, latent).prev_sample  # includes the final-alpha step (prev t < 0)
        assert _relative(schedule.a[i] * latent + schedule.b[i] * eps, reference) < 1e-6


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="final_alpha_cumprod"):
        edict_schedule(make_scheduler("euler"), 10)
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        edict_schedule(make_scheduler("ddim"), 0)


def test_guided_noise_fn_is_classifier_free_guidance():
    class Unet:  # eps = latent * (1 + embedding mean): distinguishes the two halves of the CFG batch
        def __call__(self, sample, t, encoder_hidden_states):
            return types.SimpleNamespace(
                sample=sample * (1 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1))
            )

    text = torch.stack([torch.zeros(3, 2), torch.ones(3, 2)])  # uncond mean 0, cond mean 1
    latent = torch.randn(2, 4, 3, 3)
    eps = guided_noise_fn(Unet(), make_scheduler("ddim"), text, guidance_scale=3.0)(latent, torch.tensor(10))
    torch.testing.assert_close(eps, latent + 3.0 * (2 * latent - latent))


@pytest.mark.parametrize("leapfrog", [True, False])
def test_inverse_step_undoes_step(chain64, leapfrog):
    schedule = edict_schedule(chain64.pipe.scheduler, 5)
    x, y = chain64.z, chain64.z * 0.9
    with torch.no_grad():
        for i in (0, 1):  # an even and an odd (leapfrogged) step
            x1, y1 = edict_step(x, y, i, schedule, chain64.noise_fn, leapfrog=leapfrog)
            x0, y0 = edict_inverse_step(x1, y1, i, schedule, chain64.noise_fn, leapfrog=leapfrog)
            assert _relative(x0, x) < 1e-10 and _relative(y0, y) < 1e-10


@pytest.mark.parametrize("leapfrog", [True, False])
def test_inversion_reconstructs_initial_latents(chain64, leapfrog):
    schedule = edict_schedule(chain64.pipe.scheduler, 10)
    with torch.no_grad():
        x0, y0 = edict_sample(chain64.z, chain64.z, schedule, chain64.noise_fn, leapfrog=leapfrog)
        assert _relative(x0, chain64.z) > 0.1  # the chain really moved
        xt, yt = edict_invert(x0, y0, schedule, chain64.noise_fn, leapfrog=leapfrog)
    assert _relative(xt, chain64.z) < 1e-8
    assert _relative(yt, chain64.z) < 1e-8


@pytest.mark.parametrize("leapfrog", [True, False])
def test_constant_memory_gradient_matches_autograd(chain64, leapfrog):
    schedule = edict_schedule(chain64.pipe.scheduler, 4)
    weights = torch.randn(chain64.z.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss(x, y):  # depends on both latents, non-linearly
        return (weights * x).sum() + 0.01 * (x * y).sum()

    grads = []
    for sample in (edict_sample, edict_sample_with_grad):
        z = chain64.z.clone().requires_grad_(True)
        x0, y0 = sample(z, z, schedule, chain64.noise_fn, leapfrog=leapfrog)
        grads.append(torch.autograd.grad(loss(x0, y0), z)[0])
    assert grads[0].abs().max() > 0
    assert _relative(grads[1], grads[0]) < 1e-4


def test_gradient_memory_does_not_grow_with_steps(chain64):
    """Peak activation bytes held by autograd (saved-tensor hooks, distinct storages, weights excluded): flat for
    ours, linear in the steps for plain autograd."""
    peaks = {}
    for name, sample in (("ours", edict_sample_with_grad), ("plain", edict_sample)):
        for steps in (3, 9):
            schedule = edict_schedule(chain64.pipe.scheduler, steps)
            with SavedTensorMeter(exclude=chain64.pipe.unet.parameters()) as meter:
                z = chain64.z.clone().requires_grad_(True)
                x0, _ = sample(z, z, schedule, chain64.noise_fn)
                torch.autograd.grad(x0.square().sum(), z)
            peaks[name, steps] = meter.peak_bytes
    assert peaks["ours", 3] > 0
    assert peaks["ours", 9] == peaks["ours", 3]
    assert peaks["plain", 9] > 2.5 * peaks["plain", 3]
    assert peaks["ours", 9] < peaks["plain", 3]
