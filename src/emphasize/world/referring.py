"""The referring-expression editing suite: instructions whose one discriminating word decides which object is right.

Every scene holds the referred object and a distractor that matches the instruction except for one word:

- `colour`: same shape, another colour ("place a blue mask on the red circle" beside a green circle);
- `size`: same shape and colour, the other size ("encircle the top vertex of the small triangle in red");
- `position`: same shape, colour and size; a position word tells them apart ("make the left square yellow");
- `shape`: same colour, another shape, the reference states colour and shape ("make the red square green" beside
  a red circle: the shape word discriminates).

A third, unrelated object (another shape and colour) is added with probability `p_third`. The discriminating
word's character span in the instruction is part of the item, so a benchmark can weight exactly that word.

`landing` says where an edit went: on the referred object, on the distractor, or nowhere (segment: mask IoU with
each object's mask; keypoint: ring distance to the named keypoint of each; recolour: which of the two shows the
new colour at its place, shape and size), together with the task's own metrics (`task_metrics`: IoU, keypoint
error, PSNR outside the edited region).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .detector import as_rgb, detect
from .metrics import MetricConfig, find_ring, mask_iou, overlay_mask, task_metrics
from .refer import POSITIONS, Reference, reference_text, resolve
from .rendering import check_size, object_masks
from .scene import SIZES, Scene, SceneConfig, as_rng, place_object, sample_cells
from .shapes import KEYPOINTS
from .tasks import TaskConfig, TaskItem, keypoint_on, recolour_on, segment_on

REFER_KINDS: tuple[str, ...] = ("segment", "keypoint", "recolour")
DISCRIMINATORS: tuple[str, ...] = ("colour", "size", "position", "shape")
_ON = {"segment": segment_on, "keypoint": keypoint_on, "recolour": recolour_on}
_TASK = {"segment": "segment", "keypoint": "keypoint", "recolour": "edit"}


@dataclass(frozen=True)
class ReferringItem:
    """One referring-expression item: an instruction task plus which object is the distractor and which word of
    the instruction tells the two apart."""

    task: TaskItem  # the instruction task (its `edit.target` is the referred object)
    distractor: int  # index in `task.scene.objects` of the object the instruction must not touch
    discriminator: str  # one of DISCRIMINATORS
    word: str  # the discriminating word as it appears in the instruction
    span: tuple[int, int]  # its character span in `task.instruction`

    @property
    def target(self) -> int:
        return self.task.edit.target


def _kinds(rng: np.random.Generator, sc: SceneConfig, discriminator: str):
    """(shape, colour, size) of the referred object and of the distractor."""

    def pick(options, exclude=()):
        options = [o for o in options if o not in exclude]
        return options[int(rng.integers(len(options)))]

    shape, colour, size = pick(sc.shapes), pick(sc.colours), pick(SIZES)
    if discriminator == "colour":
        other = (shape, pick(sc.colours, (colour,)), pick(SIZES))
    elif discriminator == "size":
        other = (shape, colour, pick(SIZES, (size,)))
    elif discriminator == "position":
        other = (shape, colour, size)
    else:
        other = (pick(sc.shapes, (shape,)), colour, pick(SIZES))
    return (shape, colour, size), other


def _reference(objects, t: int, discriminator: str, rng: np.random.Generator) -> Reference | None:
    """The reference to `objects[t]` that only the discriminating word makes unambiguous, or None."""
    o = objects[t]
    if discriminator == "colour":
        ref, without = Reference(o.shape, colour=o.colour), Reference(o.shape)
    elif discriminator == "size":
        ref, without = Reference(o.shape, size=o.size), Reference(o.shape)
    elif discriminator == "shape":
        ref = Reference(o.shape, colour=o.colour)
        same_colour = [i for i, p in enumerate(objects) if p.colour == o.colour]
        return ref if resolve(objects, ref) == [t] and len(same_colour) >= 2 else None
    else:
        positions = [p for p in POSITIONS if resolve(objects, Reference(o.shape, position=p)) == [t]]
        if not positions:
            return None
        ref, without = Reference(o.shape, position=positions[int(rng.integers(len(positions)))]), Reference(o.shape)
    return ref if resolve(objects, ref) == [t] and len(resolve(objects, without)) >= 2 else None


def _word(ref: Reference, discriminator: str) -> str:
    return {"colour": ref.colour, "size": ref.size, "position": ref.position, "shape": ref.shape}[discriminator]


def sample_referring(
    seed,
    size: int = 64,
    *,
    kind: str | None = None,
    discriminator: str | None = None,
    p_third: float = 0.5,
    config: TaskConfig | None = None,
) -> ReferringItem:
    """A referring-expression item from a seed (a pure function of its arguments).

    Args:
        seed: int seed (or SeedSequence / Generator).
        size (`int`): image side in pixels.
        kind (`str`, *optional*): one of `REFER_KINDS`; random by default.
        discriminator (`str`, *optional*): one of `DISCRIMINATORS`; random by default.
        p_third (`float`): probability of a third, unrelated object.
        config (`TaskConfig`, *optional*): task knobs (mask opacity, ring size, colours, shapes).
    """
    size = check_size(size)
    config = config or TaskConfig()
    rng = as_rng(seed)
    kind = kind if kind is not None else REFER_KINDS[int(rng.integers(len(REFER_KINDS)))]
    if kind not in REFER_KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(REFER_KINDS)}")
    if discriminator is None:
        discriminator = DISCRIMINATORS[int(rng.integers(len(DISCRIMINATORS)))]
    if discriminator not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {discriminator!r}; valid: {', '.join(DISCRIMINATORS)}")
    if not 0.0 <= p_third <= 1.0:
        raise ValueError(f"p_third={p_third} is out of range; valid: 0..1")
    sc = config.scene
    for _ in range(1000):
        target, other = _kinds(rng, sc, discriminator)
        kinds = [target, other]
        if rng.random() < p_third and sc.max_objects >= 3:
            third = [(s, c) for s in sc.shapes for c in sc.colours if s not in (target[0], other[0])
                     and c not in (target[1], other[1])]  # fmt: skip
            s, c = third[int(rng.integers(len(third)))]
            kinds.append((s, c, SIZES[int(rng.integers(len(SIZES)))]))
        order = rng.permutation(len(kinds)).tolist()
        cells = sample_cells(rng, len(kinds), sc.grid)
        objects = tuple(place_object(rng, *kinds[j], r, q, sc) for j, (r, q) in zip(order, cells, strict=True))
        t, d = order.index(0), order.index(1)
        ref = _reference(objects, t, discriminator, rng)
        if ref is not None:
            break
    else:  # pragma: no cover - every discriminator finds a scene within a few draws
        raise ValueError(f"no {discriminator} scene found for seed {seed}")
    textured = bool(rng.random() < sc.p_textured)
    scene = Scene(objects, grid=sc.grid, background="textured" if textured else "plain",
                  texture_seed=int(rng.integers(2**31)) if textured else 0)  # fmt: skip
    text, image, target_image, scene, after, edit = _ON[kind](rng, config, size, scene, t, ref)
    task = TaskItem(_TASK[kind], text, image, target_image, scene, after, edit, size, None)
    word = _word(ref, discriminator)
    noun = reference_text(ref)
    at = text.find(noun) + noun.find(word)  # the word inside the stated reference, not elsewhere in the text
    return ReferringItem(task, d, discriminator, word, (at, at + len(word)))


def _keypoint_of(scene: Scene, index: int, name: str, size: int) -> tuple[float, float]:
    """Pixel position of keypoint `name` of an object, or its centre when its shape has no such keypoint."""
    o = scene.objects[index]
    u, v = KEYPOINTS[o.shape].get(name, (0.0, 0.0))
    return ((o.cx + u * o.side / 2) * size, (o.cy + v * o.side / 2) * size)


def landing(item: ReferringItem, output, config: MetricConfig | None = None) -> dict:
    """Where the edit of `output` went, and the task's metrics against the referred object.

    Returns a dict with `landed` ("referred", "distractor", "both" or "nowhere"), `on_referred` / `on_distractor`
    (0/1), the per-object evidence (`iou_referred`/`iou_distractor`, `error_referred`/`error_distractor` in px, or
    `recoloured_referred`/`recoloured_distractor`), and `task_metrics`' keys (success, mask_iou, keypoint_error,
    preservation_psnr, psnr, ssim).

    Args:
        item (`ReferringItem`): the item.
        output: the model's RGB output, the item's size.
        config (`MetricConfig`, *optional*): tolerances.
    """
    return task_landing(item.task, item.distractor, output, config)


def task_landing(task: TaskItem, other: int, output, config: MetricConfig | None = None) -> dict:
    """`landing` for any segment, keypoint or recolour task: was the edit applied to the referred object
    (`task.edit.target`) or to the object `other` of the input scene?

    Args:
        task (`TaskItem`): a segment, keypoint or recolour task.
        other (`int`): index in `task.scene.objects` of the object to test against the referred one.
        output: the model's RGB output, the task's size.
        config (`MetricConfig`, *optional*): tolerances.
    """
    config = config or MetricConfig()
    out = as_rgb(output)
    row = task_metrics(task, out, config)
    size, edit = task.size, task.edit
    if edit.kind not in REFER_KINDS:
        raise ValueError(f"landing is defined for {', '.join(REFER_KINDS)} tasks, not {edit.kind!r}")
    t, d = edit.target, other
    if edit.kind == "segment":
        pred = overlay_mask(out, task.input, edit.colour, float(edit.strength), config.min_contrast)
        masks = object_masks(task.scene, size)
        ev = {"referred": mask_iou(pred, masks[t]), "distractor": mask_iou(pred, masks[d])}
        hit = {k: v >= config.iou_success for k, v in ev.items()}
        row.update(iou_referred=ev["referred"], iou_distractor=ev["distractor"])
    elif edit.kind == "keypoint":
        centre = find_ring(out, task.input, edit.colour, config.min_contrast, config.min_ring_pixels)
        points = {"referred": _keypoint_of(task.scene, t, edit.keypoint, size),
                  "distractor": _keypoint_of(task.scene, d, edit.keypoint, size)}  # fmt: skip
        ev = {k: None if centre is None else math.dist(centre, p) for k, p in points.items()}
        hit = {k: v is not None and v <= config.keypoint_tolerance * size for k, v in ev.items()}
        row.update(error_referred=ev["referred"], error_distractor=ev["distractor"])
    else:
        found = detect(out, config.detector)
        hit = {}
        for name, i in (("referred", t), ("distractor", d)):
            o = task.scene.objects[i]
            hit[name] = o.colour != edit.colour and any(  # an object already of the new colour shows nothing
                x.shape == o.shape
                and x.colour == edit.colour
                and math.dist(x.center, (o.cx * size, o.cy * size)) <= config.position_tolerance * size
                for x in found
            )
        row.update(recoloured_referred=int(hit["referred"]), recoloured_distractor=int(hit["distractor"]))
    if hit["referred"] and not hit["distractor"]:
        landed = "referred"
    elif hit["distractor"] and not hit["referred"]:
        landed = "distractor"
    elif hit["referred"]:  # both: the closer evidence decides (segment IoU, keypoint distance), else referred
        if edit.kind == "segment":
            landed = "referred" if ev["referred"] >= ev["distractor"] else "distractor"
        elif edit.kind == "keypoint":
            landed = "referred" if ev["referred"] <= ev["distractor"] else "distractor"
        else:
            landed = "both"
    else:
        landed = "nowhere"
    row.update(landed=landed, on_referred=int(landed in ("referred", "both")),
               on_distractor=int(landed in ("distractor", "both")))  # fmt: skip
    return row
