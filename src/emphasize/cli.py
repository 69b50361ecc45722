"""`emphasize` command line: generate | edit | world | train | bench | models.

Only the standard library is imported at module level, so `emphasize --help` is instant; each handler imports
what it needs. User mistakes print one line `emphasize: error: ...` and exit with code 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

METHODS = ("plain", "attend-excite", "importance", "reweight", "embed")
SALIENCY_METHODS = ("sgool", "doodl")  # text-to-image only: CLIP-guided optimization of the initial latent
SCHEDULERS = ("ddim", "euler", "euler-ancestral", "dpm", "pndm", "lms")


class CLIError(Exception):
    """Bad input detected by the CLI itself."""


def _add_common(p: argparse.ArgumentParser, default_steps: str) -> None:
    p.add_argument(
        "--model",
        help="diffusers directory, hub id (local cache) or .ckpt/.safetensors file; default: the embedded world model",
    )
    p.add_argument(
        "--method",
        default="importance",
        choices=METHODS + SALIENCY_METHODS,
        help="guidance method (default: importance; sgool/doodl: text-to-image only)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default: 0)")
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps (default: {default_steps})")
    p.add_argument("--width", type=int, default=None, help="image width in px")
    p.add_argument("--height", type=int, default=None, help="image height in px")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="override the model's scheduler")
    p.add_argument("--out", default=None, help="output PNG (default: emphasize-<method>-<seed>.png)")
    p.add_argument("--report", default=None, help="write a JSON report (words, attention shares, guidance log)")
    p.add_argument("--save-attention", default=None, help="write a PNG grid of per-word attention heatmaps")
    g = p.add_argument_group("guidance knobs (attend-excite / importance / reweight)")
    g.add_argument("--scale-factor", type=float, default=None, help="step size alpha_0 (default 20)")
    g.add_argument(
        "--stop", type=float, default=None, help="fraction of steps with guidance (default 0.5; reweight 1)"
    )
    g.add_argument(
        "--attention-factor",
        type=int,
        default=None,
        help="latent downsampling of the optimized attention maps (default: the level closest to 4)",
    )
    g.add_argument("--no-refinement", action="store_true", help="attend-excite without iterative refinement")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emphasize",
        description="Tell a diffusion model which words matter: word weights in the prompt, e.g. "
        "'a (red:1.5) circle and a [blue] square'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "generate",
        help="text-to-image with word weights",
        description="Text-to-image with word weights: (words:1.3), (words), [words], word+, word-, (words)1.3.",
    )
    p.add_argument("prompt", help="the weighted prompt")
    _add_common(p, "50")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance scale (default 7.5; the embedded model's own default without --model)",
    )
    p.add_argument("--negative-prompt", default="", help="negative prompt")
    s = p.add_argument_group("saliency-guided optimization (--method sgool | doodl)")
    s.add_argument("--opt-steps", type=int, default=50, help="optimization steps of the initial latent (default 50)")
    s.add_argument("--grad-scale", type=float, default=1.0, help="loss multiplier = learning rate (default 1)")
    s.add_argument("--salient-weight", type=float, default=1.0, help="lambda on the salient-crop term (default 1)")
    s.add_argument("--crops", type=int, default=3, help="salient crops K at most (default 3)")
    s.add_argument("--saliency", default="spectral", help="spectral | attention | transalnet:PATH (default spectral)")
    s.add_argument("--saliency-once", action="store_true", help="compute saliency on the first image only")
    s.add_argument("--clip", default=None, help="CLIP model dir or cached hub id (default: the embedded world CLIP)")
    s.add_argument("--save-saliency", default=None, help="write a PNG of the saliency map and the salient boxes")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("edit", help="instruction editing with word weights (InstructPix2Pix / InstructDiffusion)")
    p.add_argument("image", help="input image file")
    p.add_argument("instruction", help='the weighted instruction, e.g. "encircle the man\'s (left shoulder:2) in red"')
    _add_common(p, "100")
    p.add_argument(
        "--guidance-rule",
        choices=("ip2p", "instructdiffusion"),
        default="ip2p",
        help="three-branch guidance rule (default ip2p)",
    )
    p.add_argument("--text-scale", type=float, default=None, help="text guidance s_T (default 7.5 ip2p, 5.0 ID)")
    p.add_argument("--image-scale", type=float, default=None, help="image guidance s_I (default 1.5 ip2p, 1.25 ID)")
    p.add_argument(
        "--keep-working-size",
        action="store_true",
        help="write the image at the working size (multiple of the UNet's factor) instead of the input's size",
    )
    p.set_defaults(func=cmd_edit)

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", metavar="{quality,report,speed}")
    bsub.required = True
    p = bsub.add_parser(
        "speed", help="wall time and peak memory: plain vs importance vs attend-excite vs diffusers A&E"
    )
    p.add_argument("--model", required=True, help="text-to-image model (diffusers directory, hub id or checkpoint)")
    p.add_argument("--prompt", default="a (red:2) circle and a (blue square:1.5)", help="weighted prompt")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (default 10)")
    p.add_argument("--size", type=int, default=None, help="image size in px (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="runs per method, interleaved; the fastest counts")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier on shared CPUs)")
    p.add_argument("--json", default=None, help="also write the table as JSON (DIR/speed.json joins DIR's report)")
    p.set_defaults(func=cmd_bench_speed)
    p = bsub.add_parser(
        "quality",
        help="every method on a suite: one resumable row per (prompt, method, seed); accelerate launch shards it",
        description="Run methods on a benchmark suite (world-t2i, world-grounding, world-edit, drawbench, parti, "
        "dailydalle, csp, attend-excite). Rows are written atomically under DIR/rows and a rerun resumes; "
        "`accelerate launch -m emphasize bench quality ...` splits the rows over processes.",
    )
    p.add_argument("--suite", required=True, help="world-t2i, world-grounding, world-edit, drawbench, parti, ...")
    p.add_argument(
        "--methods",
        default="plain,embed,reweight,attend-excite,importance",
        help="comma-separated methods (default plain,embed,reweight,attend-excite,importance)",
    )
    p.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
    p.add_argument("--prompts", type=int, default=None, help="prompts (default: a public set in full, 100 world)")
    p.add_argument("--offset", type=int, default=0, help="first prompt (tune on one range, report on another)")
    p.add_argument("--weight", type=float, default=2.0, help="weight of the emphasized words (default 2)")
    p.add_argument("--model", default=None, help="model (default: the embedded one)")
    p.add_argument("--clip", default=None, help="CLIP for CLIP score and SGOOL/DOODL (default: the world CLIP)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model card's, else 50)")
    p.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the model card's)")
    p.add_argument(
        "--attention-factor",
        type=int,
        default=None,
        help="guided attention level of attend-excite/importance (default: the model card's)",
    )
    p.add_argument("--opt-steps", type=int, default=10, help="SGOOL/DOODL optimisation steps (default 10)")
    p.add_argument("--opt-sampling-steps", type=int, default=10, help="SGOOL/DOODL EDICT steps (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the row count and an estimated time, run nothing")
    p.add_argument("--out", required=True, help="run directory (rows, images, run.json)")
    p.set_defaults(func=cmd_bench_quality)
    p = bsub.add_parser("report", help="tables, plots and image grids of a bench quality run: DIR/report.md")
    p.add_argument("out", metavar="DIR", help="a bench quality run directory")
    p.set_defaults(func=cmd_bench_report)

    models = sub.add_parser("models", help="model utilities")
    msub = models.add_subparsers(dest="models_command", metavar="{tiny}")
    msub.required = True
    p = msub.add_parser("tiny", help="save a tiny random-weight pipeline (for trying the CLI and for benchmarks)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--kind", choices=("t2i", "edit"), default="t2i")
    p.add_argument("--attention-gain", type=float, default=1.0, help="sharpen the random cross-attention")
    p.add_argument(
        "--layout",
        choices=("tiny", "sd"),
        default="tiny",
        help="tiny: 2 levels, 64 px; sd: SD 1.x topology at small width, 512 px",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_models_tiny)

    p = sub.add_parser("demo", help="first run: plain vs the methods on the embedded world model, as an image grid")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the embedded model's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="one grid column per seed")
    p.add_argument("--prompt", default=None, help="a weighted world prompt (default: chosen by measurement)")
    p.add_argument("--model", default=None, help="text-to-image model (default: the embedded world model)")
    p.set_defaults(func=cmd_demo)

    from emphasize.world.cli import register as register_world

    register_world(sub)
    try:
        from emphasize.train.cli import register as register_train
    except ImportError:  # the training recipes are optional in a trimmed install
        register_train = None
    if register_train is not None:
        register_train(sub)
    return parser


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _check_output(path: str | None, suffix: str, flag: str) -> None:
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise CLIError(f"{flag} {path!r} must end in {suffix}")
    if not p.parent.resolve().is_dir():
        raise CLIError(f"{flag} {path!r}: directory {str(p.parent)!r} does not exist")
    if p.is_dir():
        raise CLIError(f"{flag} {path!r} is a directory")


def _method_config(args):
    from dataclasses import replace

    from emphasize.config import method_config

    config = method_config(args.method)
    if hasattr(config, "schedule"):
        changes = {}
        if args.scale_factor is not None:
            changes["scale_factor"] = args.scale_factor
        if args.stop is not None:
            changes["stop"] = args.stop
        if args.no_refinement:
            changes["thresholds"] = ()
        config = replace(config, schedule=replace(config.schedule, **changes))
        if args.attention_factor is not None:
            config = replace(config, attention_factor=args.attention_factor)
    elif args.method == "reweight" and args.stop is not None:
        config = replace(config, stop=args.stop)
    return config


def _write_outputs(args, result, parameters: str, model_label: str) -> None:
    from emphasize.visualize import attention_grid, save_atomic, save_png

    out = args.out or f"emphasize-{args.method}-{args.seed}.png"
    save_png(result.image, out, parameters)
    print(f"wrote {out}")
    if args.report:
        report = {"model": model_label, **result.report}

        def write_json(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)

        save_atomic(args.report, write_json)
        print(f"wrote {args.report}")
    if args.save_attention and result.heatmaps is not None and result.report["words"]:
        labels = [f"{w['text']} x{w['weight']:.3g} ({w['attention_share']:.1%})" for w in result.report["words"]]
        save_png(attention_grid(result.image, result.heatmaps, labels), args.save_attention)
        print(f"wrote {args.save_attention}")


def _prepare(args):
    """Validate outputs and the prompt before any model is loaded; returns the parsed prompt."""
    from emphasize.prompts import parse_prompt

    _check_output(args.out, ".png", "--out")
    _check_output(args.report, ".json", "--report")
    _check_output(args.save_attention, ".png", "--save-attention")
    text = args.prompt if hasattr(args, "prompt") else args.instruction
    weighted = parse_prompt(text)
    if args.save_attention and not weighted.spans:
        raise CLIError("--save-attention needs at least one weighted word, e.g. 'a (cat) and a dog'")
    return weighted


def _quiet_libraries() -> None:
    """Keep library loading bars and info logs off the terminal: stderr carries our progress bar and errors."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _label(model: str | None) -> str:
    return model if model is not None else "embedded world model"


def _parameters(text: str, negative: str, settings: dict) -> str:
    from emphasize.report import a1111_parameters

    return a1111_parameters(text, negative, settings)


# ---------------------------------------------------------------------------------------------------------------
# commands


def cmd_generate(args) -> int:
    weighted = _prepare(args)
    _check_output(args.save_saliency, ".png", "--save-saliency")
    if args.save_saliency and args.method != "sgool":
        raise CLIError("--save-saliency needs --method sgool")
    _quiet_libraries()
    if args.method in SALIENCY_METHODS:
        return _generate_saliency(args)
    from emphasize import api
    from emphasize.config import SamplingConfig
    from emphasize.models.load import load_pipeline, sampling_defaults

    config = _method_config(args)
    defaults = sampling_defaults(args.model, "t2i")
    args.guidance_scale = args.guidance_scale or defaults.get("guidance_scale", 7.5)
    sampling = SamplingConfig(
        steps=args.steps or defaults.get("num_inference_steps", 50),
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        seed=args.seed,
        negative_prompt=args.negative_prompt,
    )
    pipe = load_pipeline(args.model, "t2i", scheduler=args.scheduler, device=_device(args))
    result = api.generate(
        pipe,
        weighted,
        method=args.method,
        config=config,
        sampling=sampling,
        record_attention=bool(args.report or args.save_attention),
        progress=not args.quiet,
    )
    result.report["prompt"] = args.prompt
    rep = result.report
    parameters = _parameters(
        args.prompt,
        args.negative_prompt,
        {
            "Steps": rep["steps"],
            "Sampler": rep["scheduler"],
            "CFG scale": rep["guidance_scale"],
            "Seed": rep["seed"],
            "Size": f"{rep['width']}x{rep['height']}",
            "Model": _label(args.model),
            "Emphasize method": args.method,
        },
    )
    _write_outputs(args, result, parameters, _label(args.model))
    return 0


def _generate_saliency(args) -> int:
    from emphasize.config import SamplingConfig
    from emphasize.models.load import load_clip, load_pipeline, sampling_defaults
    from emphasize.saliency_guidance import optimize
    from emphasize.sgool import SGOOLConfig

    defaults = sampling_defaults(args.model, "t2i")
    args.guidance_scale = args.guidance_scale or defaults.get("guidance_scale", 7.5)
    config = SGOOLConfig(
        optimization_steps=args.opt_steps,
        grad_scale=args.grad_scale,
        salient_weight=args.salient_weight,
        num_crops=args.crops,
        saliency_every_step=not args.saliency_once,
        sampling_steps=args.steps or defaults.get("num_inference_steps", 50),
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
    )
    SamplingConfig(height=args.height, width=args.width, seed=args.seed)  # validates the shared options
    saliency = args.saliency
    if args.method == "sgool" and saliency.strip().lower() not in ("spectral", "attention"):
        from emphasize.saliency import get_detector

        get_detector(saliency)  # a missing TranSalNet file fails here, before the models load
    pipe = load_pipeline(args.model, "t2i", scheduler=args.scheduler, device=_device(args))
    clip = load_clip(args.clip, device=_device(args))
    result = optimize(
        pipe,
        args.prompt,
        method=args.method,
        clip=clip,
        saliency=saliency,
        config=config,
        seed=args.seed,
        height=args.height,
        width=args.width,
    )
    rep = result.report
    parameters = _parameters(
        args.prompt,
        args.negative_prompt,
        {
            "Steps": rep["steps"],
            "Sampler": "EDICT",
            "CFG scale": args.guidance_scale,
            "Seed": rep["seed"],
            "Size": f"{rep['width']}x{rep['height']}",
            "Model": _label(args.model),
            "Emphasize method": args.method,
            "Optimization steps": args.opt_steps,
            "Saliency": rep["saliency"],
        },
    )
    _write_outputs(args, result, parameters, _label(args.model))
    if args.save_saliency:
        from emphasize.visualize import saliency_figure, save_png

        opt = rep["optimization"]
        boxes = opt["boxes"][opt["best_step"]] if opt["boxes"] else []
        save_png(saliency_figure(result.image, result.heatmaps[0], boxes), args.save_saliency)
        print(f"wrote {args.save_saliency}")
    return 0


def cmd_edit(args) -> int:
    weighted = _prepare(args)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as im:
            image = im.convert("RGB")
    except FileNotFoundError:
        raise CLIError(f"input image {args.image!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise CLIError(f"cannot read image {args.image!r}: {err}") from None

    _quiet_libraries()
    from emphasize import api
    from emphasize.config import EditSamplingConfig
    from emphasize.models.load import load_pipeline, sampling_defaults

    config = _method_config(args)
    defaults = sampling_defaults(args.model, "edit")
    sampling = EditSamplingConfig(
        steps=args.steps or defaults.get("num_inference_steps", 100),
        guidance_rule=args.guidance_rule,
        text_scale=args.text_scale if args.text_scale is not None else defaults.get("guidance_scale"),
        image_scale=args.image_scale if args.image_scale is not None else defaults.get("image_guidance_scale"),
        height=args.height,
        width=args.width,
        restore_size=not args.keep_working_size,
        seed=args.seed,
    )
    pipe = load_pipeline(args.model, "edit", scheduler=args.scheduler, device=_device(args))
    result = api.edit(
        pipe,
        image,
        weighted,
        method=args.method,
        config=config,
        sampling=sampling,
        record_attention=bool(args.report or args.save_attention),
        progress=not args.quiet,
    )
    result.report["instruction"] = args.instruction
    rep = result.report
    parameters = _parameters(
        args.instruction,
        "",
        {
            "Steps": rep["steps"],
            "Sampler": rep["scheduler"],
            "Guidance rule": rep["guidance_rule"],
            "Text CFG scale": rep["text_scale"],
            "Image CFG scale": rep["image_scale"],
            "Seed": rep["seed"],
            "Size": f"{rep['width']}x{rep['height']}",
            "Model": _label(args.model),
            "Emphasize method": args.method,
            "Input image": os.path.basename(args.image),
        },
    )
    _write_outputs(args, result, parameters, _label(args.model))
    return 0


def cmd_demo(args) -> int:
    _quiet_libraries()
    from emphasize.demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out!r} exists and is not a directory")
    grid = run_demo(out, steps=args.steps, seeds=args.seeds, prompt=args.prompt, model=args.model)
    print(f"wrote {grid}")
    return 0


def cmd_bench_speed(args) -> int:
    _check_output(args.json, ".json", "--json")
    _quiet_libraries()
    from emphasize.bench.speed import run_speed_benchmark

    run_speed_benchmark(
        args.model, args.prompt, steps=args.steps, size=args.size, seed=args.seed, repeats=args.repeats,
        threads=args.threads, json_path=args.json,
    )  # fmt: skip
    return 0


def cmd_bench_quality(args) -> int:
    from emphasize.bench.runner import QualityConfig

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    config = QualityConfig(
        suite=args.suite, methods=methods, seeds=args.seeds, prompts=args.prompts, offset=args.offset,
        weight=args.weight, model=args.model, clip=args.clip, steps=args.steps, guidance_scale=args.guidance_scale,
        attention_factor=args.attention_factor, opt_steps=args.opt_steps, opt_sampling_steps=args.opt_sampling_steps,
    )  # fmt: skip
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out!r} exists and is not a directory")
    if args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    _quiet_libraries()
    import torch

    from emphasize.bench.runner import run_quality

    torch.set_num_threads(args.threads)
    try:
        rows = run_quality(config, out, dry_run=args.dry_run)
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; finished rows are kept in {out}/rows, rerun the command to resume") from None
    if not args.dry_run:
        print(f"{len(rows)} rows written to {out}; `emphasize bench report {out}` makes the report")
    return 0


def cmd_bench_report(args) -> int:
    out = Path(args.out)
    if not out.is_dir():
        raise CLIError(f"{args.out!r} is not a directory")
    from emphasize.bench.report import write_report

    print(f"wrote {write_report(out)}")
    return 0


def cmd_models_tiny(args) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CLIError(f"--out {args.out!r} exists and is not empty")
    from dataclasses import replace

    from emphasize.models.tiny import TinyConfig, sd_layout_config, tiny_pipeline

    config = sd_layout_config() if args.layout == "sd" else TinyConfig()
    kind_channels = 8 if args.kind == "edit" else 4
    config = replace(config, in_channels=kind_channels, seed=args.seed, attention_gain=args.attention_gain)
    tiny_pipeline(config).save_pretrained(out)
    print(f"wrote {out}")
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("emphasize: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"emphasize: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
