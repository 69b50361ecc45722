"""Scenes of the embedded world: 1-3 flat shapes on a grid, sampled from a seed.

A `Scene` is pure data in normalised coordinates (fractions of the image side), so the same scene renders at any
size. Besides the objects it carries the choices its caption makes (which relation it states, which sizes it
mentions); `captions.py` turns those into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .palette import COLOUR_NAMES
from .shapes import SHAPES

SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
BACKGROUNDS: tuple[str, ...] = ("plain", "textured")


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of scene sampling. Fractions are of the image side."""

    min_objects: int = 1  # fewest objects in a sampled scene
    max_objects: int = 3  # most objects in a sampled scene (at most grid * grid)
    grid: int = 3  # objects sit in distinct cells of a grid x grid layout
    small: float = 0.18  # side of a small object's bounding box
    large: float = 0.28  # side of a large object's bounding box
    margin: float = 0.02  # least gap between an object's bbox and the border of its cell (no overlaps)
    p_textured: float = 0.0  # probability of a lightly textured background instead of the plain one
    p_relation: float = 0.4  # two distinct objects: probability that the caption states their spatial relation
    p_count: float = 0.25  # probability that objects repeat one kind so that the caption counts ("two red circles")
    p_mention_size: float = 0.3  # probability, per object (per group for counts), that the caption states its size
    shapes: tuple[str, ...] = SHAPES  # shapes to draw from
    colours: tuple[str, ...] = COLOUR_NAMES  # colours to draw from

    def __post_init__(self):
        if not 1 <= self.grid <= 8:
            raise ValueError(f"grid={self.grid} is out of range; valid: 1..8")
        if not 1 <= self.min_objects <= self.max_objects <= min(3, self.grid * self.grid):
            raise ValueError(
                f"min_objects={self.min_objects}, max_objects={self.max_objects} are out of range; "
                f"valid: 1 <= min_objects <= max_objects <= {min(3, self.grid * self.grid)}"
            )
        cell = 1.0 / self.grid
        if not 0.0 < self.small < self.large <= cell - 2 * self.margin:
            raise ValueError(
                f"small={self.small}, large={self.large} are out of range; valid: 0 < small < large <= "
                f"{cell - 2 * self.margin:.3f} (cell side minus two margins)"
            )
        if not 0.0 <= self.margin < cell / 2:
            raise ValueError(f"margin={self.margin} is out of range; valid: 0 <= margin < {cell / 2:.3f}")
        for name in ("p_textured", "p_relation", "p_count", "p_mention_size"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is out of range; valid: 0..1")
        for shape in self.shapes:
            if shape not in SHAPES:
                raise ValueError(f"unknown shape {shape!r} in shapes; valid: {', '.join(SHAPES)}")
        for colour in self.colours:
            if colour not in COLOUR_NAMES:
                raise ValueError(f"unknown colour {colour!r} in colours; valid: {', '.join(COLOUR_NAMES)}")
        if len(self.shapes) < 1 or len(self.colours) < 2:
            raise ValueError(f"need >= 1 shape and >= 2 colours, got {len(self.shapes)} and {len(self.colours)}")

    def side(self, size: str) -> float:
        """Bounding-box side (fraction of the image) of a size name."""
        if size == "small":
            return self.small
        if size == "large":
            return self.large
        raise ValueError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")


@dataclass(frozen=True)
class SceneObject:
    """One flat shape. Coordinates are fractions of the image side, origin top left."""

    shape: str  # one of SHAPES
    colour: str  # one of COLOUR_NAMES
    size: str  # "small" or "large"
    side: float  # bounding-box side
    cx: float  # bounding-box centre, x
    cy: float  # bounding-box centre, y
    row: int  # grid cell row (0 = top)
    col: int  # grid cell column (0 = left)

    @property
    def kind(self) -> tuple[str, str]:
        return (self.shape, self.colour)


@dataclass(frozen=True)
class Relation:
    """`objects[subject]` is `relation` `objects[object]` (e.g. 0 "left of" 1)."""

    subject: int
    relation: str  # one of RELATIONS
    object: int


@dataclass(frozen=True)
class Scene:
    """Objects plus the choices the caption makes about them."""

    objects: tuple[SceneObject, ...]
    grid: int = 3  # grid the rows/columns refer to
    background: str = "plain"  # "plain" or "textured"
    texture_seed: int = 0  # seed of the background texture (textured only)
    relation: Relation | None = None  # the spatial relation the caption states, if any
    mention_size: tuple[bool, ...] = field(default=())  # per object: does the caption state its size

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; valid: {', '.join(BACKGROUNDS)}")
        if not self.mention_size:
            object.__setattr__(self, "mention_size", (False,) * len(self.objects))
        if len(self.mention_size) != len(self.objects):
            raise ValueError(f"mention_size has {len(self.mention_size)} entries for {len(self.objects)} objects")


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Does a point `a` stand in `relation` to a point `b` (image coordinates, y down)?

    Args:
        relation (`str`): one of `RELATIONS`.
        a, b: (x, y) centres.
    """
    if relation == "left of":
        return a[0] < b[0]
    if relation == "right of":
        return a[0] > b[0]
    if relation == "above":
        return a[1] < b[1]
    if relation == "below":
        return a[1] > b[1]
    raise ValueError(f"unknown relation {relation!r}; valid: {', '.join(RELATIONS)}")


def cell_relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Relations that hold between the grid cells of `a` and `b` (and so between their centres)."""
    out = []
    if a.col < b.col:
        out.append("left of")
    if a.col > b.col:
        out.append("right of")
    if a.row < b.row:
        out.append("above")
    if a.row > b.row:
        out.append("below")
    return out


def as_rng(rng_or_seed) -> np.random.Generator:
    """A numpy Generator from a seed (int or SeedSequence) or a Generator (returned as is)."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, bool) or not isinstance(rng_or_seed, int | np.integer | np.random.SeedSequence):
        raise ValueError(f"seed must be a non-negative int, a SeedSequence or a Generator, got {rng_or_seed!r}")
    if isinstance(rng_or_seed, int | np.integer) and rng_or_seed < 0:
        raise ValueError(f"seed={rng_or_seed} is out of range; valid: >= 0")
    return np.random.default_rng(rng_or_seed)


def place_object(
    rng: np.random.Generator, shape: str, colour: str, size: str, row: int, col: int, config: SceneConfig
) -> SceneObject:
    """An object in cell (row, col), jittered inside the cell so that it keeps `config.margin` to the cell border."""
    side = config.side(size)
    cell = 1.0 / config.grid
    jitter = max(cell / 2 - side / 2 - config.margin, 0.0)
    cx = (col + 0.5) * cell + float(rng.uniform(-jitter, jitter))
    cy = (row + 0.5) * cell + float(rng.uniform(-jitter, jitter))
    return SceneObject(shape, colour, size, side, cx, cy, row, col)


def free_cells(scene: Scene, exclude: int | None = None) -> list[tuple[int, int]]:
    """Grid cells (row, col) not occupied by an object (ignoring object index `exclude`)."""
    used = {(o.row, o.col) for i, o in enumerate(scene.objects) if i != exclude}
    return [(r, c) for r in range(scene.grid) for c in range(scene.grid) if (r, c) not in used]


def sample_cells(rng: np.random.Generator, n: int, grid: int) -> list[tuple[int, int]]:
    """`n` distinct grid cells, uniformly."""
    flat = rng.permutation(grid * grid)[:n].tolist()
    return [(i // grid, i % grid) for i in flat]


def _sample_kinds(rng: np.random.Generator, n: int, config: SceneConfig) -> tuple[list[tuple[str, str]], list[int]]:
    """Shape/colour kinds of `n` objects and group sizes (repeated kinds are adjacent)."""
    shapes, colours = config.shapes, config.colours

    def draw(exclude: set) -> tuple[str, str]:
        while True:
            kind = (shapes[int(rng.integers(len(shapes)))], colours[int(rng.integers(len(colours)))])
            if kind not in exclude:
                return kind

    if n >= 2 and rng.random() < config.p_count:
        if n == 2 or rng.random() < 0.3:
            groups = [n]
        else:
            groups = [2, 1] if rng.random() < 0.5 else [1, 2]
    else:
        groups = [1] * n
    kinds: list[tuple[str, str]] = []
    for g in groups:
        kind = draw(set(kinds))
        kinds.extend([kind] * g)
    return kinds, groups


def sample_scene(rng_or_seed, *, n_objects: int | None = None, config: SceneConfig | None = None) -> Scene:
    """Sample a scene and its caption choices.

    Args:
        rng_or_seed: an int seed, a `np.random.SeedSequence` or a `np.random.Generator` (advanced in place).
        n_objects (`int`, *optional*): number of objects; default uniform in `config.min_objects..max_objects`.
        config (`SceneConfig`, *optional*): sampling knobs.
    """
    config = config or SceneConfig()
    rng = as_rng(rng_or_seed)
    if n_objects is None:
        n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    if not 1 <= n_objects <= min(3, config.grid * config.grid):
        raise ValueError(f"n_objects={n_objects} is out of range; valid: 1..{min(3, config.grid * config.grid)}")
    kinds, groups = _sample_kinds(rng, n_objects, config)
    sizes: list[str] = []
    mention: list[bool] = []
    for g in groups:
        said = bool(rng.random() < config.p_mention_size)
        if said and g > 1:
            sizes.extend([SIZES[int(rng.integers(2))]] * g)
        else:
            sizes.extend(SIZES[int(rng.integers(2))] for _ in range(g))
        mention.extend([said] * g)
    cells = sample_cells(rng, n_objects, config.grid)
    objects = tuple(
        place_object(rng, shape, colour, size, row, col, config)
        for (shape, colour), size, (row, col) in zip(kinds, sizes, cells, strict=True)
    )
    relation = None
    if n_objects == 2 and len(groups) == 2 and rng.random() < config.p_relation:
        options = cell_relations(objects[0], objects[1])
        relation = Relation(0, options[int(rng.integers(len(options)))], 1)
    textured = bool(rng.random() < config.p_textured)
    return Scene(
        objects=objects,
        grid=config.grid,
        background="textured" if textured else "plain",
        texture_seed=int(rng.integers(2**31)) if textured else 0,
        relation=relation,
        mention_size=tuple(mention),
    )


def scene_to_dict(scene: Scene) -> dict:
    """A JSON-ready dict of a scene (inverse of `scene_from_dict`)."""
    return {
        "objects": [
            {
                "shape": o.shape,
                "colour": o.colour,
                "size": o.size,
                "side": o.side,
                "cx": o.cx,
                "cy": o.cy,
                "row": o.row,
                "col": o.col,
            }
            for o in scene.objects
        ],
        "grid": scene.grid,
        "background": scene.background,
        "texture_seed": scene.texture_seed,
        "relation": None
        if scene.relation is None
        else {"subject": scene.relation.subject, "relation": scene.relation.relation, "object": scene.relation.object},
        "mention_size": list(scene.mention_size),
    }


def scene_from_dict(data: dict) -> Scene:
    """Rebuild a scene from `scene_to_dict` output. Raises ValueError on missing or bad fields."""
    try:
        objects = tuple(
            SceneObject(
                shape=str(o["shape"]),
                colour=str(o["colour"]),
                size=str(o["size"]),
                side=float(o["side"]),
                cx=float(o["cx"]),
                cy=float(o["cy"]),
                row=int(o["row"]),
                col=int(o["col"]),
            )
            for o in data["objects"]
        )
        rel = data.get("relation")
        relation = None if rel is None else Relation(int(rel["subject"]), str(rel["relation"]), int(rel["object"]))
        scene = Scene(
            objects=objects,
            grid=int(data.get("grid", 3)),
            background=str(data.get("background", "plain")),
            texture_seed=int(data.get("texture_seed", 0)),
            relation=relation,
            mention_size=tuple(bool(m) for m in data.get("mention_size", ())),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"malformed scene: missing or bad field {err}") from None
    for o in scene.objects:
        if o.shape not in SHAPES or o.colour not in COLOUR_NAMES or o.size not in SIZES:
            raise ValueError(f"malformed scene object {o}")
    return scene


def with_object(scene: Scene, index: int, **changes) -> Scene:
    """Copy of `scene` with fields of object `index` replaced."""
    objects = list(scene.objects)
    objects[index] = replace(objects[index], **changes)
    return replace(scene, objects=tuple(objects))
