"""Why the weighted object is missed, in a `emphasize bench quality --suite world-t2i` run directory.

For every row of each method the world detector reads the image again and sorts the weighted object into one of:
its colour absent from the image (the object was neglected: what Attend-and-Excite-style methods are meant to
fix), its colour present but never with its shape (a shape or binding failure), or found (colour and shape on one
object, the runner's `weighted_found`).

    .venv/bin/python benchmarks/bench_failure_modes.py runs/testbed_report            # every method of the run
    .venv/bin/python benchmarks/bench_failure_modes.py runs/testbed_report --methods plain,importance
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from emphasize.world import detect, parse_caption

MODES = ("colour_absent", "wrong_shape", "found")


def failure_mode(row: dict, root: Path) -> str:
    """The weighted object's mode in one world-t2i row (its image re-read by the detector)."""
    spec = parse_caption(row["prompt"])
    phrase = row["emphasized"][0]["text"]
    target = next(o for o in spec.objects if f"{o.colour} {o.shape}" in phrase)
    detections = detect(np.asarray(Image.open(root / row["image"]).convert("RGB")))
    coloured = [d for d in detections if d.colour == target.colour]
    if not coloured:
        return "colour_absent"
    return "found" if any(d.shape == target.shape for d in coloured) else "wrong_shape"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a bench quality run directory with world-t2i rows")
    parser.add_argument("--methods", help="comma-separated methods (default: every method of the run)")
    args = parser.parse_args(argv)
    root = Path(args.run)
    suite_dir = root / "rows" / "world-t2i"
    if not suite_dir.is_dir():
        print(f"error: {suite_dir} does not exist (not a world-t2i run)", file=sys.stderr)
        return 2
    methods = args.methods.split(",") if args.methods else sorted(p.name for p in suite_dir.iterdir() if p.is_dir())
    print("| method | rows | weighted colour absent | colour present, wrong shape | found |")
    print("|---|---|---|---|---|")
    for method in methods:
        rows = [json.loads(p.read_text()) for p in sorted((suite_dir / method).glob("*.json"))]
        modes = [failure_mode(r, root) for r in rows if r.get("emphasized")]
        if not modes:
            print(f"error: no world-t2i rows of method {method!r} under {root}", file=sys.stderr)
            return 2
        shares = [f"{modes.count(m) / len(modes):.3f}" for m in MODES]
        print(f"| {method} | {len(modes)} | " + " | ".join(shares) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
