"""EDICT: exactly invertible DDIM sampling with coupled latents, and gradients through the whole chain at constant
memory (Wallace et al., "EDICT", CVPR 2023; "DOODL", ICCV 2023).

A DDIM step is `x_{t-1} = a_t x_t + b_t eps(x_t, t)` with `a_t = sqrt(abar_{t-1} / abar_t)` and
`b_t = sqrt(1 - abar_{t-1}) - a_t sqrt(1 - abar_t)`. EDICT keeps two latents (x, y), initialised equal, and
updates each with the noise predicted from the other, then mixes them (EDICT eq. 12-13, p = 0.93):

    x_inter = a_t x_t + b_t eps(y_t, t)
    y_inter = a_t y_t + b_t eps(x_inter, t)
    x_{t-1} = p x_inter + (1 - p) y_inter          # mixing layer
    y_{t-1} = p y_inter + (1 - p) x_{t-1}

Every line is affine in the latent it updates, so the step inverts exactly (`edict_inverse_step`). With
"leapfrog" ordering (the EDICT and DOODL default) the two sub-updates swap roles on odd steps: y is updated first,
from eps(x). Coefficients come from `scheduler.alphas_cumprod`; the last step goes to `final_alpha_cumprod`
(DDIM's `set_alpha_to_one` semantics); the previous timestep is `t - num_train_timesteps // num_inference_steps`,
as in `DDIMScheduler.step`.

`edict_sample_with_grad` differentiates a loss on the final (x, y) w.r.t. the initial (x, y) at memory independent
of the number of steps: its forward runs the chain without a graph and keeps only the final pair; its backward walks
the chain from the end, rebuilds each step's inputs with the exact inverse and takes the vector-Jacobian product of
that step. The two noise predictions the inverse needs are at exactly the points where the step's Jacobian is
needed (eps(x_inter) and eps(y_t) on an even step), so each is evaluated once with a graph, used for both the
inverse and the VJP, and freed before the next one: live memory is one UNet graph, whatever the chain length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from emphasize.sampling.guidance_rules import text_to_image_batch

NoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (latent (B, C, h, w), timestep ()) -> eps, same shape

DEFAULT_MIX = 0.93  # EDICT p: the EDICT paper, DOODL and diffusers' community EDICT pipeline all use 0.93


@dataclass(frozen=True)
class EDICTSchedule:
    """Timesteps and DDIM step coefficients of one EDICT chain (python floats: exact in float64)."""

    timesteps: torch.Tensor  # (T,) integer timesteps, descending, from `scheduler.set_timesteps`
    a: tuple[float, ...]  # (T,) a_t = sqrt(abar_prev / abar_t), multiplies the latent
    b: tuple[float, ...]  # (T,) b_t = sqrt(1 - abar_prev) - a_t sqrt(1 - abar_t), multiplies eps

    def __len__(self) -> int:
        return len(self.a)


def edict_schedule(scheduler, num_inference_steps: int) -> EDICTSchedule:
    """EDICT/DDIM coefficients for `num_inference_steps` steps of a DDIM-type scheduler.

    Args:
        scheduler: a diffusers scheduler with `alphas_cumprod` and `final_alpha_cumprod` (`DDIMScheduler`);
            `set_timesteps` is called on it.
        num_inference_steps: number of sampling steps, >= 1.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps} must be >= 1")
    for name in ("alphas_cumprod", "final_alpha_cumprod"):
        if not hasattr(scheduler, name):
            raise ValueError(
                f"scheduler {type(scheduler).__name__} has no `{name}`; EDICT needs a DDIM-type scheduler "
                "(e.g. `emphasize.sampling.schedulers.make_scheduler('ddim', base_config=scheduler.config)`)"
            )
    prediction = scheduler.config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type={prediction!r} is not supported; EDICT needs 'epsilon' or 'v_prediction'")
    scheduler.set_timesteps(num_inference_steps)
    alphas = scheduler.alphas_cumprod.double()
    final = float(scheduler.final_alpha_cumprod)
    stride = scheduler.config.num_train_timesteps // num_inference_steps  # DDIMScheduler.step's previous timestep
    a, b = [], []
    for t in scheduler.timesteps.tolist():
        alpha_t = float(alphas[t])
        alpha_prev = float(alphas[t - stride]) if t - stride >= 0 else final
        a_t = (alpha_prev / alpha_t) ** 0.5
        a.append(a_t)
        b.append((1 - alpha_prev) ** 0.5 - a_t * (1 - alpha_t) ** 0.5)
    return EDICTSchedule(timesteps=scheduler.timesteps.clone(), a=tuple(a), b=tuple(b))


def guided_noise_fn(unet, scheduler, text_embeddings: torch.Tensor, guidance_scale: float) -> NoiseFn:
    """The classifier-free-guided noise prediction `eps_u + s (eps_c - eps_u)` as a function of (latent, t).

    Args:
        unet: a 4-channel `UNet2DConditionModel`.
        scheduler: the scheduler the chain uses (`scale_model_input` is applied on every call; for v-prediction
            models the output is converted to eps with `alphas_cumprod`).
        text_embeddings: `(2, L, D)`: the unconditional embedding, then the conditional one (shared by every
            latent of a batch).
        guidance_scale: CFG scale s.
    """
    uncond, cond = text_embeddings.chunk(2)
    batch = text_to_image_batch(cond, uncond, guidance_scale)  # the one CFG implementation
    v_prediction = scheduler.config.get("prediction_type", "epsilon") == "v_prediction"
    alphas = scheduler.alphas_cumprod

    def noise(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scaled = scheduler.scale_model_input(latent, t)  # (B, C, h, w)
        out = batch.unet_output(unet, scaled, t)  # (2B, C, h, w): uncond rows, then cond rows
        if v_prediction:
            alpha = float(alphas[int(t)])
            out = alpha**0.5 * out + (1 - alpha) ** 0.5 * scaled.repeat(2, 1, 1, 1)
        return batch.combine(out)

    return noise


def _order(x, y, i: int, leapfrog: bool):
    """(first, second) of step i: x is updated first on even steps; with leapfrog, y first on odd steps."""
    return (y, x) if leapfrog and i % 2 == 1 else (x, y)


def edict_step(
    x: torch.Tensor,
    y: torch.Tensor,
    i: int,
    schedule: EDICTSchedule,
    noise_fn: NoiseFn,
    *,
    mix: float = DEFAULT_MIX,
    leapfrog: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EDICT denoising step i (timestep `schedule.timesteps[i]`): (x_t, y_t) -> (x_{t-1}, y_{t-1}).

    Args:
        x, y: the coupled latents `(B, C, h, w)`.
        i: step index into the schedule.
        schedule: from `edict_schedule`.
        noise_fn: eps(latent, t), e.g. `guided_noise_fn(...)`.
        mix: EDICT mixing weight p in (0, 1].
        leapfrog: alternate which latent is updated first on each step.
    """
    t, a, b = schedule.timesteps[i], schedule.a[i], schedule.b[i]
    first, second = _order(x, y, i, leapfrog)
    first = a * first + b * noise_fn(second, t)  # x_inter (y_inter on leapfrogged steps)
    second = a * second + b * noise_fn(first, t)
    x_inter, y_inter = _order(first, second, i, leapfrog)
    x_next = mix * x_inter + (1 - mix) * y_inter  # mixing layer
    y_next = mix * y_inter + (1 - mix) * x_next
    return x_next, y_next


def edict_inverse_step(
    x: torch.Tensor,
    y: torch.Tensor,
    i: int,
    schedule: EDICTSchedule,
    noise_fn: NoiseFn,
    *,
    mix: float = DEFAULT_MIX,
    leapfrog: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inverse of `edict_step` (noising): (x_{t-1}, y_{t-1}) -> (x_t, y_t). Arguments as `edict_step`."""
    t, a, b = schedule.timesteps[i], schedule.a[i], schedule.b[i]
    y_inter = (y - (1 - mix) * x) / mix  # undo the mixing layer, last line first
    x_inter = (x - (1 - mix) * y_inter) / mix
    first, second = _order(x_inter, y_inter, i, leapfrog)
    second = (second - b * noise_fn(first, t)) / a
    first = (first - b * noise_fn(second, t)) / a
    return _order(first, second, i, leapfrog)


def edict_sample(
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: EDICTSchedule,
    noise_fn: NoiseFn,
    *,
    mix: float = DEFAULT_MIX,
    leapfrog: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the whole EDICT chain from (x_T, y_T) to (x_0, y_0). Differentiable (memory grows with the steps);
    wrap in `torch.no_grad()` to sample, or use `edict_sample_with_grad` for constant-memory gradients."""
    for i in range(len(schedule)):
        x, y = edict_step(x, y, i, schedule, noise_fn, mix=mix, leapfrog=leapfrog)
    return x, y


def edict_invert(
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: EDICTSchedule,
    noise_fn: NoiseFn,
    *,
    mix: float = DEFAULT_MIX,
    leapfrog: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert the whole chain: (x_0, y_0) -> (x_T, y_T) with `edict_inverse_step`, last step first."""
    for i in reversed(range(len(schedule))):
        x, y = edict_inverse_step(x, y, i, schedule, noise_fn, mix=mix, leapfrog=leapfrog)
    return x, y


def _inverse_step_vjp(x, y, grad_x, grad_y, i, schedule, noise_fn, mix, leapfrog):
    """Rebuild step i's inputs from its outputs (x, y) and pull the output gradients back to them.

    The step, per sub-update: `first' = a first + b eps(second)`, `second' = a second + b eps(first')`, then mixing.
    Each eps is evaluated once, with a graph, at the point the inverse needs it; the graph is freed after its VJP.
    """
    t, a, b = schedule.timesteps[i], schedule.a[i], schedule.b[i]
    # 1. undo the mixing layer; its adjoint: x' = p xi + (1-p) yi, y' = (1-p) x' + p yi
    y_inter = (y - (1 - mix) * x) / mix
    x_inter = (x - (1 - mix) * y_inter) / mix
    grad_x_total = grad_x + (1 - mix) * grad_y  # dL/dx' including its path through y'
    grad_x_inter = mix * grad_x_total
    grad_y_inter = (1 - mix) * grad_x_total + mix * grad_y
    first, second = _order(x_inter, y_inter, i, leapfrog)
    grad_first, grad_second = _order(grad_x_inter, grad_y_inter, i, leapfrog)

    # 2. second sub-update: second' = a second + b eps(first'); eps and its Jacobian at first'
    with torch.enable_grad():
        point = first.detach().requires_grad_(True)
        eps = noise_fn(point, t)
        (vjp,) = torch.autograd.grad(eps, point, b * grad_second)
    second = (second - b * eps.detach()) / a
    grad_first = grad_first + vjp
    grad_second = a * grad_second
    del eps, point

    # 3. first sub-update: first' = a first + b eps(second); eps and its Jacobian at the rebuilt second
    with torch.enable_grad():
        point = second.detach().requires_grad_(True)
        eps = noise_fn(point, t)
        (vjp,) = torch.autograd.grad(eps, point, b * grad_first)
    first = (first - b * eps.detach()) / a
    grad_second = grad_second + vjp
    grad_first = a * grad_first

    x, y = _order(first, second, i, leapfrog)
    grad_x, grad_y = _order(grad_first, grad_second, i, leapfrog)
    return x, y, grad_x, grad_y


class _EDICTChain(torch.autograd.Function):
    """Whole EDICT chain as one autograd node: no graph in forward, inverse-and-VJP step by step in backward."""

    @staticmethod
    def forward(ctx, x, y, schedule, noise_fn, mix, leapfrog):
        with torch.no_grad():
            x_out, y_out = edict_sample(x, y, schedule, noise_fn, mix=mix, leapfrog=leapfrog)
        ctx.save_for_backward(x_out, y_out)  # only the final pair: O(1) in the number of steps
        ctx.chain = (schedule, noise_fn, mix, leapfrog)
        return x_out, y_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_x, grad_y):
        schedule, noise_fn, mix, leapfrog = ctx.chain
        x, y = ctx.saved_tensors
        for i in reversed(range(len(schedule))):
            x, y, grad_x, grad_y = _inverse_step_vjp(x, y, grad_x, grad_y, i, schedule, noise_fn, mix, leapfrog)
        return grad_x, grad_y, None, None, None, None


def edict_sample_with_grad(
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: EDICTSchedule,
    noise_fn: NoiseFn,
    *,
    mix: float = DEFAULT_MIX,
    leapfrog: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`edict_sample` whose backward costs constant memory in the number of steps (see the module docstring).

    Gradients flow to `x` and `y` only (not to UNet weights or text embeddings). Backward cost is two UNet
    forwards and two input-VJPs per step; the inputs of each step are rebuilt by the exact inverse, so their
    accuracy is EDICT's reconstruction accuracy (float32 round-off grows mildly with the number of steps).

    Args:
        x, y: initial coupled latents `(B, C, h, w)` (pass the same tensor twice for tied latents).
        schedule, noise_fn, mix, leapfrog: as in `edict_step`.
    """
    return _EDICTChain.apply(x, y, schedule, noise_fn, mix, leapfrog)
