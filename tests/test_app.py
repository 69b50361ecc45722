"""The app without a browser: prompt <-> sliders, knobs from the registry, and the request handlers on the embedded
models (few steps, small sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from emphasize.app import handlers as h
from emphasize.app.knobs import build_config, knobs
from emphasize.app.sliders import MAX_SLIDERS, set_weight, slider_state
from emphasize.methods import config_fields, get_method, method_names
from emphasize.prompts import PromptSyntaxError, parse_prompt

STEPS = 3  # sampling steps of every handler test (the embedded models are 64 px)
PROMPT = "a (red:1.5) circle and a (blue:0.8) square"


# ---------------------------------------------------------------------------------------------------------------
# sliders


@pytest.mark.parametrize(
    "prompt",
    [
        PROMPT,
        "a (big cat+) and a [frog] on (a (red:1.5) mat:1.2)",
        "encircle the man's (left shoulder:2) in red",
        "a well-known x-ray of C\\+\\+ (code)1.3 and \\(literal\\) text",
        "two cats, a cat-",
    ],
)
def test_every_slider_round_trips_through_the_prompt(prompt):
    state = slider_state(prompt)
    assert state.error is None and state.sliders
    before = parse_prompt(prompt)
    for k, slider in enumerate(state.sliders):
        written = set_weight(prompt, k, 2.35)
        after = parse_prompt(written)
        assert after.text == before.text  # the model reads the same words
        moved = {(s.start, s.end): s.weight for s in after.spans}
        assert moved[(slider.start, slider.end)] == 2.35
        for span in before.spans:  # every other weight is kept exactly
            if (span.start, span.end) != (slider.start, slider.end):
                assert moved[(span.start, span.end)] == span.weight
        again = slider_state(written)  # the sliders read back what was written, in the same places
        assert [(s.start, s.end) for s in again.sliders] == [(s.start, s.end) for s in state.sliders]
        assert again.sliders[k].weight == 2.35 and again.sliders[k].marked


def test_sliders_list_marked_spans_and_content_words_in_prompt_order():
    state = slider_state("a (red:1.5) circle and a [blue] square, cat and cat+")
    assert [s.label for s in state.sliders] == ["red", "circle", "blue", "square", "cat", "cat #2"]
    assert [s.marked for s in state.sliders] == [True, False, True, False, False, True]
    assert state.sliders[0].weight == 1.5 and state.sliders[1].weight == 1.0
    assert state.weights == {"red": 1.5, "blue": pytest.approx(1 / 1.1), "cat #2": pytest.approx(1.1)}
    assert slider_state("a (cat:7)").sliders[0].maximum == 7  # a typed weight above the slider's end widens it


def test_too_many_words_keep_the_marked_ones_and_count_the_rest():
    words = " ".join(f"w{k}" for k in range(MAX_SLIDERS + 3)) + " (last:2)"
    state = slider_state(words)
    assert len(state.sliders) == MAX_SLIDERS and state.hidden == 4
    assert state.sliders[-1].label == "last" and state.sliders[-1].weight == 2


@pytest.mark.parametrize(
    ("prompt", "column"), [("a (red circle", 3), ("a red) circle", 6), ("a (red:-1) circle", 8), ("(cat:nan)", 6)]
)
def test_a_parse_error_shows_its_column_and_a_caret(prompt, column):
    state = slider_state(prompt)
    assert state.sliders == () and state.column == column
    message, line, caret = state.error.split("\n")
    assert f"column {column}" in message and line == prompt and caret == " " * (column - 1) + "^"
    with pytest.raises(PromptSyntaxError):
        set_weight(prompt, 0, 1.5)


def test_sliders_module_is_pure():
    code = "import sys, emphasize.app.sliders\nprint([m for m in ('torch', 'gradio', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_set_weight_refuses_a_missing_slider_and_a_bad_weight():
    with pytest.raises(ValueError, match="slider 9 does not exist"):
        set_weight(PROMPT, 9, 1.0)
    with pytest.raises(ValueError, match=r"must be in \[0, 100\]"):
        set_weight(PROMPT, 0, 101)
    assert set_weight(PROMPT, 0, 1.2345678) == "a (red:1.235) circle and a (blue:0.8) square"


# ---------------------------------------------------------------------------------------------------------------
# knobs


def _scalar_fields(method: str) -> list[str]:
    scalar = {"int", "float", "bool", "str", "int | None", "float | None"}
    return [name for name, type_name, _ in config_fields(method) if str(type_name) in scalar]


@pytest.mark.parametrize("method", method_names())
def test_knobs_are_every_scalar_field_of_the_methods_config(method):
    spec = knobs(method)
    assert [k.name for k in spec] == _scalar_fields(method)
    config_class = get_method(method).config_class
    assert build_config(method, {k.name: k.default for k in spec}) == config_class()


def test_knob_values_build_the_config_and_bad_ones_name_the_knob():
    config = build_config("importance", {"schedule.scale_factor": "5", "attention_factor": "", "loss.smooth": False})
    assert config.schedule.scale_factor == 5.0 and config.attention_factor is None and config.loss.smooth is False
    assert build_config("attend-excite", {"attention_factor": 2.0}).attention_factor == 2
    with pytest.raises(ValueError, match="schedule.stop"):
        build_config("importance", {"schedule.stop": 1.5})
    with pytest.raises(ValueError, match="whole number"):
        build_config("sgool", {"optimization_steps": 2.5})
    with pytest.raises(ValueError, match="has no knob 'nope'"):
        build_config("embed", {"nope": 1})
    assert knobs("sgool", {"optimization_steps": 7})[0].default == 7  # app defaults replace the config's


# ---------------------------------------------------------------------------------------------------------------
# handlers on the embedded models


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    torch.set_num_threads(1)
    s = h.ModelSession(workdir=tmp_path_factory.mktemp("app"))
    yield s
    s.close()


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_plain_is_cached_and_equals_a_fresh_plain_run(session):
    import emphasize

    first = session.text_to_image(h.TextToImageRequest(PROMPT, method="embed", steps=STEPS, seed=3))
    moved = session.text_to_image(
        h.TextToImageRequest(set_weight(PROMPT, 0, 2.5), method="embed", steps=STEPS, seed=3)
    )
    assert not first.plain_cached and moved.plain_cached
    assert moved.plain is first.plain
    fresh = emphasize.generate(
        session.pipe("t2i"), PROMPT, method="plain",
        sampling=emphasize.SamplingConfig(steps=STEPS, guidance_scale=5.0, seed=3),
    )  # fmt: skip
    assert np.array_equal(_pixels(fresh.image), _pixels(moved.plain.image))
    # the method reads the weights: another weight, another image; plain does not
    assert not np.array_equal(_pixels(first.method.image), _pixels(moved.method.image))
    other_seed = session.text_to_image(h.TextToImageRequest(PROMPT, method="embed", steps=STEPS, seed=4))
    assert not other_seed.plain_cached


def test_a_pair_has_heatmaps_shares_chart_report_and_downloads(session):
    result = session.text_to_image(h.TextToImageRequest(PROMPT, method="reweight", steps=STEPS))
    assert not np.array_equal(_pixels(result.plain.image), _pixels(result.method.image))
    assert [w["text"] for w in result.words] == ["red", "blue"]
    red, blue = result.words
    assert red["method_share"] > red["plain_share"] and blue["method_share"] < blue["plain_share"]
    assert len(result.heatmaps) == 4 and result.heatmaps[0][1].startswith("plain: red x1.5")
    assert result.heatmaps[0][0].size == result.plain.image.size and result.chart is not None
    png, plain_png, report = result.files
    with Image.open(png) as im:
        parameters = im.text["parameters"]
    assert (
        parameters.startswith(PROMPT + "\n") and "Emphasize method: reweight" in parameters and "Seed: 0" in parameters
    )
    with Image.open(plain_png) as im:
        assert "Emphasize method: plain" in im.text["parameters"]
    data = json.loads(report.read_text())
    assert data["method"]["method"] == "reweight" and data["plain"]["method"] == "plain"
    assert data["request"]["prompt"] == PROMPT and data["request"]["steps"] == STEPS


def test_progress_counts_both_runs_then_only_the_method(session):
    events: list[h.ProgressEvent] = []
    request = h.TextToImageRequest("a (green:1.3) star", method="embed", steps=STEPS, seed=11)
    session.text_to_image(request, h.JobControl(events.append))
    assert [e.done for e in events] == [1, 2, 3, 4, 5, 6, 6] and {e.total for e in events} == {6}
    events.clear()
    session.text_to_image(request, h.JobControl(events.append))
    assert [e.done for e in events] == [1, 2, 3, 3] and events[0].desc == "embed"


def test_sweep_gives_one_image_per_weight_with_the_same_seed(session):
    result = session.sweep(h.TextToImageRequest(PROMPT, method="reweight", steps=STEPS), 0, [0.5, 1, 2])
    assert len(result.images) == 3 and result.weights == [0.5, 1.0, 2.0] and result.word == "red"
    assert result.prompts[0] == "a (red:0.5) circle and a (blue:0.8) square"
    assert result.shares[0] < result.shares[1] < result.shares[2]
    assert [c for _, c in result.images][0].startswith("red x0.5")
    with pytest.raises(ValueError, match="1 to 8 weights"):
        session.sweep(h.TextToImageRequest(PROMPT, steps=STEPS), 0, [1.0] * 9)
    with pytest.raises(ValueError, match="plain sampling ignores weights"):
        session.sweep(h.TextToImageRequest(PROMPT, method="plain", steps=STEPS), 0, [1.0])


def test_edit_job_side_by_side_and_cached(session):
    image = Image.new("RGB", (96, 72), (240, 240, 240))
    image.paste((220, 30, 30), (20, 20, 50, 50))
    request = h.EditRequest("make the (square:2) green", method="embed", steps=STEPS)
    result = session.edit(request, image)
    assert result.input_image.size == (64, 48) == result.method.image.size == result.plain.image.size
    assert result.words[0]["text"] == "square" and result.files[0].name == "emphasize-embed-0.png"
    with Image.open(result.files[0]) as im:
        assert "Guidance rule: ip2p" in im.text["parameters"]
    again = session.edit(h.EditRequest("make the (square:3) green", method="embed", steps=STEPS), image)
    assert again.plain_cached and not np.array_equal(_pixels(again.method.image), _pixels(result.method.image))
    rule = session.edit(
        h.EditRequest("make the (square:3) green", steps=STEPS, guidance_rule="instructdiffusion"), image
    )
    assert not rule.plain_cached and rule.report["method"]["guidance_rule"] == "instructdiffusion"


def test_sgool_job_reports_losses_as_it_runs_and_draws_the_saliency(session):
    events: list[h.ProgressEvent] = []
    knobs_ = {"optimization_steps": 2, "sampling_steps": 2}
    result = session.saliency(h.SaliencyRequest("a red circle", knobs=knobs_), h.JobControl(events.append))
    assert len(result.losses) == 3 and not result.cancelled
    assert [len(e.losses) for e in events if e.losses][:3] == [1, 2, 3]
    assert result.figure is not None and result.result.image.size == result.plain.image.size == (64, 64)
    assert result.report["method"]["optimization"]["losses"] == result.losses
    assert {p.suffix for p in result.files} == {".png", ".json"} and len(result.files) == 4
    doodl = session.saliency(h.SaliencyRequest("a red circle", method="doodl", knobs=knobs_))
    assert doodl.figure is None and doodl.plain_cached
    with pytest.raises(ValueError, match="file path"):
        session.saliency(h.SaliencyRequest("a red circle", saliency="transalnet:/etc/passwd"))


def test_cancel_stops_between_steps_and_the_session_keeps_working(session):
    request = h.TextToImageRequest("a (yellow:2) triangle", method="attend-excite", steps=STEPS, seed=21)
    control = h.JobControl()
    seen: list[int] = []

    def cancel_after_first(event: h.ProgressEvent) -> None:
        seen.append(event.done)
        control.cancel()

    control.progress = cancel_after_first
    with pytest.raises(h.Cancelled):
        session.text_to_image(request, control)
    assert seen == [1]  # stopped at the next step, not at the end
    unet = session.pipe("t2i").unet
    assert all(type(p).__name__ != "AttentionCaptureProcessor" for p in unet.attn_processors.values())
    assert all(p.requires_grad for p in unet.parameters())
    assert session.text_to_image(request).method.image.size == (64, 64)

    stopped = h.JobControl()
    stopped.progress = lambda event: stopped.cancel() if event.losses else None
    result = session.saliency(h.SaliencyRequest("a red circle", knobs={"optimization_steps": 5, "sampling_steps": 2}),
                              stopped)  # fmt: skip
    assert result.cancelled and len(result.losses) == 1 and result.result.image is not None
    assert "stopped by the caller" in result.report["method"]["optimization"]["stopped"]


def test_cancel_by_session_key_and_a_stream_closed_early_cancels(session):
    control = session.new_control("page-1")
    assert session.cancel("page-1") and control.cancelled and not session.cancel("page-2")

    started = threading.Event()

    def job(c: h.JobControl) -> str:
        for k in range(200):
            started.set()
            c.step(k, 200, "work")
            c.cancel_event.wait(0.01)
        return "finished"

    control = h.JobControl()
    stream = h.stream(job, control)
    assert isinstance(next(stream), h.ProgressEvent)
    stream.close()
    assert control.cancelled
    items = list(h.stream(lambda c: (c.notify(h.ProgressEvent(1, 1, "x")), 7)[1], h.JobControl()))
    assert items == [h.ProgressEvent(1, 1, "x"), 7]
    with pytest.raises(ValueError, match="boom"):
        list(h.stream(lambda c: (_ for _ in ()).throw(ValueError("boom")), h.JobControl()))


def test_requests_outside_the_limits_are_refused_with_a_clear_message(session):
    t2i = session.text_to_image
    with pytest.raises(ValueError, match=r"unbalanced '\(' at column 3.*\n.*\n  \^"):
        t2i(h.TextToImageRequest("a (red circle", steps=STEPS))
    with pytest.raises(ValueError, match=r"steps 201 must be a whole number in \[1, 200\]"):
        t2i(h.TextToImageRequest(PROMPT, steps=201))
    with pytest.raises(ValueError, match="above the budget"):
        t2i(h.TextToImageRequest(PROMPT, steps=STEPS, width=256, height=256))
    with pytest.raises(ValueError, match="multiple of"):
        t2i(h.TextToImageRequest(PROMPT, steps=STEPS, width=66))
    with pytest.raises(ValueError, match="SGOOL/DOODL have their own tab"):
        t2i(h.TextToImageRequest(PROMPT, method="sgool", steps=STEPS))
    with pytest.raises(ValueError, match="characters; at most"):
        t2i(h.TextToImageRequest("a " * 600, steps=STEPS))
    with pytest.raises(ValueError, match="unknown scheduler"):
        t2i(h.TextToImageRequest(PROMPT, steps=STEPS, scheduler="magic"))
    with pytest.raises(ValueError, match="optimization steps 500 above the limit"):
        session.saliency(h.SaliencyRequest("a red circle", knobs={"optimization_steps": 500}))


def test_uploads_above_the_byte_or_pixel_limit_are_refused_before_decoding(tmp_path):
    small = h.ModelSession(limits=h.AppLimits(max_upload_bytes=20_000, max_upload_pixels=100 * 100), workdir=tmp_path)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (90, 60), "red").save(ok)
    assert small.load_upload(ok, upload_root=tmp_path).size == (90, 60)
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200), "red").save(big)  # few bytes (one colour), too many pixels
    with pytest.raises(ValueError, match="200x200 = 40000 pixels; at most 10000"):
        small.load_upload(big)
    noisy = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 90, 3), dtype=np.uint8)).save(noisy)
    with pytest.raises(ValueError, match=r"MiB; at most 0\.0 MiB"):
        small.load_upload(noisy)
    with pytest.raises(ValueError, match="uploaded through the page"):
        small.load_upload(ok, upload_root=tmp_path / "uploads")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read the image"):
        small.load_upload(text)
    with pytest.raises(ValueError, match="at most 10000 are accepted"):
        small.check_image(Image.new("RGB", (101, 100)))
    with pytest.raises(ValueError, match="max_steps=0 must be >= 1"):
        h.AppLimits(max_steps=0)


def test_the_page_queues_every_job_in_one_group(session):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from emphasize.app.ui import JOB_GROUP, build_app

    demo = build_app(session)
    jobs = {f.api_name: f for f in demo.fns.values() if f.api_name in ("generate", "sweep", "edit", "sgool")}
    assert set(jobs) == {"generate", "sweep", "edit", "sgool"}
    assert all(f.concurrency_id == JOB_GROUP and f.concurrency_limit == 1 for f in jobs.values())


def test_server_defaults_are_safe():
    from emphasize.app.server import ServerConfig

    config = ServerConfig()
    assert (config.host, config.port, config.loopback) == ("127.0.0.1", 7860, True)
    assert config.max_file_size == h.AppLimits().max_upload_bytes
    assert not ServerConfig(host="0.0.0.0").loopback and ServerConfig(host="::1").loopback
    with pytest.raises(ValueError, match="port 0 must be in"):
        ServerConfig(port=0)


def test_cli_app_help_is_light_and_bad_input_is_one_line():
    code = (
        "import sys\nfrom emphasize.cli import main\n"
        "try:\n    main(['app', '--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--edit-model" in out and "127.0.0.1" in out and out.strip().endswith("[]")
    bad = subprocess.run([sys.executable, "-m", "emphasize", "app", "--port", "70000"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr == "emphasize: error: port 70000 must be in [1, 65535]\n"
