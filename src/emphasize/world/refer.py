"""Referring expressions: name one object of a scene unambiguously ("the left circle", "the small red star").

A `Reference` always names the shape and adds colour, size or a position word ("left", "right", "top",
"bottom": the extreme object in that direction among those matching the rest of the reference, by grid cell).
`resolve` finds the objects a reference picks out; `references` lists every unambiguous reference to an object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import SceneObject

POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")


@dataclass(frozen=True)
class Reference:
    """A description of one object."""

    shape: str
    colour: str | None = None  # stated colour, if any
    size: str | None = None  # stated size, if any
    position: str | None = None  # "left", "right", "top" or "bottom": extreme among the matching objects


def reference_text(ref: Reference) -> str:
    """Noun phrase of a reference, e.g. "the left circle", "the small red star"."""
    words = [w for w in (ref.position, ref.size, ref.colour, ref.shape) if w]
    return "the " + " ".join(words)


def _extreme(objects: list[tuple[int, SceneObject]], position: str) -> list[int]:
    key = {
        "left": lambda o: o.col,
        "right": lambda o: -o.col,
        "top": lambda o: o.row,
        "bottom": lambda o: -o.row,
    }[position]
    if len(objects) < 2:
        return []
    values = [key(o) for _, o in objects]
    best = min(values)
    winners = [i for (i, _), v in zip(objects, values, strict=True) if v == best]
    return winners if len(winners) == 1 else []


def resolve(objects: tuple[SceneObject, ...] | list[SceneObject], ref: Reference) -> list[int]:
    """Indices of the objects a reference picks out (exactly one when the reference is unambiguous).

    A position word needs at least two objects matching the rest of the reference, and a unique extreme one.

    Args:
        objects: the scene's objects.
        ref (`Reference`): the description.
    """
    if ref.position is not None and ref.position not in POSITIONS:
        raise ValueError(f"unknown position {ref.position!r}; valid: {', '.join(POSITIONS)}")
    match = [
        (i, o)
        for i, o in enumerate(objects)
        if o.shape == ref.shape
        and (ref.colour is None or o.colour == ref.colour)
        and (ref.size is None or o.size == ref.size)
    ]
    if ref.position is None:
        return [i for i, _ in match]
    return _extreme(match, ref.position)


def references(objects: tuple[SceneObject, ...] | list[SceneObject], index: int) -> list[Reference]:
    """Every unambiguous reference to `objects[index]` from the families shape / +colour / +size / +colour+size /
    +position (position only when another object shares the shape)."""
    o = objects[index]
    candidates = [
        Reference(o.shape),
        Reference(o.shape, colour=o.colour),
        Reference(o.shape, size=o.size),
        Reference(o.shape, colour=o.colour, size=o.size),
    ]
    if sum(p.shape == o.shape for p in objects) >= 2:
        candidates += [Reference(o.shape, position=p) for p in POSITIONS]
    return [r for r in candidates if resolve(objects, r) == [index]]


def sample_reference(rng: np.random.Generator, objects, index: int) -> Reference:
    """A random unambiguous reference to `objects[index]`, preferring the shortest ones.

    Args:
        rng (`np.random.Generator`): randomness.
        objects: the scene's objects.
        index (`int`): the object to refer to.
    """
    valid = references(objects, index)
    if not valid:  # cannot happen for objects in distinct cells, kept as a guard
        raise ValueError(f"object {index} of {objects} has no unambiguous reference")
    words = np.array([sum(x is not None for x in (r.colour, r.size, r.position)) for r in valid], dtype=float)
    weights = np.exp(-words)
    return valid[int(rng.choice(len(valid), p=weights / weights.sum()))]
