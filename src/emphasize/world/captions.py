"""Captions of scenes: a small grammar, its renderer and its parser.

Grammar (lower case, single spaces, optional final period when parsing)::

    caption  := phrase
              | phrase " and " phrase
              | phrase ", " phrase " and " phrase
              | single " " RELATION " " single
    phrase   := single | COUNT " " [SIZE " "] COLOUR " " PLURAL
    single   := ("a" | "an") " " [SIZE " "] COLOUR " " SHAPE
    COUNT    := "two" | "three"
    RELATION := "to the left of" | "to the right of" | "above" | "below"   ("left of", "right of" also parse)

A caption describes a `CaptionSpec`: the objects in caption order (counts expand into repeated objects; size is
`None` where the caption does not state it) and the stated relation. `parse_caption(caption(scene)) ==
scene_spec(scene)` for every scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .palette import COLOUR_NAMES
from .scene import RELATIONS, SIZES, Relation, Scene
from .shapes import PLURALS, SHAPES

COUNT_WORDS: dict[int, str] = {2: "two", 3: "three"}
RELATION_TEXT: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
_SINGULAR = {PLURALS[s]: s for s in SHAPES}


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a caption states it."""

    shape: str
    colour: str
    size: str | None = None  # None when the caption does not state the size


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says: objects in caption order and an optional relation between two of them."""

    objects: tuple[ObjectSpec, ...]
    relation: Relation | None = None


def scene_spec(scene: Scene) -> CaptionSpec:
    """The caption-level spec of a scene (what `caption(scene)` states).

    Args:
        scene (`Scene`): the scene.
    """
    objects = tuple(
        ObjectSpec(o.shape, o.colour, o.size if said else None)
        for o, said in zip(scene.objects, scene.mention_size, strict=True)
    )
    return CaptionSpec(objects, scene.relation)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _single(o: ObjectSpec) -> str:
    words = ([o.size] if o.size else []) + [o.colour, o.shape]
    return f"{_article(words[0])} {' '.join(words)}"


def _groups(objects: tuple[ObjectSpec, ...]) -> list[tuple[ObjectSpec, int]]:
    groups: list[tuple[ObjectSpec, int]] = []
    for o in objects:
        if groups and groups[-1][0] == o:
            groups[-1] = (o, groups[-1][1] + 1)
        else:
            groups.append((o, 1))
    return groups


def format_caption(spec: CaptionSpec) -> str:
    """Text of a caption spec (inverse of `parse_caption`).

    Adjacent identical objects are counted ("two red circles"); a relation needs exactly two objects.

    Args:
        spec (`CaptionSpec`): objects and relation.
    """
    if not 1 <= len(spec.objects) <= 3:
        raise ValueError(f"a caption has 1..3 objects, got {len(spec.objects)}")
    if spec.relation is not None:
        rel = spec.relation
        if len(spec.objects) != 2 or {rel.subject, rel.object} != {0, 1}:
            raise ValueError(f"a relation needs exactly two objects, subject 0 and object 1 (or reverse), got {rel}")
        if rel.relation not in RELATION_TEXT:
            raise ValueError(f"unknown relation {rel.relation!r}; valid: {', '.join(RELATIONS)}")
        subject, obj = _single(spec.objects[rel.subject]), _single(spec.objects[rel.object])
        return f"{subject} {RELATION_TEXT[rel.relation]} {obj}"
    phrases = []
    for o, n in _groups(spec.objects):
        if n == 1:
            phrases.append(_single(o))
        else:
            plural = ([o.size] if o.size else []) + [o.colour, PLURALS[o.shape]]
            phrases.append(f"{COUNT_WORDS[n]} {' '.join(plural)}")
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def phrase_spans(spec: CaptionSpec) -> list[tuple[int, int, tuple[int, ...]]]:
    """Where each object phrase of `format_caption(spec)` lies, and which objects it names.

    A phrase is the words that describe its objects, without the article or count: `[size] colour shape` (plural
    for counts), e.g. `small green triangle` in `a small green triangle above a large yellow star` and
    `red circles` in `two red circles and a blue square`. These are the words whose cross-attention should lie on
    the objects (the grounding targets of training, the weighted words of the benchmarks).

    Args:
        spec (`CaptionSpec`): objects and relation, as for `format_caption`.

    Returns:
        `(start, end, object_indices)` per phrase in caption order: character offsets into `format_caption(spec)`
        and the indices of `spec.objects` the phrase names.
    """
    text = format_caption(spec)
    if spec.relation is not None:
        order = [((spec.relation.subject,), 1), ((spec.relation.object,), 1)]
    else:
        order, k = [], 0
        for _, n in _groups(spec.objects):
            order.append((tuple(range(k, k + n)), n))
            k += n
    spans, cursor = [], 0
    for indices, n in order:
        o = spec.objects[indices[0]]
        words = ([o.size] if o.size else []) + [o.colour, o.shape if n == 1 else PLURALS[o.shape]]
        phrase = " ".join(words)
        start = text.index(phrase, cursor)
        spans.append((start, start + len(phrase), indices))
        cursor = start + len(phrase)
    return spans


def caption(scene: Scene) -> str:
    """The caption of a scene.

    Args:
        scene (`Scene`): the scene; its `relation` and `mention_size` decide the form of the caption.
    """
    return format_caption(scene_spec(scene))


_REL_PATTERN = re.compile(r" (to the left of|to the right of|left of|right of|above|below) ")
_REL_NAME = {"to the left of": "left of", "to the right of": "right of"}


def _parse_phrase(text: str, caption_text: str, single: bool) -> list[ObjectSpec]:
    words = text.split(" ")
    where = f"in caption {caption_text!r}"
    if len(words) not in (3, 4):
        raise ValueError(f"cannot parse phrase {text!r} {where}: expected '<a|an|two|three> [size] <colour> <shape>'")
    head, *rest = words
    if head in ("a", "an"):
        count = 1
    elif head in ("two", "three") and not single:
        count = 2 if head == "two" else 3
    else:
        valid = "a, an" if single else "a, an, two, three"
        raise ValueError(f"unexpected word {head!r} in phrase {text!r} {where}; valid: {valid}")
    size = None
    if len(rest) == 3:
        size = rest.pop(0)
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r} in phrase {text!r} {where}; valid: {', '.join(SIZES)}")
    colour, noun = rest
    if colour not in COLOUR_NAMES:
        raise ValueError(f"unknown colour {colour!r} in phrase {text!r} {where}; valid: {', '.join(COLOUR_NAMES)}")
    if count == 1:
        if noun not in SHAPES:
            raise ValueError(f"unknown shape {noun!r} in phrase {text!r} {where}; valid: {', '.join(SHAPES)}")
        shape = noun
    else:
        if noun not in _SINGULAR:
            valid = ", ".join(PLURALS.values())
            raise ValueError(f"expected a plural shape, got {noun!r} in phrase {text!r} {where}; valid: {valid}")
        shape = _SINGULAR[noun]
    return [ObjectSpec(shape, colour, size)] * count


def parse_caption(text: str) -> CaptionSpec:
    """Parse a caption of the world grammar back into its spec (inverse of `format_caption`).

    Args:
        text (`str`): e.g. `"a small green triangle above a large yellow star"` or `"two purple squares"`.
            Case, repeated spaces and a final period are tolerated.

    Raises:
        ValueError: naming the part of the caption that does not fit the grammar.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a string, got {type(text).__name__}")
    clean = " ".join(text.lower().strip().rstrip(".").split())
    if not clean:
        raise ValueError("empty caption")
    rel = _REL_PATTERN.search(clean)
    if rel:
        left, right = clean[: rel.start()], clean[rel.end() :]
        objects = _parse_phrase(left, text, single=True) + _parse_phrase(right, text, single=True)
        name = _REL_NAME.get(rel.group(1), rel.group(1))
        return CaptionSpec(tuple(objects), Relation(0, name, 1))
    if " and " in clean:
        head, last = clean.rsplit(" and ", 1)
        parts = head.split(", ") + [last]
    else:
        parts = [clean]
    if len(parts) > 3:
        raise ValueError(f"too many phrases in caption {text!r}; valid: 1..3")
    objects = [o for part in parts for o in _parse_phrase(part, text, single=False)]
    if len(objects) > 3:
        raise ValueError(f"caption {text!r} describes {len(objects)} objects; valid: 1..3")
    return CaptionSpec(tuple(objects), None)


def spec_to_dict(spec: CaptionSpec) -> dict:
    """JSON-ready dict of a caption spec."""
    rel = spec.relation
    return {
        "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size} for o in spec.objects],
        "relation": None if rel is None else {"subject": rel.subject, "relation": rel.relation, "object": rel.object},
    }


def spec_from_dict(data: dict) -> CaptionSpec:
    """Rebuild a caption spec from `spec_to_dict` output. Raises ValueError on missing or bad fields."""
    try:
        objects = tuple(ObjectSpec(str(o["shape"]), str(o["colour"]), o.get("size")) for o in data["objects"])
        rel = data.get("relation")
        relation = None if rel is None else Relation(int(rel["subject"]), str(rel["relation"]), int(rel["object"]))
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"malformed caption spec: missing or bad field {err}") from None
    for o in objects:
        if o.shape not in SHAPES or o.colour not in COLOUR_NAMES or o.size not in (None, *SIZES):
            raise ValueError(f"malformed caption spec object {o}")
    return CaptionSpec(objects, relation)
