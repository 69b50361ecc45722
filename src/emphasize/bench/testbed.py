"""Is a text-to-image model a faithful testbed for word-level methods? Two measurements on world prompts.

Every word-weighting method acts through the per-word cross-attention maps, so it can only work on a model whose
maps are on the words' objects (*grounding*) and whose image depends on what the word tokens carry (*word
dependence*). Stable Diffusion has both (DAAM, Attend-and-Excite); a small model trained jointly with its text
encoder can have neither (it reads the whole caption from the padding positions).

- `word_dependence`: sample from `prompt_embeds` in which one class of positions (the prompt's word tokens, or
  the padding after EOT) is replaced by the empty prompt's states at the same positions, same noise; the exact
  detector counts the objects found per image. A faithful model loses much more without its words.
- `world_grounding`: plain sampling; per object phrase (`[size] colour shape`) and its detected object, the share
  of the phrase's cross-attention mass inside the object's mask against the mask's area share (chance), and the
  pointing game (the map's peak inside the object), per attention level and per range of sampling steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from emphasize.bench.stats import Estimate, estimate

POSITION_CLASSES = ("sot", "words", "eot", "padding")  # the classes of text positions the ablation can replace
EVAL_START = 10**9  # held-out world seeds (training uses seeds < 10^8)


def two_object_prompts(n: int, offset: int = 0) -> list[str]:
    """Captions `offset .. offset + n - 1` of a fixed list `a C1 S1 and a C2 S2` (two different shapes and
    colours), each drawn from its own held-out seed (the same list every benchmark of the project uses).

    Args:
        n: number of prompts.
        offset: index of the first (disjoint ranges give disjoint prompts: tune on one, report on another).
    """
    from emphasize.world import COLOUR_NAMES, SHAPES
    from emphasize.world.captions import CaptionSpec, ObjectSpec, format_caption

    prompts = []
    for k in range(offset, offset + n):
        rng = np.random.default_rng([EVAL_START + k, 3])
        s1, s2 = rng.choice(len(SHAPES), 2, replace=False)
        c1, c2 = rng.choice(len(COLOUR_NAMES), 2, replace=False)
        objects = (ObjectSpec(SHAPES[s1], COLOUR_NAMES[c1]), ObjectSpec(SHAPES[s2], COLOUR_NAMES[c2]))
        prompts.append(format_caption(CaptionSpec(objects=objects)))
    return prompts


def position_classes(tokenizer, text: str, length: int) -> dict[str, list[int]]:
    """Positions of SOT, the prompt's word tokens, EOT and the padding after it in the padded sequence."""
    ids = tokenizer(text, truncation=True, max_length=length).input_ids
    n = len(ids) - 2
    return {"sot": [0], "words": list(range(1, n + 1)), "eot": [n + 1], "padding": list(range(n + 2, length))}


def replace_positions(states: torch.Tensor, empty: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """`states` `(1, T, D)` with the empty prompt's states `(1, T, D)` at `positions`."""
    out = states.clone()
    out[:, list(positions)] = empty[:, list(positions)]
    return out


@torch.no_grad()
def sample_embeds(
    pipe,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    *,
    seed: int,
    steps: int,
    guidance_scale: float,
    controller=None,
    pre_step=None,
) -> np.ndarray:
    """Plain CFG sampling from text states `(1, T, D)` (the noise of `seed`); the decoded uint8 image `(H, W, 3)`."""
    from emphasize.api import initial_noise
    from emphasize.sampling.common import decode_latents, tensor_to_pil
    from emphasize.sampling.denoise import denoise
    from emphasize.sampling.guidance_rules import text_to_image_batch

    unet = pipe.unet
    side = unet.config.sample_size
    noise = initial_noise(seed, (1, unet.config.in_channels, side, side), unet.device, unet.dtype)
    batch = text_to_image_batch(cond, uncond, guidance_scale)
    hook = None if controller is None else controller.recorder(batch.cond_row)
    latents = denoise(unet, pipe.scheduler, batch, noise, steps=steps, before_prediction=hook, pre_step=pre_step)
    if controller is not None:
        controller.set_pass()
    return np.asarray(tensor_to_pil(decode_latents(pipe.vae, latents))[0])


Sampler = Callable[[torch.Tensor, torch.Tensor, int], np.ndarray]  # (cond, uncond, seed) -> uint8 image


def embeds_sampler(pipe, *, steps: int, guidance_scale: float) -> Sampler:
    """The sampler the ablation uses by default: plain CFG sampling of `pipe` from text states."""
    return lambda cond, uncond, seed: sample_embeds(
        pipe, cond, uncond, seed=seed, steps=steps, guidance_scale=guidance_scale
    )


@dataclass(frozen=True)
class WordDependence:
    """Objects found per image under each ablation, per prompt (seed-averaged), with CIs over prompts."""

    found: dict[str, Estimate]  # "normal" and each replaced class -> fraction of caption objects found
    loss: dict[str, Estimate]  # replaced class -> paired (normal - replaced)
    prompts: int
    seeds: int

    def ratio(self) -> float:
        """(found normally - found without the words) / (found normally - found without the padding)."""
        pad = self.loss["padding"].mean
        return float("inf") if pad <= 0 else self.loss["words"].mean / pad

    def meets_bar(self) -> bool:
        """The testbed bar: losing the words costs at least twice what losing the padding costs."""
        return self.loss["words"].mean >= 2 * max(self.loss["padding"].mean, 0.0) and self.loss["words"].mean > 0


def word_dependence(
    pipe,
    prompts: Sequence[str],
    *,
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    replaced: Sequence[str] = ("words", "padding"),
    sampler: Sampler | None = None,
    progress=None,
) -> WordDependence:
    """The ablation: objects found with one class of text positions replaced by the empty prompt's states.

    Args:
        pipe: a text-to-image pipeline whose images the world detector can read (the embedded model).
        prompts: world captions.
        seeds: noise seeds per prompt (the same noise for every ablation).
        steps, guidance_scale: sampling settings.
        replaced: position classes to ablate (see `POSITION_CLASSES`).
        sampler: `(cond, uncond, seed) -> image`; plain sampling of `pipe` (`embeds_sampler`) when None.
        progress: optional callable(done, total) after each prompt.
    """
    from emphasize.sampling.common import encode_prompt
    from emphasize.world import detect, parse_caption

    for name in replaced:
        if name not in POSITION_CLASSES:
            raise ValueError(f"unknown position class {name!r}; choose from {', '.join(POSITION_CLASSES)}")
    sampler = sampler or embeds_sampler(pipe, steps=steps, guidance_scale=guidance_scale)
    length = pipe.tokenizer.model_max_length
    empty = encode_prompt(pipe.tokenizer, pipe.text_encoder, [""])
    per_prompt: dict[str, list[float]] = {name: [] for name in ("normal", *replaced)}
    for k, text in enumerate(prompts):
        spec = parse_caption(text)
        cond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [text])
        classes = position_classes(pipe.tokenizer, text, length)
        variants = {"normal": cond, **{name: replace_positions(cond, empty, classes[name]) for name in replaced}}
        for name, states in variants.items():
            found = []
            for seed in seeds:
                image = sampler(states, empty, seed)
                detections = detect(image)
                found.append(
                    np.mean(
                        [any(d.shape == o.shape and d.colour == o.colour for d in detections) for o in spec.objects]
                    )
                )
            per_prompt[name].append(float(np.mean(found)))
        if progress is not None:
            progress(k + 1, len(prompts))
    normal = np.array(per_prompt["normal"])
    return WordDependence(
        found={name: estimate(values) for name, values in per_prompt.items()},
        loss={name: estimate(normal - np.array(per_prompt[name])) for name in replaced},
        prompts=len(prompts),
        seeds=len(seeds),
    )


# ---------------------------------------------------------------------------------------------------------------
# grounding


@dataclass(frozen=True)
class GroundingCell:
    """Grounding of one attention level over one range of steps, pooled over matched objects."""

    mass_inside: Estimate  # share of the phrase's attention mass inside its own object's mask
    other_inside: Estimate  # share of the other phrases' mass inside that object (a control)
    chance: Estimate  # the mask's share of the image
    pointing: Estimate  # 1 when the phrase map's peak lies inside its object

    @property
    def ratio(self) -> float:
        """Mass inside over chance (ratio of the means)."""
        return self.mass_inside.mean / self.chance.mean if self.chance.mean > 0 else float("nan")


@dataclass(frozen=True)
class Grounding:
    """`cells[(level, steps)]`: level is a map side (16, 8, ...) or "all"; steps: all, early, middle, late."""

    cells: dict[tuple[object, str], GroundingCell]
    matched: int  # objects matched to a detection (the units of the statistics)
    objects: int  # caption objects in all images
    token_mass: dict[str, float] = field(default_factory=dict)  # mean attention mass per position class

    def table(self) -> str:
        lines = [
            "| level | steps | mass inside own object | other phrase inside | chance | own / chance | pointing |",
            "|---|---|---|---|---|---|---|",
        ]
        for (level, steps), c in self.cells.items():
            side = f"{level}x{level}" if level != "all" else "all levels"
            lines.append(
                f"| {side} | {steps} | {c.mass_inside.format()} | {c.other_inside.format()} | {c.chance.format()} "
                f"| {c.ratio:.2f}x | {c.pointing.format(2)} |"
            )
        return "\n".join(lines)


def _step_ranges(steps: int) -> dict[str, range]:
    third = max(1, steps // 3)
    return {
        "all": range(steps),
        "early": range(0, third),
        "middle": range(third, 2 * third),
        "late": range(2 * third, steps),
    }


def phrase_groups(tokenizer, text: str):
    """(object indices, token positions) of each object phrase of a world caption."""
    from emphasize.prompts import WeightedPrompt, WeightedSpan
    from emphasize.tokens import align_spans
    from emphasize.world import parse_caption, phrase_spans

    spans = phrase_spans(parse_caption(text))
    prompt = WeightedPrompt(text, tuple(WeightedSpan(a, e, 1.0, text[a:e]) for a, e, _ in spans))
    return [
        (objects, group.token_indices)
        for (_, _, objects), group in zip(spans, align_spans(tokenizer, prompt), strict=True)
    ]


def map_grounding(
    attention: torch.Tensor, mask: np.ndarray, others: Sequence[torch.Tensor] = ()
) -> tuple[float, float, float, float]:
    """Grounding of one phrase map on one object mask.

    Args:
        attention: `(h, w)` non-negative attention map of the phrase at one level.
        mask: bool `(H, W)` object mask at image size (H a multiple of h).
        others: the other phrases' maps at the same level.

    Returns:
        (mass inside, other phrases' mass inside, chance, pointing): each cell's mass is spread evenly over the
        pixels it covers (nearest upsampling, which conserves mass); the peak is taken on the bilinear upsampling.
    """
    size = mask.shape
    target = torch.from_numpy(mask.astype(np.float32))

    def inside(a: torch.Tensor) -> float:
        up = F.interpolate(a[None, None].float(), size=size, mode="nearest")[0, 0]
        return float((up * target).sum() / up.sum().clamp_min(1e-12))

    smooth = F.interpolate(attention[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    peak = int(smooth.argmax())
    pointing = float(mask.reshape(-1)[peak])
    other = float(np.mean([inside(o) for o in others])) if others else float("nan")
    return inside(attention), other, float(mask.mean()), pointing


@torch.no_grad()
def sample_with_attention(
    pipe, cond: torch.Tensor, uncond: torch.Tensor, *, seed: int, steps: int, guidance_scale: float
) -> tuple[np.ndarray, list[dict[int, torch.Tensor]], torch.Tensor]:
    """Plain sampling with capture: the image, per step `{HW: (HW, T)}` maps (layer sums of the conditional
    row's head-mean probabilities), and the per-token attention mass `(T,)` over the run."""
    from emphasize.attention.control import AttentionController
    from emphasize.attention.install import capture_attention

    controller = AttentionController()
    snapshots: list[dict[int, torch.Tensor]] = []

    def snapshot(latents, i, t):
        snapshots.append({p: m.clone() for p, m in controller.store.running.items()})
        return latents

    with capture_attention(pipe.unet, controller):
        controller.store.reset_running()
        image = sample_embeds(
            pipe,
            cond,
            uncond,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            controller=controller,
            pre_step=snapshot,
        )
        snapshots.append({p: m.clone() for p, m in controller.store.running.items()})
        token_mass = controller.store.token_mass()
    per_step = [{p: m - snapshots[i].get(p, 0) for p, m in s.items()} for i, s in enumerate(snapshots[1:])]
    return image, per_step, token_mass


def phrase_map(
    per_step: Sequence[dict[int, torch.Tensor]],
    pixels: int | None,
    tokens: Sequence[int],
    steps: Sequence[int],
    latent_side: int,
) -> torch.Tensor:
    """A token group's summed attention over `steps`: `(h, w)` at the level of `pixels`, or (None) every level
    upsampled bilinearly to the latent and averaged."""
    if pixels is not None:
        side = int(round(pixels**0.5))
        total = sum(per_step[i][pixels] for i in steps).reshape(side, side, -1)  # (h, w, T)
        return total[..., list(tokens)].sum(-1)
    maps = []
    for p in per_step[0]:
        side = int(round(p**0.5))
        total = sum(per_step[i][p] for i in steps)[:, list(tokens)].sum(-1).reshape(1, 1, side, side)
        maps.append(F.interpolate(total, size=(latent_side, latent_side), mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(maps).mean(0)


def score_grounding(
    per_step, groups, masks: dict[int, np.ndarray], latent_side: int
) -> dict[tuple[object, str], list]:
    """Grounding values of one image: `(level, step range) -> [(mass inside, other inside, chance, pointing)]`.

    Args:
        per_step: per sampling step `{HW: (HW, T)}` attention sums (`sample_with_attention`).
        groups: `(object indices, token positions)` per phrase.
        masks: object index -> bool `(H, W)` mask of its detection (objects not found are absent).
        latent_side: latent side, for the all-levels map.
    """
    ranges = _step_ranges(len(per_step))
    values: dict[tuple[object, str], list] = {}
    for objs, tokens in groups:
        other_tokens = [t for g, t in groups if g != objs]
        for index in objs:
            if index not in masks:
                continue
            for range_name, span in ranges.items():
                for pixels in [*per_step[0], None]:
                    level = "all" if pixels is None else int(round(pixels**0.5))
                    own = phrase_map(per_step, pixels, tokens, span, latent_side)
                    others = [phrase_map(per_step, pixels, t, span, latent_side) for t in other_tokens]
                    values.setdefault((level, range_name), []).append(map_grounding(own, masks[index], others))
    return values


def summarize_grounding(
    values: dict[tuple[object, str], list], matched: int, objects: int, token_mass: dict[str, float]
) -> Grounding:
    """Pool per-object grounding values into cells with CIs (levels fine to coarse, then all levels)."""
    order = list(_step_ranges(3))
    cells = {}
    for key in sorted(values, key=lambda kv: (kv[0] == "all", -kv[0] if kv[0] != "all" else 0, order.index(kv[1]))):
        rows = np.array(values[key])
        others = rows[:, 1][~np.isnan(rows[:, 1])]
        cells[key] = GroundingCell(estimate(rows[:, 0]), estimate(others), estimate(rows[:, 2]), estimate(rows[:, 3]))
    return Grounding(cells, matched, objects, token_mass)


def world_grounding(
    pipe,
    prompts: Sequence[str],
    *,
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    progress=None,
) -> Grounding:
    """Plain sampling of world captions; how well each object phrase's cross-attention lies on its object.

    Units of the CIs are matched objects (a caption object whose shape and colour the detector finds; the largest
    such detection is its mask).

    Args:
        pipe: a text-to-image pipeline (the embedded world model or one trained like it).
        prompts: world captions (each object phrase is one token group).
        seeds: noise seeds per prompt.
        steps, guidance_scale: sampling settings.
        progress: optional callable(done, total) after each prompt.
    """
    from emphasize.sampling.common import encode_prompt
    from emphasize.world import detect, parse_caption

    empty = encode_prompt(pipe.tokenizer, pipe.text_encoder, [""])
    values: dict[tuple[object, str], list] = {}
    mass: dict[str, list[float]] = {name: [] for name in POSITION_CLASSES}
    matched = objects = 0
    for k, text in enumerate(prompts):
        spec = parse_caption(text)
        groups = phrase_groups(pipe.tokenizer, text)
        cond = encode_prompt(pipe.tokenizer, pipe.text_encoder, [text])
        classes = position_classes(pipe.tokenizer, text, pipe.tokenizer.model_max_length)
        for seed in seeds:
            image, per_step, token_mass = sample_with_attention(
                pipe, cond, empty, seed=seed, steps=steps, guidance_scale=guidance_scale
            )
            for name, positions in classes.items():
                mass[name].append(float(token_mass[positions].sum()))
            detections = detect(image)
            masks = {}
            for index, o in enumerate(spec.objects):
                hits = [d for d in detections if d.shape == o.shape and d.colour == o.colour]
                if hits:
                    masks[index] = max(hits, key=lambda d: d.area).mask
            objects += len(spec.objects)
            matched += len(masks)
            for key, rows in score_grounding(per_step, groups, masks, pipe.unet.config.sample_size).items():
                values.setdefault(key, []).extend(rows)
        if progress is not None:
            progress(k + 1, len(prompts))
    return summarize_grounding(values, matched, objects, {name: float(np.mean(v)) for name, v in mass.items()})
