"""Prompt <-> weight sliders: the words of a weighted prompt as sliders, and a moved slider written back.

Pure Python on `emphasize.prompts` (no gradio, no torch). `slider_state(prompt)` lists one slider per weighted span
of the prompt (`(left shoulder:2)` is one slider, `left shoulder`, at 2) and one per other content word, at weight 1,
all in prompt order, so any word can be given a weight by hand. `set_weight(prompt, index, w)` returns the
prompt with slider `index` at weight `w`; the prompt is written back in A1111's `(words:w)` form
(`prompts.format_weighted`: `cat+` becomes `(cat:1.1)`, escapes are kept), which parses to the same words and
weights. A prompt that does not parse gives `SliderState.error`, the parser's message with its column, and a
caret line under the offending character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emphasize.prompts import MAX_WEIGHT, MIN_WEIGHT, PromptSyntaxError, WeightedPrompt, WeightedSpan, parse_prompt
from emphasize.prompts import format_weighted as _format_weighted

MAX_SLIDERS = 16  # sliders shown at most (the UI builds this many); later words are counted in `hidden`
SLIDER_MAX = 3.0  # the slider's upper end unless a typed weight is larger (the parser allows up to MAX_WEIGHT)
SLIDER_STEP = 0.05  # slider resolution
WEIGHT_DECIMALS = 3  # a slider's weight is rounded to this many decimals before it is written into the prompt
FUNCTION_WORDS = frozenset(
    "a an the and or of in on at to with by from for its it is are be this that these those as into onto".split()
)  # unmarked words that get no slider (they can still be marked by typing)
_WORD = re.compile(r"\w+(?:['’-]\w+)*")  # a word of the plain text, with inner apostrophes and hyphens


@dataclass(frozen=True)
class WordSlider:
    """One slider: a weighted span of the prompt, or an unmarked content word (weight 1)."""

    text: str  # the word or phrase as it reads in the plain prompt
    start: int  # first character in the plain text
    end: int  # one past the last character
    weight: float  # its effective weight
    marked: bool  # True: a weighted span of the prompt; False: an unmarked word at weight 1
    label: str  # what the slider is called (`text`, with `#2`, `#3`, ... on repeats)

    @property
    def maximum(self) -> float:
        """The slider's upper end: SLIDER_MAX, or the weight when a larger one was typed."""
        return max(SLIDER_MAX, self.weight)


@dataclass(frozen=True)
class SliderState:
    """The sliders of one prompt text, or why there are none."""

    sliders: tuple[WordSlider, ...] = ()  # at most `MAX_SLIDERS`, in prompt order (marked spans kept first)
    text: str = ""  # the plain text the model reads
    error: str | None = None  # the parse error (with its column and a caret line), or None
    column: int | None = None  # 1-based column of the parse error
    hidden: int = 0  # words beyond MAX_SLIDERS that have no slider

    @property
    def weights(self) -> dict[str, float]:
        """label -> weight of the marked sliders."""
        return {s.label: s.weight for s in self.sliders if s.marked}


def error_message(prompt: str, err: PromptSyntaxError) -> str:
    """The parser's message, then the prompt's line with a caret under the column (for a monospace box).

    Args:
        prompt: the prompt that failed to parse.
        err: the parser's error (its `column` is 1-based).
    """
    column = max(1, min(err.column, len(prompt) + 1))
    line_start = prompt.rfind("\n", 0, column - 1) + 1
    line_end = prompt.find("\n", column - 1)
    line = prompt[line_start : line_end if line_end >= 0 else len(prompt)]
    caret = " " * (column - 1 - line_start) + "^"
    return f"{err}\n{line}\n{caret}"


def _units(weighted: WeightedPrompt) -> list[WordSlider]:
    """Marked spans and unmarked content words, in prompt order (marking a word does not move its slider)."""
    marked = [WordSlider(s.text, s.start, s.end, s.weight, True, s.text) for s in weighted.spans]
    free: list[WordSlider] = []
    position = 0
    gaps = [(s.start, s.end) for s in weighted.spans] + [(len(weighted.text), len(weighted.text))]
    for start, end in gaps:
        for m in _WORD.finditer(weighted.text, position, start):
            if m.group().lower() not in FUNCTION_WORDS:
                free.append(WordSlider(m.group(), m.start(), m.end(), 1.0, False, m.group()))
        position = end
    units = sorted(marked + free, key=lambda u: u.start)
    seen: dict[str, int] = {}
    labelled = []
    for unit in units:
        key = unit.text.lower()
        seen[key] = seen.get(key, 0) + 1
        label = unit.text if seen[key] == 1 else f"{unit.text} #{seen[key]}"
        labelled.append(WordSlider(unit.text, unit.start, unit.end, unit.weight, unit.marked, label))
    return labelled


def slider_state(prompt: str, max_sliders: int = MAX_SLIDERS) -> SliderState:
    """The sliders of a weighted prompt, or the parse error.

    Args:
        prompt: the prompt as typed, e.g. `"a (red:1.5) circle and a [blue] square"`.
        max_sliders: sliders at most; the remaining words are counted in `hidden`.
    """
    try:
        weighted = parse_prompt(prompt)
    except PromptSyntaxError as err:
        return SliderState(error=error_message(prompt, err), column=err.column)
    units = _units(weighted)
    # beyond the limit, marked spans keep their sliders first; the shown sliders stay in prompt order
    keep = sorted(range(len(units)), key=lambda k: (not units[k].marked, k))[:max_sliders]
    shown = tuple(units[k] for k in sorted(keep))
    return SliderState(shown, weighted.text, hidden=len(units) - len(shown))


def set_weight(prompt: str, index: int, weight: float, max_sliders: int = MAX_SLIDERS) -> str:
    """The prompt with slider `index` (as listed by `slider_state`) at `weight`, in A1111 `(words:w)` form.

    An unmarked word becomes a marked span; a marked span keeps its place and text. The result parses to the same
    plain text and the same spans, with the one weight changed.

    Args:
        prompt: the prompt as typed.
        index: the slider's position in `slider_state(prompt).sliders`.
        weight: the new weight in [MIN_WEIGHT, MAX_WEIGHT]; rounded to WEIGHT_DECIMALS decimals.
        max_sliders: as given to `slider_state`.

    Raises:
        PromptSyntaxError: the prompt does not parse.
        ValueError: no slider `index`, or a weight out of range.
    """
    weighted = parse_prompt(prompt)
    units = slider_state(prompt, max_sliders).sliders
    if not 0 <= index < len(units):
        raise ValueError(f"slider {index} does not exist: the prompt has {len(units)} sliders")
    weight = round(float(weight), WEIGHT_DECIMALS) + 0.0
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight {weight} must be in [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}]")
    unit = units[index]
    new = WeightedSpan(unit.start, unit.end, weight, unit.text)
    spans = [s for s in weighted.spans if (s.start, s.end) != (unit.start, unit.end)] + [new]
    return _format_weighted(WeightedPrompt(weighted.text, tuple(sorted(spans, key=lambda s: s.start))))
