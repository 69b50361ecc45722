"""The embedded world models shipped in the package: the manifest matches the files, and every model loads through
`emphasize.models.load` and runs (2 sampling steps per pipeline, one CLIP forward). Nothing is skipped: a model
listed here that is not shipped fails its test."""

from __future__ import annotations

import json

import pytest
import torch

from emphasize.models.load import EMBEDDED_DIR
from emphasize.train.ship import MANIFEST, manifest_entries

MAX_BYTES = 60 * 2**20  # all shipped files together
SHIPPED = ("t2i", "edit", "clip", "testbed")  # components whose weights are committed (each has its tests below)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((EMBEDDED_DIR / MANIFEST).read_text(encoding="utf-8"))


def test_manifest_lists_exactly_the_shipped_files_with_their_sizes_and_hashes(manifest):
    assert manifest_entries(EMBEDDED_DIR) == manifest["files"]
    assert sorted(manifest["components"]) == sorted(SHIPPED)
    assert manifest["total_bytes"] == sum(e["bytes"] for e in manifest["files"].values()) <= MAX_BYTES
    weights = [k for k in manifest["files"] if k.endswith(".safetensors")]
    assert {w.split("/")[0] for w in weights} == set(SHIPPED)


def test_world_clip_loads_as_float32_and_embeds_images_and_captions():
    import torch.nn.functional as F

    from emphasize.models.load import load_clip
    from emphasize.train.clip import normalize_images
    from emphasize.train.common import images_to_tensor
    from emphasize.world import sample_t2i

    clip = load_clip(None)
    assert clip.model.dtype == torch.float32
    assert clip.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    item = sample_t2i(10**9, 64)
    texts = [item.caption, "a purple cross", "two green hearts"]
    ids = clip.tokenizer(texts, padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = clip.model(input_ids=ids, pixel_values=normalize_images(images_to_tensor([item.image])))
    assert out.logits_per_image.shape == (1, 3)
    assert torch.isfinite(out.logits_per_image).all()
    assert F.normalize(out.image_embeds, dim=-1).shape == (1, clip.model.config.projection_dim)


def test_world_clip_loads_with_transformers_alone():
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(EMBEDDED_DIR / "clip"))
    tokenizer = CLIPTokenizer.from_pretrained(str(EMBEDDED_DIR / "clip"))
    assert model.dtype == torch.float32 and model.config.vision_config.image_size == 64
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.fixture(scope="module")
def editor():
    from emphasize.models.load import load_pipeline

    return load_pipeline(None, "edit")


@pytest.mark.parametrize("rule", ["ip2p", "instructdiffusion"])
def test_edit_runs_both_guidance_rules_through_the_api(editor, rule):
    from PIL import Image

    from emphasize.api import edit
    from emphasize.config import EditSamplingConfig
    from emphasize.world import sample_task

    assert editor.unet.config.in_channels == 8 and all(p.dtype == torch.float32 for p in editor.unet.parameters())
    task = sample_task("edit", 10**9, 64, kind="recolour")
    sampling = EditSamplingConfig(steps=2, guidance_rule=rule, seed=0)
    result = edit(editor, Image.fromarray(task.input), task.instruction, method="importance", sampling=sampling)
    assert result.image.size == (64, 64)
    assert result.report["steps"] == 2


@pytest.fixture(scope="module")
def t2i():
    from emphasize.models.load import load_pipeline

    return load_pipeline(None, "t2i")


def test_t2i_loads_as_float32_and_generates_through_the_api(t2i):
    from emphasize.api import generate
    from emphasize.config import SamplingConfig

    assert all(p.dtype == torch.float32 for p in t2i.unet.parameters())
    assert t2i.unet.config.in_channels == 4 and type(t2i.scheduler).__name__ == "DDIMScheduler"
    sampling = SamplingConfig(steps=2, guidance_scale=5.0, seed=0)
    result = generate(t2i, "a red circle and a (blue square:2)", method="importance", sampling=sampling)
    assert result.image.size == (64, 64)
    assert result.heatmaps is not None and result.heatmaps.shape[-2:] == (16, 16)


def test_t2i_loads_with_diffusers_alone_and_has_a_model_card():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(EMBEDDED_DIR / "t2i"), dtype=torch.float32)
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on world latents
    assert pipe.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    card = json.loads((EMBEDDED_DIR / "t2i" / "sampling_defaults.json").read_text())
    assert card["kind"] == "t2i" and card["num_inference_steps"] > 0 and card["guidance_scale"] > 1


def test_testbed_loads_by_name_with_its_guided_level_and_recipe_in_the_card():
    from emphasize.api import card_factor, generate
    from emphasize.config import SamplingConfig
    from emphasize.models.load import load_pipeline, sampling_defaults

    pipe = load_pipeline("embedded:testbed", "t2i")
    card = sampling_defaults("embedded:testbed", "t2i")
    assert card["attention_factor"] == 2 == card_factor(pipe)  # the 8x8 level the grounding loss trained
    readme = (EMBEDDED_DIR / "testbed" / "README.md").read_text(encoding="utf-8")
    recipe = json.loads(readme.split("```json")[1].split("```")[0])  # the recipe knobs the model card records
    assert recipe["pad_dropout"] == 1.0 and recipe["grounding_weight"] > 0
    sampling = SamplingConfig(steps=2, guidance_scale=5.0, seed=0)
    result = generate(pipe, "a red circle and a (blue square:2)", method="attend-excite", sampling=sampling)
    assert result.image.size == (64, 64) and result.report["guidance"]["steps"]
