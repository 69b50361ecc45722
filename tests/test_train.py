"""Training recipes on tiny settings: each runs a few steps into a temp dir and exports a loadable model, and a run
killed after a checkpoint resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from emphasize.train import common
from emphasize.train.clip import ClipConfig, caption_variants, train_clip
from emphasize.train.common import CHECKPOINT, TrainError, train_seed
from emphasize.train.edit import EditConfig, train_edit
from emphasize.train.t2i import T2IConfig, train_t2i
from emphasize.train.vae import VAEConfig, train_vae

SIZE = 32
TINY_VAE = VAEConfig(steps=3, batch_size=2, channels=(8, 8, 8), norm_groups=4, image_size=SIZE, checkpoint_every=2)
TINY_DIFFUSION = dict(
    steps=3,
    batch_size=2,
    unet_channels=(8, 16),
    attention_heads=2,
    text_width=16,
    text_layers=1,
    image_size=SIZE,
    checkpoint_every=2,
    warmup=1,
)
TINY_CLIP = ClipConfig(
    steps=3,
    batch_size=4,
    hard_negatives=2,
    image_size=SIZE,
    vision_width=16,
    vision_layers=1,
    text_width=16,
    text_layers=1,
    heads=2,
    projection_dim=8,
    checkpoint_every=2,
)


class Killed(Exception):
    pass


def _kill_after_first_checkpoint(monkeypatch, module):
    real = module.save_checkpoint

    def save_then_die(out, state):
        real(out, state)
        raise Killed

    monkeypatch.setattr(module, "save_checkpoint", save_then_die)


def _checkpoint(path):
    return torch.load(path / CHECKPOINT, map_location="cpu", weights_only=False)


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    train_vae(out, TINY_VAE, show_progress=False)
    return out


def test_train_seeds_are_deterministic_and_below_the_eval_range():
    assert train_seed(0, 5) == train_seed(0, 5) != train_seed(1, 5)
    assert all(train_seed(3, i) < 10**8 for i in range(100))


def test_vae_recipe_exports_a_loadable_autoencoder(tiny_vae_dir):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(tiny_vae_dir / "model"))
    assert _checkpoint(tiny_vae_dir)["step"] == 3
    assert vae.config.scaling_factor > 0 and vae.config.scaling_factor != 0.18215
    x = torch.rand(1, 3, SIZE, SIZE)
    assert vae.encode(x).latent_dist.mode().shape == (1, 4, SIZE // 4, SIZE // 4)


def test_vae_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, tiny_vae_dir):
    _kill_after_first_checkpoint(monkeypatch, common)
    with pytest.raises(Killed):
        train_vae(tmp_path, TINY_VAE, show_progress=False)
    assert _checkpoint(tmp_path)["step"] == 2
    monkeypatch.undo()
    train_vae(tmp_path, TINY_VAE, show_progress=False)
    _assert_same_weights(_checkpoint(tmp_path)["model"], _checkpoint(tiny_vae_dir)["model"])


def test_t2i_recipe_exports_a_pipeline_and_resumes_exactly(tmp_path, monkeypatch, tiny_vae_dir):
    from diffusers import StableDiffusionPipeline

    config = T2IConfig(**TINY_DIFFUSION)
    full = train_t2i(tmp_path / "full", tiny_vae_dir, config, show_progress=False)
    pipe = StableDiffusionPipeline.from_pretrained(str(full), dtype=torch.float32)
    image = pipe("a red circle", num_inference_steps=2, height=SIZE, width=SIZE, output_type="np").images[0]
    assert image.shape == (SIZE, SIZE, 3)
    assert pipe.unet.config.in_channels == 4 and type(pipe.scheduler).__name__ == "DDIMScheduler"

    _kill_after_first_checkpoint(monkeypatch, common)
    with pytest.raises(Killed):
        train_t2i(tmp_path / "resumed", tiny_vae_dir, config, show_progress=False)
    monkeypatch.undo()
    train_t2i(tmp_path / "resumed", tiny_vae_dir, config, show_progress=False)
    a, b = _checkpoint(tmp_path / "full"), _checkpoint(tmp_path / "resumed")
    for key in ("unet", "text_encoder", "ema_unet", "ema_text"):
        _assert_same_weights(a[key], b[key])


def test_edit_recipe_exports_an_8_channel_pipeline_reusing_a_text_encoder(tmp_path, tiny_vae_dir):
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from PIL import Image

    t2i = train_t2i(tmp_path / "t2i", tiny_vae_dir, T2IConfig(**{**TINY_DIFFUSION, "steps": 1}), show_progress=False)
    out = train_edit(
        tmp_path / "edit",
        tiny_vae_dir,
        EditConfig(**TINY_DIFFUSION),
        text_encoder=t2i / "text_encoder",
        show_progress=False,
    )
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(out), dtype=torch.float32)
    assert pipe.unet.config.in_channels == 8
    frozen = _checkpoint(tmp_path / "edit")["text_encoder"]
    _assert_same_weights(
        frozen, pipe.text_encoder.state_dict() | {k: frozen[k] for k in frozen if "position_ids" in k}
    )
    image = Image.new("RGB", (SIZE, SIZE), (232, 232, 232))
    result = pipe("make the square green", image=image, num_inference_steps=2, output_type="np").images[0]
    assert result.shape == (SIZE, SIZE, 3)


def test_edit_condition_dropout_is_disjoint(tiny_vae_dir):
    from emphasize.train.common import step_generator
    from emphasize.train.diffusion import load_vae
    from emphasize.train.edit import edit_batch

    vae = load_vae(tiny_vae_dir, "cpu")
    config = EditConfig(**{**TINY_DIFFUSION, "batch_size": 64}, text_dropout=0.3, image_dropout=0.3)
    batch = edit_batch(vae, config, 0, step_generator(0, 0))
    target, cond, prompts = batch.latents, batch.image_cond, batch.prompts
    no_text = torch.tensor([p == "" for p in prompts])
    no_image = cond.flatten(1).abs().sum(1) == 0
    assert no_text.any() and no_image.any() and not (no_text & no_image).any()
    assert target.shape == cond.shape == (64, 4, SIZE // 4, SIZE // 4)


def test_clip_recipe_exports_a_clip_model_and_resumes_exactly(tmp_path, monkeypatch):
    from transformers import CLIPModel, CLIPTokenizer

    full = train_clip(tmp_path / "full", TINY_CLIP, show_progress=False)
    model, tokenizer = CLIPModel.from_pretrained(str(full)), CLIPTokenizer.from_pretrained(str(full))
    assert tokenizer("a red circle").input_ids[0] == 49406
    _kill_after_first_checkpoint(monkeypatch, common)
    with pytest.raises(Killed):
        train_clip(tmp_path / "resumed", TINY_CLIP, show_progress=False)
    monkeypatch.undo()
    train_clip(tmp_path / "resumed", TINY_CLIP, show_progress=False)
    _assert_same_weights(_checkpoint(tmp_path / "full")["model"], _checkpoint(tmp_path / "resumed")["model"])
    assert model.config.vision_config.image_size == SIZE


def test_caption_variants_differ_in_one_attribute():
    from emphasize.world import parse_caption

    spec = parse_caption("a red circle and a blue square")
    variants = caption_variants(spec)
    assert "a blue circle and a blue square" in variants and "a red circle and a blue star" in variants
    assert "a red circle and a blue square" not in variants and len(variants) == 20
    assert "a red circle below a blue square" in caption_variants(parse_caption("a red circle above a blue square"))


def test_recipes_reject_bad_knobs():
    with pytest.raises(ValueError, match="steps"):
        VAEConfig(steps=0)
    with pytest.raises(ValueError, match="dropout"):
        EditConfig(text_dropout=0.6, image_dropout=0.5)
    with pytest.raises(TrainError, match="no vae"):
        train_t2i("/nonexistent/out", "/nonexistent/vae", show_progress=False)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from emphasize.train.cli import main

    assert main(["train", "t2i", "--out", str(tmp_path), "--vae", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emphasize: error:") and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vae", "--out", str(tmp_path), "--steps", "-3"])
    assert exit_info.value.code == 2


def test_cli_module_imports_are_light():
    code = "import sys, emphasize.train.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_stop_at_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_vae_dir):
    train_vae(tmp_path, TINY_VAE, show_progress=False, stop_at=1)
    assert _checkpoint(tmp_path)["step"] == 1 and (tmp_path / "model" / "config.json").is_file()
    train_vae(tmp_path, TINY_VAE, show_progress=False)
    _assert_same_weights(_checkpoint(tmp_path)["model"], _checkpoint(tiny_vae_dir)["model"])


def test_edit_warm_started_from_t2i_computes_what_the_t2i_unet_did(tmp_path, tiny_vae_dir):
    """InstructPix2Pix's initialisation: the widened conv_in has zero weights on the image channels."""
    from diffusers import UNet2DConditionModel

    from emphasize.train.diffusion import build_unet, init_unet

    t2i = train_t2i(tmp_path / "t2i", tiny_vae_dir, T2IConfig(**{**TINY_DIFFUSION, "steps": 1}), show_progress=False)
    source = UNet2DConditionModel.from_pretrained(str(t2i / "unet")).eval()
    edit = build_unet(EditConfig(**TINY_DIFFUSION), 8, SIZE // 4).eval()
    init_unet(edit, t2i)
    latents, image_cond = torch.randn(2, 4, SIZE // 4, SIZE // 4), torch.randn(2, 4, SIZE // 4, SIZE // 4)
    text = torch.randn(2, 77, TINY_DIFFUSION["text_width"])
    t = torch.tensor([10, 900])
    with torch.no_grad():
        expected = source(latents, t, text).sample
        widened = edit(torch.cat([latents, image_cond], 1), t, text).sample
    torch.testing.assert_close(widened, expected)
    assert edit.conv_in.weight[:, 4:].abs().sum() == 0


def test_warm_start_trains_from_the_given_weights_and_records_them(tmp_path, tiny_vae_dir):
    import json

    from emphasize.train.diffusion import build_unet, init_unet

    t2i = train_t2i(tmp_path / "t2i", tiny_vae_dir, T2IConfig(**{**TINY_DIFFUSION, "steps": 1}), show_progress=False)
    out = train_edit(
        tmp_path / "edit",
        tiny_vae_dir,
        EditConfig(**{**TINY_DIFFUSION, "lr": 1e-7}),
        init_from=t2i,
        show_progress=False,
    )
    card = json.loads((out / "sampling_defaults.json").read_text())
    assert card["initialised_from"] == str(t2i) and card["trained_steps"] == 3
    # the starting model trained 1 step, this run 3: the card counts the UNet's steps through the chain
    assert card["init_trained_steps"] == 1 and card["total_trained_steps"] == 4
    # with a negligible learning rate the trained UNet stays at its initialisation, not at a fresh one
    started = build_unet(EditConfig(**TINY_DIFFUSION), 8, SIZE // 4)
    init_unet(started, t2i)
    trained = _checkpoint(tmp_path / "edit")["unet"]
    fresh = build_unet(EditConfig(**TINY_DIFFUSION), 8, SIZE // 4).state_dict()
    weight = "down_blocks.0.resnets.0.conv1.weight"
    torch.testing.assert_close(trained[weight], started.state_dict()[weight], atol=1e-5, rtol=0)
    assert not torch.allclose(trained[weight], fresh[weight])


def test_warm_start_rejects_a_unet_of_another_shape(tmp_path, tiny_vae_dir):
    from emphasize.train.diffusion import build_unet, init_unet

    t2i = train_t2i(tmp_path / "t2i", tiny_vae_dir, T2IConfig(**{**TINY_DIFFUSION, "steps": 1}), show_progress=False)
    wider = build_unet(EditConfig(**{**TINY_DIFFUSION, "unet_channels": (8, 24)}), 8, SIZE // 4)
    with pytest.raises(TrainError, match="shape"):
        init_unet(wider, t2i)
    with pytest.raises(TrainError, match="no unet"):
        init_unet(wider, tmp_path / "missing")


def test_t2i_testbed_recipe_grounds_and_resumes_exactly(tmp_path, monkeypatch, tiny_vae_dir):
    """Grounding loss and free-position dropout/invariance: the run trains, resumes to the same weights, and
    records the guided attention level in the model card."""
    import json

    config = T2IConfig(**TINY_DIFFUSION, grounding_weight=0.5, pad_dropout=1.0, pad_invariance=1.0, attention_factor=2)
    full = train_t2i(tmp_path / "full", tiny_vae_dir, config, show_progress=False)
    card = json.loads((full / "sampling_defaults.json").read_text())
    assert card["attention_factor"] == 2
    _kill_after_first_checkpoint(monkeypatch, common)
    with pytest.raises(Killed):
        train_t2i(tmp_path / "resumed", tiny_vae_dir, config, show_progress=False)
    monkeypatch.undo()
    train_t2i(tmp_path / "resumed", tiny_vae_dir, config, show_progress=False)
    a, b = _checkpoint(tmp_path / "full"), _checkpoint(tmp_path / "resumed")
    for key in ("unet", "text_encoder", "ema_unet"):
        _assert_same_weights(a[key], b[key])
    plain = train_t2i(tmp_path / "plain", tiny_vae_dir, T2IConfig(**TINY_DIFFUSION), show_progress=False)
    assert plain.is_dir()
    assert not torch.equal(_checkpoint(tmp_path / "plain")["unet"]["conv_in.weight"], a["unet"]["conv_in.weight"])


def test_testbed_knobs_are_validated():
    for bad in (dict(pad_dropout=1.5), dict(grounding_weight=-1.0), dict(grounding_factors=(3,))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            T2IConfig(**{**TINY_DIFFUSION, **bad})
