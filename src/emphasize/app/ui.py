"""The Gradio page: tabs Text to image, Edit and SGOOL/DOODL over one warm `ModelSession`.

Everything the page computes goes through `handlers` (the jobs) and `sliders` / `knobs` (the form); this module
only lays out components and wires events. Jobs share one concurrency group of size 1 (`JOB_GROUP`), so one job
runs at a time and the others wait in the queue; the slider <-> prompt updates are cheap and never wait behind a
job. Cancel stops the job of the page that asked between two sampling (or optimisation) steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from emphasize.app import handlers as h
from emphasize.app.knobs import Knob, knobs
from emphasize.app.sliders import MAX_SLIDERS, SLIDER_STEP, set_weight, slider_state
from emphasize.methods import get_method, method_names
from emphasize.sampling.schedulers import SCHEDULERS

JOB_GROUP = "model"  # the concurrency id of every job: one job at a time, the others queue
OWN_SCHEDULER = "the model's own"  # the scheduler choice that keeps the model's scheduler
SGOOL_DEFAULTS = {"optimization_steps": 10, "sampling_steps": 10}  # a CPU-friendly start (the papers use 50 and 50)
SWEEP_DEFAULT = "0.5, 1, 1.5, 2, 3"  # weights of a sweep
CSS = """
.pixelated img { image-rendering: pixelated; }
#t2i-prompt-error pre, #edit-prompt-error pre { color: #b00020; }
"""


DISPLAY_SIDE = 256  # small model outputs are shown upscaled (nearest) to at least this many px; downloads are not


def _show(image):
    """An image for the page: upscaled by an integer factor (nearest) so a 64 px sample reads well."""
    if image is None:
        return None
    from PIL import Image

    factor = max(1, -(-DISPLAY_SIDE // max(1, min(image.size))))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _show_all(items):
    return [(_show(image), caption) for image, caption in items]


def _knob_component(knob: Knob, elem_id: str) -> gr.components.Component:
    label = knob.label + (" (empty: the default rule)" if knob.optional else "")
    if knob.kind == "bool":
        return gr.Checkbox(value=bool(knob.default), label=label, elem_id=elem_id)
    if knob.kind == "str" or knob.optional:  # an optional number is a text box: empty means the default rule
        value = "" if knob.default is None else str(knob.default)
        return gr.Textbox(value=value, label=label, elem_id=elem_id, max_lines=1)
    return gr.Number(
        value=knob.default, label=label, precision=0 if knob.kind == "int" else None, elem_id=elem_id, min_width=120
    )


@dataclass
class _KnobPanel:
    """A method dropdown and, per method, a group of its knobs (only the chosen method's group is visible)."""

    method: gr.Dropdown
    summary: gr.Markdown
    groups: dict[str, gr.Group]
    inputs: list[tuple[str, str, gr.components.Component]]  # (method, knob name, component)

    @property
    def components(self) -> list[gr.components.Component]:
        return [c for _, _, c in self.inputs]

    def values(self, values: dict) -> dict[str, Any]:
        """The chosen method's knob values from a set-input dict."""
        method = values[self.method]
        return {name: values[c] for m, name, c in self.inputs if m == method}

    def wire(self) -> None:
        def show(method: str):
            return [gr.update(visible=m == method) for m in self.groups] + [get_method(method).summary]

        self.method.change(
            show, self.method, [*self.groups.values(), self.summary], queue=False, api_visibility="private"
        )


def _knob_panel(tab: str, methods: Sequence[str], default: str, overrides: dict | None = None) -> _KnobPanel:
    method = gr.Dropdown(list(methods), value=default, label="method", elem_id=f"{tab}-method")
    summary = gr.Markdown(get_method(default).summary, elem_id=f"{tab}-method-summary")
    groups, inputs = {}, []
    for name in methods:
        with gr.Group(visible=name == default) as group:
            spec = knobs(name, overrides)
            main = [k for k in spec if k.main]
            more = [k for k in spec if not k.main]
            with gr.Row():
                for knob in main:
                    inputs.append((name, knob.name, _knob_component(knob, _elem(tab, name, knob.name))))
            if more:
                with gr.Accordion("more knobs", open=False):
                    with gr.Row():
                        for knob in more:
                            inputs.append((name, knob.name, _knob_component(knob, _elem(tab, name, knob.name))))
            if not spec:
                gr.Markdown("this method has no knobs")
        groups[name] = group
    return _KnobPanel(method, summary, groups, inputs)


def _elem(tab: str, method: str, name: str) -> str:
    return f"{tab}-knob-{method}-{name}".replace(".", "-").replace("_", "-")


@dataclass
class _SliderPanel:
    """A weighted prompt box, its parse error, and one slider per word (a fixed pool, shown as needed)."""

    prompt: gr.Textbox
    error: gr.Markdown
    sliders: list[gr.Slider]
    more: gr.Markdown

    def refresh_outputs(self) -> list:
        return [self.error, *self.sliders, self.more]

    def refresh(self, prompt: str) -> list:
        state = slider_state(prompt or "")
        if state.error is not None:
            error = gr.update(value=f"**prompt error**\n```\n{state.error}\n```", visible=True)
            return [error, *[gr.skip()] * len(self.sliders), gr.skip()]
        updates = []
        for k in range(len(self.sliders)):
            if k < len(state.sliders):
                s = state.sliders[k]
                updates.append(
                    gr.update(
                        visible=True, label=s.label, value=s.weight, maximum=s.maximum,
                        info="marked" if s.marked else "not marked (1)",
                    )
                )  # fmt: skip
            else:
                updates.append(gr.update(visible=False))
        more = f"{state.hidden} more words have no slider (type their weights)" if state.hidden else ""
        return [gr.update(value="", visible=False), *updates, more]

    def wire(self, extra: Sequence[gr.components.Component] = (), extra_fn: Callable | None = None) -> None:
        """Prompt edits update the sliders; a released slider rewrites the prompt."""

        def refresh(prompt: str):
            out = self.refresh(prompt)
            return out + (list(extra_fn(prompt)) if extra_fn else [])

        outputs = self.refresh_outputs() + list(extra)
        self.prompt.change(refresh, self.prompt, outputs, queue=False, api_visibility="private")
        for k, slider in enumerate(self.sliders):

            def move(prompt: str, weight: float, k: int = k):
                state = slider_state(prompt or "")
                if state.error is not None or k >= len(state.sliders) or weight is None:
                    return gr.skip()
                if abs(state.sliders[k].weight - weight) < 1e-9:
                    return gr.skip()  # nothing moved: leave the prompt as typed
                try:
                    return set_weight(prompt, k, weight)
                except ValueError:
                    return gr.skip()

            # the user's moves only, never the updates `refresh` makes: `input` (a typed value) and `release` (the
            # end of a drag or a click on the track); a second call for the same move changes nothing
            for listener in (slider.input, slider.release):
                listener(
                    move, [self.prompt, slider], self.prompt, queue=False, trigger_mode="always_last",
                    api_visibility="private",
                )  # fmt: skip


def _slider_panel(tab: str, label: str, value: str, placeholder: str) -> _SliderPanel:
    prompt = gr.Textbox(value=value, label=label, placeholder=placeholder, lines=2, elem_id=f"{tab}-prompt")
    error = gr.Markdown(visible=False, elem_id=f"{tab}-prompt-error")
    sliders = []
    with gr.Row(elem_id=f"{tab}-sliders"):
        for k in range(MAX_SLIDERS):
            sliders.append(
                gr.Slider(
                    0, 3, value=1, step=SLIDER_STEP, label=f"word {k + 1}", visible=False,
                    elem_id=f"{tab}-slider-{k}", min_width=180,
                )
            )  # fmt: skip
    more = gr.Markdown("", elem_id=f"{tab}-sliders-more")
    panel = _SliderPanel(prompt, error, sliders, more)
    return panel


def _shares_table(words: list[dict], method: str) -> str:
    if not words:
        return "no marked words: mark a word, e.g. `a (red:1.5) circle`, to see its attention"
    rows = [f"| word | weight | plain | {method} |", "|---|---|---|---|"]
    for w in words:
        plain = "-" if w["plain_share"] is None else f"{w['plain_share']:.1%}"
        after = "-" if w["method_share"] is None else f"{w['method_share']:.1%}"
        rows.append(f"| {w['text']} | {w['weight']:g} | {plain} | {after} |")
    return "\n".join(rows)


@dataclass
class _PairPanel:
    """The side-by-side outputs of a plain vs method job: the two images, per-word heatmaps, the share chart and
    table, the report and the downloads (the edit tab adds its working-size input image)."""

    plain: gr.Image
    method: gr.Image
    heatmaps: gr.Gallery
    chart: gr.Image
    shares: gr.Markdown
    report: gr.JSON
    files: gr.File
    input: gr.Image | None = None  # edits: the input at its working size

    def outputs(self) -> list[gr.components.Component]:
        head = [] if self.input is None else [self.input]
        return head + [self.plain, self.method, self.heatmaps, self.chart, self.shares, self.report, self.files]

    def show(self, result: h.PairResult, method: str) -> dict:
        """The updates that show one `PairResult` of `method`."""
        head = {} if self.input is None else {self.input: _show(result.input_image)}
        return head | {
            self.plain: gr.update(value=_show(result.plain.image), label="plain"),
            self.method: gr.update(value=_show(result.method.image), label=method),
            self.heatmaps: _show_all(result.heatmaps),
            self.chart: result.chart,
            self.shares: _shares_table(result.words, method),
            self.report: result.report,
            self.files: [str(p) for p in result.files],
        }


def _pair_panel(tab: str, with_input: bool = False) -> _PairPanel:
    """Lay out the pair outputs with elem ids `{tab}-plain`, `{tab}-method-image`, ...; `with_input` puts the
    job's input image (`{tab}-input`, the edit tab's working-size input) at the head of the image row."""

    def image(label: str, name: str) -> gr.Image:
        return gr.Image(
            label=label, format="png", interactive=False, height=256, elem_id=f"{tab}-{name}",
            elem_classes="pixelated",
        )  # fmt: skip

    with gr.Row():
        source = image("input (working size)", "input") if with_input else None
        plain, method = image("plain", "plain"), image("method", "method-image")
    with gr.Row():
        heatmaps = gr.Gallery(
            label="attention per word (plain | method)", columns=4, format="png", height=300,
            elem_id=f"{tab}-heatmaps", elem_classes="pixelated",
        )  # fmt: skip
        with gr.Column():
            chart = gr.Image(label="attention share", format="png", interactive=False, elem_id=f"{tab}-chart")
            shares = gr.Markdown("", elem_id=f"{tab}-shares")
    with gr.Accordion("report and downloads", open=False):
        files = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id=f"{tab}-files")
        report = gr.JSON(label="report", elem_id=f"{tab}-report")
    return _PairPanel(plain, method, heatmaps, chart, shares, report, files, source)


def _run_job(job: Callable[[], Any]) -> Any:
    """Run a handler job; its cancellation and its one-line errors become the page's error message."""
    try:
        return job()
    except h.Cancelled:
        raise gr.Error("cancelled") from None
    except ValueError as err:
        raise gr.Error(str(err)) from None


def _number(value, name: str, kind: type = int):
    if value is None or value == "":
        raise gr.Error(f"{name} needs a value")
    number = float(value)
    if kind is int:
        if number != int(number):
            raise gr.Error(f"{name} {value} must be a whole number")
        return int(number)
    return number


def _progress(progress: gr.Progress) -> Callable[[h.ProgressEvent], None]:
    def report(event: h.ProgressEvent) -> None:
        progress((event.done, event.total), desc=event.desc, unit="steps")

    return report


def _sides(session: h.ModelSession) -> tuple[list[int], int]:
    """Sizes the size dropdowns offer (multiples of the model's factor within the pixel budget) and the native."""
    from emphasize import api

    pipe = session.pipe("t2i")
    native, multiple = api.native_side(pipe), api.size_multiple(pipe)
    budget = session.limits.pixel_budget * native * native
    sides = [m for m in range(multiple, 2 * native + 1, multiple) if m * native <= budget]
    return sides, native


def build_app(session: h.ModelSession, *, upload_root: str | None = None) -> gr.Blocks:
    """The app's Blocks on a warm session (no launch; `server.launch` queues and serves it).

    Args:
        session: the model session every job runs on.
        upload_root: uploads must lie in this folder (the server's upload folder; gradio's when None).
    """
    from gradio.utils import get_upload_folder

    upload_root = upload_root or get_upload_folder()
    t2i_card, edit_card = session.defaults("t2i"), session.defaults("edit")
    sides, native = _sides(session)
    limits = session.limits
    with gr.Blocks(title="emphasize", analytics_enabled=False) as demo:
        gr.Markdown(
            "# emphasize\nTell a diffusion model which words matter: weights in the prompt, e.g. "
            "`a (red:1.5) circle and a [blue] square`, or with the sliders. "
            f"Models: {session.label('t2i')}, {session.label('edit')}."
        )
        with gr.Tabs():
            # --- text to image ------------------------------------------------------------------------------
            with gr.Tab("Text to image", id="t2i", elem_id="tab-t2i"):
                t2i = _slider_panel(
                    "t2i", "prompt (A1111/compel weights)", "a (red:1.5) circle and a blue square",
                    "a (cat:1.8) and a [frog]",
                )  # fmt: skip
                t2i_knobs = _knob_panel("t2i", method_names("t2i", initial_latent=False), "importance")
                with gr.Row():
                    seed = gr.Number(0, label="seed", precision=0, elem_id="t2i-seed", minimum=0)
                    steps = gr.Slider(
                        1, limits.max_steps, value=int(t2i_card.get("num_inference_steps", 50)), step=1,
                        label="steps", elem_id="t2i-steps",
                    )  # fmt: skip
                    width = gr.Dropdown(sides, value=native, label="width", elem_id="t2i-width")
                    height = gr.Dropdown(sides, value=native, label="height", elem_id="t2i-height")
                    scheduler = gr.Dropdown(
                        [OWN_SCHEDULER, *SCHEDULERS], value=OWN_SCHEDULER, label="scheduler", elem_id="t2i-scheduler"
                    )
                    cfg = gr.Number(
                        float(t2i_card.get("guidance_scale", 7.5)), label="CFG scale", minimum=0, maximum=100,
                        elem_id="t2i-cfg",
                    )  # fmt: skip
                negative = gr.Textbox("", label="negative prompt", max_lines=1, elem_id="t2i-negative")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
                    cancel = gr.Button("Cancel", elem_id="t2i-cancel")
                status = gr.Markdown("", elem_id="t2i-status")
                t2i_pair = _pair_panel("t2i")
                with gr.Row():
                    sweep_word = gr.Dropdown([], label="sweep word", elem_id="t2i-sweep-word")
                    sweep_weights = gr.Textbox(SWEEP_DEFAULT, label="sweep weights", elem_id="t2i-sweep-weights")
                    sweep = gr.Button("Sweep", elem_id="t2i-sweep")
                sweep_gallery = gr.Gallery(
                    label="sweep (same seed)", columns=limits.max_sweep, format="png", height=220,
                    elem_id="t2i-sweep-gallery", elem_classes="pixelated",
                )  # fmt: skip

            # --- edit -----------------------------------------------------------------------------------------
            with gr.Tab("Edit", id="edit", elem_id="tab-edit"):
                with gr.Row():
                    upload = gr.Image(
                        label="input image", type="filepath", sources=["upload", "clipboard"], height=256,
                        elem_id="edit-upload",
                    )  # fmt: skip
                    with gr.Column():
                        edit_panel = _slider_panel(
                            "edit", "instruction (weights as in prompts)", "make the (circle:2) green",
                            "encircle the man's (left shoulder:2) in red",
                        )  # fmt: skip
                edit_knobs = _knob_panel("edit", method_names("edit", initial_latent=False), "importance")
                with gr.Row():
                    rule = gr.Radio(
                        ["ip2p", "instructdiffusion"], value="ip2p", label="guidance rule", elem_id="edit-rule"
                    )
                    text_scale = gr.Number(
                        edit_card.get("guidance_scale"), label="text scale s_T (empty: the rule's)", minimum=0,
                        maximum=100, elem_id="edit-text-scale",
                    )  # fmt: skip
                    image_scale = gr.Number(
                        edit_card.get("image_guidance_scale"), label="image scale s_I (empty: the rule's)",
                        minimum=0, maximum=100, elem_id="edit-image-scale",
                    )  # fmt: skip
                    edit_seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id="edit-seed")
                    edit_steps = gr.Slider(
                        1, limits.max_steps, value=int(edit_card.get("num_inference_steps", 100)), step=1,
                        label="steps", elem_id="edit-steps",
                    )  # fmt: skip
                with gr.Row():
                    run_edit = gr.Button("Edit", variant="primary", elem_id="edit-run")
                    edit_cancel = gr.Button("Cancel", elem_id="edit-cancel")
                edit_status = gr.Markdown("", elem_id="edit-status")
                edit_pair = _pair_panel("edit", with_input=True)

            # --- SGOOL / DOODL ------------------------------------------------------------------------------
            with gr.Tab("SGOOL / DOODL", id="sgool", elem_id="tab-sgool"):
                sg_prompt = gr.Textbox(
                    "a red circle and a blue square", label="prompt (weights are stripped)", lines=2,
                    elem_id="sgool-prompt",
                )  # fmt: skip
                sg_defaults = {**SGOOL_DEFAULTS, "guidance_scale": float(t2i_card.get("guidance_scale", 7.5))}
                sg_knobs = _knob_panel("sgool", method_names("t2i", initial_latent=True), "sgool", sg_defaults)
                with gr.Row():
                    saliency = gr.Dropdown(
                        list(h.SALIENCY_DETECTORS),
                        value="spectral",
                        label="saliency (SGOOL)",
                        elem_id="sgool-saliency",
                    )
                    sg_seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id="sgool-seed")
                with gr.Row():
                    run_sg = gr.Button("Optimize", variant="primary", elem_id="sgool-run")
                    sg_cancel = gr.Button("Cancel (keeps the best so far)", elem_id="sgool-cancel")
                sg_status = gr.Markdown("", elem_id="sgool-status")
                with gr.Row():
                    sg_plain = gr.Image(
                        label="plain DDIM, same initial noise", format="png", interactive=False, height=256,
                        elem_id="sgool-plain", elem_classes="pixelated",
                    )  # fmt: skip
                    sg_result = gr.Image(
                        label="optimized", format="png", interactive=False, height=256, elem_id="sgool-result",
                        elem_classes="pixelated",
                    )  # fmt: skip
                    sg_figure = gr.Image(
                        label="saliency and salient boxes", format="png", interactive=False, height=256,
                        elem_id="sgool-saliency-figure", elem_classes="pixelated",
                    )  # fmt: skip
                sg_losses = gr.LinePlot(
                    x="step", y="loss", title="loss per optimisation step", height=260, elem_id="sgool-losses"
                )
                with gr.Accordion("report and downloads", open=False):
                    sg_files = gr.File(
                        label="downloads", file_count="multiple", interactive=False, elem_id="sgool-files"
                    )
                    sg_report = gr.JSON(label="report", elem_id="sgool-report")

        # --- events ---------------------------------------------------------------------------------------------
        t2i_knobs.wire()
        edit_knobs.wire()
        sg_knobs.wire()

        def sweep_words(prompt: str):
            state = slider_state(prompt or "")
            if state.error is not None:
                return [gr.skip()]
            choices = [(s.label, k) for k, s in enumerate(state.sliders)]
            marked = next((k for k, s in enumerate(state.sliders) if s.marked), 0 if choices else None)
            return [gr.update(choices=choices, value=marked)]

        t2i.wire([sweep_word], sweep_words)
        edit_panel.wire()

        t2i_form = {t2i.prompt, t2i_knobs.method, seed, steps, width, height, scheduler, cfg, negative}
        t2i_form |= set(t2i_knobs.components)

        def t2i_request(values: dict) -> h.TextToImageRequest:
            return h.TextToImageRequest(
                prompt=values[t2i.prompt] or "",
                method=values[t2i_knobs.method],
                knobs=t2i_knobs.values(values),
                seed=_number(values[seed], "seed"),
                steps=_number(values[steps], "steps"),
                width=_number(values[width], "width"),
                height=_number(values[height], "height"),
                scheduler=None if values[scheduler] == OWN_SCHEDULER else values[scheduler],
                guidance_scale=_number(values[cfg], "CFG scale", float),
                negative_prompt=values[negative] or "",
            )

        def run_t2i(values: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - gradio's idiom
            job = t2i_request(values)
            control = session.new_control(request.session_hash, _progress(progress))
            result = _run_job(lambda: session.text_to_image(job, control))
            cached = " (plain from the cache)" if result.plain_cached else ""
            status_line = f"plain and {job.method}, seed {job.seed}: {result.seconds:.2f} s{cached}"
            return t2i_pair.show(result, job.method) | {status: status_line}

        outputs = [*t2i_pair.outputs(), status]
        gen_event = generate.click(
            run_t2i, t2i_form, outputs, concurrency_id=JOB_GROUP, concurrency_limit=1, api_name="generate"
        )

        def run_sweep(values: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            job = t2i_request(values)
            index = values[sweep_word]
            if index is None:
                raise gr.Error("choose a word to sweep")
            try:
                weights = [float(w) for w in str(values[sweep_weights]).replace(";", ",").split(",") if w.strip()]
            except ValueError:
                raise gr.Error(f"sweep weights {values[sweep_weights]!r}: give numbers separated by commas") from None
            control = session.new_control(request.session_hash, _progress(progress))
            result = _run_job(lambda: session.sweep(job, int(index), weights, control))
            return _show_all(result.images)

        sweep_event = sweep.click(
            run_sweep, t2i_form | {sweep_word, sweep_weights}, sweep_gallery, concurrency_id=JOB_GROUP,
            concurrency_limit=1, api_name="sweep",
        )  # fmt: skip

        def cancel_job(request: gr.Request):
            session.cancel(request.session_hash)

        cancel.click(cancel_job, None, None, cancels=[gen_event, sweep_event], queue=False, api_visibility="private")

        edit_form = {
            upload,
            edit_panel.prompt,
            edit_knobs.method,
            rule,
            text_scale,
            image_scale,
            edit_seed,
            edit_steps,
        }
        edit_form |= set(edit_knobs.components)

        def run_edit_job(values: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            path = values[upload]
            if not path:
                raise gr.Error("upload an image first")
            job = h.EditRequest(
                instruction=values[edit_panel.prompt] or "",
                method=values[edit_knobs.method],
                knobs=edit_knobs.values(values),
                seed=_number(values[edit_seed], "seed"),
                steps=_number(values[edit_steps], "steps"),
                guidance_rule=values[rule],
                text_scale=None if values[text_scale] is None else float(values[text_scale]),
                image_scale=None if values[image_scale] is None else float(values[image_scale]),
            )
            control = session.new_control(request.session_hash, _progress(progress))
            result = _run_job(lambda: session.edit(job, session.load_upload(path, upload_root), control))
            cached = " (plain from the cache)" if result.plain_cached else ""
            status_line = f"plain and {job.method} edits, seed {job.seed}: {result.seconds:.2f} s{cached}"
            return edit_pair.show(result, job.method) | {edit_status: status_line}

        edit_outputs = [*edit_pair.outputs(), edit_status]
        edit_event = run_edit.click(
            run_edit_job, edit_form, edit_outputs, concurrency_id=JOB_GROUP, concurrency_limit=1, api_name="edit"
        )
        edit_cancel.click(cancel_job, None, None, cancels=[edit_event], queue=False, api_visibility="private")

        sg_form = {sg_prompt, sg_knobs.method, saliency, sg_seed} | set(sg_knobs.components)

        def run_saliency(values: dict, request: gr.Request):
            import pandas as pd

            job = h.SaliencyRequest(
                prompt=values[sg_prompt] or "",
                method=values[sg_knobs.method],
                knobs=sg_knobs.values(values),
                seed=_number(values[sg_seed], "seed"),
                saliency=values[saliency],
            )
            control = session.new_control(request.session_hash)
            try:
                for item in h.stream(lambda c: session.saliency(job, c), control):
                    if isinstance(item, h.ProgressEvent):
                        curve = pd.DataFrame({"step": list(range(len(item.losses))), "loss": list(item.losses)})
                        yield {
                            sg_losses: curve,
                            sg_status: f"{item.desc}: step {item.done} of {item.total}",
                        }
                        continue
                    curve = pd.DataFrame({"step": list(range(len(item.losses))), "loss": item.losses})
                    opt = item.report["method"]["optimization"]
                    note = f"; cancelled: {opt['stopped']}" if item.cancelled else ""
                    yield {
                        sg_plain: _show(item.plain.image),
                        sg_result: gr.update(
                            value=_show(item.result.image), label=f"{job.method}, best step {opt['best_step']}"
                        ),
                        sg_figure: _show(item.figure),
                        sg_losses: curve,
                        sg_report: item.report,
                        sg_files: [str(p) for p in item.files],
                        sg_status: f"{job.method}: {len(item.losses) - 1} steps, best loss {opt['best_loss']:.4f} at "
                        f"step {opt['best_step']}, {item.seconds:.1f} s{note}",
                    }
            except ValueError as err:
                raise gr.Error(str(err)) from None

        sg_outputs = [sg_plain, sg_result, sg_figure, sg_losses, sg_report, sg_files, sg_status]
        run_sg.click(
            run_saliency, sg_form, sg_outputs, concurrency_id=JOB_GROUP, concurrency_limit=1, api_name="sgool"
        )
        # SGOOL's cancel stops the optimisation after its current step and shows the best image so far
        sg_cancel.click(cancel_job, None, None, queue=False, api_visibility="private")

        demo.load(lambda p: t2i.refresh(p) + sweep_words(p), t2i.prompt, t2i.refresh_outputs() + [sweep_word],
                  queue=False, api_visibility="private")  # fmt: skip
        demo.load(edit_panel.refresh, edit_panel.prompt, edit_panel.refresh_outputs(), queue=False,
                  api_visibility="private")  # fmt: skip
    return demo
