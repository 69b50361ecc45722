"""Stable Diffusion XL on a tiny random SDXL built from configs (two CLIP text encoders of different widths, pooled
text and size ids through `added_cond_kwargs`, cross-attention at 1/2 and 1/4 of the latent): parity with diffusers'
`StableDiffusionXLPipeline`, attention capture, every attention method, embedding modes, loading. No real SDXL
weights run here."""

from __future__ import annotations

import json
import shutil
import types
from dataclasses import replace

import numpy as np
import pytest
import torch

import emphasize
from emphasize import api
from emphasize.attention.control import AttentionController
from emphasize.attention.install import capture_attention, cross_attention_layers
from emphasize.attention.store import resolve_attention_size
from emphasize.config import EmbedConfig, ImportanceConfig, ReweightConfig, SamplingConfig
from emphasize.embedding import interpolate_embeddings
from emphasize.models.load import ModelLoadError, load_pipeline, pipeline_geometry
from emphasize.models.tiny import TinySDXLConfig, tiny_sdxl_pipeline
from emphasize.optimize import GuidanceSchedule
from emphasize.sampling.common import decode_latents
from emphasize.sampling.conditioning import (
    added_cond,
    encode_text,
    model_family,
    negative_text,
    sdxl_time_ids,
)
from emphasize.sampling.guidance_rules import text_to_image_batch

try:  # tests/ as a package (tests/__init__.py) or as a plain directory on sys.path
    from tests.ldm_export import save_checkpoint, sdxl_pipeline_to_ldm, unet_to_ldm, vae_to_ldm
except ModuleNotFoundError:
    from ldm_export import save_checkpoint, sdxl_pipeline_to_ldm, unet_to_ldm, vae_to_ldm

FAST = SamplingConfig(steps=4, height=64, width=64, seed=3)
WIDE = SamplingConfig(steps=4, height=64, width=96, seed=3)  # non-square: a 32x48 latent
EVERY_STEP = ImportanceConfig(schedule=GuidanceSchedule(thresholds=(), stop=1.0))
PROMPT = "a red circle and a blue square"


@pytest.fixture(scope="module")
def sdxl():
    """Tiny `StableDiffusionXLPipeline` (Euler, as SDXL ships), 64x64 images, 32x32 latents."""
    return tiny_sdxl_pipeline()


@pytest.fixture(scope="module")
def peaked_sdxl():
    """A tiny SDXL whose cross-attention is peaked and depends on the latent, as in a trained model."""
    return tiny_sdxl_pipeline(TinySDXLConfig(attention_gain=6.0))


@pytest.fixture(scope="module")
def sdxl_dir(sdxl, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-sdxl")
    sdxl.save_pretrained(path)
    return path


def same_image(a, b) -> bool:
    return np.array_equal(np.asarray(a.image), np.asarray(b.image)) and torch.equal(a.latents, b.latents)


def diffusers_latents(pipe, prompt: str, sampling: SamplingConfig, **kwargs) -> torch.Tensor:
    """The pipeline's own sampling from emphasize's initial noise (`latents=` is scaled by init_noise_sigma there
    as in `denoise`)."""
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    noise = api.initial_noise(sampling.seed, (1, 4, sampling.height // f, sampling.width // f), "cpu", torch.float32)
    return pipe(
        prompt,
        num_inference_steps=sampling.steps,
        height=sampling.height,
        width=sampling.width,
        guidance_scale=sampling.guidance_scale,
        latents=noise,
        output_type="latent",
        **kwargs,
    ).images


# ----------------------------------------------------------------------------------------------------------------
# conditioning and the adapter


def test_the_tiny_model_has_sdxl_topology(sdxl):
    assert model_family(sdxl) == "sdxl"
    layers = cross_attention_layers(sdxl.unet)
    assert not any(name.startswith(("down_blocks.0.", "up_blocks.2.")) for name in layers)  # none at full latent
    assert sdxl.unet.config.cross_attention_dim == sdxl.text_encoder.config.hidden_size + 48
    text = encode_text(sdxl, [PROMPT])
    assert text.embeds.shape == (1, 77, 80) and text.pooled.shape == (1, 40) and text.widths == (32, 48)
    # penultimate hidden states of each encoder, concatenated; the pooled output of text_encoder_2
    ids = sdxl.tokenizer_2([PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = sdxl.text_encoder_2(ids, output_hidden_states=True)
    assert torch.equal(text.parts()[1], out.hidden_states[-2]) and torch.equal(text.pooled, out.text_embeds)
    assert sdxl.tokenizer_2.pad_token == "!" and ids[0, -1] == 0  # OpenCLIP's padding, as SDXL's tokenizer_2


@pytest.mark.parametrize("negative", ["", "a blurry photo"])
@pytest.mark.parametrize("sampling", [FAST, WIDE], ids=["square", "non-square"])
def test_plain_is_the_diffusers_sdxl_pipeline_bit_for_bit(sdxl, negative, sampling):
    """Same text conditioning (zeros for an empty negative prompt, as force_zeros_for_empty_prompt), the same
    add_time_ids and added_cond_kwargs, the same CFG and Euler steps: the latents match exactly."""
    sampling = replace(sampling, negative_prompt=negative)
    ours = api.generate(sdxl, PROMPT, method="plain", sampling=sampling, record_attention=False)
    theirs = diffusers_latents(sdxl, PROMPT, sampling, negative_prompt=negative or None)
    assert torch.equal(ours.latents, theirs)
    size = [sampling.height, sampling.width]
    assert ours.report["model_family"] == "sdxl" and ours.report["time_ids"] == [*size, 0, 0, *size]
    assert ours.image.size == (sampling.width, 64)


def test_the_guided_batch_carries_added_cond_kwargs_per_row(sdxl):
    cond, uncond = encode_text(sdxl, [PROMPT]), negative_text(sdxl, "")
    assert not uncond.embeds.any() and not uncond.pooled.any()  # SDXL's zeros for an empty negative prompt
    time_ids = sdxl_time_ids(sdxl.unet, 40, (64, 96))
    batch = text_to_image_batch(
        cond.embeds,
        uncond.embeds,
        5.0,
        added_cond=added_cond(cond, time_ids),
        added_uncond=added_cond(uncond, time_ids),
    )
    assert (
        batch.added_cond["text_embeds"].shape == (2, 40)
        and batch.added_cond["time_ids"].tolist() == [[64, 96, 0, 0, 64, 96]] * 2
    )
    assert torch.equal(batch.added_cond["text_embeds"][1], cond.pooled[0])
    one = batch.conditional()
    assert torch.equal(one.added_cond["text_embeds"], cond.pooled) and one.embeds.shape == (1, 77, 80)
    two = batch.added_input(batch=2)  # two latents: condition r of latent b at r * B + b, as unet_input
    assert torch.equal(two["text_embeds"], batch.added_cond["text_embeds"].repeat_interleave(2, dim=0))
    with pytest.raises(ValueError, match="must be given together"):
        text_to_image_batch(cond.embeds, uncond.embeds, 5.0, added_cond=added_cond(cond, time_ids))
    with pytest.raises(ValueError, match="expects an added embedding of width 88"):
        sdxl_time_ids(sdxl.unet, 41, (64, 64))


# ----------------------------------------------------------------------------------------------------------------
# attention capture


def _reference_probs(pipe, batch, z, t) -> tuple[torch.Tensor, dict[int, list[torch.Tensor]]]:
    """The UNet's output with its own processors, and every cross-attention layer's softmax(q k^T / sqrt(d)) per
    head computed from the inputs the layer received (forward hooks; no processor involved)."""
    maps: dict[int, list[torch.Tensor]] = {}

    def hook(module, args, kwargs, output):
        hidden, context = args[0], kwargs["encoder_hidden_states"]
        q, k = module.to_q(hidden), module.to_k(context)  # (B, HW, C), (B, T, C)
        b, n, c = q.shape
        q = q.view(b, n, module.heads, c // module.heads).transpose(1, 2)  # (B, heads, HW, d)
        k = k.view(b, -1, module.heads, c // module.heads).transpose(1, 2)  # (B, heads, T, d)
        probs = (q @ k.transpose(-1, -2) * module.scale).softmax(dim=-1)  # (B, heads, HW, T)
        maps.setdefault(n, []).append(probs)

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in pipe.unet.modules()
        if getattr(m, "is_cross_attention", False)
    ]
    try:
        with torch.no_grad():
            out = batch.unet_output(pipe.unet, z, t)
    finally:
        for h in handles:
            h.remove()
    return out, maps


def test_captured_maps_equal_a_reference_computation_at_each_level(sdxl):
    cond = encode_text(sdxl, [PROMPT])
    time_ids = sdxl_time_ids(sdxl.unet, 40, (64, 96))
    full = text_to_image_batch(
        cond.embeds, torch.zeros_like(cond.embeds), 5.0, added_cond=added_cond(cond, time_ids),
        added_uncond=added_cond(cond, time_ids),
    ).conditional()  # fmt: skip
    z, t = torch.randn(1, 4, 32, 48, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    expected_out, expected = _reference_probs(sdxl, full, z, t)
    before = dict(sdxl.unet.attn_processors)
    controller = AttentionController()
    with capture_attention(sdxl.unet, controller), torch.no_grad():
        controller.set_pass(rows=(0,), keep_pass=True)
        out = full.unet_output(sdxl.unet, z, t)
        captured = {hw: list(maps) for hw, maps in controller.store.pass_maps.items()}
        seen = controller.store.seen_pixels()
    assert all(sdxl.unet.attn_processors[k] is v for k, v in before.items())
    torch.testing.assert_close(out, expected_out, rtol=1e-4, atol=1e-5)
    # SDXL's levels: 1/2 of the latent (down 1, up 1: 3 layers, 4 heads), 1/4 (down 2, mid, up 0: 8 layers, 8 heads)
    assert {hw: len(m) for hw, m in captured.items()} == {16 * 24: 3, 8 * 12: 8}
    assert [tuple(m.shape) for m in captured[8 * 12]] == [(1, 8, 96, 77)] * 8
    assert [tuple(m.shape) for m in captured[16 * 24]] == [(1, 4, 384, 77)] * 3
    for hw, maps in expected.items():
        for ours, ref in zip(captured[hw], maps, strict=True):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    # the default level rule picks a quarter of the latent (SDXL at 1024 px: 32x32 of its 128x128 latent)
    assert resolve_attention_size(seen, (32, 48), None) == (8, 12)
    assert resolve_attention_size(seen, (32, 48), 2) == (16, 24)
    with pytest.raises(ValueError, match="no cross-attention at downsampling factor 1"):
        resolve_attention_size(seen, (32, 48), 1)


def test_the_real_sdxl_unet_is_captured_at_both_levels_and_guided_at_a_quarter():
    """SDXL base's own architecture (the shipped configs) on meta tensors, 1024x768: no weights, no memory."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from emphasize.models.load import SDXL_CONFIGS

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_CONFIGS, subfolder="unet"))
    meta = dict(device="meta")
    added = {"text_embeds": torch.empty(1, 1280, **meta), "time_ids": torch.empty(1, 6, **meta)}
    controller = AttentionController()
    with capture_attention(unet, controller), torch.no_grad():
        controller.set_pass(rows=(0,), keep_pass=True)
        unet(torch.empty(1, 4, 128, 96, **meta), torch.tensor(10, **meta),
             encoder_hidden_states=torch.empty(1, 77, 2048, **meta), added_cond_kwargs=added)  # fmt: skip
        maps = {hw: (len(m), tuple(m[0].shape)) for hw, m in controller.store.pass_maps.items()}
        seen = controller.store.seen_pixels()
    # 1/2 of the latent: 2 + 3 transformer blocks of depth 2 (10 heads); 1/4: 2 x 10 down, 10 mid, 3 x 10 up (20)
    assert maps == {64 * 48: (10, (1, 10, 3072, 77)), 32 * 24: (60, (1, 20, 768, 77))}
    assert resolve_attention_size(seen, (128, 96), None) == (32, 24)


# ----------------------------------------------------------------------------------------------------------------
# the methods


@pytest.mark.parametrize(
    ("method", "config"),
    [
        ("importance", None),
        ("reweight", None),
        ("embed", EmbedConfig("original")),
        ("embed", EmbedConfig("no-norm")),
        ("embed", EmbedConfig("comfy")),
    ],
)
def test_all_weights_one_is_plain_bit_for_bit(sdxl, method, config):
    plain = api.generate(sdxl, PROMPT, method="plain", sampling=WIDE)
    ones = api.generate(sdxl, "a (red:1) circle and a (blue square:1)", method=method, config=config, sampling=WIDE)
    assert same_image(plain, ones)
    assert ones.report["guidance"]["steps"] == []


@pytest.mark.parametrize("method", ["plain", "attend-excite", "importance", "reweight", "embed"])
@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_every_method_runs_and_restores_processors(sdxl, method, scheduler):
    from emphasize.sampling.schedulers import make_scheduler

    parts = {
        k: getattr(sdxl, k) for k in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    }
    pipe = types.SimpleNamespace(**parts, scheduler=make_scheduler(scheduler, base_config=sdxl.scheduler.config))
    before = dict(sdxl.unet.attn_processors)
    flags = [p.requires_grad for p in sdxl.unet.parameters()]
    r = api.generate(pipe, "a (red:2) circle and a blue square", method=method, sampling=WIDE)
    assert all(sdxl.unet.attn_processors[k] is v for k, v in before.items()) and len(before) == len(
        sdxl.unet.attn_processors
    )
    assert [p.requires_grad for p in sdxl.unet.parameters()] == flags
    assert r.image.size == (96, 64) and torch.isfinite(r.latents).all()
    assert r.heatmaps.shape == (1, 32, 48) and 0 < r.report["words"][0]["attention_share"] < 1
    assert r.report["words"][0]["tokens"] == [2]
    if method in ("attend-excite", "importance"):
        assert r.report["guidance"]["steps"], "the latent was guided"


def test_processors_are_restored_after_an_exception(sdxl):
    from emphasize.losses import LOSSES, register_loss

    def fail(maps, groups, weights, num_tokens, config):
        assert maps.shape[1:3] == (8, 12)  # the guided level: a quarter of the 32x48 latent
        raise KeyboardInterrupt

    before = dict(sdxl.unet.attn_processors)
    flags = [p.requires_grad for p in sdxl.unet.parameters()]
    register_loss("test-sdxl-interrupt")(fail)
    try:
        with pytest.raises(KeyboardInterrupt):
            api.generate(sdxl, "a (red:2) circle", config=ImportanceConfig(objective="test-sdxl-interrupt"),
                         sampling=WIDE)  # fmt: skip
    finally:
        LOSSES.pop("test-sdxl-interrupt", None)
    assert all(sdxl.unet.attn_processors[k] is v for k, v in before.items())
    assert [p.requires_grad for p in sdxl.unet.parameters()] == flags


@pytest.mark.parametrize(
    ("method", "config"), [("importance", EVERY_STEP), ("reweight", ReweightConfig()), ("embed", EmbedConfig())]
)
def test_raising_a_weight_raises_its_attention_share(peaked_sdxl, method, config):
    shares = {}
    for w in (0.3, 1.0, 3.0):
        r = api.generate(peaked_sdxl, f"a (red:{w}) circle and a blue square", method=method, config=config,
                         sampling=FAST)  # fmt: skip
        shares[w] = r.report["words"][0]["attention_share"]
    assert shares[0.3] < shares[1.0] < shares[3.0], shares


def test_the_two_tokenizers_must_agree_on_the_weighted_positions(sdxl, tmp_path):
    from transformers import CLIPTokenizer

    from emphasize.models.tokenizer import write_clip_tokenizer_files

    folder = write_clip_tokenizer_files(tmp_path / "coarse")
    merges = (folder / "merges.txt").read_text().splitlines()
    (folder / "merges.txt").write_text("\n".join(merges[:200]) + "\n")  # few merges: words split into more pieces
    coarse = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    coarse.model_max_length = 77
    parts = {k: getattr(sdxl, k) for k in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "scheduler")}
    pipe = types.SimpleNamespace(**parts, tokenizer_2=coarse)
    with pytest.raises(ValueError, match="two tokenizers place the weighted words at different positions"):
        api.generate(pipe, "a (red:2) circle", sampling=FAST)


def test_unsupported_uses_are_one_line_errors(sdxl):
    from PIL import Image

    with pytest.raises(ValueError, match="editing supports .* not SDXL"):
        api.edit(sdxl, Image.new("RGB", (64, 64)), "make it (red:2)")
    refiner = types.SimpleNamespace(**{k: getattr(sdxl, k) for k in ("unet", "vae", "text_encoder_2", "scheduler")})
    with pytest.raises(ValueError, match="refiner"):
        api.generate(refiner, "a cat", sampling=FAST)
    from emphasize.saliency_guidance import optimize

    with pytest.raises(ValueError, match="sgool runs on Stable Diffusion 1.x/2.x"):
        optimize(sdxl, "a cat", clip=(None, None))


# ----------------------------------------------------------------------------------------------------------------
# embedding weighting and the public builder


def test_embedding_modes_follow_their_tools(sdxl):
    from emphasize.methods import get_method
    from emphasize.tokens import align_spans

    groups = align_spans(sdxl.tokenizer, "a (red:2) circle")
    text = encode_text(sdxl, ["a red circle"])
    empty = encode_text(sdxl, [""])
    embed = get_method("embed")
    out = {m: embed.condition_text(EmbedConfig(m), groups, text, lambda s: encode_text(sdxl, [s])) for m in
           ("original", "no-norm", "comfy")}  # fmt: skip
    for weighted in out.values():  # the pooled embedding is the prompt's own, unweighted, in every mode
        assert weighted.pooled is text.pooled and weighted.widths == text.widths
    for mode in ("no-norm", "comfy"):  # unweighted tokens are untouched
        assert torch.equal(out[mode].embeds[:, :2], text.embeds[:, :2])
    # no-norm: the weighted token times 2, per encoder alike
    assert torch.equal(out["no-norm"].embeds[:, 2], text.embeds[:, 2] * 2)
    # original: A1111 scales, then restores each encoder's mean on its own (SDXL's two embedders)
    for part, ref in zip(out["original"].parts(), text.parts(), strict=True):
        torch.testing.assert_close(part.mean(), ref.mean(), rtol=1e-5, atol=1e-7)
    ratio = out["original"].parts()[0][:, 3] / text.parts()[0][:, 3]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # every token rescaled by one factor
    # comfy: away from the empty prompt's embedding at the weighted token only
    torch.testing.assert_close(
        out["comfy"].embeds[:, 2], empty.embeds[:, 2] + 2 * (text.embeds[:, 2] - empty.embeds[:, 2])
    )
    assert torch.equal(out["comfy"].embeds[:, 3:], text.embeds[:, 3:])
    with pytest.raises(ValueError, match="mode='a1111' must be one of original, no-norm, comfy"):
        EmbedConfig("a1111")


def test_interpolate_embeddings_keeps_unweighted_positions_exactly():
    gen = torch.Generator().manual_seed(0)
    z, empty = torch.randn(1, 5, 3, generator=gen), torch.randn(1, 5, 3, generator=gen)
    w = torch.tensor([1.0, 1.0, 0.5, 2.0, 1.0])
    out = interpolate_embeddings(z, empty, w)
    assert torch.equal(out[:, [0, 1, 4]], z[:, [0, 1, 4]])
    torch.testing.assert_close(out[:, 3], empty[:, 3] + 2 * (z[:, 3] - empty[:, 3]))
    torch.testing.assert_close(out[:, 2], (z[:, 2] + empty[:, 2]) / 2)
    with pytest.raises(ValueError, match="does not match"):
        interpolate_embeddings(z, empty[:, :4], w)


@pytest.mark.parametrize("mode", ["original", "comfy"])
def test_the_builder_feeds_the_users_own_pipeline_call(sdxl, mode):
    config = EmbedConfig(mode)
    embeds = emphasize.weighted_embeds(sdxl, "a (red:1.8) circle and a [blue] square", config=config)
    assert set(embeds.kwargs()) == {
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }
    assert [g.text for g in embeds.groups] == ["red", "blue"]
    theirs = diffusers_latents(sdxl, None, FAST, **embeds.kwargs())
    ours = api.generate(sdxl, "a (red:1.8) circle and a [blue] square", method="embed", config=config, sampling=FAST,
                        record_attention=False)  # fmt: skip
    assert torch.equal(ours.latents, theirs)
    # all weights 1: the pipeline's own prompt encoding, bit for bit
    ones = emphasize.weighted_embeds(sdxl, "a (red:1) circle and a blue square", config=config)
    assert torch.equal(diffusers_latents(sdxl, None, FAST, **ones.kwargs()), diffusers_latents(sdxl, PROMPT, FAST))


def test_the_builder_works_on_stable_diffusion_too(tiny_t2i):
    from emphasize.embedding import weight_embeddings

    embeds = emphasize.weighted_embeds(tiny_t2i, "a (red:1.5) circle", negative_prompt="blurry")
    assert set(embeds.kwargs()) == {"prompt_embeds", "negative_prompt_embeds"}
    ids = tiny_t2i.tokenizer(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = tiny_t2i.text_encoder(ids)[0]
    weights = torch.ones(77)
    weights[2] = 1.5
    assert torch.equal(embeds.prompt_embeds, weight_embeddings(plain, weights))  # A1111 "Original" on one encoder
    assert torch.equal(emphasize.weighted_embeds(tiny_t2i, "a red circle").prompt_embeds, plain)
    # into the SD pipeline's own call, as in the SDXL test: the embed method's sampling, exactly
    theirs = diffusers_latents(tiny_t2i, None, FAST, **embeds.kwargs())
    sampling = replace(FAST, negative_prompt="blurry")
    ours = api.generate(tiny_t2i, "a (red:1.5) circle", method="embed", sampling=sampling, record_attention=False)
    assert torch.equal(ours.latents, theirs)


def test_a_float16_vae_decodes_in_float32_and_is_put_back(sdxl):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(sdxl.vae.config).to(torch.float16)
    vae.load_state_dict(sdxl.vae.state_dict())
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    with torch.no_grad():
        images = decode_latents(vae, latents, xl=True)
        reference = decode_latents(sdxl.vae, latents.float(), xl=True)
    assert vae.dtype == torch.float16 and images.dtype == torch.float16
    torch.testing.assert_close(images.float(), reference, rtol=0, atol=2e-3)


# ----------------------------------------------------------------------------------------------------------------
# loading


def assert_same_weights(a, b):
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_a_saved_directory_loads_and_samples_as_the_original(sdxl, sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    assert pipeline_geometry(sdxl_dir, "t2i") == {"multiple": 8, "native": 64}
    pipe = load_pipeline(str(sdxl_dir), "t2i")
    assert type(pipe) is StableDiffusionXLPipeline and pipe.tokenizer_2.pad_token == "!"
    assert_same_weights(pipe, sdxl)
    # equal weights (asserted exactly above); the loaded text projection rounds differently in the last bit (4e-7 on
    # the pooled embedding, weights read from a memory-mapped file), which this random tiny UNet's added-condition
    # path amplifies to about 2e-4 on the latents after 4 Euler steps on some CPUs, plain and guided alike
    plain = [api.generate(p, "a red circle", method="plain", sampling=FAST).latents for p in (pipe, sdxl)]
    torch.testing.assert_close(*plain, rtol=1e-3, atol=1e-3)
    a = api.generate(pipe, "a (red:2) circle", sampling=FAST)
    b = api.generate(sdxl, "a (red:2) circle", sampling=FAST)
    torch.testing.assert_close(a.latents, b.latents, rtol=1e-3, atol=1e-3)
    assert a.report["words"][0]["tokens"] == b.report["words"][0]["tokens"] == [2]
    with pytest.raises(ModelLoadError, match=r"a StableDiffusionXLPipeline directory .*instruction-editing supports"):
        load_pipeline(str(sdxl_dir), "edit")


def test_a_cached_hub_id_and_fp16_variant_files_load(sdxl, sdxl_dir, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--stabilityai--stable-diffusion-xl-base-1.0"
    shutil.copytree(sdxl_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_same_weights(load_pipeline("stabilityai/stable-diffusion-xl-base-1.0", "t2i"), sdxl)

    variant = tmp_path / "fp16"
    sdxl.save_pretrained(variant, variant="fp16")
    pipe = load_pipeline(str(variant), "t2i")  # only `*.fp16.*` weight files: read as the fp16 variant
    assert_same_weights(pipe, sdxl)
    for f in (variant / "text_encoder_2").glob("model.fp16.*"):
        f.unlink()
    shutil.copy(sdxl_dir / "text_encoder_2" / "model.safetensors", variant / "text_encoder_2")
    with pytest.raises(ModelLoadError, match=r"mixed weight files: unet/ has only fp16 .* text_encoder_2/ only"):
        load_pipeline(str(variant), "t2i")


def test_an_incomplete_or_foreign_directory_is_named(sdxl_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(sdxl_dir, broken, ignore=shutil.ignore_patterns("tokenizer_2"))
    with pytest.raises(ModelLoadError, match=r"broken \(StableDiffusionXLPipeline\): missing the tokenizer_2/ folder"):
        load_pipeline(str(broken), "t2i")
    refiner = tmp_path / "refiner"
    refiner.mkdir()
    index = {
        "_class_name": "StableDiffusionXLImg2ImgPipeline",
        "text_encoder": [None, None],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "unet": ["diffusers", "UNet2DConditionModel"],
    }
    (refiner / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match=r"a StableDiffusionXLImg2ImgPipeline directory .*SDXL base"):
        load_pipeline(str(refiner), "t2i")


def test_a_single_file_sdxl_checkpoint_loads_on_configs(sdxl, sdxl_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    sd = sdxl_pipeline_to_ldm(sdxl)
    assert "model.diffusion_model.label_emb.0.0.weight" in sd  # the SDXL checkpoint layout
    path = save_checkpoint(sd, tmp_path / "sdxl.safetensors")
    pipe = load_pipeline(str(path), "t2i", config=sdxl_dir)
    assert type(pipe) is StableDiffusionXLPipeline and type(pipe.scheduler) is type(sdxl.scheduler)
    assert_same_weights(pipe, sdxl)
    assert pipe.tokenizer_2("a red circle").input_ids == sdxl.tokenizer_2("a red circle").input_ids
    assert same_image(api.generate(pipe, "a (red:2) circle", sampling=FAST),
                      api.generate(sdxl, "a (red:2) circle", sampling=FAST))  # fmt: skip
    # the shipped configs are SDXL base's: a tiny checkpoint does not fit them, and the error says so
    with pytest.raises(ModelLoadError, match=r"the UNet does not match the architecture in .*sdxl.*SDXL base 1.0"):
        load_pipeline(str(path), "t2i")
    with pytest.raises(ModelLoadError, match=r"an SDXL checkpoint; instruction-editing supports"):
        load_pipeline(str(path), "edit")
    no_g = save_checkpoint(
        {k: v for k, v in sd.items() if not k.startswith("conditioner.embedders.1.")}, tmp_path / "no_g.safetensors"
    )
    with pytest.raises(ModelLoadError, match=r"no weights for the second text encoder \(conditioner.embedders.1"):
        load_pipeline(str(no_g), "t2i", config=sdxl_dir)


SDXL_BASE_YAML = {  # generative-models' configs/inference/sd_xl_base.yaml (the parts diffusers reads)
    "model": {
        "params": {
            "scale_factor": 0.13025,
            "network_config": {
                "params": {
                    "adm_in_channels": 2816,
                    "num_classes": "sequential",
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4],
                    "num_head_channels": 64,
                    "use_linear_in_transformer": True,
                    "transformer_depth": [1, 2, 10],
                    "context_dim": 2048,
                }
            },
            "first_stage_config": {
                "params": {
                    "ddconfig": {
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                    }
                }
            },
        }
    }
}


def test_shipped_configs_are_sdxl_base():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from emphasize.models.load import SDXL_CONFIGS

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_CONFIGS, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SDXL_CONFIGS, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SDXL_CONFIGS, subfolder="text_encoder"))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(SDXL_CONFIGS, subfolder="text_encoder_2"))
    # what diffusers derives from the original SDXL config is what we ship (sample size: SDXL's 1024 px)
    for ours, derived in (
        (unet.config, create_unet_diffusers_config_from_ldm(SDXL_BASE_YAML, {})),
        (vae.config, create_vae_diffusers_config_from_ldm(SDXL_BASE_YAML, {})),
    ):
        for key, value in derived.items():
            got = ours[key]
            if key != "sample_size":
                assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert unet.config.sample_size * 8 == vae.config.sample_size == 1024
    # parameter counts of SDXL base 1.0's UNet, VAE, CLIP ViT-L and OpenCLIP ViT-bigG text towers
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), count(text), count(text_2)) == (2_567_463_684, 83_653_863, 123_060_480,
                                                                     694_659_840)  # fmt: skip
    # the exporter is the inverse of diffusers' converter on SDXL's UNet at full size
    sd = unet.state_dict()
    ldm = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(sd, unet.config).items()}
    back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert back.keys() == sd.keys() and all(back[k].shape == sd[k].shape for k in sd)
    assert vae_to_ldm(vae.state_dict(), vae.config)


def test_the_cli_writes_a_tiny_sdxl(tmp_path, capsys):
    from emphasize.cli import main

    assert main(["models", "tiny", "--layout", "sdxl", "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert main(["models", "tiny", "--layout", "sdxl", "--kind", "edit", "--out", str(tmp_path / "e")]) == 2
    assert "text-to-image only" in capsys.readouterr().err


def test_the_cli_generates_with_an_sdxl_directory(sdxl_dir, tmp_path, capsys):
    from PIL import Image

    from emphasize.cli import main

    out, report = tmp_path / "x.png", tmp_path / "r.json"
    code = main(["generate", "a (red:2) circle", "--model", str(sdxl_dir), "--steps", "2", "--method", "embed",
                 "--embed-mode", "comfy", "--width", "96", "--out", str(out), "--report", str(report),
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (96, 64)
    data = json.loads(report.read_text())
    assert data["model_family"] == "sdxl" and data["config"] == {"mode": "comfy"}
    code = main(["generate", "a cat", "--model", str(sdxl_dir), "--embed-mode", "comfy", "--out", str(out)])
    assert code == 2 and "--embed-mode needs --method embed" in capsys.readouterr().err
