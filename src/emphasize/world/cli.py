"""`emphasize world ...`: sample data sets from the world, score generated images, draw the gallery.

Only argparse is imported at module level so that `emphasize --help` stays instant; handlers import the rest.
The top-level CLI calls `register(subparsers)`; every leaf parser sets `func(args) -> int` (exit code).
Standalone: `python -m emphasize.world.cli sample --task t2i --n 8 --out /tmp/w` (the `world` word is optional).
"""

from __future__ import annotations

import argparse
import sys

TASK_NAMES = ("t2i", "segment", "keypoint", "edit", "enhance")


class WorldError(Exception):
    """A bad-input error reported as one line with exit code 2."""


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `world` command (with `sample`, `score`, `gallery`) to an argparse subparsers object.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.
    """
    world = subparsers.add_parser(
        "world",
        help="the embedded procedural world: sample data, score images, gallery",
        description="Procedural scenes with exact ground truth: sample data sets, score generated images.",
    )
    sub = world.add_subparsers(dest="world_command", metavar="{sample,score,gallery}")
    sub.required = True

    p = sub.add_parser(
        "sample",
        help="write N items (images + scenes.jsonl) of a task",
        description="Write DIR/scenes.jsonl and the images: t2i -> DIR/images/<id>.png; instruction tasks -> "
        "DIR/input/<id>.png and DIR/target/<id>.png.",
    )
    p.add_argument("--task", required=True, help=f"one of: {', '.join(TASK_NAMES)}")
    p.add_argument("--kind", default=None, help="edit: recolour|remove|add|move; enhance: denoise|deblur")
    p.add_argument("--n", type=int, default=100, help="number of items (default 100)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0); item i uses a seed derived from it")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--textured", type=float, default=0.0, help="probability of a textured background (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "score",
        help="score images named <id>.png against a scenes.jsonl",
        description="Read IMAGES/<id>.png for every item of SCENES, print one JSON object of mean metrics.",
    )
    p.add_argument("--scenes", required=True, help="scenes.jsonl written by `world sample`")
    p.add_argument("--images", required=True, help="folder of images named <id>.png")
    p.add_argument("--rows", default=None, help="write per-item metrics to this JSON-lines file")
    p.add_argument("--task", default=None, help="fail unless every item is of this task")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("gallery", help="write a gallery PNG of captions, renders and task pairs")
    p.add_argument("--out", required=True, help="output PNG file")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--size", type=int, default=96, help="side of each render (default 96)")
    p.set_defaults(func=cmd_gallery)
    return world


def _guard(handler):
    def run(args) -> int:
        try:
            return handler(args)
        except (WorldError, ValueError, OSError) as err:
            message = " ".join(str(err).split())
            print(f"emphasize: error: {message}", file=sys.stderr)
            return 2

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


@_guard
def cmd_sample(args) -> int:
    """Handler of `world sample`."""
    from pathlib import Path

    from .records import atomic_write_text, item_id, jsonl_text, save_png, t2i_record, task_record
    from .rendering import check_size
    from .scene import SceneConfig
    from .tasks import KINDS, TaskConfig, iter_items

    if args.task not in TASK_NAMES:
        raise WorldError(f"unknown task {args.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
    if args.kind is not None and (args.task == "t2i" or args.kind not in KINDS[args.task]):
        valid = ", ".join(KINDS.get(args.task, ())) or "none"
        raise WorldError(f"unknown kind {args.kind!r} for task {args.task!r}; valid: {valid}")
    if not 1 <= args.n <= 1_000_000:
        raise WorldError(f"--n {args.n} is out of range; valid: 1..1000000")
    if args.seed < 0:
        raise WorldError(f"--seed {args.seed} is out of range; valid: >= 0")
    check_size(args.size)
    scene_config = SceneConfig(p_textured=args.textured) if 0.0 <= args.textured <= 1.0 else None
    if scene_config is None:
        raise WorldError(f"--textured {args.textured} is out of range; valid: 0..1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise WorldError(f"--out {out} exists and is not a folder")
    items = iter_items(
        args.task,
        args.seed,
        args.size,
        kind=args.kind,
        scene_config=scene_config,
        task_config=TaskConfig(scene=scene_config),
    )
    records = []
    for i, item in zip(range(args.n), items, strict=False):  # items is endless
        id = item_id(args.task, i)
        if args.task == "t2i":
            save_png(out / "images" / f"{id}.png", item.image)
            records.append(t2i_record(item, id, f"images/{id}.png"))
        else:
            save_png(out / "input" / f"{id}.png", item.input)
            save_png(out / "target" / f"{id}.png", item.target)
            records.append(task_record(item, id, f"input/{id}.png", f"target/{id}.png"))
    atomic_write_text(out / "scenes.jsonl", jsonl_text(records))
    print(f"wrote {len(records)} {args.task} items to {out}", file=sys.stderr)
    return 0


def score_records(records: list[dict], images_dir, scenes_dir, task: str | None = None) -> list[dict]:
    """Per-item metric rows for scenes.jsonl records and a folder of output images named `<id>.png`.

    Raises `WorldError` naming the item for a missing / unreadable / wrong-size image or a malformed record.
    """
    from pathlib import Path

    from .metrics import MetricConfig, score_t2i, task_metrics
    from .records import check_record, load_png, t2i_from_record, task_from_record

    config = MetricConfig()
    images_dir, scenes_dir = Path(images_dir), Path(scenes_dir)
    if not images_dir.is_dir():
        raise WorldError(f"--images {images_dir} is not a folder")
    rows = []
    first_task = None
    for n, record in enumerate(records, start=1):
        name = record.get("id", f"line {n}") if isinstance(record, dict) else f"line {n}"
        try:
            check_record(record)
            if task is not None and record["task"] != task:
                raise WorldError(f"is a {record['task']!r} item, expected {task!r} (scenes file from another task?)")
            first_task = first_task or record["task"]
            if record["task"] != first_task:
                raise WorldError(f"is a {record['task']!r} item in a file of {first_task!r} items")
            size = int(record["size"])
            path = images_dir / f"{record['id']}.png"
            output = load_png(path)
            if output.shape[:2] != (size, size):
                raise WorldError(f"image {path} is {output.shape[1]}x{output.shape[0]}, expected {size}x{size}")
            if record["task"] == "t2i":
                item = t2i_from_record(record)
                row = score_t2i(item.spec, output, config)
            else:
                inp = load_png(scenes_dir / record["input"])
                tgt = load_png(scenes_dir / record["target"])
                if inp.shape[:2] != (size, size) or tgt.shape[:2] != (size, size):
                    raise WorldError(f"input/target images are not {size}x{size}")
                row = task_metrics(task_from_record(record, inp, tgt), output, config)
        except (WorldError, ValueError, FileNotFoundError, KeyError, TypeError) as err:
            detail = str(err) if not isinstance(err, KeyError | TypeError) else f"malformed record ({err})"
            raise WorldError(f"item {name}: {detail}") from None
        rows.append({"id": record["id"], "task": record["task"], **row})
    return rows


@_guard
def cmd_score(args) -> int:
    """Handler of `world score`."""
    import json
    from pathlib import Path

    from .metrics import aggregate
    from .records import atomic_write_text, jsonl_text, read_jsonl

    if args.task is not None and args.task not in TASK_NAMES:
        raise WorldError(f"unknown task {args.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
    scenes = Path(args.scenes)
    records = read_jsonl(scenes)
    if not records:
        raise WorldError(f"scenes file {scenes} has no items")
    rows = score_records(records, args.images, scenes.parent, args.task)
    summary = {"task": rows[0]["task"], **aggregate(rows)}
    if args.rows:
        atomic_write_text(args.rows, jsonl_text(rows))
    print(json.dumps(summary))
    return 0


@_guard
def cmd_gallery(args) -> int:
    """Handler of `world gallery`."""
    import io

    from .gallery import make_gallery
    from .records import atomic_write_bytes
    from .rendering import check_size

    check_size(args.size)
    if args.seed < 0:
        raise WorldError(f"--seed {args.seed} is out of range; valid: >= 0")
    buf = io.BytesIO()
    make_gallery(args.seed, args.size).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: `python -m emphasize.world.cli [world] {sample,score,gallery} ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="emphasize")
    register(parser.add_subparsers(dest="command"))
    if not argv or argv[0] != "world":
        argv = ["world", *argv]
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
