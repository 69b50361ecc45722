"""End-to-end behaviour of generate/edit on tiny models: exactness, direction of effects, schedulers, editing rules,
failure handling."""

import types
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from emphasize import api
from emphasize.config import AttendExciteConfig, EditSamplingConfig, ImportanceConfig, SamplingConfig
from emphasize.losses import LOSSES, LossOutput, register_loss
from emphasize.optimize import GuidanceSchedule
from emphasize.sampling.guidance_rules import edit_batch
from tests.conftest import with_scheduler

FAST = SamplingConfig(steps=4, height=64, width=64, seed=3)
EVERY_STEP = ImportanceConfig(schedule=GuidanceSchedule(thresholds=(), stop=1.0))


@pytest.fixture(scope="module")
def peaked_t2i():
    """A tiny pipeline whose cross-attention is peaked and depends on the latent, as in a trained model."""
    from emphasize.models.tiny import TinyConfig, tiny_pipeline

    return tiny_pipeline(TinyConfig(attention_gain=6.0))


def same_image(a, b) -> bool:
    return np.array_equal(np.asarray(a.image), np.asarray(b.image)) and torch.equal(a.latents, b.latents)


def test_importance_with_all_weights_one_is_plain_bit_for_bit(tiny_t2i):
    plain = api.generate(tiny_t2i, "a red circle and a blue square", method="plain", sampling=FAST)
    ones = api.generate(tiny_t2i, "a (red:1) circle and a (blue square:1)", method="importance", sampling=FAST)
    assert same_image(plain, ones)
    assert ones.report["guidance"]["steps"] == []
    embed = api.generate(tiny_t2i, "a (red:1) circle and a (blue square:1)", method="embed", sampling=FAST)
    assert same_image(plain, embed)


def test_weight_moves_attention_share_in_its_direction(peaked_t2i):
    shares = {}
    for w in (0.2, 1.0, 3.0):
        r = api.generate(peaked_t2i, f"a (red:{w}) circle and a blue square", config=EVERY_STEP, sampling=FAST)
        (word,) = r.report["words"]
        assert 0 <= word["attention_share"] <= 1
        shares[w] = word["attention_share"]
    assert shares[0.2] < shares[1.0] < shares[3.0]


def test_report_contents(tiny_t2i):
    r = api.generate(tiny_t2i, "a (red:2) circle and a [blue square]", sampling=FAST)
    rep = r.report
    assert rep["method"] == "importance" and rep["seed"] == 3 and rep["steps"] == 4 and rep["seconds"] > 0
    assert [w["text"] for w in rep["words"]] == ["red", "blue square"]
    assert rep["words"][1]["weight"] == pytest.approx(1 / 1.1)
    assert rep["words"][0]["tokens"] == [2] and rep["words"][1]["tokens"] == [6, 7]
    assert len(rep["guidance"]["steps"]) == 2  # first half of 4 steps
    assert r.heatmaps.shape == (2, 32, 32) and float(r.heatmaps.max()) == pytest.approx(1.0)


def test_attend_excite_refines_at_threshold_steps(tiny_t2i):
    config = AttendExciteConfig(schedule=GuidanceSchedule(max_refinement_steps=3))
    r = api.generate(
        tiny_t2i, "a (red) circle and a (blue) square", method="attend-excite", config=config, sampling=FAST
    )
    steps = r.report["guidance"]["steps"]
    # thresholds at fractions 0, 0.2, 0.4 of 4 steps -> steps 0, 1, 2; updates in the first half (steps 0, 1)
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert [s["refinement_iterations"] for s in steps] == [3, 3, 3]  # random model: peaks stay low, cap reached
    assert steps[0]["step_size"] == pytest.approx(20.0)
    assert steps[1]["step_size"] == pytest.approx(20.0 * (1 - 0.5 / 3) ** 0.5)
    with pytest.raises(ValueError, match="attend-excite needs at least one marked word"):
        api.generate(tiny_t2i, "a red circle", method="attend-excite", sampling=FAST)


class CountingScheduler:
    """Delegates to a scheduler and records whether each `scale_model_input` call was on a loss pass."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def scale_model_input(self, sample, t):
        self.calls.append(sample.requires_grad)
        return self.inner.scale_model_input(sample, t)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_euler_and_non_square_apply_scale_model_input_on_the_loss_pass(tiny_t2i):
    euler = with_scheduler(tiny_t2i, "euler")
    counting = CountingScheduler(euler.scheduler)
    pipe = types.SimpleNamespace(**{**vars(euler), "scheduler": counting})
    sampling = SamplingConfig(steps=4, height=48, width=80, seed=1)
    r = api.generate(pipe, "a (red:2) circle", sampling=sampling)
    assert r.image.size == (80, 48)
    assert r.latents.shape == (1, 4, 24, 40)
    assert sum(counting.calls) == 2  # one loss pass per guided step, each through scale_model_input
    assert r.report["scheduler"] == "CountingScheduler"  # the report names the scheduler object it was given
    assert all(np.isfinite(s["loss"]) for s in r.report["guidance"]["steps"])


def test_reweight_changes_the_image_and_the_reported_share(peaked_t2i):
    plain = api.generate(peaked_t2i, "a (red:1) circle", method="reweight", sampling=FAST)
    heavy = api.generate(peaked_t2i, "a (red:4) circle", method="reweight", sampling=FAST)
    assert not same_image(plain, heavy)
    assert heavy.report["words"][0]["attention_share"] > plain.report["words"][0]["attention_share"]


def test_guided_batch_rules_match_the_published_formulas():
    cond, uncond = torch.randn(1, 77, 8), torch.randn(1, 77, 8)
    image = torch.randn(1, 4, 4, 4)
    e = torch.randn(3, 4, 4, 4)
    ip2p = edit_batch(cond, uncond, image, "ip2p", 7.5, 1.5)
    assert torch.equal(ip2p.embeds, torch.cat([cond, uncond, uncond]))
    assert torch.equal(ip2p.image_latents[2], torch.zeros(4, 4, 4))
    torch.testing.assert_close(ip2p.combine(e), e[2:] + 7.5 * (e[:1] - e[1:2]) + 1.5 * (e[1:2] - e[2:]))
    idf = edit_batch(cond, uncond, image, "instructdiffusion", 5.0, 1.25)
    assert torch.equal(idf.embeds, torch.cat([cond, uncond, cond])) and idf.text_rows == (0, 2)
    expected = 0.5 * (e[1:2] + e[2:]) + 5.0 * (e[:1] - e[1:2]) + 1.25 * (e[:1] - e[2:])
    torch.testing.assert_close(idf.combine(e), expected)
    # s_T = s_I = 0.5 gives the pure conditional prediction under InstructDiffusion's rule
    half = edit_batch(cond, uncond, image, "instructdiffusion", 0.5, 0.5)
    torch.testing.assert_close(half.combine(e), e[:1])


@pytest.mark.parametrize("rule", ["ip2p", "instructdiffusion"])
def test_edit_runs_with_both_rules_on_an_8_channel_unet(tiny_edit, rule):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8))
    sampling = EditSamplingConfig(steps=3, guidance_rule=rule, seed=2)
    r = api.edit(tiny_edit, image, "make the (circle:2) green", sampling=sampling)
    assert r.image.size == (100, 70)  # worked at the native side (64) for the longer side, and fit back
    assert (r.report["width"], r.report["height"]) == (64, 44)
    assert r.report["output_size"] == [100, 70]
    assert r.report["guidance_rule"] == rule
    assert len(r.report["guidance"]["steps"]) == 2
    assert 0 < r.report["words"][0]["attention_share"] < 1
    other = api.edit(tiny_edit, image, "make the (circle:2) green", sampling=sampling, method="plain")
    assert not same_image(r, other)


def test_edit_can_keep_the_working_size(tiny_edit):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8))
    sampling = EditSamplingConfig(steps=2, seed=2, restore_size=False)
    r = api.edit(tiny_edit, image, "make the circle green", sampling=sampling, method="plain")
    assert r.image.size == (64, 44)
    assert r.report["output_size"] == [64, 44]
    wide = api.edit(tiny_edit, image, "make it green", sampling=replace(sampling, width=96), method="plain")
    assert wide.image.size == (96, 64)  # a given side is used, the other keeps the aspect ratio (67.2 -> 64)


def test_working_size_rule():
    assert api.working_size((4000, 3000), 8, 512) == (512, 384)  # InstructPix2Pix: longer side -> native
    assert api.working_size((1, 1), 8, 512) == (512, 512)
    assert api.working_size((100, 70), 4, 64, height=40) == (56, 40)
    assert api.working_size((100, 70), 4, 64, height=40, width=48) == (48, 40)


def test_edit_rejects_a_text_to_image_unet(tiny_t2i):
    from PIL import Image

    with pytest.raises(ValueError, match="in_channels=4"):
        api.edit(tiny_t2i, Image.new("RGB", (64, 64)), "make it red")


@register_loss("test-nan")
def _nan_loss(maps, groups, weights, num_tokens, config):
    nan = maps.sum() * float("nan")
    return LossOutput(loss=nan.reshape(1), peaks=torch.zeros(1, len(groups)), masses=torch.zeros(1, len(groups)))


@register_loss("test-interrupt")
def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_a_registered_loss_is_named_by_the_config_and_unknown_ones_are_refused():
    assert "test-nan" in LOSSES
    with pytest.raises(ValueError, match="objective='nope' is not a registered loss"):
        ImportanceConfig(objective="nope")


def test_non_finite_loss_stops_guidance_and_sampling_goes_on(tiny_t2i):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = api.generate(tiny_t2i, "a (red:2) circle", config=ImportanceConfig(objective="test-nan"), sampling=FAST)
    assert "guidance stopped" in r.report["guidance"]["stopped_early"]
    assert any("guidance stopped" in str(w.message) for w in caught)
    assert np.isfinite(np.asarray(r.image, dtype=float)).all()


def test_interrupt_mid_sampling_restores_processors_and_grad_flags(tiny_t2i):
    before = dict(tiny_t2i.unet.attn_processors)
    flags = [p.requires_grad for p in tiny_t2i.unet.parameters()]
    with pytest.raises(KeyboardInterrupt):
        api.generate(tiny_t2i, "a (red:2) circle", config=ImportanceConfig(objective="test-interrupt"), sampling=FAST)
    assert all(tiny_t2i.unet.attn_processors[k] is v for k, v in before.items())
    assert [p.requires_grad for p in tiny_t2i.unet.parameters()] == flags


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sampling=SamplingConfig(steps=2, height=66, width=64)), "height=66 must be a positive multiple of 4"),
        (dict(method="magic"), "unknown method 'magic'"),
    ],
)
def test_bad_arguments_name_the_value(tiny_t2i, kwargs, match):
    with pytest.raises(ValueError, match=match):
        api.generate(tiny_t2i, "a red circle", **kwargs)


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="steps=0"):
        SamplingConfig(steps=0)
    with pytest.raises(ValueError, match="stop=1.5"):
        GuidanceSchedule(stop=1.5)
    with pytest.raises(ValueError, match="guidance_rule='pix'"):
        EditSamplingConfig(guidance_rule="pix")


def test_attend_excite_can_take_the_head_noun_of_each_marked_phrase(tiny_t2i):
    sampling = SamplingConfig(steps=2, seed=0)
    every = api.generate(tiny_t2i, "a (red circle) and a cat", method="attend-excite", sampling=sampling)
    last = api.generate(tiny_t2i, "a (red circle) and a cat", method="attend-excite", sampling=sampling,
                        config=AttendExciteConfig(subject_tokens="last"))  # fmt: skip
    assert len(every.report["guidance"]["steps"][0]["peaks"]) == 2  # `red` and `circle` are subjects
    assert len(last.report["guidance"]["steps"][0]["peaks"]) == 1  # only `circle`
    with pytest.raises(ValueError, match="subject_tokens='first'"):
        AttendExciteConfig(subject_tokens="first")


def test_the_report_is_the_typed_run_report_serialised(tiny_t2i):
    import json

    from emphasize.report import RunReport, WordReport

    result = api.generate(tiny_t2i, "a (red:2) circle and a [blue] square", method="importance",
                          sampling=SamplingConfig(steps=2), record_attention=True)  # fmt: skip
    record = result.record
    assert isinstance(record, RunReport) and all(isinstance(w, WordReport) for w in record.words)
    assert [(w.text, w.weight) for w in record.words] == [("red", 2.0), ("blue", pytest.approx(1 / 1.1))]
    assert record.guidance_steps and record.method == "importance" and record.steps == 2
    assert result.report == record.to_dict() and json.dumps(result.report) == json.dumps(record.to_dict())
    keys = list(result.report)
    assert keys[-8:] == ["seed", "steps", "scheduler", "method", "config", "words", "guidance", "seconds"]
