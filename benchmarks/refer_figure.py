"""A figure of word weighting in instruction editing, on items of the `world-refer` suite.

One row per item: the input, the target (the edit on the referred object), the plain edit, the weighted edit
(`--method`, the discriminating word at `--weight`), and the discriminating word's cross-attention heatmap under
plain editing and under the method. The row label names the discriminating word and where each edit landed
(`world.referring.landing`: on the referred object, on the distractor, or nowhere). The settings are the benchmark
runner's (`emphasize bench quality --suite world-refer`): the model card's steps, scales and attention level.

    .venv/bin/python benchmarks/refer_figure.py --items 100,101,102 --out docs/refer_figure.png
    .venv/bin/python benchmarks/refer_figure.py --items 100,101,102 --method attend-excite --weight 4 --out fig.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from emphasize.bench.runner import (
    EVAL_START,
    SEED_STRIDE,
    QualityConfig,
    edit_sampling,
    load_models,
    method_config,
)
from emphasize.bench.suites import load_suite, referring_item
from emphasize.visualize import heatmap_overlay, image_grid, save_atomic
from emphasize.world.referring import landing

SHORT = {"referred": "ref", "distractor": "dis", "nowhere": "none", "both": "both"}


def figure_row(models, item, config: QualityConfig, method: str) -> tuple[list[Image.Image], str]:
    """The tiles of one item and its row label."""
    from emphasize.api import edit

    referring = referring_item(item.index)
    task = referring.task
    sampling = edit_sampling(config, models.card, EVAL_START + SEED_STRIDE * item.index)  # the rows' seed 0
    source = Image.fromarray(task.input)
    results, landed = {}, {}
    for name in ("plain", method):
        result = edit(models.pipe, source, item.weighted_text, method=name,
                      config=method_config(name, config, models.card), sampling=sampling)  # fmt: skip
        results[name] = result
        landed[name] = landing(referring, np.asarray(result.image.convert("RGB")))["landed"]
    tiles = [source, Image.fromarray(task.target)]
    tiles += [results[name].image for name in ("plain", method)]
    tiles += [heatmap_overlay(results[name].image, results[name].heatmaps[0]) for name in ("plain", method)]
    label = f"#{item.index} '{referring.word}': plain {SHORT[landed['plain']]}, {method} {SHORT[landed[method]]}"
    return tiles, label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", default="100,101,102,103", help="comma-separated world-refer item indices")
    parser.add_argument("--method", default="importance", help="the weighted method (default importance)")
    parser.add_argument("--weight", type=float, default=2.0, help="weight of the discriminating word (default 2)")
    parser.add_argument("--model", default=None, help="editing model (default: the embedded one)")
    parser.add_argument("--guidance-rule", choices=("ip2p", "instructdiffusion"), default=None)
    parser.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args(argv)
    try:
        indices = [int(s) for s in args.items.split(",") if s.strip()]
        if not indices or min(indices) < 0:
            raise ValueError
    except ValueError:
        print(f"error: --items {args.items!r} must be comma-separated indices >= 0", file=sys.stderr)
        return 2
    try:
        config = QualityConfig("world-refer", ("plain", args.method), weight=args.weight, model=args.model,
                               guidance_rule=args.guidance_rule)  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    models = load_models(config)
    rows, labels = [], []
    for index in indices:
        (item,) = load_suite("world-refer", prompts=1, offset=index, weight=args.weight)
        tiles, label = figure_row(models, item, config, args.method)
        rows.append(tiles)
        labels.append(label)
        print(label, file=sys.stderr)
    columns = ["input", "target", "plain", args.method, "plain: word", f"{args.method}: word"]
    grid = image_grid(rows, labels, columns)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(out, lambda tmp: grid.save(tmp, format="PNG"))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
