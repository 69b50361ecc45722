"""`emphasize train vae|t2i|edit|clip --out DIR ...`: train the embedded world models from scratch.

Until the top-level CLI wires `register` in, the same commands run as `python -m emphasize.train.cli ...`.
Module-level imports stay light (argparse only): torch, diffusers and the recipes load inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

RECIPES = ("vae", "t2i", "edit", "clip")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `train` subcommand (with vae, t2i, edit, clip) to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "train",
        help="train the embedded world models from scratch",
        description="Train the embedded world models from scratch (deterministic for a "
        "seed; resumes from DIR/checkpoint.pt).",
    )
    recipes = parser.add_subparsers(dest="recipe", metavar="{vae,t2i,edit,clip,ship}", required=True)
    helps = {
        "vae": "the world VAE (AutoencoderKL, factor 4)",
        "t2i": "the text-to-image UNet + text encoder",
        "edit": "the 8-channel instruction-editing UNet",
        "clip": "the world CLIP (contrastive)",
    }
    for name in RECIPES:
        p = recipes.add_parser(name, help=helps[name])
        p.add_argument("--out", required=True, help="run directory: checkpoint.pt and the exported model/")
        p.add_argument("--steps", type=_positive_int, help="optimizer steps (recipe default when omitted)")
        p.add_argument("--batch-size", type=_positive_int, help="items per step (recipe default when omitted)")
        p.add_argument("--seed", type=_seed, default=0, help="run seed (default 0)")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        p.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints")
        p.add_argument("--stop-at", type=_positive_int, help="stop after this step of the --steps schedule")
        p.add_argument("--threads", type=_positive_int, help="torch CPU threads")
        p.add_argument(
            "--resume",
            dest="resume",
            action="store_true",
            default=True,
            help="continue from DIR/checkpoint.pt when present (default)",
        )
        p.add_argument("--no-resume", dest="resume", action="store_false", help="start over, ignoring a checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name in ("t2i", "edit"):
            p.add_argument("--vae", required=True, help="trained VAE directory (train vae's --out)")
            p.add_argument("--text-encoder", help="trained CLIPTextModel directory to reuse (edit: kept frozen)")
            p.add_argument(
                "--init-from",
                help="trained pipeline directory (or run --out) whose UNet and text encoder start the run; "
                "edit accepts a t2i pipeline (its UNet is widened to 8 input channels, InstructPix2Pix-style)",
            )
        if name in ("t2i", "edit"):
            p.add_argument("--lr", type=float, help="AdamW peak learning rate (recipe default when omitted)")
            p.add_argument("--warmup", type=int, help="linear warmup steps (recipe default when omitted)")
            p.add_argument(
                "--grounding-weight",
                type=float,
                help="weight of the TokenCompose-style grounding loss on cross-attention (default 0: off)",
            )
            p.add_argument(
                "--pad-dropout",
                type=float,
                help="probability that the UNet sees the empty prompt's states from the first EOT on (default 0)",
            )
            p.add_argument(
                "--pad-invariance",
                type=float,
                help="weight pulling the text encoder's states from the first EOT on to the empty prompt's "
                "(default 0)",
            )
            p.add_argument(
                "--attention-factor",
                type=_positive_int,
                help="attention level (latent downsampling factor) the methods should guide, for the model card",
            )
        if name == "edit":
            p.add_argument(
                "--kind-weights",
                help="instruction kinds' shares of the training items, e.g. recolour=3,segment=3,remove=2,denoise=1 "
                "(kinds not named never appear; default: the four families uniformly)",
            )
            p.add_argument(
                "--grounding-words",
                action="store_true",
                default=None,
                help="with --grounding-weight: ground each word of the referring phrase on its own too",
            )
        if name == "vae":
            p.add_argument("--size", type=_positive_int, default=64, help="image side in px (default 64)")
        p.set_defaults(func=run)
    p = recipes.add_parser("ship", help="copy trained models into the package (float16) and write MANIFEST.json")
    for name in ("t2i", "edit", "clip"):
        p.add_argument(f"--{name}", help=f"trained {name} run directory (train {name}'s --out)")
    p.add_argument("--testbed", help="trained t2i run directory shipped as embedded:testbed (the grounded testbed)")
    p.add_argument("--dest", help="embedded models directory (default: the installed package's)")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")
    p.set_defaults(func=ship)
    return parser


def _overrides(args) -> dict:
    values = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "lr": getattr(args, "lr", None),
        "warmup": getattr(args, "warmup", None),
        "grounding_weight": getattr(args, "grounding_weight", None),
        "pad_dropout": getattr(args, "pad_dropout", None),
        "pad_invariance": getattr(args, "pad_invariance", None),
        "attention_factor": getattr(args, "attention_factor", None),
        "grounding_words": getattr(args, "grounding_words", None),
    }
    if getattr(args, "kind_weights", None) is not None:
        from emphasize.train.edit import parse_kind_weights

        values["kind_weights"] = parse_kind_weights(args.kind_weights)
    if getattr(args, "size", None) is not None and args.recipe == "vae":
        values["image_size"] = args.size
    return {k: v for k, v in values.items() if v is not None}


def run(args) -> int:
    """Handler of `train <recipe>`: returns the exit code (2 with a one-line error on bad input)."""
    try:
        import torch

        from emphasize.train.common import TrainError, resolve_device

        if args.threads:
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        kwargs = dict(device=device, resume=args.resume, show_progress=not args.quiet, stop_at=args.stop_at)
        overrides = _overrides(args)
        if args.recipe == "vae":
            from emphasize.train.vae import VAEConfig, train_vae

            path = train_vae(args.out, VAEConfig(**overrides), **kwargs)
        elif args.recipe == "clip":
            from emphasize.train.clip import ClipConfig, train_clip

            path = train_clip(args.out, ClipConfig(**overrides), **kwargs)
        elif args.recipe == "t2i":
            from emphasize.train.t2i import T2IConfig, train_t2i

            path = train_t2i(
                args.out,
                args.vae,
                T2IConfig(**overrides),
                text_encoder=args.text_encoder,
                init_from=args.init_from,
                **kwargs,
            )
        else:
            from emphasize.train.edit import EditConfig, train_edit

            path = train_edit(
                args.out,
                args.vae,
                EditConfig(**overrides),
                text_encoder=args.text_encoder,
                init_from=args.init_from,
                **kwargs,
            )
    except (TrainError, ValueError, OSError) as e:
        print(f"emphasize: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def ship(args) -> int:
    """Handler of `train ship`."""
    try:
        from emphasize.train.common import TrainError
        from emphasize.train.ship import ship_model, write_manifest

        names = [n for n in ("t2i", "edit", "clip", "testbed") if getattr(args, n)]
        if not names:
            raise TrainError("nothing to ship: pass --t2i, --edit, --clip and/or --testbed")
        for name in names:
            print(ship_model(getattr(args, name), name, args.dest, float16=not args.float32))
        print(write_manifest(args.dest))
    except (TrainError, ValueError, OSError) as e:
        print(f"emphasize: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emphasize")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
