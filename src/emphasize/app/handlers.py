"""The app's request handlers, without gradio: a warm model session and one method per job.

`ModelSession` loads each model once (text-to-image, editing, the CLIP of SGOOL/DOODL) and keeps it; every job
gets fresh scheduler state, so jobs do not leak into each other. A job:

- `text_to_image`: plain sampling and the method side by side from the same seed, each word's attention heatmap
  over both images, each word's attention share before (plain) and after (the method) as a bar chart, the report,
  and downloads (the PNGs with their A1111 `parameters` chunk, the JSON report). Plain sampling does not read the
  weights, so it is cached per (model, seed, steps, size, scheduler, CFG scale, negative prompt, plain text, the
  marked words' positions): a weight change re-runs only the method.
- `sweep`: one word's weight over a few values with the method, same seed, one image each.
- `edit`: the same side by side for instruction editing of an uploaded image (guidance rule, text and image
  scales); plain is cached per input image too.
- `saliency`: SGOOL/DOODL, with plain DDIM sampling from the same initial noise, the saliency map and its boxes,
  the loss of every optimisation step as it runs, and the result.

Long work reports progress through a `JobControl` and stops between sampling steps (or optimisation steps) when
it is cancelled. Inputs are checked against `AppLimits` before any work: prompt length, steps, size (a pixel
budget), sweep length, upload bytes and pixels (read from the image header, before decoding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError

from emphasize import api
from emphasize.app.knobs import build_config
from emphasize.app.sliders import error_message, set_weight, slider_state
from emphasize.config import EditSamplingConfig, SamplingConfig
from emphasize.methods import method_names
from emphasize.models.load import load_clip, load_pipeline, sampling_defaults
from emphasize.prompts import MAX_WEIGHT, MIN_WEIGHT, PromptSyntaxError, WeightedPrompt, parse_prompt
from emphasize.report import a1111_parameters
from emphasize.saliency_guidance import optimize
from emphasize.sampling.schedulers import SCHEDULERS, make_scheduler
from emphasize.visualize import heatmap_overlay, saliency_figure, save_atomic, save_png, share_chart

T = TypeVar("T")
MAX_SEED = 2**63 - 1  # seeds are drawn on a torch CPU generator (a signed 64-bit integer)
SALIENCY_DETECTORS = ("spectral", "attention")  # detectors the page may choose (TranSalNet needs a file path)
MAX_PAGES = 256  # job controls kept (one per browser page that ran a job)


@dataclass(frozen=True)
class AppLimits:
    """What one request may ask for; everything above is refused with a one-line message before any work."""

    max_upload_bytes: int = 10 * 2**20  # an uploaded image file's size (the server refuses larger uploads too)
    max_upload_pixels: int = 4096 * 4096  # an uploaded image's width x height, read from its header
    pixel_budget: int = 4  # width x height at most this many times the model's native area (as the CLI)
    max_steps: int = 200  # sampling steps of one image
    max_opt_steps: int = 200  # SGOOL/DOODL optimisation steps
    max_sweep: int = 8  # images of one sweep
    max_prompt_chars: int = 1000  # characters of a prompt or instruction
    plain_cache: int = 32  # plain results kept (each is one small image, its latents and heatmaps)
    kept_jobs: int = 16  # job folders of downloadable files kept on disk (older ones are removed)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


class Cancelled(Exception):
    """The job was cancelled; sampling stopped between two steps."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of a running job."""

    done: int  # units done (sampling steps, or optimisation steps)
    total: int  # units in all
    desc: str  # what is running, e.g. "plain" or "importance"
    losses: tuple[float, ...] = ()  # SGOOL/DOODL: the loss of every step so far


@dataclass
class JobControl:
    """Progress and cancellation of one job (shared by the job's thread and whoever cancels it)."""

    progress: Callable[[ProgressEvent], None] | None = None  # receives every progress report
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the job to stop at its next step."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` when the job was cancelled."""
        if self.cancelled:
            raise Cancelled("cancelled")

    def notify(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def step(self, done: int, total: int, desc: str) -> None:
        """Between two steps: stop when cancelled, else report progress."""
        self.check()
        self.notify(ProgressEvent(done, total, desc))


# ---------------------------------------------------------------------------------------------------------------
# requests and results


@dataclass(frozen=True)
class TextToImageRequest:
    """One text-to-image job."""

    prompt: str  # the weighted prompt as typed
    method: str = "importance"  # a sampling method of the registry (not SGOOL/DOODL: `SaliencyRequest`)
    knobs: Mapping[str, Any] = field(default_factory=dict)  # knob name -> value (`knobs.knobs(method)`)
    seed: int = 0  # seed of the initial noise, shared by plain and the method
    steps: int | None = None  # sampling steps; None: the model card's, else 50
    width: int | None = None  # image width in px; None: the model's native size
    height: int | None = None  # image height in px; None: as the width, or native
    scheduler: str | None = None  # one of `SCHEDULERS`; None: the model's own
    guidance_scale: float | None = None  # CFG scale; None: the model card's, else 7.5
    negative_prompt: str = ""  # the unconditional branch's prompt


@dataclass(frozen=True)
class EditRequest:
    """One instruction-editing job (the image travels beside it)."""

    instruction: str  # the weighted instruction as typed
    method: str = "importance"  # a sampling method of the registry that runs on edits
    knobs: Mapping[str, Any] = field(default_factory=dict)  # knob name -> value
    seed: int = 0  # seed of the initial noise
    steps: int | None = None  # None: the model card's, else 100
    guidance_rule: str = "ip2p"  # "ip2p" (InstructPix2Pix) or "instructdiffusion"
    text_scale: float | None = None  # s_T; None: the model card's, else the rule's default
    image_scale: float | None = None  # s_I; None: the model card's, else the rule's default
    scheduler: str | None = None  # one of `SCHEDULERS`; None: the model's own


@dataclass(frozen=True)
class SaliencyRequest:
    """One SGOOL/DOODL job."""

    prompt: str  # the prompt (weights are stripped: SGOOL weighs regions, not words)
    method: str = "sgool"  # "sgool" or "doodl" (the registry's initial-latent methods)
    knobs: Mapping[str, Any] = field(default_factory=dict)  # SGOOLConfig knobs (optimisation and EDICT steps, ...)
    seed: int = 0  # seed of the initial latent, shared with the plain image
    saliency: str = "spectral"  # one of SALIENCY_DETECTORS (SGOOL only)
    width: int | None = None  # image width in px; None: native
    height: int | None = None  # image height in px; None: as the width, or native


@dataclass
class PairResult:
    """Plain and the method side by side, with what was measured."""

    plain: api.Result  # plain sampling (from the cache when `plain_cached`)
    method: api.Result  # the method (the plain result itself when the method is plain)
    plain_cached: bool  # plain came from the cache
    words: list[dict]  # per marked word: text, weight, plain_share, method_share
    heatmaps: list[tuple[Image.Image, str]]  # per word: (plain overlay, caption), (method overlay, caption)
    chart: Image.Image | None  # attention share per word, plain vs the method (None without marked words)
    report: dict  # the JSON report: model, request, both runs' reports
    files: list[Path]  # downloads: the method's PNG (with `parameters`), plain's PNG, the JSON report
    seconds: float  # wall time of the job
    input_image: Image.Image | None = None  # edits: the input at its working size


@dataclass
class SweepResult:
    """One word's weight over a few values, same seed."""

    images: list[tuple[Image.Image, str]]  # (image, caption) per weight
    weights: list[float]  # the weights, in order
    prompts: list[str]  # the prompt of each image
    shares: list[float | None]  # the word's attention share in each image
    word: str  # the swept word or phrase
    seconds: float


@dataclass
class SaliencyResult:
    """SGOOL/DOODL beside plain DDIM from the same initial noise."""

    plain: api.Result  # plain DDIM sampling from the same initial noise
    result: api.Result  # the optimized image (best latent seen)
    figure: Image.Image | None  # the saliency map over the result with the salient boxes (SGOOL)
    losses: list[float]  # loss of the latent evaluated at each optimisation step
    report: dict
    files: list[Path]
    cancelled: bool  # stopped early by a cancel; `result` is the best latent so far
    seconds: float
    plain_cached: bool = False  # the plain image came from the cache


@dataclass(frozen=True)
class _Components:
    """A pipeline's modules with a scheduler of this job's own (what `emphasize.generate` reads)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    name_or_path: str | None  # where the model card is read (`api.card_factor`)


# ---------------------------------------------------------------------------------------------------------------
# the session


class ModelSession:
    """Models loaded once and kept warm, a plain-sampling cache, and the files of recent jobs.

    Args:
        model: the text-to-image model (`load_pipeline`'s `model`); None: the embedded world model.
        edit_model: the instruction-editing model; None: the embedded one.
        clip: the CLIP of SGOOL/DOODL (`load_clip`'s `model`); None: the embedded world CLIP.
        device: torch device.
        limits: request limits.
        workdir: where downloads are written (a new temporary folder when None; removed by `close`).
    """

    def __init__(
        self,
        model: str | None = None,
        edit_model: str | None = None,
        clip: str | None = None,
        *,
        device: str = "cpu",
        limits: AppLimits | None = None,
        workdir: str | Path | None = None,
    ):
        self.models = {"t2i": model, "edit": edit_model}
        self.clip_model = clip
        self.device = device
        self.limits = limits or AppLimits()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="emphasize-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pipes: dict[str, Any] = {}
        self._clip = None
        self._load_lock = threading.Lock()
        self._job_lock = threading.RLock()  # one job at a time, whoever calls
        self._plain: OrderedDict[tuple, api.Result] = OrderedDict()
        self._controls: dict[str, JobControl] = {}
        self._jobs = 0

    # models ---------------------------------------------------------------------------------------------------

    def pipe(self, kind: str):
        """The pipeline of `kind` ("t2i" or "edit"), loaded on first use and kept."""
        with self._load_lock:
            if kind not in self._pipes:
                self._pipes[kind] = load_pipeline(self.models[kind], kind, device=self.device)
            return self._pipes[kind]

    def clip(self):
        """The CLIP of SGOOL/DOODL, loaded on first use and kept."""
        with self._load_lock:
            if self._clip is None:
                self._clip = load_clip(self.clip_model, device=self.device)
            return self._clip

    def warm(self, kinds: Sequence[str] = ("t2i",)) -> None:
        """Load these models now (the app does it at start, so the first request pays no loading)."""
        for kind in kinds:
            self.pipe(kind)

    def defaults(self, kind: str) -> dict:
        """The model card's sampling defaults (steps, CFG scale, ...), or {} for models without one."""
        model = self.models[kind]
        try:
            return sampling_defaults(model, kind)
        except (OSError, ValueError):
            return {}

    def label(self, kind: str) -> str:
        """The model's name for reports."""
        model = self.models[kind]
        return str(model) if model is not None else f"embedded world model ({kind})"

    def native_side(self, kind: str) -> int:
        return api.native_side(self.pipe(kind))

    def _components(self, kind: str, scheduler: str | None) -> _Components:
        pipe = self.pipe(kind)
        base = pipe.scheduler
        if scheduler is None:
            fresh = type(base).from_config(base.config)
        else:
            fresh = make_scheduler(scheduler, base_config=base.config)
        return _Components(
            pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, fresh, getattr(pipe, "name_or_path", None)
        )

    # jobs: control ---------------------------------------------------------------------------------------------

    def new_control(self, key: str, progress: Callable[[ProgressEvent], None] | None = None) -> JobControl:
        """A fresh control for the next job of `key` (a browser session); `cancel(key)` cancels it."""
        control = JobControl(progress)
        self._controls.pop(key, None)
        self._controls[key] = control  # the newest last: pages that went away are forgotten, oldest first
        while len(self._controls) > MAX_PAGES:
            self._controls.pop(next(iter(self._controls)))
        return control

    def cancel(self, key: str) -> bool:
        """Cancel the current job of `key`; False when it has none."""
        control = self._controls.get(key)
        if control is None:
            return False
        control.cancel()
        return True

    def close(self) -> None:
        """Remove the downloads folder (when the session made it)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # checks ---------------------------------------------------------------------------------------------------

    def _parse(self, prompt: str, what: str = "prompt") -> WeightedPrompt:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"the {what} is empty")
        if len(prompt) > self.limits.max_prompt_chars:
            raise ValueError(f"the {what} has {len(prompt)} characters; at most {self.limits.max_prompt_chars}")
        try:
            return parse_prompt(prompt)
        except PromptSyntaxError as err:
            raise ValueError(error_message(prompt, err)) from None

    def _check_common(self, seed: int, steps: int, scheduler: str | None) -> None:
        if not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
            raise ValueError(f"seed {seed!r} must be a whole number in [0, 2^63 - 1]")
        if not (isinstance(steps, int) and 1 <= steps <= self.limits.max_steps):
            raise ValueError(f"steps {steps!r} must be a whole number in [1, {self.limits.max_steps}]")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")

    def _size(self, kind: str, width: int | None, height: int | None) -> tuple[int, int]:
        """The `(width, height)` of a text-to-image job, checked against the model's multiple and the budget."""
        pipe = self.pipe(kind)
        native, multiple = api.native_side(pipe), api.size_multiple(pipe)
        height = height or (width if width is not None else native)
        width = width or height
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(f"{name} {value!r} must be a positive multiple of {multiple} for this model")
        budget = self.limits.pixel_budget * native * native
        if width * height > budget:
            raise ValueError(
                f"size {width}x{height} is {width * height} pixels, above the budget of {budget} "
                f"({self.limits.pixel_budget}x the model's native {native}x{native})"
            )
        return width, height

    def check_image(self, image: Image.Image) -> Image.Image:
        """An image of at most `max_upload_pixels`, as RGB (ValueError with the sizes otherwise)."""
        pixels = image.width * image.height
        if pixels > self.limits.max_upload_pixels:
            raise ValueError(
                f"the image is {image.width}x{image.height} = {pixels} pixels; at most "
                f"{self.limits.max_upload_pixels} are accepted"
            )
        if pixels == 0:
            raise ValueError("the image is empty (0 pixels)")
        return image.convert("RGB")

    def load_upload(self, path: str | Path, upload_root: str | Path | None = None) -> Image.Image:
        """Read an uploaded image file: its size and pixel count are checked before it is decoded.

        Args:
            path: the file the web server stored the upload in (never a path typed on the page).
            upload_root: when given, the file must lie inside this folder (the server's upload folder).
        """
        path = Path(path).resolve()
        if upload_root is not None and not path.is_relative_to(Path(upload_root).resolve()):
            raise ValueError("the image must be uploaded through the page")
        size = path.stat().st_size
        if size > self.limits.max_upload_bytes:
            raise ValueError(
                f"the image file is {size / 2**20:.1f} MiB; at most {self.limits.max_upload_bytes / 2**20:.1f} MiB"
            )
        try:
            with Image.open(path) as im:  # reads the header only
                if im.width * im.height > self.limits.max_upload_pixels:
                    raise ValueError(
                        f"the image is {im.width}x{im.height} = {im.width * im.height} pixels; at most "
                        f"{self.limits.max_upload_pixels} are accepted"
                    )
                im.load()
                return self.check_image(im)
        except Image.DecompressionBombError as err:
            raise ValueError(f"the image is too large to decode safely ({err})") from None
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read the image: {' '.join(str(err).split())}") from None

    # jobs ------------------------------------------------------------------------------------------------------

    def _job_dir(self) -> Path:
        self._jobs += 1
        folder = self.workdir / f"job-{self._jobs:05d}"
        folder.mkdir()
        old = sorted(p for p in self.workdir.glob("job-*") if p.is_dir())[: -self.limits.kept_jobs]
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
        return folder

    def _cached_plain(self, key: tuple, run: Callable[[], api.Result]) -> tuple[api.Result, bool]:
        if key in self._plain:
            self._plain.move_to_end(key)
            return self._plain[key], True
        result = run()
        self._plain[key] = result
        while len(self._plain) > self.limits.plain_cache:
            self._plain.popitem(last=False)
        return result, False

    def clear_cache(self) -> None:
        """Forget the cached plain results."""
        self._plain.clear()

    def _t2i_plan(self, request: TextToImageRequest, methods: Sequence[str]):
        """Checked (prompt, method config, sampling config) of a text-to-image request."""
        weighted = self._parse(request.prompt)
        if request.method not in methods:
            raise ValueError(
                f"method {request.method!r} does not run here; choose one of {', '.join(methods)} "
                "(SGOOL/DOODL have their own tab)"
            )
        config = build_config(request.method, request.knobs)
        card = self.defaults("t2i")
        steps = request.steps if request.steps is not None else int(card.get("num_inference_steps", 50))
        self._check_common(request.seed, steps, request.scheduler)
        width, height = self._size("t2i", request.width, request.height)
        guidance = request.guidance_scale if request.guidance_scale is not None else card.get("guidance_scale")
        sampling = SamplingConfig(
            steps=steps, guidance_scale=7.5 if guidance is None else float(guidance), height=height, width=width,
            seed=request.seed, negative_prompt=request.negative_prompt,
        )  # fmt: skip
        return weighted, config, sampling

    def text_to_image(self, request: TextToImageRequest, control: JobControl | None = None) -> PairResult:
        """Plain and the method side by side from the same seed (plain from the cache when it can be).

        Args:
            request: the job.
            control: progress and cancellation (`Cancelled` is raised between sampling steps).
        """
        control = control or JobControl()
        with self._job_lock:
            start = time.perf_counter()
            weighted, config, sampling = self._t2i_plan(request, method_names("t2i", initial_latent=False))
            steps, width, height = sampling.steps, sampling.width, sampling.height
            control.check()
            key = (
                "t2i", self.models["t2i"], request.seed, steps, width, height, request.scheduler,
                sampling.guidance_scale, request.negative_prompt, weighted.text,
                tuple((s.start, s.end) for s in weighted.spans),
            )  # fmt: skip
            runs_method = request.method != "plain"
            plain_steps = 0 if key in self._plain else steps  # plain's steps count only when it runs
            total = max(1, plain_steps + steps * runs_method)

            def run_plain() -> api.Result:
                return api.generate(
                    self._components("t2i", request.scheduler), weighted, method="plain", sampling=sampling,
                    callback=lambda done, n: control.step(done, total, "plain"),
                )  # fmt: skip

            plain, cached = self._cached_plain(key, run_plain)
            method = plain
            if runs_method:
                first = plain_steps
                method = api.generate(
                    self._components("t2i", request.scheduler), weighted, method=request.method, config=config,
                    sampling=sampling, callback=lambda done, n: control.step(first + done, total, request.method),
                )  # fmt: skip
            control.notify(ProgressEvent(total, total, "done"))
            settings = {
                "Steps": steps,
                "Sampler": plain.report["scheduler"],
                "CFG scale": sampling.guidance_scale,
                "Seed": request.seed,
                "Size": f"{width}x{height}",
                "Model": self.label("t2i"),
            }
            return self._pair(
                request.prompt, request.negative_prompt, request.method, plain, method, cached, settings,
                dict(kind="t2i", **_request_dict(request)), start,
            )  # fmt: skip

    def _pair(
        self,
        prompt: str,
        negative: str,
        method_name: str,
        plain: api.Result,
        method: api.Result,
        cached: bool,
        settings: dict,
        request: dict,
        start: float,
        input_image: Image.Image | None = None,
    ) -> PairResult:
        """Heatmaps, the share chart, the report and the files of a plain/method pair."""
        words = [
            dict(
                text=p["text"], weight=m["weight"], plain_share=p["attention_share"], method_share=m["attention_share"]
            )
            for p, m in zip(plain.report["words"], method.report["words"], strict=True)
        ]
        heatmaps: list[tuple[Image.Image, str]] = []
        for k, word in enumerate(words):
            for name, result, share in (
                ("plain", plain, word["plain_share"]),
                (method_name, method, word["method_share"]),
            ):
                if result.heatmaps is None:
                    continue
                caption = f"{name}: {word['text']} x{word['weight']:.3g}"
                if share is not None:
                    caption += f" ({share:.0%})"
                heatmaps.append((heatmap_overlay(result.image, result.heatmaps[k]), caption))
        chart = None
        if words and all(w["plain_share"] is not None and w["method_share"] is not None for w in words):
            chart = share_chart(
                [f"{w['text']} x{w['weight']:.3g}" for w in words],
                [[w["plain_share"] for w in words], [w["method_share"] for w in words]],
                ("plain", method_name),
            )
        report = dict(model=settings["Model"], request=request, plain_cached=cached, plain=plain.report)
        report["method"] = method.report
        folder = self._job_dir()
        seed = request["seed"]
        files = [
            save_png(
                method.image,
                folder / f"emphasize-{method_name}-{seed}.png",
                a1111_parameters(prompt, negative, {**settings, "Emphasize method": method_name}),
            ),
            save_png(
                plain.image,
                folder / f"emphasize-plain-{seed}.png",
                a1111_parameters(prompt, negative, {**settings, "Emphasize method": "plain"}),
            ),
        ]
        text = json.dumps(report, indent=2, default=str)
        path = folder / f"emphasize-{method_name}-{seed}.json"
        files.append(save_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8")))
        return PairResult(
            plain, method, cached, words, heatmaps, chart, report, files, round(time.perf_counter() - start, 3),
            input_image,
        )  # fmt: skip

    def sweep(
        self,
        request: TextToImageRequest,
        index: int,
        weights: Sequence[float],
        control: JobControl | None = None,
    ) -> SweepResult:
        """One word's weight over `weights` with the request's method, same seed (one image per weight).

        Args:
            request: the job (its prompt sets the other words' weights).
            index: the swept word, as a slider index of `sliders.slider_state(request.prompt)`.
            weights: the weights to try, in order (at most `max_sweep`).
            control: progress and cancellation.
        """
        control = control or JobControl()
        weights = [float(w) for w in weights]
        if not 1 <= len(weights) <= self.limits.max_sweep:
            raise ValueError(f"a sweep takes 1 to {self.limits.max_sweep} weights, got {len(weights)}")
        for w in weights:
            if not MIN_WEIGHT <= w <= MAX_WEIGHT:
                raise ValueError(f"sweep weight {w:g} must be in [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}]")
        if request.method == "plain":
            raise ValueError("plain sampling ignores weights: choose a method to sweep")
        self._parse(request.prompt)
        sliders = slider_state(request.prompt).sliders
        if not 0 <= index < len(sliders):
            raise ValueError(f"no word {index} to sweep: the prompt has {len(sliders)} weightable words")
        word = sliders[index]
        prompts = [set_weight(request.prompt, index, w) for w in weights]
        images, shares = [], []
        with self._job_lock:
            start = time.perf_counter()
            plans = [
                self._t2i_plan(_replace(request, prompt=p), method_names("t2i", initial_latent=False)) for p in prompts
            ]
            steps = plans[0][2].steps
            total = steps * len(weights)
            for k, (w, (weighted, config, sampling)) in enumerate(zip(weights, plans, strict=True)):
                desc, first = f"{word.label} x{w:g}", k * steps
                result = api.generate(
                    self._components("t2i", request.scheduler), weighted, method=request.method, config=config,
                    sampling=sampling, callback=lambda done, n, a=first, d=desc: control.step(a + done, total, d),
                )  # fmt: skip
                position = [sp.start for sp in weighted.spans].index(word.start)  # groups are in span order
                share = result.report["words"][position]["attention_share"]
                caption = f"{word.label} x{w:g}" + (f" ({share:.0%})" if share is not None else "")
                images.append((result.image, caption))
                shares.append(share)
            return SweepResult(images, weights, prompts, shares, word.label, round(time.perf_counter() - start, 3))

    def edit(self, request: EditRequest, image: Image.Image, control: JobControl | None = None) -> PairResult:
        """Plain editing and the method side by side from the same seed, on the image at its working size.

        Args:
            request: the job.
            image: the input image (checked against `max_upload_pixels`).
            control: progress and cancellation.
        """
        control = control or JobControl()
        with self._job_lock:
            start = time.perf_counter()
            image = self.check_image(image)
            weighted = self._parse(request.instruction, "instruction")
            methods = method_names("edit", initial_latent=False)
            if request.method not in methods:
                raise ValueError(f"method {request.method!r} does not edit; choose one of {', '.join(methods)}")
            config = build_config(request.method, request.knobs)
            card = self.defaults("edit")
            steps = request.steps if request.steps is not None else int(card.get("num_inference_steps", 100))
            self._check_common(request.seed, steps, request.scheduler)
            pipe = self.pipe("edit")
            size = api.working_size(image.size, api.size_multiple(pipe), api.native_side(pipe))
            fitted = api.fit_image(image, size)
            text_scale = request.text_scale if request.text_scale is not None else card.get("guidance_scale")
            image_scale = request.image_scale if request.image_scale is not None else card.get("image_guidance_scale")
            sampling = EditSamplingConfig(
                steps=steps, guidance_rule=request.guidance_rule, text_scale=text_scale, image_scale=image_scale,
                restore_size=False, seed=request.seed,
            )  # fmt: skip
            control.check()
            digest = hashlib.sha256(fitted.tobytes()).hexdigest()
            key = (
                "edit", self.models["edit"], digest, fitted.size, request.seed, steps, request.scheduler,
                request.guidance_rule, sampling.scales, weighted.text, tuple((s.start, s.end) for s in weighted.spans),
            )  # fmt: skip
            runs_method = request.method != "plain"
            total = [steps * (1 + runs_method)]
            offset = [0]

            def callback(desc: str):
                return lambda done, n: control.step(offset[0] + done, total[0], desc)

            def run_plain() -> api.Result:
                result = api.edit(
                    self._components("edit", request.scheduler), fitted, weighted, method="plain",
                    sampling=sampling, callback=callback("plain"),
                )  # fmt: skip
                offset[0] = steps
                return result

            plain, cached = self._cached_plain(key, run_plain)
            if cached:
                total[0] = steps if runs_method else 1
            method = plain
            if runs_method:
                method = api.edit(
                    self._components("edit", request.scheduler), fitted, weighted, method=request.method,
                    config=config, sampling=sampling, callback=callback(request.method),
                )  # fmt: skip
            control.notify(ProgressEvent(total[0], total[0], "done"))
            s_t, s_i = sampling.scales
            settings = {
                "Steps": steps,
                "Sampler": plain.report["scheduler"],
                "Guidance rule": request.guidance_rule,
                "Text CFG scale": s_t,
                "Image CFG scale": s_i,
                "Seed": request.seed,
                "Size": f"{fitted.width}x{fitted.height}",
                "Model": self.label("edit"),
            }
            return self._pair(
                request.instruction, "", request.method, plain, method, cached, settings,
                dict(kind="edit", **_request_dict(request)), start, fitted,
            )  # fmt: skip

    def saliency(self, request: SaliencyRequest, control: JobControl | None = None) -> SaliencyResult:
        """SGOOL/DOODL beside plain DDIM from the same initial noise; the loss of every step is reported as it
        runs (`ProgressEvent.losses`). A cancel stops after the current optimisation step and returns the best
        latent so far (`cancelled`).

        Args:
            request: the job.
            control: progress and cancellation.
        """
        control = control or JobControl()
        with self._job_lock:
            start = time.perf_counter()
            text = self._parse(request.prompt).text
            methods = method_names("t2i", initial_latent=True)
            if request.method not in methods:
                raise ValueError(f"method {request.method!r} is not one of {', '.join(methods)}")
            if request.saliency not in SALIENCY_DETECTORS:
                raise ValueError(
                    f"saliency {request.saliency!r} is not one of {', '.join(SALIENCY_DETECTORS)} (a TranSalNet "
                    "checkpoint is a file path: use the CLI's --saliency transalnet:PATH)"
                )
            config = build_config(request.method, request.knobs)
            if config.optimization_steps > self.limits.max_opt_steps:
                raise ValueError(
                    f"optimization steps {config.optimization_steps} above the limit {self.limits.max_opt_steps}"
                )
            self._check_common(request.seed, config.sampling_steps, None)
            width, height = self._size("t2i", request.width, request.height)
            sampling = SamplingConfig(
                steps=config.sampling_steps, guidance_scale=config.guidance_scale, height=height, width=width,
                seed=request.seed, negative_prompt=config.negative_prompt,
            )  # fmt: skip
            control.check()
            key = (
                "ddim", self.models["t2i"], request.seed, config.sampling_steps, width, height,
                config.guidance_scale, config.negative_prompt, text,
            )  # fmt: skip
            total = config.optimization_steps + 1

            def run_plain() -> api.Result:
                return api.generate(
                    self._components("t2i", "ddim"), text, method="plain", sampling=sampling, record_attention=False,
                    callback=lambda done, n: control.step(0, total, f"plain DDIM {done}/{n}"),
                )  # fmt: skip

            plain, cached = self._cached_plain(key, run_plain)

            def on_step(step: int, report) -> bool:
                if control.cancelled:
                    return True
                control.notify(ProgressEvent(step + 1, total, request.method, tuple(report.losses)))
                return control.cancelled

            result = optimize(
                self._components("t2i", None), request.prompt, method=request.method, clip=self.clip(),
                saliency=request.saliency, config=config, seed=request.seed, height=height, width=width,
                callback=on_step,
            )  # fmt: skip
            opt = result.report["optimization"]
            cancelled = control.cancelled and (opt["stopped"] or "").startswith("stopped by the caller")
            figure = None
            if request.method == "sgool" and result.heatmaps is not None:
                boxes = opt["boxes"][opt["best_step"]] if opt["boxes"] else []
                figure = saliency_figure(result.image, result.heatmaps[0], boxes)
            report = dict(
                model=self.label("t2i"), request=dict(kind="saliency", **_request_dict(request)),
                plain_cached=cached, plain=plain.report, method=result.report, cancelled=cancelled,
            )  # fmt: skip
            folder = self._job_dir()
            settings = {
                "Steps": config.sampling_steps,
                "CFG scale": config.guidance_scale,
                "Seed": request.seed,
                "Size": f"{width}x{height}",
                "Model": self.label("t2i"),
            }
            params = a1111_parameters(
                request.prompt, config.negative_prompt,
                {**settings, "Sampler": "EDICT", "Emphasize method": request.method,
                 "Optimization steps": config.optimization_steps, "Saliency": result.report["saliency"]},
            )  # fmt: skip
            files = [
                save_png(result.image, folder / f"emphasize-{request.method}-{request.seed}.png", params),
                save_png(
                    plain.image,
                    folder / f"emphasize-plain-{request.seed}.png",
                    a1111_parameters(request.prompt, config.negative_prompt, {**settings, "Sampler": "DDIMScheduler"}),
                ),
            ]
            if figure is not None:
                files.append(save_png(figure, folder / f"saliency-{request.seed}.png"))
            body = json.dumps(report, indent=2, default=str)
            path = folder / f"emphasize-{request.method}-{request.seed}.json"
            files.append(save_atomic(path, lambda tmp: Path(tmp).write_text(body, encoding="utf-8")))
            control.notify(ProgressEvent(total, total, "done", tuple(opt["losses"])))
            return SaliencyResult(
                plain, result, figure, list(opt["losses"]), report, files, cancelled,
                round(time.perf_counter() - start, 3), cached,
            )  # fmt: skip


def _request_dict(request) -> dict:
    return {name: getattr(request, name) for name in request.__dataclass_fields__} | {"knobs": dict(request.knobs)}


def _replace(request: TextToImageRequest, **changes) -> TextToImageRequest:
    return dataclasses.replace(request, **changes)


_DONE = object()


def stream(job: Callable[[JobControl], T], control: JobControl) -> Iterator[ProgressEvent | T]:
    """Run `job(control)` in a thread and yield its progress events as they come, then its result.

    The job's exception is raised here. Closing the iterator early (the page went away, a cancel) cancels the job,
    which stops at its next step.

    Args:
        job: the work, given the control whose progress is streamed.
        control: the job's control (its `progress` is replaced by the stream).
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}
    control.progress = events.put

    def target() -> None:
        try:
            outcome["value"] = job(control)
        except BaseException as err:  # re-raised in the consumer's thread
            outcome["error"] = err
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name="emphasize-job", daemon=True)
    thread.start()
    try:
        while True:
            event = events.get()
            if event is _DONE:
                break
            yield event
    finally:
        if thread.is_alive():
            control.cancel()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["value"]
