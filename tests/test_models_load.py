"""`emphasize.models.load`: local directories, cached hub ids, LDM single-file checkpoints, embedded models, errors.

Everything runs on tiny random models; a socket guard makes any network access fail the test.
"""

from __future__ import annotations

import pickle
import shutil
import socket

import pytest
import torch

from emphasize.models import load as load_mod
from emphasize.models.load import ModelLoadError, load_clip, load_pipeline

try:  # tests/ as a package (tests/__init__.py) or as a plain directory on sys.path
    from tests.ldm_export import pipeline_to_ldm, save_checkpoint, unet_to_ldm, vae_to_ldm
except ModuleNotFoundError:
    from ldm_export import pipeline_to_ldm, save_checkpoint, unet_to_ldm, vae_to_ldm

KIND = {4: "t2i", 8: "edit"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail loudly on any attempt to open a connection (the hub included)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def pipes(tiny_t2i, tiny_edit):
    return {4: tiny_t2i, 8: tiny_edit}


@pytest.fixture(scope="module")
def saved(pipes, tmp_path_factory):
    """The tiny pipelines as diffusers directories (also the `config=` for their single-file checkpoints)."""
    out = {}
    for channels, pipe in pipes.items():
        out[channels] = tmp_path_factory.mktemp(f"tiny{channels}")
        pipe.save_pretrained(out[channels])
    return out


def assert_same_weights(a, b):
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def assert_same_output(a, b):
    """One UNet forward on fixed inputs; equal weights give equal outputs (a tolerance only for the attention
    processor, which other tests may swap on the shared fixtures and restore)."""
    torch.testing.assert_close(unet_output(a), unet_output(b), rtol=1e-5, atol=1e-6)


def unet_output(pipe) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, pipe.unet.config.in_channels, 16, 16, generator=gen)
    context = torch.randn(1, 5, pipe.unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        return pipe.unet(sample, 10, encoder_hidden_states=context).sample


# ----------------------------------------------------------------------------------------------------------------
# diffusers directories and hub ids


@pytest.mark.parametrize("channels", [4, 8])
def test_local_dir_round_trip(pipes, saved, channels):
    pipe = load_pipeline(str(saved[channels]), KIND[channels])
    assert type(pipe) is type(pipes[channels])
    assert pipe.safety_checker is None
    assert_same_weights(pipe, pipes[channels])
    assert_same_output(pipe, pipes[channels])


def test_local_dir_scheduler_override_and_dtype(saved):
    pipe = load_pipeline(saved[4], "t2i", scheduler="euler", dtype=torch.bfloat16)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.bfloat16


@pytest.mark.parametrize("channels", [4, 8])
def test_local_dir_wrong_kind(saved, channels):
    wrong = KIND[12 - channels]
    with pytest.raises(ModelLoadError, match=rf"{saved[channels]}.*{channels} input channels.*{wrong!r} needs"):
        load_pipeline(str(saved[channels]), wrong)


def test_missing_model_files(saved, tmp_path):
    (tmp_path / "unet").mkdir()
    torch.save({}, tmp_path / "model.ckpt")
    with pytest.raises(ModelLoadError, match=r"no model_index\.json.*pass the file itself") as err:
        load_pipeline(str(tmp_path), "t2i")
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)

    broken = tmp_path / "broken"
    shutil.copytree(saved[4], broken)
    for f in (broken / "unet").glob("diffusion_pytorch_model.*"):
        f.unlink()
    with pytest.raises(ModelLoadError, match=r"broken: unet/ has no weights"):
        load_pipeline(str(broken), "t2i")
    no_vae = tmp_path / "no_vae"
    shutil.copytree(saved[4], no_vae, ignore=shutil.ignore_patterns("vae"))
    with pytest.raises(ModelLoadError, match=r"no_vae: missing the vae/ folder"):
        load_pipeline(str(no_vae), "t2i")


def test_corrupt_weights_in_dir(saved, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(saved[4], broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match=r"corrupt: cannot load the pipeline") as err:
        load_pipeline(str(broken), "t2i")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["./foo", "/definitely/not/here", "nope.ckpt", "org/model.safetensors", "foo"])
def test_nonexistent_path(name):
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        load_pipeline(name, "t2i")


def test_hub_id_not_cached(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as err:
        load_pipeline("runwayml/stable-diffusion-v1-5", "t2i")
    msg = str(err.value)
    assert "runwayml/stable-diffusion-v1-5 is not in the local Hugging Face cache" in msg
    assert str(tmp_path / "hub") in msg and "download runwayml/stable-diffusion-v1-5" in msg and "\n" not in msg
    with pytest.raises(ModelLoadError, match="openai/clip-vit-large-patch14 is not in the local"):
        load_clip("openai/clip-vit-large-patch14")


def test_hub_id_cached(pipes, saved, monkeypatch, tmp_path):
    """A cache entry in huggingface_hub's layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--emphasize-test--tiny-ip2p"
    shutil.copytree(saved[8], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    pipe = load_pipeline("emphasize-test/tiny-ip2p", "edit")
    assert_same_weights(pipe, pipes[8])
    with pytest.raises(ModelLoadError, match=r"emphasize-test/tiny-ip2p: the UNet has 8 input channels"):
        load_pipeline("emphasize-test/tiny-ip2p", "t2i")


# ----------------------------------------------------------------------------------------------------------------
# single-file LDM checkpoints

SINGLE_FILE_CASES = [  # channels, suffix, LDM buffers, CLIP under `.text_model.`, `.ckpt` wrapped in `state_dict`
    (4, ".safetensors", True, True, False),  # Stable Diffusion 1.x
    (4, ".ckpt", False, False, False),
    (8, ".safetensors", False, False, False),
    (8, ".ckpt", False, True, True),  # InstructDiffusion: parameters only, `{'state_dict': ...}`
]  # a wrapped `.ckpt` with buffers and Lightning objects: test_ckpt_with_pickled_objects_loads_without_running_them


@pytest.mark.parametrize(("channels", "suffix", "buffers", "text_model", "wrap"), SINGLE_FILE_CASES)
def test_single_file(pipes, saved, tmp_path, channels, suffix, buffers, text_model, wrap):
    sd = pipeline_to_ldm(pipes[channels], buffers=buffers, text_model_prefix=text_model)
    path = save_checkpoint(sd, tmp_path / f"model{suffix}", wrap=wrap)
    pipe = load_pipeline(str(path), KIND[channels], config=saved[channels])
    assert type(pipe) is type(pipes[channels])
    assert_same_weights(pipe, pipes[channels])
    assert_same_output(pipe, pipes[channels])
    assert pipe.tokenizer("a red circle").input_ids == pipes[channels].tokenizer("a red circle").input_ids
    assert type(pipe.scheduler) is type(pipes[channels].scheduler)


def test_single_file_prefers_ema_weights(pipes, saved, tmp_path):
    path = save_checkpoint(pipeline_to_ldm(pipes[4], ema_offset=1.0), tmp_path / "ema.safetensors")
    pipe = load_pipeline(str(path), "t2i", config=saved[4])
    w = "conv_in.weight"
    assert torch.equal(pipe.unet.state_dict()[w], pipes[4].unet.state_dict()[w] + 1.0)


def test_single_file_wrong_kind_and_config(pipes, saved, tmp_path):
    path = save_checkpoint(pipeline_to_ldm(pipes[8]), tmp_path / "ip2p.ckpt")
    with pytest.raises(ModelLoadError, match=r"ip2p\.ckpt: the UNet has 8 input channels.*'t2i' needs 4"):
        load_pipeline(str(path), "t2i", config=saved[4])
    with pytest.raises(ModelLoadError, match=r"8 input channels but the config in .* has 4"):
        load_pipeline(str(path), "edit", config=saved[4])
    # the default configs are SD 1.5-sized: a tiny checkpoint does not fit them, and the error says so
    with pytest.raises(ModelLoadError, match=r"the UNet does not match the architecture in .*sd15-edit"):
        load_pipeline(str(path), "edit")
    with pytest.raises(ValueError, match="config= only applies to single-file"):
        load_pipeline(str(saved[8]), "edit", config=saved[8])


def test_corrupt_checkpoints(pipes, saved, tmp_path):
    good = tmp_path / "good.ckpt"
    save_checkpoint(pipeline_to_ldm(pipes[4]), good)
    cases = {
        "garbage.safetensors": b"\x13\x37" * 100,
        "garbage.ckpt": b"not a pickle at all" * 10,
        "truncated.ckpt": good.read_bytes()[: good.stat().st_size // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelLoadError, match=rf"{name}: cannot read the checkpoint") as err:
            load_pipeline(str(tmp_path / name), "t2i", config=saved[4])
        assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    (tmp_path / "lfs.ckpt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    with pytest.raises(ModelLoadError, match="git-lfs pointer"):
        load_pipeline(str(tmp_path / "lfs.ckpt"), "t2i")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="unsupported file type"):
        load_pipeline(str(tmp_path / "notes.txt"), "t2i")
    save_checkpoint({"foo.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion checkpoint in the LDM layout"):
        load_pipeline(str(tmp_path / "other.safetensors"), "t2i")
    no_vae = {k: v for k, v in pipeline_to_ldm(pipes[4]).items() if not k.startswith("first_stage_model.")}
    save_checkpoint(no_vae, tmp_path / "no_vae.safetensors")
    with pytest.raises(ModelLoadError, match=r"no_vae\.safetensors: the checkpoint has no weights for the VAE"):
        load_pipeline(str(tmp_path / "no_vae.safetensors"), "t2i", config=saved[4])
    partial = pipeline_to_ldm(pipes[4])
    del partial["first_stage_model.decoder.conv_out.weight"]
    save_checkpoint(partial, tmp_path / "partial.safetensors")
    with pytest.raises(
        ModelLoadError, match=r"partial\.safetensors: .*no weights for the VAE decoder\.conv_out\.weight"
    ):
        load_pipeline(str(tmp_path / "partial.safetensors"), "t2i", config=saved[4])


CALLS: list[str] = []


def _record(what):
    CALLS.append(what)
    return what


class _Callback:  # stands in for Lightning's ModelCheckpoint pickled into Stable Diffusion's .ckpt files
    def __init__(self):
        self.best = 0.5


class _Sneaky:
    def __reduce__(self):
        return (_record, ("code from the checkpoint ran",))


def test_ckpt_with_pickled_objects_loads_without_running_them(pipes, saved, tmp_path):
    extra = {"callbacks": {_Callback: _Callback()}, "sneaky": _Sneaky(), "global_step": 470000}
    path = save_checkpoint(pipeline_to_ldm(pipes[4]), tmp_path / "lightning.ckpt", extra=extra)
    with pytest.raises(pickle.UnpicklingError):  # plain weights-only loading refuses such files
        torch.load(path, weights_only=True)
    CALLS.clear()
    pipe = load_pipeline(str(path), "t2i", config=saved[4])
    assert CALLS == []
    assert_same_weights(pipe, pipes[4])


# ----------------------------------------------------------------------------------------------------------------
# embedded models, CLIP


def test_embedded_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(load_mod, "EMBEDDED_DIR", tmp_path / "embedded")
    for kind in ("t2i", "edit"):
        with pytest.raises(ModelLoadError, match=r"embedded .* model is not installed .*pass --model"):
            load_pipeline(None, kind)
    with pytest.raises(ModelLoadError, match=r"embedded world CLIP is not installed"):
        load_clip(None)
    with pytest.raises(ValueError, match="kind must be one of"):
        load_pipeline(None, "inpaint")


def test_load_clip_local_dir(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from emphasize.models.tokenizer import load_clip_tokenizer

    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path / "clip")
    loaded = load_clip(str(tmp_path / "clip"))  # no tokenizer files: CLIP's BPE shipped with the package
    ids = load_clip_tokenizer()("a red circle", return_tensors="pt").input_ids
    assert loaded.tokenizer("a red circle", return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(loaded.model.text_model(input_ids=ids)[1], clip.text_model(input_ids=ids)[1])
    load_clip_tokenizer().save_pretrained(tmp_path / "clip")
    assert load_clip(tmp_path / "clip").tokenizer("a red circle").input_ids == ids[0].tolist()
    (tmp_path / "clip" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"clip: no weights"):
        load_clip(str(tmp_path / "clip"))


# ----------------------------------------------------------------------------------------------------------------
# the shipped SD 1.5 configs and the LDM key mapping at full size (meta tensors: no memory, no weights)

V1_INFERENCE = {  # Stable Diffusion's configs/stable-diffusion/v1-inference.yaml (InstructDiffusion: in_channels 8)
    "model": {
        "params": {
            "scale_factor": 0.18215,
            "unet_config": {
                "params": {
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_heads": 8,
                    "transformer_depth": 1,
                    "context_dim": 768,
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


@pytest.mark.parametrize("kind", ["t2i", "edit"])
def test_shipped_configs_are_sd15(kind):
    import copy

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    config_dir = load_mod.SINGLE_FILE_CONFIGS[kind]
    original = copy.deepcopy(V1_INFERENCE)
    original["model"]["params"]["unet_config"]["params"]["in_channels"] = load_mod.KINDS[kind]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir, subfolder="text_encoder"))

    # what diffusers derives from the original LDM config is what we ship
    for ours, derived in (
        (unet.config, create_unet_diffusers_config_from_ldm(original, {})),
        (vae.config, create_vae_diffusers_config_from_ldm(original, {})),
    ):
        for key, value in derived.items():
            got = ours[key]
            assert (list(got) if isinstance(got, tuple) else got) == value, key
    # parameter counts of SD 1.5 / InstructPix2Pix (8-channel conv_in) and CLIP ViT-L/14's text tower
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == {"t2i": 859_520_964, "edit": 859_532_484}[kind]
    assert (count(vae), count(text)) == (83_653_863, 123_060_480)

    # the test exporter is the exact inverse of diffusers' converters at full size
    for model, export, convert, prefix in (
        (unet, unet_to_ldm, convert_ldm_unet_checkpoint, "model.diffusion_model."),
        (vae, vae_to_ldm, convert_ldm_vae_checkpoint, "first_stage_model."),
    ):
        sd = model.state_dict()
        ldm = {prefix + k: v for k, v in export(sd, model.config).items()}
        back = convert(ldm, model.config)
        assert back.keys() == sd.keys() and all(back[k].shape == sd[k].shape for k in sd)
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in {
        "model.diffusion_model." + k for k in unet_to_ldm(unet.state_dict(), unet.config)
    }


def test_embedded_names_resolve_in_the_package_and_unknown_ones_are_one_line():
    assert load_mod.model_folder("embedded:t2i", "t2i") == load_mod.EMBEDDED_DIR / "t2i"
    assert load_mod.model_folder(None, "edit") == load_mod.EMBEDDED_DIR / "edit"
    assert load_mod.sampling_defaults("embedded:t2i", "t2i") == load_mod.sampling_defaults(None, "t2i") != {}
    with pytest.raises(ModelLoadError, match=r"embedded:nope: no such embedded model; valid: embedded:t2i, "):
        load_pipeline("embedded:nope", "t2i")
    assert load_pipeline("embedded:t2i", "t2i").unet.config.in_channels == 4
