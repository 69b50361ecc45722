"""Dataset items: text-to-image (caption + render) and instruction tasks (input, instruction, exact target).

Instruction tasks mirror InstructDiffusion's families:

- `segment`: "place a blue mask on the left circle" -> the input with the object's mask alpha-blended in blue;
- `keypoint`: "encircle the top vertex of the triangle in red" -> the input with a red ring at that point;
- `edit`: recolour ("make the square green"), remove ("remove the star"), add ("add a yellow circle on the
  right"), move ("move the red heart to the left") -> the render of the edited scene;
- `enhance`: denoise ("remove the noise", input with Gaussian noise) and deblur ("sharpen the image", input
  blurred) -> the clean render.

Objects are named by an unambiguous reference (`refer.py`); scenes often hold a second object of the same shape,
so the distinguishing word (colour, size or position) matters. Every item is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from .captions import CaptionSpec, caption, scene_spec
from .palette import colour_distance
from .refer import Reference, reference_text, references, sample_reference
from .rendering import blend_mask, check_size, draw_ring, object_masks, render, render_float, to_uint8
from .scene import (
    SIZES,
    Scene,
    SceneConfig,
    as_rng,
    free_cells,
    place_object,
    sample_cells,
    sample_scene,
    with_object,
)
from .shapes import KEYPOINTS

TASKS: tuple[str, ...] = ("segment", "keypoint", "edit", "enhance")
KINDS: dict[str, tuple[str, ...]] = {
    "segment": ("segment",),
    "keypoint": ("keypoint",),
    "edit": ("recolour", "remove", "add", "move"),
    "enhance": ("denoise", "deblur"),
}
SIDES: tuple[str, ...] = ("left", "right", "top", "bottom")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "segment": (
        "place a {colour} mask on {ref}",
        "put a {colour} mask over {ref}",
        "segment {ref} in {colour}",
        "cover {ref} with a {colour} mask",
        "mark {ref} with a {colour} mask",
    ),
    "keypoint": (
        "encircle the {point} of {ref} in {colour}",
        "mark the {point} of {ref} in {colour}",
        "draw a {colour} circle around the {point} of {ref}",
        "put a {colour} ring on the {point} of {ref}",
    ),
    "recolour": (
        "make {ref} {colour}",
        "turn {ref} {colour}",
        "change the colour of {ref} to {colour}",
        "paint {ref} {colour}",
        "recolour {ref} {colour}",
    ),
    "remove": ("remove {ref}", "delete {ref}", "erase {ref}", "take away {ref}"),
    "add": ("add {obj} {where}", "put {obj} {where}", "draw {obj} {where}", "place {obj} {where}"),
    "move": ("move {ref} {towards}", "shift {ref} {towards}", "push {ref} {towards}"),
    "denoise": ("remove the noise", "denoise the image", "clean up the noise", "make the image less noisy"),
    "deblur": ("remove the blur", "deblur the image", "sharpen the image", "make the image sharp"),
}
_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_TOWARDS = {
    "left": ("to the left", "left"),
    "right": ("to the right", "right"),
    "up": ("up", "upwards"),
    "down": ("down", "downwards"),
}


@dataclass(frozen=True)
class TaskConfig:
    """Knobs of instruction-task sampling. Fractions are of the image side."""

    scene: SceneConfig = field(default_factory=SceneConfig)  # object sizes, grid, colours, shapes, texture
    p_distractor: float = 0.6  # probability that the referred object shares its shape with another object
    mask_alpha: float = 0.5  # opacity of the segmentation mask overlay
    ring_radius: float = 0.07  # keypoint ring radius (4.5 px at 64 px)
    ring_width: float = 0.03  # keypoint ring stroke width (about 2 px at 64 px)
    min_colour_distance: float = 100.0  # mask / ring colour at least this far (sRGB) from the object's colour
    noise_sigma: tuple[float, float] = (20.0, 50.0)  # denoise: range of the Gaussian noise sigma, 0..255 units
    blur_sigma: tuple[float, float] = (0.016, 0.03)  # deblur: range of the Gaussian blur sigma (1..2 px at 64 px)
    p_mention_size: float = 0.3  # add: probability that the instruction states the new object's size

    def __post_init__(self):
        if self.scene.grid < 2:
            raise ValueError(f"scene.grid={self.scene.grid} is out of range for tasks; valid: >= 2 (move needs room)")
        for name in ("p_distractor", "mask_alpha", "p_mention_size"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is out of range; valid: 0..1")
        if not 0.0 < self.mask_alpha:
            raise ValueError(f"mask_alpha={self.mask_alpha} is out of range; valid: (0, 1]")
        if not 0.0 < self.ring_width < self.ring_radius <= 0.25:
            raise ValueError(
                f"ring_radius={self.ring_radius}, ring_width={self.ring_width} are out of range; "
                "valid: 0 < ring_width < ring_radius <= 0.25"
            )
        lo, hi = self.noise_sigma
        if not 0.0 < lo <= hi <= 128.0:
            raise ValueError(f"noise_sigma={self.noise_sigma} is out of range; valid: 0 < lo <= hi <= 128")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi <= 0.1:
            raise ValueError(f"blur_sigma={self.blur_sigma} is out of range; valid: 0 < lo <= hi <= 0.1")


@dataclass(frozen=True)
class Edit:
    """What an instruction asks for; fields not used by a kind are None."""

    kind: str  # one of the KINDS values
    target: int | None = None  # index in `scene.objects` of the object the instruction refers to
    reference: Reference | None = None  # how the instruction names it
    colour: str | None = None  # mask colour / ring colour / new colour / colour of the added object
    keypoint: str | None = None  # keypoint name, e.g. "top vertex"
    point: tuple[float, float] | None = None  # keypoint (x, y), fractions of the image side
    direction: str | None = None  # add: side ("left", ...); move: direction ("left", "up", ...)
    shape: str | None = None  # add: shape of the new object
    size: str | None = None  # add: size of the new object when the instruction states it
    # segment: mask opacity; denoise: noise sigma (0..255 units); deblur: blur sigma (fraction of the side)
    strength: float | None = None


@dataclass(frozen=True)
class TaskItem:
    """One instruction task. `target_scene` is the scene after the edit (the input scene for other tasks)."""

    task: str  # one of TASKS
    instruction: str
    input: np.ndarray = field(repr=False)  # uint8 (size, size, 3)
    target: np.ndarray = field(repr=False)  # uint8 (size, size, 3)
    scene: Scene
    target_scene: Scene
    edit: Edit
    size: int
    seed: int | None = None


@dataclass(frozen=True)
class T2IItem:
    """One text-to-image item: the caption, its spec, the scene and its render."""

    caption: str
    spec: CaptionSpec
    image: np.ndarray = field(repr=False)  # uint8 (size, size, 3)
    scene: Scene
    size: int
    seed: int | None = None


def _seed_of(seed) -> int | None:
    return int(seed) if isinstance(seed, int | np.integer) else None


def sample_t2i(seed, size: int = 64, *, config: SceneConfig | None = None) -> T2IItem:
    """A text-to-image item: scene, caption and render, from a seed.

    Args:
        seed: int seed (or SeedSequence / Generator).
        size (`int`): image side in pixels.
        config (`SceneConfig`, *optional*): scene sampling knobs.
    """
    size = check_size(size)
    scene = sample_scene(as_rng(seed), config=config)
    return T2IItem(caption(scene), scene_spec(scene), render(scene, size), scene, size, _seed_of(seed))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _task_scene(rng: np.random.Generator, config: TaskConfig, n_min: int, n_max: int) -> tuple[Scene, int]:
    """A scene for an instruction task and the index of the object the instruction will name."""
    sc = config.scene
    n_max = max(min(n_max, sc.max_objects), n_min)
    while True:
        n = int(rng.integers(n_min, n_max + 1))
        shape, colour = _pick(rng, sc.shapes), _pick(rng, sc.colours)
        kinds = [(shape, colour)]
        if n >= 2 and rng.random() < config.p_distractor:
            other = colour if rng.random() < 0.35 else _pick(rng, [c for c in sc.colours if c != colour])
            kinds.append((shape, other))
        while len(kinds) < n:
            kinds.append((_pick(rng, sc.shapes), _pick(rng, sc.colours)))
        order = rng.permutation(n).tolist()
        kinds = [kinds[i] for i in order]
        target = order.index(0)
        cells = sample_cells(rng, n, sc.grid)
        objects = tuple(
            place_object(rng, s, c, _pick(rng, SIZES), r, q, sc) for (s, c), (r, q) in zip(kinds, cells, strict=True)
        )
        if references(objects, target):
            break
    textured = bool(rng.random() < sc.p_textured)
    scene = Scene(
        objects,
        grid=sc.grid,
        background="textured" if textured else "plain",
        texture_seed=int(rng.integers(2**31)) if textured else 0,
    )
    return scene, target


def _contrast_colour(rng: np.random.Generator, config: TaskConfig, colour: str) -> str:
    options = [c for c in config.scene.colours if colour_distance(c, colour) >= config.min_colour_distance]
    return _pick(rng, options or [c for c in config.scene.colours if c != colour])


def _segment(rng, config: TaskConfig, size: int):
    scene, t = _task_scene(rng, config, 1, 3)
    return segment_on(rng, config, size, scene, t, sample_reference(rng, scene.objects, t))


def segment_on(rng, config: TaskConfig, size: int, scene: Scene, t: int, ref: Reference):
    """The segment task on a given scene, referred object and reference (the referring-expression suite's entry)."""
    colour = _contrast_colour(rng, config, scene.objects[t].colour)
    text = _pick(rng, TEMPLATES["segment"]).format(colour=colour, ref=reference_text(ref))
    image = render(scene, size)
    target = blend_mask(image, object_masks(scene, size)[t], colour, config.mask_alpha)
    return (
        text,
        image,
        target,
        scene,
        scene,
        Edit("segment", target=t, reference=ref, colour=colour, strength=config.mask_alpha),
    )


def keypoint_position(scene: Scene, index: int, name: str) -> tuple[float, float]:
    """(x, y) of a named keypoint of `scene.objects[index]`, fractions of the image side."""
    o = scene.objects[index]
    u, v = KEYPOINTS[o.shape][name]
    half = o.side / 2.0
    return (o.cx + u * half, o.cy + v * half)


def _keypoint(rng, config: TaskConfig, size: int):
    scene, t = _task_scene(rng, config, 1, 3)
    return keypoint_on(rng, config, size, scene, t, sample_reference(rng, scene.objects, t))


def keypoint_on(rng, config: TaskConfig, size: int, scene: Scene, t: int, ref: Reference):
    """The keypoint task on a given scene, referred object and reference."""
    obj = scene.objects[t]
    name = _pick(rng, list(KEYPOINTS[obj.shape]))
    colour = _contrast_colour(rng, config, obj.colour)
    text = _pick(rng, TEMPLATES["keypoint"]).format(point=name, colour=colour, ref=reference_text(ref))
    point = keypoint_position(scene, t, name)
    image = render(scene, size)
    target = draw_ring(
        image, (point[0] * size, point[1] * size), config.ring_radius * size, config.ring_width * size, colour
    )
    return (
        text,
        image,
        target,
        scene,
        scene,
        Edit("keypoint", target=t, reference=ref, colour=colour, keypoint=name, point=point),
    )


def _recolour(rng, config: TaskConfig, size: int):
    scene, t = _task_scene(rng, config, 1, 3)
    return recolour_on(rng, config, size, scene, t, sample_reference(rng, scene.objects, t))


def recolour_on(rng, config: TaskConfig, size: int, scene: Scene, t: int, ref: Reference):
    """The recolour edit on a given scene, referred object and reference."""
    colour = _pick(rng, [c for c in config.scene.colours if c != scene.objects[t].colour])
    text = _pick(rng, TEMPLATES["recolour"]).format(ref=reference_text(ref), colour=colour)
    after = with_object(scene, t, colour=colour)
    return text, render(scene, size), render(after, size), scene, after, Edit("recolour", t, ref, colour=colour)


def _remove(rng, config: TaskConfig, size: int):
    scene, t = _task_scene(rng, config, 1, 3)
    ref = sample_reference(rng, scene.objects, t)
    text = _pick(rng, TEMPLATES["remove"]).format(ref=reference_text(ref))
    after = replace(scene, objects=scene.objects[:t] + scene.objects[t + 1 :], mention_size=())
    return text, render(scene, size), render(after, size), scene, after, Edit("remove", t, ref)


def _side_cells(scene: Scene, side: str) -> list[tuple[int, int]]:
    last = scene.grid - 1
    test = {
        "left": lambda r, c: c == 0,
        "right": lambda r, c: c == last,
        "top": lambda r, c: r == 0,
        "bottom": lambda r, c: r == last,
    }[side]
    return [(r, c) for r, c in free_cells(scene) if test(r, c)]


def _add(rng, config: TaskConfig, size: int):
    sc = config.scene
    while True:
        scene = sample_scene(rng, n_objects=int(rng.integers(1, min(2, sc.max_objects) + 1)), config=sc)
        scene = replace(scene, relation=None, mention_size=())
        sides = [s for s in SIDES if _side_cells(scene, s)]
        if sides:
            break
    side = _pick(rng, sides)
    row, col = _pick(rng, _side_cells(scene, side))
    shape, colour, osize = _pick(rng, sc.shapes), _pick(rng, sc.colours), _pick(rng, SIZES)
    said = bool(rng.random() < config.p_mention_size)
    words = ([osize] if said else []) + [colour, shape]
    obj_text = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    text = _pick(rng, TEMPLATES["add"]).format(obj=obj_text, where=_WHERE[side])
    new = place_object(rng, shape, colour, osize, row, col, sc)
    after = replace(scene, objects=scene.objects + (new,), mention_size=())
    edit = Edit(
        "add", target=len(scene.objects), colour=colour, direction=side, shape=shape, size=osize if said else None
    )
    return text, render(scene, size), render(after, size), scene, after, edit


def _move_cells(scene: Scene, index: int, direction: str) -> list[tuple[int, int]]:
    o = scene.objects[index]
    test = {
        "left": lambda r, c: r == o.row and c < o.col,
        "right": lambda r, c: r == o.row and c > o.col,
        "up": lambda r, c: c == o.col and r < o.row,
        "down": lambda r, c: c == o.col and r > o.row,
    }[direction]
    return [(r, c) for r, c in free_cells(scene, exclude=index) if test(r, c)]


def _move(rng, config: TaskConfig, size: int):
    while True:
        scene, t = _task_scene(rng, config, 1, 3)
        directions = [d for d in DIRECTIONS if _move_cells(scene, t, d)]
        if directions:
            break
    direction = _pick(rng, directions)
    row, col = _pick(rng, _move_cells(scene, t, direction))
    ref = sample_reference(rng, scene.objects, t)
    o = scene.objects[t]
    moved = place_object(rng, o.shape, o.colour, o.size, row, col, config.scene)
    after = replace(scene, objects=scene.objects[:t] + (moved,) + scene.objects[t + 1 :])
    text = _pick(rng, TEMPLATES["move"]).format(ref=reference_text(ref), towards=_pick(rng, _TOWARDS[direction]))
    return text, render(scene, size), render(after, size), scene, after, Edit("move", t, ref, direction=direction)


def _enhance_scene(rng, config: TaskConfig) -> Scene:
    return replace(sample_scene(rng, config=config.scene), relation=None, mention_size=())


def _denoise(rng, config: TaskConfig, size: int):
    scene = _enhance_scene(rng, config)
    sigma = float(rng.uniform(*config.noise_sigma))
    clean = render_float(scene, size)
    noisy = to_uint8(clean + rng.normal(0.0, sigma, clean.shape).astype(np.float32))
    text = _pick(rng, TEMPLATES["denoise"])
    return text, noisy, to_uint8(clean), scene, scene, Edit("denoise", strength=sigma)


def _deblur(rng, config: TaskConfig, size: int):
    scene = _enhance_scene(rng, config)
    sigma = float(rng.uniform(*config.blur_sigma))
    clean = render_float(scene, size)
    blurred = to_uint8(ndimage.gaussian_filter(clean, (sigma * size, sigma * size, 0), mode="nearest"))
    text = _pick(rng, TEMPLATES["deblur"])
    return text, blurred, to_uint8(clean), scene, scene, Edit("deblur", strength=sigma)


_SAMPLERS = {
    "segment": _segment,
    "keypoint": _keypoint,
    "recolour": _recolour,
    "remove": _remove,
    "add": _add,
    "move": _move,
    "denoise": _denoise,
    "deblur": _deblur,
}


def item_seed(seed: int, index: int) -> int:
    """Seed of item `index` of a run seeded `seed`: independent streams per item (uint32), as the CLI uses."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def iter_items(
    task: str,
    seed: int = 0,
    size: int = 64,
    *,
    start: int = 0,
    kind: str | None = None,
    scene_config: SceneConfig | None = None,
    task_config: TaskConfig | None = None,
):
    """Endless stream of items (training data on the fly): item i is sampled from `item_seed(seed, i)`, so the
    stream matches `emphasize world sample --seed seed` item for item.

    Args:
        task (`str`): "t2i" or one of `TASKS`.
        seed (`int`): run seed.
        size (`int`): image side in pixels.
        start (`int`): index of the first item (resume a stream).
        kind (`str`, *optional*): fixed kind for instruction tasks.
        scene_config (`SceneConfig`, *optional*): t2i scene knobs.
        task_config (`TaskConfig`, *optional*): instruction-task knobs.

    Yields:
        `T2IItem` or `TaskItem`.
    """
    if task != "t2i":
        check_task(task)
    check_size(size)
    index = start
    while True:
        s = item_seed(seed, index)
        if task == "t2i":
            yield sample_t2i(s, size, config=scene_config)
        else:
            yield sample_task(task, s, size, kind=kind, config=task_config)
        index += 1


def check_task(task: str) -> str:
    """Return `task` if it is an instruction task, else raise ValueError listing the valid ones."""
    if task not in KINDS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def sample_task(task: str, seed, size: int = 64, *, kind: str | None = None, config: TaskConfig | None = None):
    """An instruction task item (input image, instruction, exact target image) from a seed.

    Args:
        task (`str`): one of `TASKS` ("segment", "keypoint", "edit", "enhance").
        seed: int seed (or SeedSequence / Generator).
        size (`int`): image side in pixels.
        kind (`str`, *optional*): a kind of `KINDS[task]` (e.g. "move" for "edit"); random by default.
        config (`TaskConfig`, *optional*): task sampling knobs.

    Returns:
        `TaskItem`.
    """
    check_task(task)
    size = check_size(size)
    config = config or TaskConfig()
    rng = as_rng(seed)
    kinds = KINDS[task]
    if kind is None:
        kind = _pick(rng, kinds)
    elif kind not in kinds:
        raise ValueError(f"unknown kind {kind!r} for task {task!r}; valid: {', '.join(kinds)}")
    text, image, target, scene, after, edit = _SAMPLERS[kind](rng, config, size)
    return TaskItem(task, text, image, target, scene, after, edit, size, _seed_of(seed))
