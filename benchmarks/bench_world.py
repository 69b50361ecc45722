"""Throughput of the embedded world on one CPU core: scenes sampled + rendered per second, detector images per
second, and task items / scoring per second, at 64 and 256 px.

    .venv/bin/python benchmarks/bench_world.py            # default: 2000 scenes, 1000 detector images
    .venv/bin/python benchmarks/bench_world.py --quick    # a smaller run

Targets (64 px, one core): >= 2000 scenes/s rendered, >= 500 images/s detected. Each figure is the best of
`--repeat` runs; both wall-clock and CPU time are shown (on a shared machine, CPU time is the fairer figure).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402


def _timed(fn, n: int, repeat: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds per call over `repeat` runs of `n` calls."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(i)
        best_wall = min(best_wall, (time.perf_counter() - w) / n)
        best_cpu = min(best_cpu, (time.process_time() - c) / n)
    return best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=2000, help="scenes per render measurement")
    parser.add_argument("--images", type=int, default=1000, help="images per detector measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--quick", action="store_true", help="500 scenes, 300 images, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.images, args.repeat = 500, 300, 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    from emphasize.world import detect, render, sample_scene, sample_task, score_t2i
    from emphasize.world import sample_t2i as t2i

    detect(render(sample_scene(0), 64))  # builds the detector's template bank once
    rows = []
    for size in args.sizes:
        wall, cpu = _timed(lambda i, size=size: render(sample_scene(i), size), args.scenes, args.repeat)
        rows.append((f"scenes sampled+rendered @{size}px", wall, cpu))
        images = [render(sample_scene(100_000 + i), size) for i in range(args.images)]
        wall, cpu = _timed(lambda i, images=images: detect(images[i]), args.images, args.repeat)
        rows.append((f"detector images @{size}px", wall, cpu))
    n = max(args.images // 4, 50)
    items = [t2i(i, 64) for i in range(n)]
    wall, cpu = _timed(lambda i: score_t2i(items[i].spec, items[i].image), n, args.repeat)
    rows.append(("t2i items scored @64px", wall, cpu))
    for task in ("segment", "keypoint", "edit", "enhance"):
        wall, cpu = _timed(lambda i, task=task: sample_task(task, i, 64), n, args.repeat)
        rows.append((f"{task} items sampled @64px", wall, cpu))

    print(f"{'measurement':36s} {'per s (wall)':>13s} {'per s (cpu)':>12s} {'ms/item (cpu)':>14s}")
    for name, wall, cpu in rows:
        print(f"{name:36s} {1 / wall:13.0f} {1 / cpu:12.0f} {cpu * 1e3:14.3f}")


if __name__ == "__main__":
    main()
