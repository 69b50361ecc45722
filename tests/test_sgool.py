"""SGOOL/DOODL: CLIP distances, salient boxes and crops, the DOODL optimiser step, config validation, the full loop."""

from __future__ import annotations

import math

import pytest
import torch

from emphasize.sgool import (
    Box,
    SGOOLConfig,
    clip_image_embeddings,
    clip_text_embedding,
    cosine_distance,
    doodl_update,
    optimize_initial_latent,
    salient_boxes,
    salient_crops,
    sgool_loss,
    spherical_distance,
)

SMALL = dict(block_out_channels=(16, 32), cross_attention_dim=16, attention_heads=2)  # ~30 ms per UNet call
FAST = dict(optimization_steps=2, sampling_steps=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads contend and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    from emphasize.models.tiny import TinyConfig, tiny_pipeline

    return tiny_pipeline(TinyConfig(**SMALL))


@pytest.fixture(scope="module")
def clip():
    from emphasize.models.tiny_clip import tiny_clip

    return tiny_clip(seed=0)


def blob_saliency(images: torch.Tensor) -> torch.Tensor:
    """Stand-in detector: a strong blob top-left and a weaker one bottom-right."""
    maps = torch.zeros(images.shape[0], 1, *images.shape[-2:])
    maps[..., 4:12, 6:14] = 1.0
    maps[..., 20:30, 20:24] = 0.7
    return maps


def run(pipe, clip, saliency_fn=blob_saliency, mode="sgool", **knobs):
    config = SGOOLConfig(**{**FAST, **knobs})
    generator = torch.Generator().manual_seed(0)
    return optimize_initial_latent(
        pipe, "a red circle", *clip, saliency_fn, config, generator=generator, height=32, width=32, mode=mode
    )


# CLIP distances and the SGOOL loss


def test_spherical_distance_known_values():
    e = torch.eye(3)
    assert float(spherical_distance(e[0], e[0])) == pytest.approx(0.0, abs=1e-6)
    assert float(spherical_distance(e[0], e[1])) == pytest.approx(math.pi**2 / 8)  # 2 asin(sqrt2/2)^2
    assert float(spherical_distance(e[0], -e[0])) == pytest.approx(math.pi**2 / 2)  # 2 asin(1)^2
    assert float(spherical_distance(3 * e[0], 0.5 * e[1])) == pytest.approx(math.pi**2 / 8)  # scale-free


def test_cosine_distance_known_values():
    e = torch.eye(2)
    assert float(cosine_distance(e[0], e[1])) == pytest.approx(1.0)
    assert float(cosine_distance(e[0], -2 * e[0])) == pytest.approx(2.0)
    assert float(cosine_distance(torch.tensor([1.0, 1.0]), e[0])) == pytest.approx(1 - 2**-0.5)


def test_sgool_loss_combines_global_and_mean_crop_distance():
    e = torch.eye(3)
    text = e[:1]  # (1, D)
    global_embeddings = torch.stack([e[0], e[1]])  # (B=2, D): distance 0 and pi^2/8
    crops = torch.stack([torch.stack([e[1], -e[0]]), torch.stack([e[0], e[0]])])  # (B=2, K=2, D)
    loss, d_global, d_crop = sgool_loss(global_embeddings, crops, text, salient_weight=0.5)
    q = math.pi**2 / 8
    torch.testing.assert_close(d_global, torch.tensor([0.0, q]))
    torch.testing.assert_close(d_crop, torch.tensor([(q + 4 * q) / 2, 0.0]))
    torch.testing.assert_close(loss, d_global + 0.5 * d_crop)
    only_global, _, zero = sgool_loss(global_embeddings, None, text, distance="cosine")
    torch.testing.assert_close(only_global, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(zero, torch.zeros(2))
    with pytest.raises(ValueError, match="unknown distance 'l2'"):
        sgool_loss(global_embeddings, None, text, distance="l2")


def test_clip_embeddings_are_unit_and_accept_any_size(clip):
    model, tokenizer = clip
    images = torch.rand(3, 3, 48, 40)
    embeddings = clip_image_embeddings(model, images)
    assert embeddings.shape == (3, model.config.projection_dim)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    text = clip_text_embedding(model, tokenizer, "a red circle")
    assert text.shape == (1, model.config.projection_dim)


def test_clip_text_embedding_rejects_overlong_prompt(clip):
    prompt = "a red circle " * 30
    with pytest.raises(ValueError, match="a red circle a red circle.*77"):
        clip_text_embedding(*clip, prompt)


# salient boxes and crops


def test_salient_boxes_sorted_by_mass_padded_and_square():
    saliency = blob_saliency(torch.zeros(1, 3, 32, 32))
    boxes = salient_boxes(saliency, threshold=0.5, max_boxes=3, padding=0.25, min_size=0.0001)
    assert [b.mass for b in boxes] == pytest.approx([64.0, 28.0])
    first, second = boxes
    assert (first.top, first.left, first.bottom, first.right) == (2, 4, 14, 16)  # 8x8 padded by 2 each side
    assert second.height == second.width == 15  # 10x4 padded to 15x6, grown to a square
    assert 0 <= second.top and second.bottom <= 32 and 0 <= second.left and second.right <= 32
    assert salient_boxes(saliency, threshold=0.8, max_boxes=3) == [first.__class__(3, 5, 13, 15, 64.0)]
    assert len(salient_boxes(saliency, threshold=0.5, max_boxes=1)) == 1


def test_salient_boxes_empty_when_nothing_salient():
    assert salient_boxes(torch.zeros(1, 1, 16, 16)) == []
    assert salient_boxes(torch.full((16, 16), float("nan"))) == []


def test_crops_are_differentiable_and_only_see_their_box():
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    box = Box(top=4, left=8, bottom=20, right=24, mass=1.0)
    crops = salient_crops(images, [box, Box(0, 0, 32, 32, 1.0)], 24)
    assert crops.shape == (2, 2, 3, 24, 24)
    (grad,) = torch.autograd.grad(crops[:, 0].square().sum(), images)
    inside = grad[:, :, box.top : box.bottom, box.left : box.right]
    assert inside.abs().min() > 0
    outside = grad.clone()
    outside[:, :, box.top : box.bottom, box.left : box.right] = 0
    assert outside.abs().max() == 0  # nothing outside the box
    assert torch.autograd.gradcheck(
        lambda im: salient_crops(im, [box], 8), (images[:1, :1].detach().requires_grad_(),)
    )
    assert salient_crops(images, [], 24).shape == (2, 0, 3, 24, 24)


# DOODL optimiser and config


def test_doodl_update_clamps_each_element_without_renormalisation():
    latent = torch.zeros(1, 4, 8, 8)
    grad = torch.randn(1, 4, 8, 8) * 100
    config = SGOOLConfig(perturbation=0.0, renormalize=False)
    new, velocity = doodl_update(latent, grad, None, 1.0, config)
    torch.testing.assert_close(new, -1e-3 * grad.sign())  # g = -0.5 * grad_scale * grad, clamped to 1e-3
    newer, velocity2 = doodl_update(new, grad, velocity, 1.0, config)
    torch.testing.assert_close(velocity2, 1.9 * velocity)  # momentum 0.9: b = 0.9 b + g
    torch.testing.assert_close(newer, new + velocity2)
    small, _ = doodl_update(latent, torch.full_like(latent, 1e-4), None, 1.0, config)
    torch.testing.assert_close(small, torch.full_like(latent, -0.5e-4))  # unclamped: -0.5 * grad_scale * grad


def test_doodl_update_restores_initial_norm_and_perturbs():
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 16, 16, generator=generator)
    norm = float(latent.norm())
    config = SGOOLConfig(perturbation=1e-4)
    new, _ = doodl_update(latent, torch.randn(latent.shape, generator=generator), None, norm, config, generator)
    assert float(new.norm()) == pytest.approx(norm, rel=1e-6)
    still, _ = doodl_update(latent, torch.zeros_like(latent), None, norm, SGOOLConfig(renormalize=False), generator)
    noise = still - latent
    assert 0.5e-4 < float(noise.std()) < 2e-4  # Gaussian perturbation of std 1e-4


@pytest.mark.parametrize(
    "knob, value, message",
    [
        ("grad_scale", 0.0, "grad_scale=0.0 is invalid; valid range: a finite number > 0"),
        ("grad_scale", float("nan"), "grad_scale=nan"),
        ("momentum", 1.0, r"momentum=1.0 is invalid; valid range: \[0, 1\)"),
        ("num_crops", 0, "num_crops=0 is invalid; valid range: an integer >= 1"),
        ("crop_threshold", 1.5, r"crop_threshold=1.5 is invalid; valid range: \(0, 1\]"),
        ("distance", "l1", "distance='l1' is invalid; valid range: 'spherical' or 'cosine'"),
        ("mix", 0.3, r"mix=0.3 is invalid; valid range: \(0.5, 1\]"),
        ("sampling_steps", 0, r"sampling_steps=0 is invalid; valid range: an integer in \[1, 1000\]"),
        ("optimization_steps", -1, "optimization_steps=-1"),
        ("salient_weight", -1.0, "salient_weight=-1.0"),
    ],
)
def test_config_validation_names_value_and_range(knob, value, message):
    with pytest.raises(ValueError, match=message):
        SGOOLConfig(**{knob: value})


# the full loop on the tiny model


def test_sgool_loop_runs_and_keeps_best(pipe, clip):
    timesteps = pipe.scheduler.timesteps.clone()
    result = run(pipe, clip)
    report = result.report
    assert result.image.shape == (1, 3, 32, 32) and 0 <= result.image.min() and result.image.max() <= 1
    assert result.latents.shape == (1, 4, 16, 16)
    assert len(report.losses) == len(report.boxes) == len(report.step_seconds) == 3  # 2 updates, 3 evaluations
    assert all(math.isfinite(v) for v in report.losses)
    assert report.losses == pytest.approx(
        [g + c for g, c in zip(report.global_distances, report.crop_distances, strict=True)]
    )
    assert [len(b) for b in report.boxes] == [2, 2, 2] and report.boxes[0][0].mass == pytest.approx(64.0)
    assert report.best_loss == min(report.losses) and report.losses[report.best_step] == report.best_loss
    assert not report.fell_back and report.stopped is None and report.warnings == []
    assert report.total_seconds >= sum(report.step_seconds) > 0
    assert torch.equal(pipe.scheduler.timesteps, timesteps)  # the user's scheduler is not touched
    again = run(pipe, clip)  # seeded: deterministic
    assert again.report.losses == report.losses


def test_doodl_mode_uses_global_loss_only(pipe, clip):
    def no_saliency(images):
        raise AssertionError("DOODL must not call the saliency detector")

    report = run(pipe, clip, no_saliency, mode="doodl").report
    assert report.crop_distances == [0.0, 0.0, 0.0] and report.boxes == [[], [], []]
    assert report.losses == report.global_distances and not report.fell_back


def test_empty_saliency_falls_back_to_global_loss(pipe, clip):
    report = run(pipe, clip, lambda images: torch.zeros(images.shape[0], 1, 8, 8)).report
    assert report.fell_back and report.fallback_steps == [0, 1, 2]
    assert "no salient region" in report.warnings[0]
    assert report.losses == pytest.approx(run(pipe, clip, mode="doodl").report.losses)


def test_nan_loss_stops_and_keeps_best_latent(pipe, clip):
    calls = []

    def poison_after_first_step(module, inputs, output):  # CLIP vision features turn NaN from the 2nd step on
        calls.append(1)
        if len(calls) > 2:  # step 0 embeds the images and the crops (2 calls)
            output.pooler_output = output.pooler_output * float("nan")
        return output

    handle = clip[0].vision_model.register_forward_hook(poison_after_first_step)
    try:
        latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
        config = SGOOLConfig(**FAST)
        result = optimize_initial_latent(
            pipe, "a red circle", *clip, blob_saliency, config, latents=latents, height=32, width=32
        )
    finally:
        handle.remove()
    report = result.report
    assert "non-finite loss" in report.stopped and math.isnan(report.losses[-1])
    assert report.best_step == 0 and len(report.losses) == 2
    assert torch.equal(result.latents, latents)


def test_nan_gradient_stops(pipe, clip):
    def poison_gradient(module, grad_input, grad_output):
        return tuple(None if g is None else g * float("nan") for g in grad_input)

    handle = pipe.vae.decoder.register_full_backward_hook(poison_gradient)
    try:
        report = run(pipe, clip).report
    finally:
        handle.remove()
    assert report.stopped == "non-finite gradient at step 0" and len(report.losses) == 1
    assert any("NaN/inf" in w for w in report.warnings)


def test_bad_arguments_raise(pipe, clip):
    with pytest.raises(ValueError, match="mode='clip'"):
        run(pipe, clip, mode="clip")
    with pytest.raises(ValueError, match="needs a saliency_fn"):
        run(pipe, clip, saliency_fn=None)
    with pytest.raises(ValueError, match=r"latents of shape \(1, 4, 8, 8\)"):
        optimize_initial_latent(
            pipe, "a cat", *clip, blob_saliency, latents=torch.zeros(1, 4, 8, 8), height=32, width=32
        )
    with pytest.raises(ValueError, match="prompt 'x x x"):
        optimize_initial_latent(pipe, "x " * 90, *clip, mode="doodl")


def test_spectral_detector_and_plain_autograd_agree(pipe, clip):
    from emphasize.saliency import SpectralResidualDetector

    detector = SpectralResidualDetector()
    ours = run(pipe, clip, detector).report
    plain = run(pipe, clip, detector, constant_memory=False).report
    assert ours.boxes[0] and not ours.fell_back
    assert plain.losses == pytest.approx(ours.losses, rel=1e-4)
