"""Hostile and careless input (issue 15): every case gets one line `emphasize: error: ...` naming the value, exit
code 2, no file, and is caught before a model loads where the check does not need the model."""

from __future__ import annotations

import json
import os
import stat
import types

import numpy as np
import pytest
import torch
from PIL import Image

from emphasize import api, cli
from emphasize.config import SamplingConfig

MISSING = "/nonexistent/model/dir"  # a model that would fail to load: these checks must come first


@pytest.fixture(scope="module")
def t2i_dir(tmp_path_factory, tiny_t2i):
    path = tmp_path_factory.mktemp("tiny-t2i")
    tiny_t2i.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def edit_dir(tmp_path_factory, tiny_edit):
    path = tmp_path_factory.mktemp("tiny-edit")
    tiny_edit.save_pretrained(path)
    return str(path)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps 0 is out of range"),
        (["--width", "0"], "--width 0 is out of range"),
        (["--height", "-16"], "--height -16 is out of range"),
        (["--seed", str(2**70)], f"--seed {2**70} is out of range; valid: 0 to 2^63 - 1"),
        (["--guidance-scale", "nan"], "--guidance-scale nan is out of range"),
        (["--scale-factor", "1e300"], "--scale-factor 1e+300 is out of range"),
        (["--max-pixels", "0"], "--max-pixels 0 is out of range"),
        (["--out", "a.png", "--save-attention", "a.png"], "--out and --save-attention name the same file"),
        (["--save-attention", "emphasize-importance-0.png"], "--out and --save-attention name the same file"),
        (["--method", "attend-excite", "--prompt-override"], ""),
    ],
)
def test_bad_numbers_and_outputs_fail_before_the_model_loads(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    if "--prompt-override" in argv:  # attend-excite without a marked word
        code, _, err = run(capsys, "generate", "a red circle", "--method", "attend-excite", "--model", MISSING)
        message = "attend-excite needs at least one marked word"
    else:
        code, _, err = run(capsys, "generate", "a (red:2) circle", "--model", MISSING, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("emphasize: error:"), err
    assert message in err and MISSING not in err
    assert list(tmp_path.iterdir()) == []


def test_sizes_and_the_pixel_budget_are_checked_before_loading(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "a red circle", "--width", "100000", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "above the budget of 16384" in err and "--max-pixels" in err
    code, _, err = run(capsys, "generate", "a red circle", "--width", "72", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "--width 72 must be a multiple of 16" in err
    assert list(tmp_path.iterdir()) == []


def test_zero_guidance_scale_and_explicit_steps_are_honoured(capsys, tmp_path, t2i_dir):
    report = tmp_path / "r.json"
    code, _, err = run(capsys, "generate", "a red circle", "--model", t2i_dir, "--guidance-scale", "0",
                       "--steps", "3", "--method", "plain", "--out", str(tmp_path / "a.png"), "--report",
                       str(report), "--quiet")  # fmt: skip
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["guidance_scale"] == 0.0 and data["steps"] == 3


def test_unwritable_output_folder_is_one_line(capsys, tmp_path):
    # /proc takes no new files, even for root (for whom permission bits say every folder is writable)
    code, _, err = run(capsys, "generate", "a red circle", "--out", "/proc/emphasize-test.png", "--model", MISSING)
    assert code == 2 and err.count("\n") == 1 and err.startswith("emphasize: error: --out '/proc/"), err
    assert "cannot" in err and MISSING not in err


def test_a_failed_write_takes_the_earlier_outputs_with_it(tmp_path, tiny_t2i):
    result = api.generate(tiny_t2i, "a (red:2) circle", method="plain", sampling=SamplingConfig(steps=2))
    out = tmp_path / "a.png"
    args = types.SimpleNamespace(out=str(out), report=str(tmp_path / "gone" / "r.json"), save_attention=None,
                                 method="plain", seed=0)  # fmt: skip
    with pytest.raises(OSError):
        cli._write_outputs(args, result, "params", "model")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_outputs_get_the_umask_permissions_and_stale_temps_are_cleaned(tmp_path):
    from emphasize.visualize import TEMP_MARK, save_png

    stale = tmp_path / f".a.png{TEMP_MARK}999999999-x.png"  # a writer that no longer exists
    stale.write_bytes(b"partial")
    umask = os.umask(0o022)
    try:
        save_png(Image.new("RGB", (4, 4)), tmp_path / "a.png")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    gradient = np.linspace(0, 65535, 64 * 8).reshape(8, 64).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(cli._read_image(str(path)))
    assert rgb.shape == (8, 64, 3) and rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    assert len(np.unique(rgb[..., 0])) > 200 and (np.diff(rgb[0, :, 0].astype(int)) >= 0).all()


def test_a_prompt_over_the_token_limit_warns_on_one_line(capsys, tmp_path, t2i_dir):
    prompt = "a red circle and a blue square " * 12
    code, _, err = run(capsys, "generate", prompt, "--model", t2i_dir, "--steps", "2", "--method", "plain",
                       "--out", str(tmp_path / "a.png"), "--quiet")  # fmt: skip
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("emphasize: warning:")]
    assert len(lines) == 1 and "the model reads 77" in lines[0]


@pytest.mark.parametrize("method", ["importance", "attend-excite"])
def test_a_16_px_image_has_1x1_attention_maps_and_works(capsys, tmp_path, t2i_dir, method):
    code, _, err = run(capsys, "generate", "a (red:2) circle", "--model", t2i_dir, "--steps", "2", "--width", "16",
                       "--height", "16", "--method", method, "--out", str(tmp_path / "a.png"), "--quiet")  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "a.png").size == (16, 16)


def test_edit_of_a_tiny_and_of_a_large_image_works_at_the_native_size(capsys, tmp_path, edit_dir):
    for size in ((1, 1), (1000, 750)):
        src = tmp_path / f"in{size[0]}.png"
        Image.new("RGB", size, (200, 30, 30)).save(src)
        out, report = tmp_path / f"out{size[0]}.png", tmp_path / f"r{size[0]}.json"
        code, _, err = run(capsys, "edit", str(src), "make the (circle:2) green", "--model", edit_dir, "--steps", "2",
                           "--out", str(out), "--report", str(report), "--quiet")  # fmt: skip
        assert code == 0, err
        data = json.loads(report.read_text())
        assert max(data["width"], data["height"]) == 64 and Image.open(out).size == size


def test_an_sdxl_directory_is_refused_by_name(capsys, tmp_path):
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModel"],
    }
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    code, _, err = run(capsys, "generate", "a cat", "--model", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert code == 2 and "StableDiffusionXLPipeline" in err and "TypeError" not in err


def test_a_huge_guidance_step_never_writes_an_image_from_non_finite_latents(capsys, tmp_path, t2i_dir, tiny_t2i):
    from emphasize.config import ImportanceConfig
    from emphasize.optimize import GuidanceSchedule

    config = ImportanceConfig(schedule=GuidanceSchedule(scale_factor=1e38, thresholds=()))
    with pytest.raises(ValueError, match="NaN/inf latents .* no image was written"):
        api.generate(tiny_t2i, "a (red:3) circle", config=config, sampling=SamplingConfig(steps=3))
    overflow = ImportanceConfig(schedule=GuidanceSchedule(scale_factor=1e300, thresholds=()))
    with pytest.warns(RuntimeWarning, match="guidance stopped"):  # an update that overflows stops guidance
        r = api.generate(tiny_t2i, "a (red:3) circle", config=overflow, sampling=SamplingConfig(steps=3))
    assert torch.isfinite(r.latents).all() and "step size" in r.report["guidance"]["stopped_early"]
    code, _, err = run(capsys, "generate", "a (red:3) circle", "--model", t2i_dir, "--steps", "3", "--scale-factor",
                       "1e6", "--out", str(tmp_path / "a.png"), "--quiet")  # fmt: skip
    assert (code == 0 and np.asarray(Image.open(tmp_path / "a.png")).std() > 0) or (
        code == 2 and "no image was written" in err and not (tmp_path / "a.png").exists()
    )


def test_sgool_ctrl_c_returns_the_best_latent_so_far(tiny_t2i):
    from emphasize.models.load import load_clip
    from emphasize.sgool import SGOOLConfig, optimize_initial_latent

    calls = []

    def saliency(images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return torch.ones(images.shape[0], 1, *images.shape[-2:])

    clip = load_clip(None)
    config = SGOOLConfig(optimization_steps=5, sampling_steps=2)
    result = optimize_initial_latent(tiny_t2i, "a red circle", clip.model, clip.tokenizer, saliency, config,
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result.report.interrupted and "interrupted" in result.report.stopped
    assert result.report.best_step == 0 and len(result.report.losses) == 1 and result.image.shape[0] == 1
