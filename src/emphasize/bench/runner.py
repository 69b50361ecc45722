"""`emphasize bench quality`: every method on a suite, one result row per (prompt, method, seed), resumable and
sharded over processes with accelerate.

Rows are one JSON file each (`DIR/rows/SUITE/METHOD/INDEX-sSEED.json`, written atomically), the image beside it
under `DIR/images/`. A rerun skips the rows that exist, so a killed run resumes without redoing or duplicating a
row; `accelerate launch --multi_gpu --num_processes N -m emphasize bench quality ...` (or `torchrun
--nproc_per_node N -m emphasize ...`; on a machine without GPUs the processes join with gloo on the CPU) gives
process p of n the rows whose position in the fixed row order is p mod n (accelerate's `PartialState`).
`DIR/run.json` holds the settings; a rerun with other settings in the same DIR is refused. `emphasize bench report
DIR` merges whatever rows exist.

Per row: prompt, weighted prompt, method, seed, emphasized words and weights, metrics, CPU seconds, peak memory,
image path. Metrics: CLIP score as torchmetrics defines it (100 x max(cos, 0), the world CLIP by default) on
every t2i suite; on world suites the exact detector's metrics (`weighted_found`: an object of the emphasized
phrase is found, `other_found`, `all_present`, `binding`, `object_recall`; edit: the task metrics); on
`world-grounding` the grounding of each phrase's attention at every level and the word-dependence ablation.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from emphasize.bench.suites import EDIT_SUITES, SUITES, SuiteItem, load_suite
from emphasize.losses import AttentionLossConfig
from emphasize.methods import get_method, method_names

SEED_STRIDE = 1000  # seed s of item k is EVAL_START + SEED_STRIDE * k + s (as the earlier world benchmarks)
EVAL_START = 10**9


@dataclass(frozen=True)
class QualityConfig:
    """Settings of one `bench quality` run (recorded in DIR/run.json; a resumed run must match them)."""

    suite: str  # one of `SUITES`
    methods: tuple[str, ...]  # methods to run, plain first when present
    seeds: int = 2  # seeds per prompt
    prompts: int | None = None  # items (None: a public set in full, 100 world items)
    offset: int = 0  # first item (tune on one range, report on another)
    weight: float = 2.0  # weight of the emphasized words
    model: str | None = None  # text-to-image (or editing, for world-edit) model; None: the embedded one
    clip: str | None = None  # CLIP for CLIP score and SGOOL/DOODL; None: the embedded world CLIP
    steps: int | None = None  # sampling steps; None: the model card's (25 on the embedded models), else 50
    guidance_scale: float | None = None  # CFG (text) scale; None: the model card's, else 7.5
    attention_factor: int | None = None  # guided level of attend-excite/importance; None: the card's, else the rule
    scale_factor: float | None = None  # attend-excite/importance step size alpha_0; None: the method's default (20)
    softmax_over: str | None = None  # attend-excite/importance token softmax, "all" or "prompt"; None: default
    prominence: float | None = None  # importance: weight of the attention-mass term; None: its default (1)
    focus: float | None = None  # importance: weight of the focus (spatial entropy) term; None: its default (0)
    subject_tokens: str | None = None  # attend-excite: "all" or "last" token of each marked phrase; None: default
    opt_steps: int = 10  # SGOOL/DOODL optimisation steps
    opt_sampling_steps: int = 10  # SGOOL/DOODL EDICT chain steps
    guidance_rule: str | None = None  # edit suites' three-branch rule, "ip2p" or "instructdiffusion"; None: ip2p

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}; choose one of {', '.join(SUITES)}")
        allowed = method_names("edit" if self.suite in EDIT_SUITES else "t2i")
        if self.suite == "world-grounding":
            allowed = ("plain",)
        if not self.methods:
            raise ValueError("methods: give at least one method")
        for m in self.methods:
            if m not in allowed:
                raise ValueError(f"method {m!r} does not run on suite {self.suite}; choose from {', '.join(allowed)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods={','.join(self.methods)} names a method twice")
        if not 1 <= self.seeds <= SEED_STRIDE:
            raise ValueError(f"seeds={self.seeds} must be in [1, {SEED_STRIDE}]")
        if not (np.isfinite(self.weight) and 0 <= self.weight <= 100):
            raise ValueError(f"weight={self.weight} must be in [0, 100]")
        if self.guidance_rule is not None:
            from emphasize.sampling.guidance_rules import GUIDANCE_RULES

            if self.guidance_rule not in GUIDANCE_RULES:
                raise ValueError(f"guidance_rule={self.guidance_rule!r} must be one of {', '.join(GUIDANCE_RULES)}")
            if self.suite not in EDIT_SUITES:
                raise ValueError(f"guidance_rule={self.guidance_rule!r} is for the edit suites only, not {self.suite}")
        if self.softmax_over not in (None, "all", "prompt"):
            raise ValueError(f"softmax_over={self.softmax_over!r} must be 'all' or 'prompt'")
        if self.scale_factor is not None and not (np.isfinite(self.scale_factor) and self.scale_factor >= 0):
            raise ValueError(f"scale_factor={self.scale_factor} must be a finite number >= 0")
        # the loss config owns the ranges of its knobs; building one checks them before any model is loaded
        loss_knobs = {name: getattr(self, name) for name in ("prominence", "focus") if getattr(self, name) is not None}
        AttentionLossConfig(**loss_knobs)
        for name in ("opt_steps", "opt_sampling_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class RowSpec:
    """One (item, method, seed) of the run."""

    item: SuiteItem
    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.item.suite}/{self.method}/{self.item.index:05d}-s{self.seed}"


def row_specs(config: QualityConfig) -> list[RowSpec]:
    """Every row of the run in its fixed order (item, seed, method)."""
    items = load_suite(config.suite, prompts=config.prompts, offset=config.offset, weight=config.weight)
    return [
        RowSpec(item, method, EVAL_START + SEED_STRIDE * item.index + s)
        for item in items
        for s in range(config.seeds)
        for method in config.methods
    ]


def shard(specs: Sequence[RowSpec], index: int, count: int) -> list[RowSpec]:
    """Process `index` of `count` takes the rows at positions p with p mod count == index."""
    return [s for p, s in enumerate(specs) if p % count == index]


def write_json_atomic(path: Path, data: dict) -> None:
    from emphasize.visualize import save_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8"))


def read_rows(out: str | os.PathLike) -> list[dict]:
    """Every row written under `out/rows` (all suites, methods and shards), in key order."""
    root = Path(out) / "rows"
    rows = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        if path.name.startswith("."):  # a temp file of an interrupted write
            continue
        rows.append(json.loads(path.read_text(encoding="utf-8")))
    return rows


def check_run_settings(out: Path, config: QualityConfig) -> None:
    """Record the run's settings, or refuse when DIR holds rows of other settings."""
    path = out / "run.json"
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    runs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    fixed = {k: v for k, v in settings.items() if k not in ("methods", "prompts", "offset", "seeds")}
    previous = runs.get(config.suite)
    if previous is not None:
        old = {k: v for k, v in previous.items() if k not in ("methods", "prompts", "offset", "seeds")}
        if old != fixed:
            diff = ", ".join(f"{k}={old.get(k)!r} -> {v!r}" for k, v in fixed.items() if old.get(k) != v)
            raise ValueError(f"{out} holds {config.suite} rows made with other settings ({diff}); use another --out")
    runs[config.suite] = settings
    write_json_atomic(path, runs)


# ---------------------------------------------------------------------------------------------------------------
# running one row


@dataclass
class Models:
    """What the rows need, loaded once per process."""

    pipe: object
    clip: tuple | None
    card: dict


def load_models(config: QualityConfig) -> Models:
    from emphasize.models.load import load_clip, load_pipeline, sampling_defaults

    kind = "edit" if config.suite in EDIT_SUITES else "t2i"
    pipe = load_pipeline(config.model, kind)
    pipe.set_progress_bar_config(disable=True)
    card = sampling_defaults(config.model, kind)  # {} for hub ids and single files
    clip = None if kind == "edit" else tuple(load_clip(config.clip))
    return Models(pipe, clip, card)


def method_config(method: str, config: QualityConfig, card: dict):
    """The method's default config, guided at the run's (or the model card's) attention level."""
    from emphasize.config import method_config as default_config

    method_cfg = default_config(method)
    if not hasattr(method_cfg, "attention_factor"):
        return method_cfg
    factor = config.attention_factor if config.attention_factor is not None else card.get("attention_factor")
    if factor is not None:
        method_cfg = replace(method_cfg, attention_factor=int(factor))
    if config.scale_factor is not None:
        method_cfg = replace(method_cfg, schedule=replace(method_cfg.schedule, scale_factor=config.scale_factor))
    if config.softmax_over is not None:
        method_cfg = replace(method_cfg, loss=replace(method_cfg.loss, softmax_over=config.softmax_over))
    if config.prominence is not None and method == "importance":
        method_cfg = replace(method_cfg, loss=replace(method_cfg.loss, prominence=config.prominence))
    if config.focus is not None and method == "importance":
        method_cfg = replace(method_cfg, loss=replace(method_cfg.loss, focus=config.focus))
    if config.subject_tokens is not None and method == "attend-excite":
        method_cfg = replace(method_cfg, subject_tokens=config.subject_tokens)
    return method_cfg


def sampling_settings(config: QualityConfig, card: dict) -> tuple[int, float]:
    steps = config.steps or card.get("num_inference_steps", 50)
    scale = config.guidance_scale if config.guidance_scale is not None else card.get("guidance_scale", 7.5)
    return int(steps), float(scale)


def edit_sampling(config: QualityConfig, card: dict, seed: int):
    """The `EditSamplingConfig` of an edit-suite row: the run's (or the card's) steps and scales, its rule."""
    from emphasize.config import EditSamplingConfig

    steps, scale = sampling_settings(config, card)
    return EditSamplingConfig(steps=steps, guidance_rule=config.guidance_rule or "ip2p", text_scale=scale,
                              image_scale=card.get("image_guidance_scale", 1.5), seed=seed)  # fmt: skip


def clip_score(clip: tuple, image, text: str) -> float:
    """torchmetrics' CLIP score: 100 x max(cos(image, text), 0)."""
    import torch

    from emphasize.sampling.common import pil_to_tensor
    from emphasize.sgool.clip_loss import clip_image_embeddings, clip_text_embedding

    model, tokenizer = clip
    with torch.no_grad():
        image_embedding = clip_image_embeddings(model, pil_to_tensor(image))
        text_embedding = clip_text_embedding(model, tokenizer, text)
    return float(100 * torch.clamp((image_embedding * text_embedding).sum(-1), min=0)[0])


def run_method(models: Models, spec: RowSpec, config: QualityConfig):
    """Make the row's image with its method; returns an `emphasize.api.Result`."""
    from emphasize.api import edit, generate
    from emphasize.config import SamplingConfig

    steps, scale = sampling_settings(config, models.card)
    prompt = spec.item.weighted_text
    if get_method(spec.method).initial_latent:
        from emphasize.saliency_guidance import optimize
        from emphasize.sgool import SGOOLConfig

        sgool = SGOOLConfig(
            optimization_steps=config.opt_steps, sampling_steps=config.opt_sampling_steps, guidance_scale=scale
        )
        return optimize(models.pipe, spec.item.prompt, method=spec.method, clip=models.clip, config=sgool,
                        seed=spec.seed)  # fmt: skip
    method_cfg = method_config(spec.method, config, models.card)
    if config.suite in EDIT_SUITES:
        from PIL import Image

        task = world_task(spec.item)
        return edit(models.pipe, Image.fromarray(task.input), prompt, method=spec.method, config=method_cfg,
                    sampling=edit_sampling(config, models.card, spec.seed),
                    record_attention=config.suite == "world-refer")  # fmt: skip
    sampling = SamplingConfig(steps=steps, guidance_scale=scale, seed=spec.seed)
    return generate(models.pipe, prompt, method=spec.method, config=method_cfg, sampling=sampling,
                    record_attention=False)  # fmt: skip


def world_task(item: SuiteItem):
    """The world instruction task (`TaskItem`) of a world-edit or world-refer item."""
    from emphasize.bench.suites import referring_item, task_of_kind
    from emphasize.world import sample_task

    if item.suite == "world-refer":
        return referring_item(item.index).task
    family = item.extra["task"]
    task = task_of_kind(family, item.extra["kind"], item.world_seed, sample_task)
    return task


def referring_grounding(item, heatmap) -> dict:
    """Grounding of the discriminating word's cross-attention (`(h, w)`, all levels averaged, as captured while
    editing) on the input scene's referred object and distractor: the share of its mass inside each object's mask,
    the referred mask's area share (chance) and the pointing game (its peak inside the referred object)."""
    from emphasize.bench.testbed import map_grounding
    from emphasize.world import object_masks

    masks = object_masks(item.task.scene, item.task.size)
    inside, _, chance, pointing = map_grounding(heatmap, masks[item.target])
    on_distractor = map_grounding(heatmap, masks[item.distractor])[0]
    return dict(word_mass_referred=inside, word_mass_distractor=on_distractor, word_mass_chance=chance,
                word_pointing=pointing)  # fmt: skip


def world_t2i_metrics(item: SuiteItem, image) -> dict:
    """Detector metrics of a world t2i image, with the emphasized phrase's objects apart from the others."""
    from emphasize.world import detect, parse_caption, phrase_spans, t2i_metrics

    spec = parse_caption(item.prompt)
    detections = detect(np.asarray(image.convert("RGB")))
    found = [any(d.shape == o.shape and d.colour == o.colour for d in detections) for o in spec.objects]
    emphasized = {
        i for a, e, objects in phrase_spans(spec) for i in objects if (a, e) in {s[:2] for s in item.emphasis}
    }
    others = [f for i, f in enumerate(found) if i not in emphasized]
    scores = t2i_metrics(spec, detections)
    return dict(
        weighted_found=float(np.mean([found[i] for i in sorted(emphasized)])) if emphasized else None,
        other_found=float(np.mean(others)) if others else None,
        all_present=scores["all_present"],
        binding=scores["binding"],
        object_recall=scores["object_recall"],
    )


def grounding_metrics(models: Models, item: SuiteItem, seed: int, config: QualityConfig) -> tuple[object, dict]:
    """Plain sampling with capture: the image, each phrase's grounding per level, and the word-dependence ablation."""
    from PIL import Image

    from emphasize.bench.testbed import (
        phrase_groups,
        position_classes,
        replace_positions,
        sample_embeds,
        sample_with_attention,
        score_grounding,
    )
    from emphasize.sampling.common import encode_prompt
    from emphasize.world import detect, parse_caption

    pipe = models.pipe
    steps, scale = sampling_settings(config, models.card)
    spec = parse_caption(item.prompt)
    cond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [item.prompt])
    empty = encode_prompt(pipe.tokenizer, pipe.text_encoder, [""])
    image, per_step, token_mass = sample_with_attention(pipe, cond, empty, seed=seed, steps=steps,
                                                        guidance_scale=scale)  # fmt: skip
    detections = detect(image)
    masks = {}
    for index, o in enumerate(spec.objects):
        hits = [d for d in detections if d.shape == o.shape and d.colour == o.colour]
        if hits:
            masks[index] = max(hits, key=lambda d: d.area).mask
    groups = phrase_groups(pipe.tokenizer, item.prompt)
    values = score_grounding(per_step, groups, masks, pipe.unet.config.sample_size)
    metrics: dict = {"objects": len(spec.objects), "matched": len(masks)}
    for (level, steps_range), rows in values.items():
        name = f"{level}" if level == "all" else f"{level}x{level}"
        for field_index, field in enumerate(("mass_inside", "other_inside", "chance", "pointing")):
            metrics[f"grounding/{name}/{steps_range}/{field}"] = [float(r[field_index]) for r in rows]
    classes = position_classes(pipe.tokenizer, item.prompt, pipe.tokenizer.model_max_length)
    metrics["token_mass"] = {name: float(token_mass[pos].sum()) for name, pos in classes.items()}

    def found(img) -> float:
        dets = detect(img)
        return float(np.mean([any(d.shape == o.shape and d.colour == o.colour for d in dets) for o in spec.objects]))

    metrics["found_normal"] = found(image)
    for name in ("words", "padding"):
        ablated = replace_positions(cond, empty, classes[name])
        metrics[f"found_without_{name}"] = found(sample_embeds(pipe, ablated, empty, seed=seed, steps=steps,
                                                               guidance_scale=scale))  # fmt: skip
    return Image.fromarray(image), metrics


def run_row(models: Models, spec: RowSpec, config: QualityConfig, out: Path) -> dict:
    """Make, score and write one row (and its image); returns the row."""
    import torch

    from emphasize.bench.speed import PeakMemory
    from emphasize.visualize import save_png

    device = models.pipe.unet.device
    start = time.process_time()
    with PeakMemory(device) as memory:
        if config.suite == "world-grounding":
            image, metrics = grounding_metrics(models, spec.item, spec.seed, config)
        else:
            result = run_method(models, spec, config)
            image, metrics = result.image, {}
    seconds = time.process_time() - start
    if config.suite == "world-t2i":
        metrics.update(world_t2i_metrics(spec.item, image))
    elif config.suite == "world-edit":
        from emphasize.world import task_metrics

        metrics.update(task_metrics(world_task(spec.item), np.asarray(image.convert("RGB"))))
    elif config.suite == "world-refer":
        from emphasize.bench.suites import referring_item
        from emphasize.world.referring import landing

        referring = referring_item(spec.item.index)
        metrics.update(landing(referring, np.asarray(image.convert("RGB"))))
        metrics.update(referring_grounding(referring, result.heatmaps[0]))
    if models.clip is not None:
        metrics["clip_score"] = clip_score(models.clip, image, spec.item.prompt)
    image_path = Path("images") / f"{spec.key}.png"
    (out / image_path).parent.mkdir(parents=True, exist_ok=True)
    save_png(image, out / image_path)
    row = dict(
        key=spec.key,
        suite=spec.item.suite,
        index=spec.item.index,
        category=spec.item.category,
        prompt=spec.item.prompt,
        weighted_prompt=spec.item.weighted_text if spec.method != "plain" else spec.item.prompt,
        method=spec.method,
        seed=spec.seed,
        emphasized=spec.item.emphasized,
        metrics=metrics,
        seconds=round(seconds, 3),
        peak_mb=round(memory.peak / 2**20, 1),
        image=str(image_path),
        torch_threads=torch.get_num_threads(),
    )
    write_json_atomic(out / "rows" / f"{spec.key}.json", row)
    return row


# ---------------------------------------------------------------------------------------------------------------
# the run


PRIOR_COST = {"plain": 1.0, "embed": 1.0, "reweight": 1.1, "importance": 2.5, "attend-excite": 3.0}  # x plain


def estimate_seconds(specs: Sequence[RowSpec], out: Path, config: QualityConfig, plain_seconds: float) -> float:
    """Estimated CPU seconds of the rows: measured seconds per method where DIR has rows, else prior cost ratios
    (SGOOL/DOODL: ~3 chain passes per optimisation step) times one measured plain sample."""
    measured: dict[str, list[float]] = {}
    for row in read_rows(out):
        if row["suite"] == config.suite:
            measured.setdefault(row["method"], []).append(row["seconds"])
    total = 0.0
    for spec in specs:
        if spec.method in measured:
            total += float(np.mean(measured[spec.method]))
        elif get_method(spec.method).initial_latent:
            total += plain_seconds * 3 * config.opt_steps * config.opt_sampling_steps / max(config.steps or 25, 1)
        elif config.suite == "world-grounding":
            total += 3 * plain_seconds
        else:
            total += PRIOR_COST.get(spec.method, 2.0) * plain_seconds
    return total


def run_quality(
    config: QualityConfig,
    out: str | os.PathLike,
    *,
    dry_run: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run (or resume) the rows of this process's shard; returns the rows written now.

    Args:
        config: the run's settings.
        out: the run directory.
        dry_run: only print the row count and an estimated time.
        progress: show a progress bar with ETA over this process's rows.
        log: where messages go (stderr when None).
    """
    import torch
    from accelerate import PartialState

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(out)
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes of a torchrun launch use gloo
    specs = row_specs(config)
    mine = shard(specs, state.process_index, state.num_processes)
    todo = [s for s in mine if not (out / "rows" / f"{s.key}.json").is_file()]
    if dry_run:
        models = load_models(config)
        start = time.process_time()
        with torch.no_grad():
            first = RowSpec(specs[0].item, "plain", specs[0].seed)
            if config.suite == "world-grounding":
                from emphasize.bench.testbed import sample_embeds
                from emphasize.sampling.common import encode_prompt

                pipe = models.pipe
                cond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [first.item.prompt])
                steps, scale = sampling_settings(config, models.card)
                sample_embeds(pipe, cond, cond, seed=first.seed, steps=steps, guidance_scale=scale)
            else:
                run_method(models, first, config)
        seconds = estimate_seconds(todo, out, config, time.process_time() - start)
        log(f"{config.suite}: {len(specs)} rows ({len(mine)} in this process, {len(todo)} not yet done); "
            f"estimated {seconds / 60:.1f} CPU minutes for them on this machine")  # fmt: skip
        return []
    out.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:
        check_run_settings(out, config)
    state.wait_for_everyone()
    models = load_models(config)
    from tqdm.auto import tqdm

    written = []
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{config.suite} rows", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    try:
        for spec in todo:
            written.append(run_row(models, spec, config, out))
            bar.update(1)
    finally:
        bar.close()
    return written
