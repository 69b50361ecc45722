"""`emphasize bench report DIR`: tables, plots and image grids from the rows of `bench quality` (and `bench speed`).

Writes `DIR/report.md` (readable without running anything else) and beside it:
- `SUITE_means.png`: each method's mean per metric with its 95% bootstrap CI;
- `SUITE_paired.png`: a forest plot of each method's paired difference from `plain` on the same prompts and seeds;
- `SUITE_categories.png`: CLIP score per category and method (public sets);
- `SUITE_grid.png`: prompt x method images for a few prompts (world suites: the detector's verdict under each);
- `world-grounding_levels.png`: mass inside the own object / chance and the pointing game per attention level.

Statistics come from `emphasize.bench.stats`: per prompt, the metric's mean over seeds; means and paired
differences with percentile bootstrap CIs over prompts.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emphasize.bench.runner import read_rows
from emphasize.bench.stats import Estimate, estimate, paired_difference, per_unit

METHOD_ORDER = ("plain", "embed", "reweight", "attend-excite", "importance", "doodl", "sgool")
SCALAR_METRICS = {  # suite -> metrics reported (in this order), when present
    "world-t2i": ("weighted_found", "other_found", "all_present", "binding", "object_recall", "clip_score"),
    "world-edit": ("success", "mask_iou", "keypoint_error", "keypoint_found", "psnr", "preservation_psnr"),
    "world-refer": (
        "on_referred",
        "on_distractor",
        "success",
        "mask_iou",
        "keypoint_error",
        "preservation_psnr",
        "word_mass_referred",
        "word_mass_distractor",
        "word_mass_chance",
        "word_pointing",
    ),
    "world-grounding": ("found_normal", "found_without_words", "found_without_padding", "clip_score"),
}
DEFAULT_METRICS = ("clip_score",)
GRID_PROMPTS = 4  # prompts shown in each image grid


def _methods(rows: Sequence[dict]) -> list[str]:
    present = {r["method"] for r in rows}
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _metric_names(suite: str, rows: Sequence[dict]) -> list[str]:
    names = SCALAR_METRICS.get(suite, DEFAULT_METRICS)
    seen = {k for r in rows for k, v in r["metrics"].items() if isinstance(v, int | float) or v is None}
    return [m for m in names if m in seen]


def per_prompt(rows: Sequence[dict], method: str, metric: str) -> dict[int, float]:
    """Prompt index -> the metric's mean over the method's seeds (undefined values left out)."""
    return per_unit((r["index"], r["metrics"].get(metric)) for r in rows if r["method"] == method)


def suite_tables(suite: str, rows: Sequence[dict]) -> tuple[str, dict]:
    """Markdown tables (means with CIs, paired differences from plain, time and memory) and their numbers."""
    methods, metrics = _methods(rows), _metric_names(suite, rows)
    numbers: dict = {"means": {}, "paired": {}, "cost": {}}
    head = "| method | " + " | ".join(m.replace("_", " ") for m in metrics) + " | CPU s/image | peak MB |"
    lines = [head, "|---|" + "---|" * (len(metrics) + 2)]
    for method in methods:
        cells = []
        for metric in metrics:
            e = estimate(per_prompt(rows, method, metric).values())
            numbers["means"][f"{method}/{metric}"] = e.as_dict()
            cells.append(e.format())
        mine = [r for r in rows if r["method"] == method]
        seconds, peak = float(np.mean([r["seconds"] for r in mine])), float(np.max([r["peak_mb"] for r in mine]))
        numbers["cost"][method] = dict(seconds=seconds, peak_mb=peak)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {seconds:.2f} | {peak:.0f} |")
    if "plain" in methods and len(methods) > 1:
        lines += ["", "| paired difference from plain | " + " | ".join(m.replace("_", " ") for m in metrics) + " |",
                  "|---|" + "---|" * len(metrics)]  # fmt: skip
        for method in methods:
            if method == "plain":
                continue
            cells = []
            for metric in metrics:
                e = paired_difference(per_prompt(rows, method, metric), per_prompt(rows, "plain", metric))
                numbers["paired"][f"{method}/{metric}"] = e.as_dict()
                mark = " *" if e.excludes_zero() else ""
                cells.append(f"{e.format()} (n={e.n}){mark}")
            lines.append(f"| {method} − plain | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("`*`: the 95% CI excludes zero.")
    return "\n".join(lines), numbers


def grounding_table(rows: Sequence[dict]) -> tuple[str, dict]:
    """Per level and step range: mass inside the own object, the other phrase's, chance, ratio, pointing game."""
    pooled: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        for key, values in r["metrics"].items():
            if not key.startswith("grounding/"):
                continue
            _, level, steps, field = key.split("/")
            pooled.setdefault((level, steps), {}).setdefault(field, []).extend(values)
    order = {"16x16": 0, "8x8": 1, "4x4": 2, "2x2": 3, "all": 9}
    lines = ["| level | steps | mass inside own object | other phrase inside | chance | own / chance | pointing |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    numbers = {}
    step_order = {"all": 0, "early": 1, "middle": 2, "late": 3}
    for level, steps in sorted(pooled, key=lambda k: (order.get(k[0], 5), step_order.get(k[1], 9))):
        v = pooled[(level, steps)]
        own, other, chance, pointing = (estimate(v.get(f, [])) for f in ("mass_inside", "other_inside", "chance",
                                                                          "pointing"))  # fmt: skip
        other = estimate([x for x in v.get("other_inside", []) if np.isfinite(x)])
        ratio = own.mean / chance.mean if chance.n and chance.mean > 0 else float("nan")
        numbers[f"{level}/{steps}"] = dict(mass_inside=own.as_dict(), chance=chance.as_dict(), ratio=ratio,
                                           pointing=pointing.as_dict(), other_inside=other.as_dict())  # fmt: skip
        label = "all levels" if level == "all" else level
        lines.append(f"| {label} | {steps} | {own.format()} | {other.format()} | {chance.format()} | {ratio:.2f}x "
                     f"| {pointing.format(2)} |")  # fmt: skip
    normal = per_unit((r["index"], r["metrics"].get("found_normal")) for r in rows)
    losses = {}
    for name in ("words", "padding"):
        ablated = per_unit((r["index"], r["metrics"].get(f"found_without_{name}")) for r in rows)
        losses[name] = paired_difference(normal, ablated)
        numbers[f"loss_without_{name}"] = losses[name].as_dict()
    if losses["words"].n:
        met = losses["words"].mean > 0 and losses["words"].mean >= 2 * max(losses["padding"].mean, 0.0)
        lines += ["", f"Word dependence (objects found per image, normal minus ablated, paired over prompts): without "
                  f"the word tokens {losses['words'].format()}, without the padding {losses['padding'].format()}; "
                  f"the testbed bar (words >= 2 x padding) is {'met' if met else 'not met'}."]  # fmt: skip
    mass: dict[str, list[float]] = {}
    for r in rows:
        for name, value in r["metrics"].get("token_mass", {}).items():
            mass.setdefault(name, []).append(value)
    if mass:
        lines += ["", "Attention mass per position class (mean over images): "
                  + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in mass.items())]  # fmt: skip
    return "\n".join(lines), numbers


def _plot_means(path: Path, suite: str, numbers: dict, metrics: Sequence[str], methods: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 1, 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        es = [numbers["means"].get(f"{m}/{metric}") for m in methods]
        means = [e["mean"] if e else np.nan for e in es]
        errs = [[e["mean"] - e["low"] if e else 0 for e in es], [e["high"] - e["mean"] if e else 0 for e in es]]
        ax.bar(range(len(methods)), means, yerr=errs, capsize=3, color="#6a8fcf")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric.replace("_", " "), fontsize=9)
    fig.suptitle(f"{suite}: means with 95% bootstrap CIs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_paired(path: Path, suite: str, numbers: dict, metrics: Sequence[str], methods: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [m for m in methods if m != "plain"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 1, 0.5 * len(others) + 1.6),
                             squeeze=False)  # fmt: skip
    for ax, metric in zip(axes[0], metrics, strict=True):
        for y, method in enumerate(others):
            e = numbers["paired"].get(f"{method}/{metric}")
            if not e or not e["n"]:
                continue
            colour = "#c0392b" if (e["low"] > 0 or e["high"] < 0) else "#555555"
            ax.errorbar(e["mean"], y, xerr=[[e["mean"] - e["low"]], [e["high"] - e["mean"]]], fmt="o",
                        color=colour, capsize=3)  # fmt: skip
        ax.axvline(0, color="#999999", lw=0.8)
        ax.set_yticks(range(len(others)), others if ax is axes[0][0] else [""] * len(others), fontsize=8)
        ax.set_title(metric.replace("_", " "), fontsize=9)
    fig.suptitle(f"{suite}: paired difference from plain (95% CI; red excludes 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_categories(path: Path, suite: str, rows: Sequence[dict], methods: Sequence[str]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = sorted({r["category"] for r in rows})
    if len(categories) < 2 or not any("clip_score" in r["metrics"] for r in rows):
        return False
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(categories) * len(methods) / 3), 3.4))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        means = []
        for c in categories:
            values = per_unit((r["index"], r["metrics"].get("clip_score")) for r in rows
                              if r["method"] == method and r["category"] == c)  # fmt: skip
            means.append(np.mean(list(values.values())) if values else np.nan)
        ax.bar(np.arange(len(categories)) + j * width, means, width, label=method)
    ax.set_xticks(np.arange(len(categories)) + 0.4 - width / 2, categories, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("CLIP score")
    ax.legend(fontsize=7, ncol=min(len(methods), 4))
    ax.set_title(f"{suite}: CLIP score per category", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _verdict(row: dict) -> str:
    m = row["metrics"]
    if "weighted_found" in m:
        w = "yes" if m["weighted_found"] else "no"
        o = "yes" if m.get("other_found") else "no"
        return f"w:{w} other:{o}"
    if "landed" in m:
        return f"on {m['landed']}"
    if "success" in m:
        return f"success {m['success']}"
    if "found_normal" in m:
        return f"found {m['found_normal']:.2f}"
    return f"CLIP {m['clip_score']:.1f}" if "clip_score" in m else ""


def image_grid(out: Path, suite: str, rows: Sequence[dict], methods: Sequence[str]) -> Path | None:
    """Prompt x method grid of the first seed's images for the first few prompts, with the verdict under each."""
    from PIL import Image, ImageDraw

    from emphasize.visualize import save_png

    by_key = {(r["index"], r["method"]): r for r in sorted(rows, key=lambda r: -r["seed"])}  # lowest seed wins
    indices = sorted({r["index"] for r in rows})[:GRID_PROMPTS]
    if not indices:
        return None
    cell, label = 96, 14
    grid = Image.new("RGB", (110 + cell * len(methods), 16 + (cell + label) * len(indices)), "white")
    draw = ImageDraw.Draw(grid)
    for j, method in enumerate(methods):
        draw.text((110 + j * cell + 2, 2), method[:15], fill="black")
    for i, index in enumerate(indices):
        y = 16 + i * (cell + label)
        any_row = next(r for (k, _), r in by_key.items() if k == index)
        words = any_row["prompt"]
        draw.multiline_text((2, y + 2), "\n".join(textwrap.wrap(words, 17)[:6]), fill="black")  # fmt: skip
        for j, method in enumerate(methods):
            row = by_key.get((index, method))
            if row is None or not (out / row["image"]).is_file():
                continue
            with Image.open(out / row["image"]) as image:
                grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (110 + j * cell, y))
            draw.text((110 + j * cell + 2, y + cell), _verdict(row)[:16], fill="black")
    return save_png(grid, out / f"{suite}_grid.png")


def _plot_grounding(path: Path, numbers: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [k.split("/")[0] for k in numbers if k.endswith("/all")]
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    axes[0].bar(levels, [numbers[f"{lv}/all"]["ratio"] for lv in levels], color="#6a8fcf")
    axes[0].axhline(1, color="#999999", lw=0.8)
    axes[0].set_title("mass inside own object / chance", fontsize=9)
    p = [numbers[f"{lv}/all"]["pointing"] for lv in levels]
    axes[1].bar(levels, [e["mean"] for e in p], yerr=[[e["mean"] - e["low"] for e in p],
                [e["high"] - e["mean"] for e in p]], capsize=3, color="#6a8fcf")  # fmt: skip
    axes[1].set_ylim(0, 1)
    axes[1].set_title("pointing game", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: str | os.PathLike) -> Path:
    """Merge every row (and `speed.json`) under `out` into `out/report.md` with plots and grids.

    Args:
        out: a `bench quality` run directory (any number of suites, methods and shards).

    Raises:
        ValueError: when the directory holds no rows.
    """
    out = Path(out)
    rows = read_rows(out)
    speed = out / "speed.json"
    if not rows and not speed.is_file():
        raise ValueError(f"{out}: no result rows (rows/**.json) and no speed.json to report")
    settings = json.loads((out / "run.json").read_text(encoding="utf-8")) if (out / "run.json").is_file() else {}
    lines = ["# Benchmark report", "", f"Rows: {len(rows)}. Produced by `emphasize bench report {out}`.", ""]
    summary: dict = {}
    for suite in sorted({r["suite"] for r in rows}):
        suite_rows = [r for r in rows if r["suite"] == suite]
        methods = _methods(suite_rows)
        prompts = len({r["index"] for r in suite_rows})
        seeds = len({(r["index"], r["seed"]) for r in suite_rows}) / max(prompts, 1)
        indices = sorted({r["index"] for r in suite_rows})
        lines += [f"## {suite}", "", f"{prompts} prompts (indices {indices[0]}-{indices[-1]}), {seeds:g} seeds per "
                  f"prompt on average, methods: {', '.join(methods)}.", ""]  # fmt: skip
        if suite in settings:
            s = settings[suite]
            lines += ["Settings: " + ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("suite", "methods")), ""]
        table, numbers = suite_tables(suite, suite_rows)
        summary[suite] = numbers
        lines += [table, ""]
        metrics = _metric_names(suite, suite_rows)
        if metrics:
            _plot_means(out / f"{suite}_means.png", suite, numbers, metrics, methods)
            lines.append(f"![means]({suite}_means.png)")
            if numbers["paired"]:
                _plot_paired(out / f"{suite}_paired.png", suite, numbers, metrics, methods)
                lines.append(f"![paired differences]({suite}_paired.png)")
        if _plot_categories(out / f"{suite}_categories.png", suite, suite_rows, methods):
            lines.append(f"![per category]({suite}_categories.png)")
        if suite == "world-grounding":
            table, numbers = grounding_table(suite_rows)
            summary["grounding"] = numbers
            lines += ["", "### Grounding of each phrase's cross-attention (plain sampling)", "", table, ""]
            if numbers:
                _plot_grounding(out / "world-grounding_levels.png", numbers)
                lines.append("![grounding per level](world-grounding_levels.png)")
        grid = image_grid(out, suite, suite_rows, methods)
        if grid is not None:
            lines += ["", f"![images]({grid.name})", ""]
    if speed.is_file():
        data = json.loads(speed.read_text(encoding="utf-8"))
        lines += ["## Speed and memory (`emphasize bench speed`)", "", "| method | wall s | CPU s | peak MB |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['method']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_mb']:.1f} |"
                  for r in data["rows"]]  # fmt: skip
        lines += ["", ", ".join(f"{k} {v:.2f}" for k, v in data.get("ratios", {}).items()), ""]
        summary["speed"] = data
    from emphasize.visualize import save_atomic

    save_atomic(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    return save_atomic(out / "report.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


__all__ = ["Estimate", "grounding_table", "image_grid", "per_prompt", "suite_tables", "write_report"]
