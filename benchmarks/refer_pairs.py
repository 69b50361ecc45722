"""Pair-by-pair landing changes of a method against plain editing on a `world-refer` run.

For every (item, seed) that both `plain` and `--method` ran, whether the method moved the edit onto the referred
object (plain off it, method on it) or off it, and from where to where (`landed`: referred, distractor, both,
nowhere); and plain's landing rate per kind of discriminating word (colour, shape, size, position) with the
method's change there. Reads the rows of `emphasize bench quality --suite world-refer --out DIR`; runs nothing.

    .venv/bin/python benchmarks/refer_pairs.py runs/refer_report --method importance
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

from emphasize.bench.runner import read_rows


def landing_pairs(rows: list[dict], method: str) -> dict:
    """Counts of edits moved onto / off the referred object by `method`, those moves as `(plain landing, method
    landing) -> count`, and per discriminator `(pairs, plain on_referred rate, method − plain)`."""
    by_method: dict[str, dict[tuple[int, int], dict]] = defaultdict(dict)
    for row in rows:
        if row["suite"] == "world-refer":
            by_method[row["method"]][(row["index"], row["seed"])] = row
    plain, other = by_method["plain"], by_method[method]
    keys = sorted(plain.keys() & other.keys())
    moved_on = sum(plain[k]["metrics"]["on_referred"] < other[k]["metrics"]["on_referred"] for k in keys)
    moved_off = sum(plain[k]["metrics"]["on_referred"] > other[k]["metrics"]["on_referred"] for k in keys)
    moves = Counter(
        (plain[k]["metrics"]["landed"], other[k]["metrics"]["landed"])
        for k in keys
        if plain[k]["metrics"]["on_referred"] != other[k]["metrics"]["on_referred"]
    )
    per_word: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for k in keys:
        stats = per_word[plain[k]["category"].split("/")[1]]
        stats[0] += 1
        stats[1] += plain[k]["metrics"]["on_referred"]
        stats[2] += other[k]["metrics"]["on_referred"] - plain[k]["metrics"]["on_referred"]
    return {
        "pairs": len(keys),
        "moved_on": moved_on,
        "moved_off": moved_off,
        "moves": dict(sorted(moves.items())),
        "per_discriminator": {w: (int(n), on / n, d / n) for w, (n, on, d) in sorted(per_word.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a world-refer run directory (bench quality --out)")
    parser.add_argument("--method", default="importance", help="the method compared with plain")
    args = parser.parse_args(argv)
    result = landing_pairs(read_rows(args.run), args.method)
    if not result["pairs"]:
        print(f"error: {args.run!r} has no world-refer rows of both plain and {args.method!r}", file=sys.stderr)
        return 2
    print(f"{result['pairs']} pairs: {args.method} moved {result['moved_on']} edits onto the referred object "
          f"and {result['moved_off']} off it")  # fmt: skip
    for (before, after), count in result["moves"].items():
        print(f"  {before} -> {after}: {count}")
    for word, (n, on, diff) in result["per_discriminator"].items():
        print(f"  {word:9s} {n:3d} pairs  plain on referred {on:.2f}  {args.method} − plain {diff:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
