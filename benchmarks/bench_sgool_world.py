"""SGOOL vs DOODL vs plain sampling on the embedded world (GitHub issue 5), scored by world CLIP and the detector.

Method. Prompts are world t2i captions with two or three objects from held-out seeds (the first `--prompts`
seeds from 10^9 on whose caption has >= 2 objects; training uses seeds < 10^8), so the set is deterministic and
never seen in training. Every prompt has one seed (its world seed) and every method starts from the same initial
noise `N(0, I)` drawn from it:

- `plain`: DDIM (a fresh `DDIMScheduler` from the model's scheduler config, exactly the one SGOOL's EDICT chain is
  built from) at the same step count and CFG scale as SGOOL's chain (`emphasize.generate(method="plain")`);
- `doodl`: `emphasize.saliency_guidance.optimize(method="doodl")`, global CLIP loss, `--opt-steps` updates;
- `sgool`: the same with SGOOL's salient-crop term (`--saliency`, spectral residual by default);
- `render` (optional reference): the world's exact render of the caption, i.e. what a perfect model draws;
- `edict` (optional control): the EDICT chain from the same noise with no update (DOODL with 0 steps), which
  separates "EDICT instead of DDIM" from "the optimisation".

CLIP and the guidance are the embedded world CLIP (the one SGOOL/DOODL optimise against, so CLIP score is the
optimised metric; the detector metrics are independent of it). Each image is scored by

- `clip_score`: 100 x cosine(CLIP image embedding, CLIP text embedding of the caption), via
  `emphasize.sgool.clip_loss.clip_image_embeddings` / `clip_text_embedding`;
- the exact world detector (`emphasize.world.score_t2i`): `all_present`, `binding` (undefined, so left out, when
  not every object's shape and colour appear), `object_recall`, `count_correct`.

`--summarize` reports means with 95% percentile bootstrap CIs over prompts (seed fixed at 0, 2000 resamples), and
the paired differences (sgool - plain, doodl - plain, sgool - doodl; with the control also edict - plain, and
sgool - edict / doodl - edict, the optimisation alone) over the prompts both methods have, each with its
bootstrap CI.

Rows: one JSON line per (prompt, method) appended to OUT/rows.jsonl (one `write` on an O_APPEND descriptor, then
fsync), images under OUT/images/METHOD/SEED.png (atomic). A rerun skips the rows already there, so a killed run
continues; rows written with other settings make the run stop (use another --out). `--shard i/n` runs prompt k
when k % n == i, so n processes can share one --out.

Reproduce (docs/sgool_world.md; ~40 min on 2 free CPU cores at these settings, ~20 s per prompt per optimised
method; the model card's 25 sampling steps cost 2.5x as much):

    .venv/bin/python benchmarks/bench_sgool_world.py --tiny --methods render plain edict doodl sgool   # plumbing
    for i in 0 1; do nohup nice -n 10 .venv/bin/python benchmarks/bench_sgool_world.py \
        --methods render plain edict doodl sgool --prompts 100 --opt-steps 10 --sampling-steps 10 --shard $i/2 \
        > runs/sgool_world_$i.log 2>&1 & done
    .venv/bin/python benchmarks/bench_sgool_world.py --summarize         # table + runs/sgool_world/summary.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from emphasize.bench.stats import RESAMPLES, bootstrap_ci

EVAL_START = 10**9  # held-out world seeds (training uses seeds < 10^8)
METHODS = ("render", "plain", "edict", "doodl", "sgool")
METRICS = ("clip_score", "all_present", "binding", "object_recall", "count_correct")
DIFFS = (("sgool", "plain"), ("doodl", "plain"), ("sgool", "doodl"), ("edict", "plain"), ("sgool", "edict"),
         ("doodl", "edict"))  # fmt: skip


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the deterministic prompt list
    seed: int  # world seed = noise seed
    caption: str
    n_objects: int


# ----------------------------------------------------------------------------------------------------------------
# prompts, models, settings


def world_prompts(n: int, start: int = EVAL_START, limit: int = 100_000) -> list[Prompt]:
    """The first `n` held-out t2i captions with two or three objects, seeds from `start` on."""
    from emphasize.world import sample_t2i

    prompts, seed = [], start
    while len(prompts) < n and seed < start + limit:
        item = sample_t2i(seed, 64)
        if len(item.spec.objects) in (2, 3):
            prompts.append(Prompt(len(prompts), seed, item.caption, len(item.spec.objects)))
        seed += 1
    return prompts


def load_models(tiny: bool, need_pipe: bool = True, t2i: str | None = None, clip_dir: str | None = None):
    """(pipe with a DDIM scheduler or None, (clip model, tokenizer), model card dict); `render` needs no pipe.

    `t2i` / `clip_dir`: other model directories than the embedded ones (None: embedded).
    """
    from emphasize.sgool.run import _ddim_scheduler

    if tiny:
        from emphasize.models.tiny import tiny_pipeline
        from emphasize.models.tiny_clip import tiny_clip

        pipe, clip, card = tiny_pipeline() if need_pipe else None, tiny_clip(), {}
    else:
        from emphasize.models.load import load_clip, load_pipeline, sampling_defaults

        pipe = load_pipeline(t2i, "t2i") if need_pipe else None
        clip = load_clip(clip_dir)
        card = sampling_defaults(t2i, "t2i")
    if pipe is not None:
        pipe.scheduler = _ddim_scheduler(pipe.scheduler)  # the scheduler EDICT builds: plain = DDIM of the same chain
        pipe.set_progress_bar_config(disable=True)
    clip[0].eval()
    return pipe, clip, card


def settings_of(args: argparse.Namespace, card: dict) -> dict:
    """The settings every row carries; rows with other settings are never mixed."""
    return dict(
        models="tiny" if args.tiny else f"t2i={args.t2i or 'embedded'} clip={args.clip or 'embedded'}",
        sampling_steps=args.sampling_steps or int(card.get("num_inference_steps", 50)),
        guidance_scale=args.guidance_scale or float(card.get("guidance_scale", 7.5)),
        opt_steps=args.opt_steps,
        saliency=args.saliency,
    )


def settings_key(settings: dict, method: str) -> str:
    """Hash of the settings that matter for `method` (plain ignores the optimisation knobs)."""
    relevant = dict(settings)
    if method == "render":
        relevant = {"models": settings["models"]}
    elif method in ("plain", "edict"):
        relevant.pop("opt_steps")
    if method != "sgool":
        relevant.pop("saliency", None)
    return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------------------------
# rows: append-only, resumable


def read_rows(path: Path) -> list[dict]:
    """Rows of a rows.jsonl; a torn last line (a killed writer) is ignored."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line with a single write on an O_APPEND descriptor (whole lines even with several shards)."""
    data = (json.dumps(row, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------------------
# one (prompt, method)


@torch.no_grad()
def clip_score(clip, image, caption: str) -> float:
    """100 x cosine of the CLIP image and text embeddings."""
    from emphasize.sampling.common import pil_to_tensor
    from emphasize.sgool.clip_loss import clip_image_embeddings, clip_text_embedding

    model, tokenizer = clip
    image_embedding = clip_image_embeddings(model, pil_to_tensor(image).to(model.device))
    text_embedding = clip_text_embedding(model, tokenizer, caption)
    return float(100 * (image_embedding * text_embedding).sum())


def run_one(pipe, clip, prompt: Prompt, method: str, settings: dict) -> tuple[dict, object]:
    """Generate `prompt` with `method`; return (row, PIL image)."""
    from emphasize.api import generate, initial_noise
    from emphasize.config import SamplingConfig
    from emphasize.saliency_guidance import optimize
    from emphasize.sgool import SGOOLConfig
    from emphasize.world import parse_caption, score_t2i

    start_cpu, start = time.process_time(), time.perf_counter()
    steps, scale = settings["sampling_steps"], settings["guidance_scale"]
    extra: dict = {}
    if method == "render":  # the world's exact render of the caption: the reference ceiling
        from PIL import Image

        from emphasize.world import sample_t2i

        image = Image.fromarray(sample_t2i(prompt.seed, 64).image)
        result = SimpleNamespace(image=image)
    elif method == "plain":
        sampling = SamplingConfig(steps=steps, guidance_scale=scale, seed=prompt.seed)
        result = generate(pipe, prompt.caption, method="plain", sampling=sampling, record_attention=False)
    else:
        config = SGOOLConfig(
            optimization_steps=0 if method == "edict" else settings["opt_steps"],
            sampling_steps=steps,
            guidance_scale=scale,
        )
        result = optimize(
            pipe,
            prompt.caption,
            method="doodl" if method == "edict" else method,
            clip=clip,
            saliency=settings["saliency"],
            config=config,
            seed=prompt.seed,
        )
        opt = result.report["optimization"]
        best = result.latents.detach().cpu().float()
        initial = initial_noise(prompt.seed, tuple(best.shape), "cpu", torch.float32)
        extra = dict(
            latent_change=float((best - initial).norm() / initial.norm()),  # ||z_best - z_0|| / ||z_0||
            loss_initial=opt["losses"][0],
            loss_best=opt["best_loss"],
            best_step=opt["best_step"],
            fallback_steps=len(opt["fallback_steps"]),
            stopped=opt["stopped"],
        )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    metrics = score_t2i(parse_caption(prompt.caption), np.asarray(result.image.convert("RGB")))
    row = dict(
        index=prompt.index,
        seed=prompt.seed,
        caption=prompt.caption,
        n_objects=prompt.n_objects,
        method=method,
        settings=settings,
        settings_key=settings_key(settings, method),
        clip_score=clip_score(clip, result.image, prompt.caption),
        metrics=metrics,
        seconds=round(seconds, 2),
        cpu_seconds=round(cpu_seconds, 2),
        **extra,
    )
    return row, result.image


def run(args: argparse.Namespace) -> int:
    from emphasize.world.records import atomic_write_bytes

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    need_pipe = set(args.methods) != {"render"}
    pipe, clip, card = load_models(args.tiny, need_pipe, args.t2i, args.clip)
    settings = settings_of(args, card)
    shard, shards = args.shard
    prompts = [p for p in world_prompts(args.prompts) if p.index % shards == shard]
    done: dict[tuple[int, str], str] = {(r["seed"], r["method"]): r["settings_key"] for r in read_rows(rows_path)}
    for method in args.methods:
        clash = [s for (s, m), k in done.items() if m == method and k != settings_key(settings, method)]
        if clash:
            print(
                f"error: {rows_path} already has {method} rows with other settings (e.g. seed {clash[0]}); "
                "use another --out",
                file=sys.stderr,
            )
            return 2
    print(f"settings {json.dumps(settings)}; shard {shard}/{shards}: {len(prompts)} prompts", flush=True)
    for prompt in prompts:
        for method in args.methods:
            if (prompt.seed, method) in done:
                continue
            row, image = run_one(pipe, clip, prompt, method, settings)
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            atomic_write_bytes(out / "images" / method / f"{prompt.seed}.png", buf.getvalue())
            append_row(rows_path, row)
            done[(prompt.seed, method)] = row["settings_key"]
            m = row["metrics"]
            print(
                f"[{prompt.index:4d}] {method:5s} {row['seconds']:7.1f}s clip {row['clip_score']:6.2f} "
                f"present {m['all_present']} recall {m['object_recall']:.2f}  {prompt.caption}",
                flush=True,
            )
    return 0


# ----------------------------------------------------------------------------------------------------------------
# summary: means, bootstrap CIs, paired differences


def metric_value(row: dict, metric: str) -> float | None:
    value = row["clip_score"] if metric == "clip_score" else row["metrics"].get(metric)
    return None if value is None else float(value)


def stat(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_ci(array)
    return dict(n=len(array), mean=float(array.mean()) if len(array) else float("nan"), low=low, high=high)


def summarize(out: Path) -> dict:
    """Means and CIs per method, paired differences; one settings group per method (the latest rows' settings)."""
    rows = read_rows(out / "rows.jsonl")
    by_method: dict[str, dict[int, dict]] = {}
    for row in rows:  # later rows with the same (method, seed) win; settings groups are kept apart by run()
        by_method.setdefault(row["method"], {})[row["seed"]] = row
    methods = [m for m in METHODS if m in by_method]
    summary: dict = {"methods": {}, "diffs": {}, "settings": {}, "resamples": RESAMPLES, "bootstrap_seed": 0}
    for method in methods:
        got = by_method[method].values()
        first = next(iter(got))["settings"]
        keep = ["models"] if method == "render" else [k for k in first if k not in ("opt_steps", "saliency")]
        keep += ["opt_steps"] * (method in ("doodl", "sgool")) + ["saliency"] * (method == "sgool")
        summary["settings"][method] = {k: first[k] for k in keep}
        entry = {metric: stat([v for r in got if (v := metric_value(r, metric)) is not None]) for metric in METRICS}
        entry["seconds_per_prompt"] = float(np.mean([r["seconds"] for r in got]))
        entry["cpu_seconds_per_prompt"] = float(np.mean([r["cpu_seconds"] for r in got]))
        if method in ("doodl", "sgool"):  # did the optimisation move anything?
            entry["optimisation"] = dict(
                loss_initial=float(np.mean([r["loss_initial"] for r in got])),
                loss_best=float(np.mean([r["loss_best"] for r in got])),
                improved_share=float(np.mean([r["best_step"] > 0 for r in got])),
                latent_change=float(np.mean([r["latent_change"] for r in got])),
                fallback_steps=float(np.mean([r["fallback_steps"] for r in got])),
            )
        summary["methods"][method] = entry
    for a, b in DIFFS:
        if a not in by_method or b not in by_method:
            continue
        common = sorted(set(by_method[a]) & set(by_method[b]))
        entry = {}
        for metric in METRICS:
            pairs = [(metric_value(by_method[a][s], metric), metric_value(by_method[b][s], metric)) for s in common]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            entry[metric] = stat([x - y for x, y in pairs])
            entry[metric][f"mean_{a}"] = float(np.mean([x for x, _ in pairs])) if pairs else float("nan")
            entry[metric][f"mean_{b}"] = float(np.mean([y for _, y in pairs])) if pairs else float("nan")
        summary["diffs"][f"{a}-{b}"] = entry
    return summary


def _cell(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean'] * scale:.{digits}f} [{s['low'] * scale:.{digits}f}, {s['high'] * scale:.{digits}f}]"


def markdown(summary: dict) -> str:
    digits = {"clip_score": 2}
    head = (
        "| method | prompts | CLIP score | all objects present | binding | object recall | count correct | s/prompt |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for method, entry in summary["methods"].items():
        cells = [_cell(entry[m], digits=digits.get(m, 3)) for m in METRICS]
        bn = entry["binding"]["n"]
        cells[2] = f"{cells[2]} (n={bn})" if bn != entry["clip_score"]["n"] else cells[2]
        lines.append(
            f"| {method} | {entry['clip_score']['n']} | "
            + " | ".join(cells)
            + f" | {entry['seconds_per_prompt']:.1f} |"
        )
    if summary["diffs"]:
        lines += ["", "| paired difference | prompts | CLIP score | all objects present | binding | object recall "
                  "| count correct |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, entry in summary["diffs"].items():
            cells = [_cell(entry[m], digits=digits.get(m, 3)) for m in METRICS]
            bn = entry["binding"]["n"]
            cells[2] = f"{cells[2]} (n={bn})" if bn != entry["clip_score"]["n"] else cells[2]
            lines.append(f"| {name} | {entry['clip_score']['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Means with 95% percentile bootstrap CIs over prompts (2000 resamples, seed 0)."]
    for method, entry in summary["methods"].items():
        if "optimisation" in entry:
            o = entry["optimisation"]
            lines.append(
                f"- {method} optimisation: CLIP loss {o['loss_initial']:.4f} -> {o['loss_best']:.4f} (mean), best "
                f"latent after step 0 on {100 * o['improved_share']:.0f}% of prompts, mean ||z - z0|| / ||z0|| "
                f"{o['latent_change']:.4f}, saliency fall-back steps per prompt {o['fallback_steps']:.2f}"
            )
    for method, s in summary["settings"].items():
        lines.append(f"- {method}: {json.dumps(s)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/2") from e
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, help="prompts with 2-3 objects (default 100; --tiny: 3)")
    parser.add_argument("--opt-steps", type=int, help="SGOOL/DOODL optimisation steps (default 50; --tiny: 1)")
    parser.add_argument(
        "--sampling-steps", type=int, help="DDIM/EDICT steps (default: the model card's, else 50; --tiny: 2)"
    )
    parser.add_argument("--guidance-scale", type=float, help="CFG scale (default: the model card's, else 7.5)")
    parser.add_argument("--saliency", default="spectral", help="SGOOL saliency: spectral, attention, transalnet:PATH")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["plain", "doodl", "sgool"])
    parser.add_argument("--out", help="output folder (default runs/sgool_world; --tiny: runs/sgool_world_tiny)")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: run prompts with index %% n == i")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--t2i", help="t2i diffusers directory instead of the embedded model")
    parser.add_argument("--clip", help="CLIP directory instead of the embedded world CLIP")
    parser.add_argument("--tiny", action="store_true", help="tiny random models: plumbing check")
    parser.add_argument("--summarize", action="store_true", help="print the table of OUT/rows.jsonl, write summary")
    args = parser.parse_args(argv)
    args.prompts = args.prompts or (3 if args.tiny else 100)
    args.opt_steps = args.opt_steps if args.opt_steps is not None else (1 if args.tiny else 50)
    args.sampling_steps = args.sampling_steps or (2 if args.tiny else None)
    args.out = args.out or ("runs/sgool_world_tiny" if args.tiny else "runs/sgool_world")
    if args.summarize:
        out = Path(args.out)
        if not (out / "rows.jsonl").is_file():
            print(f"error: no rows at {out / 'rows.jsonl'}", file=sys.stderr)
            return 2
        summary = summarize(out)
        table = markdown(summary)
        from emphasize.world.records import atomic_write_text

        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(out / "summary.md", table + "\n")
        print(table)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
