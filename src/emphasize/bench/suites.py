"""Benchmark suites: prompt sets with, for every prompt, the words a method emphasizes and their weights.

Which words are emphasized is part of the suite, and every result row records it:

- `world-t2i`: two-object world captions `a C1 S1 and a C2 S2` from held-out seeds (three-object ones from index
  1000 on); the last object's phrase is emphasized at `weight`.
- `world-grounding`: the same captions; every object phrase marked at 1.0 (plain sampling, attention measured).
- `world-edit`: world instruction tasks (segment, keypoint, recolour, remove, add, move, denoise, deblur in turn)
  from held-out seeds; the referred (or added) object's shape word at `weight`.
- `world-refer`: the referring-expression editing suite (`world.referring`: segment, keypoint and recolour
  instructions whose one discriminating word, colour, size, position or shape, tells the referred object from a
  distractor); that word at `weight`.
- `attend-excite`: Attend-and-Excite's 276 prompts; the two subjects (the nouns of its templates) at `weight`.
- `drawbench`, `parti`, `dailydalle`, `csp`: the public sets as published; the first two content nouns
  (`tagger.content_nouns`) at `weight`.

The public sets ship inside the package (`bench/data/prompts/`, with `SOURCES.md`: where each file comes from, its
licence and its row count). World seeds start at 10^9 (training uses seeds < 10^8).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources

from emphasize.prompts import WeightedPrompt, WeightedSpan, format_weighted

PUBLIC_FILES = {  # suite -> (file, rows as SOURCES.md states them)
    "drawbench": ("drawbench.csv", 200),
    "parti": ("partiprompts.csv", 1632),
    "dailydalle": ("dailydalle.csv", 93),
    "csp": ("csp_common_syntactic_processes.csv", 52),
    "attend-excite": ("attend_and_excite.csv", 276),
}
WORLD_SUITES = ("world-t2i", "world-grounding", "world-edit", "world-refer")
EDIT_SUITES = ("world-edit", "world-refer")  # suites run by an instruction-editing model
SUITES = (*WORLD_SUITES, *PUBLIC_FILES)
EDIT_KINDS = ("segment", "keypoint", "recolour", "remove", "add", "move", "denoise", "deblur")


@dataclass(frozen=True)
class SuiteItem:
    """One prompt of a suite and what is emphasized in it."""

    suite: str  # suite name
    index: int  # position in the suite (stable: offsets select disjoint ranges)
    prompt: str  # plain text
    category: str  # the set's category (world: the caption form or task kind)
    emphasis: tuple[tuple[int, int, float], ...] = ()  # emphasized character spans (start, end, weight)
    world_seed: int | None = None  # world suites: the seed of the item (caption spec or task) it comes from
    extra: dict = field(default_factory=dict, compare=False)  # suite-specific facts (e.g. the edit kind)

    @property
    def weighted(self) -> WeightedPrompt:
        spans = tuple(WeightedSpan(a, e, w, self.prompt[a:e]) for a, e, w in self.emphasis)
        return WeightedPrompt(self.prompt, spans)

    @property
    def weighted_text(self) -> str:
        """The prompt in weight syntax, e.g. `a red circle and a (blue square:2)`."""
        return format_weighted(self.weighted)

    @property
    def emphasized(self) -> list[dict]:
        return [dict(text=self.prompt[a:e], weight=w) for a, e, w in self.emphasis]


def read_prompt_file(name: str) -> list[dict[str, str]]:
    """Rows of a shipped prompt CSV (a real CSV parser: fields may hold commas and quotes)."""
    text = resources.files("emphasize.bench").joinpath("data", "prompts", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _public(suite: str, weight: float) -> list[SuiteItem]:
    from emphasize.bench.tagger import content_nouns

    name, rows = PUBLIC_FILES[suite]
    data = read_prompt_file(name)
    if len(data) != rows:
        raise ValueError(f"{name}: {len(data)} rows, SOURCES.md says {rows}")
    items = []
    for i, row in enumerate(data):
        prompt = row["prompt"]
        spans = content_nouns(prompt, max_words=2)
        items.append(SuiteItem(suite, i, prompt, row["category"], tuple((a, e, weight) for a, e in spans)))
    return items


def _world_t2i(n: int, offset: int, weight: float, *, all_phrases: bool) -> list[SuiteItem]:
    """Two-object captions first (the fixed list every benchmark uses), three-object ones after 1000 of them."""
    from emphasize.bench.testbed import EVAL_START, two_object_prompts
    from emphasize.world import parse_caption, phrase_spans

    items = []
    for k in range(offset, offset + n):
        prompt = two_object_prompts(1, k)[0] if k < 1000 else three_object_prompt(k - 1000)
        spans = phrase_spans(parse_caption(prompt))
        chosen = spans if all_phrases else spans[-1:]
        w = 1.0 if all_phrases else weight
        category = f"{len(spans)} objects"
        items.append(SuiteItem("world-t2i" if not all_phrases else "world-grounding", k, prompt, category,
                               tuple((a, e, w) for a, e, _ in chosen), EVAL_START + k))  # fmt: skip
    return items


def three_object_prompt(k: int) -> str:
    """The k-th three-object caption `a C1 S1, a C2 S2 and a C3 S3` (three shapes, three colours)."""
    import numpy as np

    from emphasize.bench.testbed import EVAL_START
    from emphasize.world import COLOUR_NAMES, SHAPES
    from emphasize.world.captions import CaptionSpec, ObjectSpec, format_caption

    rng = np.random.default_rng([EVAL_START + k, 5])
    shapes = rng.choice(len(SHAPES), 3, replace=False)
    colours = rng.choice(len(COLOUR_NAMES), 3, replace=False)
    objects = tuple(ObjectSpec(SHAPES[s], COLOUR_NAMES[c]) for s, c in zip(shapes, colours, strict=True))
    return format_caption(CaptionSpec(objects=objects))


def _world_edit(n: int, offset: int, weight: float) -> list[SuiteItem]:
    from emphasize.bench.testbed import EVAL_START
    from emphasize.world import sample_task

    families = {"segment": "segment", "keypoint": "keypoint", "recolour": "edit", "remove": "edit", "add": "edit",
                "move": "edit", "denoise": "enhance", "deblur": "enhance"}  # fmt: skip
    items = []
    for k in range(offset, offset + n):
        kind = EDIT_KINDS[k % len(EDIT_KINDS)]
        seed = EVAL_START + k
        task = task_of_kind(families[kind], kind, seed, sample_task)
        text = task.instruction
        emphasis = ()
        shape = None
        if kind == "add":  # the new object's shape
            shape = task.edit.shape
        elif task.edit.target is not None:  # the referred object's shape word
            shape = task.scene.objects[task.edit.target].shape
        if shape is not None:
            at = text.find(shape)
            if at >= 0:
                emphasis = ((at, at + len(shape), weight),)
        items.append(SuiteItem("world-edit", k, text, kind, emphasis, seed, {"task": task.task, "kind": kind}))
    return items


def _world_refer(n: int, offset: int, weight: float) -> list[SuiteItem]:
    """Kinds and discriminators in turn: item k is kind k mod 3, discriminator (k // 3) mod 4."""
    items = []
    for k in range(offset, offset + n):
        item = referring_item(k)
        a, e = item.span
        kind, disc = item.task.edit.kind, item.discriminator
        items.append(SuiteItem("world-refer", k, item.task.instruction, f"{kind}/{disc}", ((a, e, weight),),
                               referring_seed(k), {"kind": kind, "discriminator": disc}))  # fmt: skip
    return items


def referring_seed(k: int) -> int:
    from emphasize.bench.testbed import EVAL_START

    return EVAL_START + k


def referring_item(k: int):
    """The k-th item of the `world-refer` suite (a `world.referring.ReferringItem`)."""
    from emphasize.world.referring import DISCRIMINATORS, REFER_KINDS, sample_referring

    kind, disc = REFER_KINDS[k % len(REFER_KINDS)], DISCRIMINATORS[(k // len(REFER_KINDS)) % len(DISCRIMINATORS)]
    return sample_referring(referring_seed(k), 64, kind=kind, discriminator=disc)


def task_of_kind(family: str, kind: str, seed: int, sample_task):
    """The first task of `kind` at or after `seed` (an edit family mixes kinds)."""
    for s in range(seed, seed + 10**6, 10**4):
        task = sample_task(family, s, 64)
        if task.edit.kind == kind:
            return task
    raise ValueError(f"no {kind} task found from seed {seed}")


def load_suite(suite: str, *, prompts: int | None = None, offset: int = 0, weight: float = 2.0) -> list[SuiteItem]:
    """The items `offset .. offset + prompts - 1` of a suite.

    Args:
        suite: one of `SUITES`.
        prompts: how many (all of a public set, or 100 world items, when None).
        offset: index of the first item (tune on one range, report on another).
        weight: the weight of the emphasized words.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if offset < 0:
        raise ValueError(f"offset={offset} must be >= 0")
    if prompts is not None and prompts < 1:
        raise ValueError(f"prompts={prompts} must be >= 1")
    if suite in PUBLIC_FILES:
        items = _public(suite, weight)
        return items[offset : offset + prompts if prompts is not None else None]
    n = prompts if prompts is not None else 100
    if suite == "world-edit":
        return _world_edit(n, offset, weight)
    if suite == "world-refer":
        return _world_refer(n, offset, weight)
    return _world_t2i(n, offset, weight, all_phrases=suite == "world-grounding")
