"""Saliency detectors against exact object masks of the procedural world.

For each seed a scene is sampled and rendered; the ground truth is the union of its object masks. Every detector
is scored with AUC-Judd and NSS (`emphasize.saliency.evaluate`), next to two reference maps: a centred Gaussian
(centre bias) and a constant map (chance). A second table gives NSS on each object's own mask, by colour and size,
to show which objects a detector misses. Prints markdown; `--json` also writes the figures.

    .venv/bin/python benchmarks/bench_saliency.py --scenes 200 --size 64
    .venv/bin/python benchmarks/bench_saliency.py --scenes 200 --size 256 --textured
    .venv/bin/python benchmarks/bench_saliency.py --detectors spectral transalnet:/path/TranSalNet_Res.pth
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from emphasize.saliency import auc_judd, get_detector, nss
from emphasize.world import SceneConfig, object_masks, render, sample_scene


def world_batch(seeds: range, size: int, textured: bool) -> tuple[torch.Tensor, torch.Tensor, list[tuple]]:
    """Scenes of the given seeds.

    Returns:
        images (N, 3, size, size) in [0, 1], union object masks (N, 1, size, size), and one
        (scene index, colour, size name, mask (size, size)) per object.
    """
    config = SceneConfig(p_textured=1.0 if textured else 0.0)
    images, masks, objects = [], [], []
    for i, seed in enumerate(seeds):
        scene = sample_scene(seed, config=config)
        per_object = torch.from_numpy(object_masks(scene, size)).float()  # (n_objects, size, size)
        images.append(torch.from_numpy(render(scene, size)).permute(2, 0, 1).float() / 255)
        masks.append(per_object.amax(dim=0, keepdim=True))
        objects += [(i, obj.colour, obj.size, m) for obj, m in zip(scene.objects, per_object, strict=True)]
    return torch.stack(images), torch.stack(masks), objects


def centre_bias(images: torch.Tensor, sigma: float = 0.25) -> torch.Tensor:
    """(N, 1, H, W) isotropic Gaussian centred in the image, std `sigma` of the side."""
    h, w = images.shape[-2:]
    y = (torch.arange(h) + 0.5) / h - 0.5
    x = (torch.arange(w) + 0.5) / w - 0.5
    g = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return g.expand(images.shape[0], 1, h, w)


def constant(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) ones: the chance level of both metrics."""
    return torch.ones_like(images[:, :1])


def summarize(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over scenes (NaNs dropped)."""
    v = values[~torch.isnan(values)].double()
    return v.mean().item(), v.std().item() / math.sqrt(max(len(v), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200, help="number of scenes (seeds first..first+scenes-1)")
    parser.add_argument("--first-seed", type=int, default=0, help="first scene seed")
    parser.add_argument("--size", type=int, default=64, help="render size in pixels (32..1024)")
    parser.add_argument("--textured", action="store_true", help="lightly textured backgrounds instead of plain")
    parser.add_argument("--detectors", nargs="+", default=["spectral"], help="detector specs for get_detector")
    parser.add_argument("--batch", type=int, default=50, help="images per detector call")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    seeds = range(args.first_seed, args.first_seed + args.scenes)
    images, masks, objects = world_batch(seeds, args.size, args.textured)
    methods = [(spec, get_detector(spec)) for spec in args.detectors]
    methods += [("centre bias (reference)", centre_bias), ("constant (chance)", constant)]
    rows, per_object = [], {}
    for name, detector in methods:
        detector(images[:2])  # warm-up: first-call allocations and thread pools stay out of the timing
        start = time.perf_counter()
        maps = torch.cat([detector(chunk) for chunk in images.split(args.batch)])  # (N, 1, H, W)
        ms = 1000 * (time.perf_counter() - start) / len(images)
        auc, auc_se = summarize(auc_judd(maps, masks))
        score, score_se = summarize(nss(maps, masks))
        rows.append(dict(detector=name, auc_judd=auc, auc_judd_se=auc_se, nss=score, nss_se=score_se, ms_per_image=ms))
        groups: dict[str, list[float]] = {}
        for i, colour, size_name, mask in objects:
            value = nss(maps[i, 0], mask).item()
            groups.setdefault(colour, []).append(value)
            groups.setdefault(size_name, []).append(value)
        per_object[name] = {k: sum(v) / len(v) for k, v in sorted(groups.items())}

    background = "textured" if args.textured else "plain"
    coverage = masks.mean().item()
    print(
        f"world scenes: seeds {seeds.start}..{seeds.stop - 1} ({len(seeds)}, {len(objects)} objects), {args.size}px, "
        f"{background} background, objects cover {100 * coverage:.1f}% of pixels; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| detector | AUC-Judd | NSS | ms/image |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['detector']} | {r['auc_judd']:.3f} ± {r['auc_judd_se']:.3f} | {r['nss']:.2f} ± {r['nss_se']:.2f} "
            f"| {r['ms_per_image']:.2f} |"
        )
    keys = list(per_object[args.detectors[0]])
    print("\nNSS on each object's own mask, by colour and size:\n")
    print("| detector | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name in args.detectors:
        print(f"| {name} | " + " | ".join(f"{per_object[name][k]:.2f}" for k in keys) + " |")
    if args.json:
        meta = dict(seeds=[seeds.start, seeds.stop], size=args.size, background=background, mask_coverage=coverage)
        payload = {"meta": meta, "rows": rows, "per_object_nss": per_object, "torch": torch.__version__}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
