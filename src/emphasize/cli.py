"""`emphasize` command line: generate | edit | app | world | train | bench | models.

Only the standard library is imported at module level, so `emphasize --help` is instant; each handler imports
what it needs. User mistakes print one line `emphasize: error: ...` and exit with code 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from emphasize.methods import MODULES as METHOD_MODULES  # the method registry's torch-free index

SCHEDULERS = ("ddim", "euler", "euler-ancestral", "dpm", "pndm", "lms")
MAX_SEED = 2**63 - 1  # seeds are drawn on a torch CPU generator (a signed 64-bit integer)
PIXEL_BUDGET = 4  # default --max-pixels: this many times the model's native area


class CLIError(Exception):
    """Bad input detected by the CLI itself."""


def _add_common(p: argparse.ArgumentParser, default_steps: str) -> None:
    p.add_argument(
        "--model",
        help="diffusers directory, hub id (local cache), .ckpt/.safetensors file or embedded:testbed; default: the "
        "embedded world model",
    )
    p.add_argument(
        "--method",
        default="importance",
        choices=tuple(METHOD_MODULES),
        help="guidance method (default: importance; sgool/doodl: text-to-image only)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default: 0)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"sampling steps (default: the model card's, 25 on the embedded models; else {default_steps})",
    )
    p.add_argument("--width", type=int, default=None, help="image width in px")
    p.add_argument("--height", type=int, default=None, help="image height in px")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help=f"largest width x height accepted (default: {PIXEL_BUDGET}x the model's native area)",
    )
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
        help="latent downsampling of the optimized attention maps (default: the model card's attention_factor, "
        "else the cross-attention level closest to 1/4 of the latent with at least 8x8 maps)",
    )
    g.add_argument("--no-refinement", action="store_true", help="attend-excite without iterative refinement")
    g.add_argument(
        "--embed-mode",
        default=None,
        help="embed: 'original' (AUTOMATIC1111's default, scale then restore the mean), 'no-norm' (AUTOMATIC1111) "
        "or 'comfy' (ComfyUI's default, from the empty prompt's embedding); default original",
    )
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
        description="Run methods on a benchmark suite (world-t2i, world-grounding, world-edit, world-refer, "
        "drawbench, parti, dailydalle, csp, attend-excite). Rows are written atomically under DIR/rows and a rerun "
        "resumes; `accelerate launch -m emphasize bench quality ...` splits the rows over processes.",
    )
    p.add_argument(
        "--suite", required=True, help="world-t2i, world-grounding, world-edit, world-refer, drawbench, parti, ..."
    )
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
    p.add_argument(
        "--scale-factor",
        type=float,
        default=None,
        help="attend-excite/importance step size alpha_0 (default: the method's, 20)",
    )
    p.add_argument(
        "--softmax-over",
        choices=("all", "prompt"),
        default=None,
        help="attend-excite/importance token softmax range (default: the method's)",
    )
    p.add_argument(
        "--prominence",
        type=float,
        default=None,
        help="importance: weight of the attention-mass term (default: the method's, 1)",
    )
    p.add_argument(
        "--focus",
        type=float,
        default=None,
        help="importance: weight of the focus term, the spatial entropy of a heavy word's attention (default: 0)",
    )
    p.add_argument(
        "--subject-tokens",
        choices=("all", "last"),
        default=None,
        help="attend-excite: every token of a marked phrase, or its last (head noun)",
    )
    p.add_argument("--opt-steps", type=int, default=10, help="SGOOL/DOODL optimisation steps (default 10)")
    p.add_argument("--opt-sampling-steps", type=int, default=10, help="SGOOL/DOODL EDICT steps (default 10)")
    p.add_argument(
        "--guidance-rule",
        choices=("ip2p", "instructdiffusion"),
        default=None,
        help="world-edit/world-refer: three-branch guidance rule (default ip2p)",
    )
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
        choices=("tiny", "sd", "sdxl"),
        default="tiny",
        help="tiny: 2 levels, 64 px; sd: SD 1.x topology at small width, 512 px; sdxl: a tiny SDXL (two text "
        "encoders, cross-attention at 1/2 and 1/4 of the latent), 64 px, t2i only",
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

    p = sub.add_parser(
        "app",
        help="the interactive web app: weight sliders, plain vs the method side by side, attention, edits, SGOOL",
        description="Start the interactive app (Gradio) on the embedded models unless told otherwise. It binds "
        "127.0.0.1 (this machine only) unless --host says otherwise, makes no public share link and serves one "
        "job at a time.",
    )
    p.add_argument("--model", default=None, help="text-to-image model (default: the embedded world model)")
    p.add_argument("--edit-model", default=None, help="instruction-editing model (default: the embedded one)")
    p.add_argument("--clip", default=None, help="CLIP of SGOOL/DOODL (default: the embedded world CLIP)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=cmd_app)

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


def _method_config(args, card: dict | None = None):
    """The method's config from the flags; the guided attention level defaults to the model card's."""
    from dataclasses import replace

    from emphasize.config import method_config

    config = method_config(args.method)
    card = card or {}
    if hasattr(config, "schedule"):
        changes = {}
        if args.scale_factor is not None:
            changes["scale_factor"] = args.scale_factor
        if args.stop is not None:
            changes["stop"] = args.stop
        if args.no_refinement:
            changes["thresholds"] = ()
        config = replace(config, schedule=replace(config.schedule, **changes))
        factor = args.attention_factor if args.attention_factor is not None else card.get("attention_factor")
        if factor is not None:
            config = replace(config, attention_factor=int(factor))
    elif args.method == "reweight" and args.stop is not None:
        config = replace(config, stop=args.stop)
    if args.embed_mode is not None:
        config = replace(config, mode=args.embed_mode)
    return config


def _write_outputs(args, result, parameters: str, model_label: str, extra=()) -> None:
    """Write the image and the requested extras, all or none: a failed write removes what this call wrote.

    Args:
        args: the parsed command line.
        result: the `emphasize.api.Result`.
        parameters: the PNG's `parameters` text.
        model_label: the model, for the report.
        extra: more `(path, image)` PNGs to write (the saliency figure).
    """
    from emphasize.visualize import attention_grid, save_atomic, save_png

    out = args.out or f"emphasize-{args.method}-{args.seed}.png"
    # 1. everything is rendered before the first byte is written
    report = json.dumps({"model": model_label, **result.report}, indent=2) if args.report else None
    grid = None
    if args.save_attention and result.heatmaps is not None and result.report["words"]:
        labels = [f"{w['text']} x{w['weight']:.3g} ({w['attention_share']:.1%})" for w in result.report["words"]]
        grid = attention_grid(result.image, result.heatmaps, labels)
    # 2. then written, each atomically; a failure (a full disk) takes this call's earlier files with it
    written: list[str] = []
    try:
        save_png(result.image, out, parameters)
        written.append(out)
        if report is not None:
            save_atomic(args.report, lambda tmp: Path(tmp).write_text(report, encoding="utf-8"))
            written.append(args.report)
        if grid is not None:
            save_png(grid, args.save_attention)
            written.append(args.save_attention)
        for path, image in extra:
            save_png(image, path)
            written.append(path)
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    for path in written:
        print(f"wrote {path}")


def _check_range(flag: str, value, low: float, high: float, what: str = "") -> None:
    if value is not None and not (math.isfinite(value) and low <= value <= high):
        raise CLIError(f"{flag} {value} is out of range; valid: {what or f'{low:g} to {high:g}'}")


def _check_numbers(args) -> None:
    """Every numeric option, before anything loads: one line naming the value, never a silent default."""
    _check_range("--steps", args.steps, 1, 1000)
    for flag in ("width", "height"):
        _check_range(f"--{flag}", getattr(args, flag), 1, 10**6, "a positive number of pixels")
    _check_range("--seed", args.seed, 0, MAX_SEED, "0 to 2^63 - 1")
    _check_range("--max-pixels", args.max_pixels, 1, 10**12)
    for flag in ("guidance_scale", "text_scale", "image_scale"):
        _check_range(f"--{flag.replace('_', '-')}", getattr(args, flag, None), 0, 100)
    _check_range("--scale-factor", args.scale_factor, 0, 1e6)
    _check_range("--stop", args.stop, 0, 1, "a fraction in [0, 1]")
    if getattr(args, "opt_steps", None) is not None:
        _check_range("--opt-steps", args.opt_steps, 1, 10**4)


def _outputs(args) -> list[tuple[str, str, str]]:
    """(flag, path, suffix) of every file this command writes, the default --out included."""
    out = args.out or f"emphasize-{args.method}-{args.seed}.png"
    files = [("--out", out, ".png"), ("--report", args.report, ".json")]
    files += [("--save-attention", args.save_attention, ".png")]
    files += [("--save-saliency", getattr(args, "save_saliency", None), ".png")]
    return [(flag, path, suffix) for flag, path, suffix in files if path is not None]


def _probe_folder(parent: Path, flag: str, path: str) -> None:
    """Create and remove an empty file in `parent`: catches what permission bits miss (root on a read-only
    mount, pseudo file systems such as /proc) before any work is done."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".emphasize-probe-"):
            pass
    except OSError as err:
        raise CLIError(f"{flag} {path!r}: cannot create a file in {str(parent)!r} ({err.strerror})") from None


def _check_outputs(args) -> None:
    """Each output has the right suffix, a writable folder, and a path of its own."""
    seen: dict[Path, str] = {}
    for flag, path, suffix in _outputs(args):
        _check_output(path, suffix, flag)
        parent = Path(path).parent.resolve()
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CLIError(f"{flag} {path!r}: cannot write in {str(parent)!r} (permission denied)")
        _probe_folder(parent, flag, path)
        resolved = Path(path).resolve()
        if resolved in seen:
            raise CLIError(f"{seen[resolved]} and {flag} name the same file {path!r}: give each its own path")
        seen[resolved] = flag


def _prepare(args):
    """Validate numbers, outputs and the prompt before any model is loaded; returns the parsed prompt."""
    from emphasize.prompts import parse_prompt

    _check_numbers(args)
    _check_outputs(args)
    text = args.prompt if hasattr(args, "prompt") else args.instruction
    weighted = parse_prompt(text)
    if args.save_attention and not weighted.spans:
        raise CLIError("--save-attention needs at least one weighted word, e.g. 'a (cat) and a dog'")
    if args.method == "attend-excite" and not weighted.spans:
        raise CLIError("attend-excite needs at least one marked word, e.g. 'a (cat) and a (frog)'")
    if args.embed_mode is not None and args.method != "embed":
        raise CLIError("--embed-mode needs --method embed")
    return weighted


def _pixel_budget(args, native: int) -> int:
    return args.max_pixels if args.max_pixels is not None else PIXEL_BUDGET * native * native


def _check_size(args, multiple: int, native: int, size: tuple[int, int], what: str) -> None:
    """`size` = (width, height) the model will work at: multiples of the model's factor, within the budget."""
    sides = [("--height", size[1]), ("--width", size[0])]
    if getattr(args, "height", None) is None:  # name the side the user typed first
        sides.reverse()
    for flag, value in sides:
        if value % multiple:
            raise CLIError(f"{flag} {value} must be a multiple of {multiple} for this model")
    budget = _pixel_budget(args, native)
    if size[0] * size[1] > budget:
        raise CLIError(
            f"{what} {size[0]}x{size[1]} is {size[0] * size[1]} pixels, above the budget of {budget} "
            f"({PIXEL_BUDGET}x the model's native {native}x{native}); raise it with --max-pixels"
        )


def _generate_size(args, native: int) -> tuple[int, int]:
    height = args.height or (args.width if args.width is not None else native)
    width = args.width or height
    return width, height


def _read_image(path: str):
    """An input image as 8-bit RGB; 16-bit and 32-bit grey images are scaled, not clipped."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
                if im.mode == "F" and a.max() <= 1.0:
                    top = 1.0
                grey = (a / top * 255.0).round().clip(0, 255).astype(np.uint8)
                return Image.fromarray(grey).convert("RGB")
            return im.convert("RGB")
    except FileNotFoundError:
        raise CLIError(f"input image {path!r} does not exist") from None
    except Image.DecompressionBombError as err:
        raise CLIError(f"input image {path!r} is too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError) as err:
        raise CLIError(f"cannot read image {path!r}: {err}") from None


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
    if args.save_saliency and args.method != "sgool":
        raise CLIError("--save-saliency needs --method sgool")
    from emphasize.models.load import pipeline_geometry

    geometry = pipeline_geometry(args.model, "t2i")
    if geometry is not None:
        _check_size(args, geometry["multiple"], geometry["native"], _generate_size(args, geometry["native"]), "size")
    _quiet_libraries()
    from emphasize.methods import get_method

    if get_method(args.method, "t2i").initial_latent:
        return _generate_saliency(args)
    from emphasize import api
    from emphasize.config import SamplingConfig
    from emphasize.models.load import load_pipeline, sampling_defaults

    defaults = sampling_defaults(args.model, "t2i")
    config = _method_config(args, defaults)
    if args.guidance_scale is None:
        args.guidance_scale = defaults.get("guidance_scale", 7.5)
    sampling = SamplingConfig(
        steps=args.steps if args.steps is not None else defaults.get("num_inference_steps", 50),
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        seed=args.seed,
        negative_prompt=args.negative_prompt,
    )
    pipe = load_pipeline(args.model, "t2i", scheduler=args.scheduler, device=_device(args))
    if geometry is None:  # a hub id or a single file: its size rules are known once it is loaded
        _check_size(args, api.size_multiple(pipe), api.native_side(pipe), _generate_size(args, api.native_side(pipe)),
                    "size")  # fmt: skip
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
    if args.guidance_scale is None:
        args.guidance_scale = defaults.get("guidance_scale", 7.5)
    config = SGOOLConfig(
        optimization_steps=args.opt_steps,
        grad_scale=args.grad_scale,
        salient_weight=args.salient_weight,
        num_crops=args.crops,
        saliency_every_step=not args.saliency_once,
        sampling_steps=args.steps if args.steps is not None else defaults.get("num_inference_steps", 50),
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
        progress=not args.quiet,
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
    extra = []
    if args.save_saliency:
        from emphasize.visualize import saliency_figure

        opt = rep["optimization"]
        boxes = opt["boxes"][opt["best_step"]] if opt["boxes"] else []
        extra.append((args.save_saliency, saliency_figure(result.image, result.heatmaps[0], boxes)))
    _write_outputs(args, result, parameters, _label(args.model), extra)
    if rep["optimization"].get("interrupted"):
        print(f"emphasize: interrupted: {rep['optimization']['stopped']}", file=sys.stderr)
        return 130
    return 0


def cmd_edit(args) -> int:
    weighted = _prepare(args)
    from emphasize.methods import method_names

    if args.method not in method_names("edit"):
        raise CLIError(f"--method {args.method} is text-to-image only; edit takes {', '.join(method_names('edit'))}")
    image = _read_image(args.image)
    from emphasize.api import working_size
    from emphasize.models.load import pipeline_geometry

    geometry = pipeline_geometry(args.model, "edit")
    if geometry is not None:
        size = working_size(image.size, geometry["multiple"], geometry["native"], args.height, args.width)
        _check_size(args, geometry["multiple"], geometry["native"], size, "working size")

    _quiet_libraries()
    from emphasize import api
    from emphasize.config import EditSamplingConfig
    from emphasize.models.load import load_pipeline, sampling_defaults

    defaults = sampling_defaults(args.model, "edit")
    config = _method_config(args, defaults)
    sampling = EditSamplingConfig(
        steps=args.steps if args.steps is not None else defaults.get("num_inference_steps", 100),
        guidance_rule=args.guidance_rule,
        text_scale=args.text_scale if args.text_scale is not None else defaults.get("guidance_scale"),
        image_scale=args.image_scale if args.image_scale is not None else defaults.get("image_guidance_scale"),
        height=args.height,
        width=args.width,
        restore_size=not args.keep_working_size,
        seed=args.seed,
    )
    pipe = load_pipeline(args.model, "edit", scheduler=args.scheduler, device=_device(args))
    if geometry is None:
        multiple, native = api.size_multiple(pipe), api.native_side(pipe)
        size = working_size(image.size, multiple, native, args.height, args.width)
        _check_size(args, multiple, native, size, "working size")
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


def cmd_app(args) -> int:
    from emphasize.app.server import ServerConfig

    config = ServerConfig(host=args.host, port=args.port)  # a bad host or port is one line, before any loading
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CLIError('the app needs gradio: pip install -c constraints.txt -e ".[app]"') from None
    _quiet_libraries()
    from emphasize.app.handlers import ModelSession
    from emphasize.app.server import launch
    from emphasize.models.load import pipeline_geometry

    pipeline_geometry(args.model, "t2i")  # an unsupported layout (SDXL) is refused by name before loading
    pipeline_geometry(args.edit_model, "edit")
    if not config.loopback:
        print(f"emphasize: warning: --host {args.host} makes the app reachable from the network", file=sys.stderr)
    session = ModelSession(args.model, args.edit_model, args.clip, device=_device(args))
    try:
        session.warm(("t2i", "edit"))  # loaded once, before the first request
        session.clip()
        print(f"emphasize app: http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
        launch(session, config, quiet=True)
    finally:
        session.close()
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
        attention_factor=args.attention_factor, scale_factor=args.scale_factor, softmax_over=args.softmax_over,
        prominence=args.prominence, focus=args.focus, subject_tokens=args.subject_tokens,
        opt_steps=args.opt_steps, opt_sampling_steps=args.opt_sampling_steps, guidance_rule=args.guidance_rule,
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

    from emphasize.models.tiny import TinyConfig, TinySDXLConfig, sd_layout_config, tiny_pipeline, tiny_sdxl_pipeline

    if args.layout == "sdxl":
        if args.kind != "t2i":
            raise CLIError("--layout sdxl is text-to-image only (--kind t2i)")
        sdxl = TinySDXLConfig(seed=args.seed, attention_gain=args.attention_gain)
        tiny_sdxl_pipeline(sdxl).save_pretrained(out)
        print(f"wrote {out}")
        return 0
    config = sd_layout_config() if args.layout == "sd" else TinyConfig()
    kind_channels = 8 if args.kind == "edit" else 4
    config = replace(config, in_channels=kind_channels, seed=args.seed, attention_gain=args.attention_gain)
    tiny_pipeline(config).save_pretrained(out)
    print(f"wrote {out}")
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = _one_line(message) if isinstance(message, BaseException) else " ".join(str(message).split())
    print(f"emphasize: warning: {text.removeprefix('emphasize: ')}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning  # warnings reach the terminal as one line each, not with source lines
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("emphasize: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as err:  # OSError: a full disk, a folder we may not write to, ...
        print(f"emphasize: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
