"""Weighted-prompt syntax -> plain text + weighted character spans (pure Python, no torch, no tokenizer).

`parse_prompt("a (cat:1.8) and a frog-")` returns the text the model reads, `"a cat and a frog"`, and one
`WeightedSpan` per marked group: `cat` at 1.8 and `frog` at 0.9. Token indices come later, in `tokens.py`.

Syntax (AUTOMATIC1111 and compel, the conventions people already type):

    (words:1.3)   words x 1.3                          A1111
    (words)       words x 1.1                          A1111
    [words]       words / 1.1                          A1111
    (words)1.3    words x 1.3                          compel
    (words)+      words x 1.1, `(words)++` x 1.21      compel (the suffix replaces the 1.1 of `( )`, so not 1.21)
    (words)-      words x 0.9, `(words)--` x 0.81      compel
    word+         word x 1.1, `word++` x 1.21          compel
    word-         word x 0.9, `word--` x 0.81          compel
    \\( \\) \\[ \\] \\: \\+ \\- \\| \\\\      the character itself, literally (any other backslash is literal)

Rules, precisely:
- Nesting multiplies: `((cat))` is 1.21; `(a (b:1.5):1.2)` gives `a` 1.2 and `b` 1.8; `(big cat+)` gives `big` 1.1
  and `cat` 1.21.
- `(words:w)`: an unescaped `:` whose innermost open bracket is `(` starts the weight; only a number (optional
  spaces around it) may follow before the `)`. The number is a plain decimal, optionally with an exponent (`1.5`, `.5`,
  `2`, `1e-3`). Write `\\:` for a literal colon inside parentheses; outside any bracket `:` is ordinary text.
- `(words)N` (compel): a number written directly after the `)` of a group without `:w` is that group's weight; it
  must not run into a letter (`(cat)2nd` is an error). After `(words:w)` or `[words]` a number is ordinary text.
- `+`/`-` suffix: a run of one or more `+` (or of one or more `-`, not mixed) is a weight suffix when
  (a) it directly follows a word character (letter, digit or `_`) or the `)` of a group, and
  (b) it is directly followed by the end of the prompt or by a character that is not a word character (space,
      punctuation, a bracket).
  Otherwise it is ordinary text: `well-known`, `x-ray`, `a+b`, `1-2`, `- item`, `cat +1` stay as typed. Use `\\-`
  or `\\+` for a literal sign at a word end (`C\\+\\+`). The word a suffix weights is the run of word characters before
  it, including `'` and `-` between word characters (`man's+` weights `man's`, `well-known-` weights `well-known`),
  and never reaches back past a bracket. A suffix after `(words:w)` or `[words]` is an error (two weights).
- Unsupported: A1111 prompt editing `[from:to:when]` and alternation `[a|b]` (an unescaped `:` or `|` directly
  inside `[ ]`), and compel's functions `.blend()`, `.and()`, `.swap()`, `.attend()` and any other `.name(`
  directly before `(`, `withLora(`, `useLora(`, `withTI(`, and compel's quoted weighting `"words"+`: each raises
  `PromptSyntaxError`, never a silent misread.
- Weights must be numbers in [MIN_WEIGHT, MAX_WEIGHT] = [0, 100], typed or effective (after multiplying nested
  weights); NaN, infinity and negative weights are errors. Weight 1 is kept as a span: the user marked it.
- Unbalanced brackets, empty groups (`()`, `( )`, `(:2)`) and nesting deeper than MAX_NESTING are errors.
  Every error is a `PromptSyntaxError` (a `ValueError`) whose `column` is the 1-based character offset in the
  prompt string (newlines count as one character).
- The plain text keeps whitespace as typed; only whitespace that removing syntax makes doubled, leading or
  trailing is dropped (`a ( cat ) dog` -> `a cat dog`). Nothing is inserted: `(red)car` reads `redcar`.
- Spans: one per marked group (a phrase is one span). Where groups nest, the inner group is its own span and
  the outer group's remaining text is split into pieces around it, each piece its own span with the outer weight.
  Span boundaries are stripped of whitespace; pieces that are only whitespace are dropped. Effective weights are
  rounded to WEIGHT_DIGITS significant digits so that 1.1 * 1.1 reads 1.21.
"""

from __future__ import annotations

import bisect
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MIN_WEIGHT = 0.0  # 0 means "suppress the word completely"; below that the attention loss has no meaning
MAX_WEIGHT = 100.0  # anything above is a typo (`(cat:15)` meant 1.5); also bounds effective (nested) weights
MAX_NESTING = 32  # deeper bracket nesting is never intended and only multiplies weights out of range
PAREN_FACTOR = 1.1  # A1111 `(words)` multiplies by this, `[words]` divides by it; compel `+` multiplies by it
MINUS_FACTOR = 0.9  # compel `-` multiplies by this
WEIGHT_DIGITS = 12  # effective weights keep 12 significant digits: 1.1*1.1 -> 1.21, not 1.2100000000000002
ESCAPABLE = frozenset("()[]:+-|\\")  # characters that a backslash makes literal; any other backslash is literal

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_SUFFIX_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAN = re.compile(r"[+-]?nan\Z", re.IGNORECASE)
_INF = re.compile(r"[+-]?inf(?:inity)?\Z", re.IGNORECASE)
_COMPEL_OPERATORS = (".blend(", ".and(", ".swap(")
# compel's function syntax: `word.swap(x)`, `"phrase".attend(0.5)`, `(words).blend(...)`, `withLora(name, w)`:
# a `(` directly after `.name` or after one of compel's function names opens a call, never an A1111 group
_COMPEL_CALL = re.compile(r"(?:\.([A-Za-z_]\w*)|\b(withLora|useLora|withTI))\Z")
_INNER_WORD_JOINERS = frozenset("'’-")  # joined into a suffixed word when between word characters


class PromptSyntaxError(ValueError):
    """A weighted prompt that cannot be parsed; `column` is the 1-based character offset of the problem."""

    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class WeightedSpan:
    """One marked group: characters `text[start:end]` of the plain prompt, with their effective weight."""

    start: int  # first character, in the plain text
    end: int  # one past the last character
    weight: float  # effective weight (nested weights multiplied); 1.0 means "leave alone"
    text: str  # the characters of the span, `prompt.text[start:end]`

    def __post_init__(self):
        if not 0 <= self.start < self.end:
            raise ValueError(f"span [{self.start}, {self.end}) of {self.text!r} must satisfy 0 <= start < end")
        if len(self.text) != self.end - self.start:
            raise ValueError(f"span text {self.text!r} has {len(self.text)} characters, not end - start")
        object.__setattr__(self, "weight", _check_weight(self.weight, f"of {self.text!r}"))


@dataclass(frozen=True)
class WeightedPrompt:
    """Plain prompt text plus weighted character spans, sorted and non-overlapping."""

    text: str
    spans: tuple[WeightedSpan, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "spans", tuple(self.spans))
        previous_end = 0
        for span in self.spans:
            if span.start < previous_end:
                raise ValueError(f"span {span.text!r} at {span.start} overlaps the previous span or is out of order")
            if self.text[span.start : span.end] != span.text:
                raise ValueError(f"span {span.text!r} does not match the text at [{span.start}, {span.end})")
            previous_end = span.end


def parse_prompt(prompt: str) -> WeightedPrompt:
    """Parse A1111/compel weight syntax into plain text and weighted character spans (rules: module docstring).

    Args:
        prompt: the prompt as the user typed it, e.g. `"encircle the man's (left shoulder:2) in red"`.

    Returns:
        `WeightedPrompt` with the syntax removed from `text` and one `WeightedSpan` per marked group (piece).

    Raises:
        PromptSyntaxError: unbalanced or empty brackets, a bad weight, or unsupported syntax, with its column.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    scan = _Scanner(prompt)
    scan.run()
    text, new_position = _drop_removal_whitespace(scan.out, sorted(scan.seams))
    spans: list[WeightedSpan] = []
    for child in scan.root.children:
        _collect_spans(child, 1.0, text, new_position, spans)
    spans.sort(key=lambda s: s.start)
    return WeightedPrompt(text, tuple(spans))


def format_weighted(prompt: WeightedPrompt) -> str:
    """Write a `WeightedPrompt` back in A1111 syntax, `(words:w)` per span, escaping literal syntax characters.

    `parse_prompt(format_weighted(p)) == p` for every prompt that `parse_prompt` or `weighted_prompt_from_words`
    returns.

    Args:
        prompt: the weighted prompt to write.
    """
    # (string, is_literal): literal characters may need escaping, syntax strings are written as they are.
    pieces: list[tuple[str, bool]] = []
    position = 0
    for span in prompt.spans:
        pieces += [(c, True) for c in prompt.text[position : span.start]]
        pieces.append(("(", False))
        pieces += [(c, True) for c in span.text]
        pieces.append((f":{_format_weight(span.weight)})", False))
        position = span.end
    pieces += [(c, True) for c in prompt.text[position:]]

    out: list[str] = []
    depth = 0  # inside a `( )` a literal `:` would start a weight
    i = 0
    while i < len(pieces):
        string, literal = pieces[i]
        if not literal:
            depth += string == "("
            depth -= string.endswith(")")
            out.append(string)
            i += 1
        elif string in "+-":
            j = i
            while j < len(pieces) and pieces[j][1] and pieces[j][0] in "+-":
                j += 1
            run = "".join(p[0] for p in pieces[i:j])
            before = pieces[i - 1] if i > 0 else None
            after = pieces[j][0][0] if j < len(pieces) else None
            follows_word_or_group = before is not None and (
                (before[1] and _is_word(before[0])) or (not before[1] and before[0].endswith(")"))
            )
            if follows_word_or_group and _is_suffix_run(run, after):
                out.append("".join("\\" + c for c in run))
            else:
                out.append(run)
            i = j
        else:
            escape = string in "()[]\\" or (string == ":" and depth > 0)
            out.append("\\" + string if escape else string)
            i += 1
    return "".join(out)


def weighted_prompt_from_words(text: str, weights: Mapping[str, float]) -> WeightedPrompt:
    """Mark words or phrases of a plain prompt with weights (the Python API; `text` is not parsed for syntax).

    Each phrase matches whole words, case-insensitively, and any run of whitespace in the phrase matches any run
    of whitespace in the text. Every occurrence is marked (`{"cat": 2}` on `"a cat and a cat"` gives two spans).

    Args:
        text: the plain prompt, e.g. `"a cat and a frog"`.
        weights: phrase -> weight in [MIN_WEIGHT, MAX_WEIGHT], e.g. `{"cat": 1.8, "frog": 0.6}`.

    Raises:
        ValueError: a phrase that is empty or not in the prompt, a bad weight, or two phrases that overlap.
    """
    found: list[tuple[WeightedSpan, str]] = []
    for phrase, weight in weights.items():
        words = phrase.split()
        if not words:
            raise ValueError(f"empty phrase {phrase!r} in weights: give a word or phrase of the prompt")
        weight = _check_weight(weight, f"of phrase {phrase!r}")
        head = r"(?<!\w)" if _is_word(words[0][0]) else ""
        tail = r"(?!\w)" if _is_word(words[-1][-1]) else ""
        pattern = head + r"\s+".join(re.escape(w) for w in words) + tail
        matches = list(re.finditer(pattern, text, re.IGNORECASE))
        if not matches:
            raise ValueError(f"phrase {phrase!r} is not in the prompt {text!r} (whole words, case-insensitive)")
        found += [(WeightedSpan(m.start(), m.end(), _round_weight(weight), m.group()), phrase) for m in matches]
    found.sort(key=lambda item: item[0].start)
    for (left, left_phrase), (right, right_phrase) in zip(found, found[1:], strict=False):
        if right.start < left.end:
            raise ValueError(
                f"phrases {left_phrase!r} and {right_phrase!r} overlap in the prompt at {left.text!r}/{right.text!r}"
            )
    return WeightedPrompt(text, tuple(span for span, _ in found))


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _is_word(char: str | None) -> bool:
    return char is not None and (char.isalnum() or char == "_")


def _is_suffix_run(run: str, after: str | None) -> bool:
    """A `+`/`-` run is a weight suffix if it is all one sign and not followed by a word character."""
    return len(set(run)) == 1 and not _is_word(after)


def _round_weight(weight: float) -> float:
    return float(f"{weight:.{WEIGHT_DIGITS}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def _format_weight(weight: float) -> str:
    short = f"{weight:.{WEIGHT_DIGITS}g}"
    return short if float(short) == weight else repr(weight)


def _check_weight(weight: float, what: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise ValueError(f"weight {what} must be a number, got {weight!r}")
    if not math.isfinite(weight) or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight {weight!r} {what} must be a finite number in [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}]")
    return float(weight)


def _parse_weight(raw: str, column: int) -> float:
    """Validate the characters of a typed weight; `column` is where they start in the prompt."""
    token = raw.strip()
    column += len(raw) - len(raw.lstrip())
    if not token:
        raise PromptSyntaxError(f"missing weight at column {column}: expected a number", column)
    if _NAN.match(token):
        raise PromptSyntaxError(f"weight {token!r} at column {column} is NaN: give a number", column)
    if _INF.match(token):
        raise PromptSyntaxError(f"weight {token!r} at column {column} is infinite: give a number", column)
    if not _NUMBER.match(token):
        raise PromptSyntaxError(f"weight {token!r} at column {column} is not a number", column)
    weight = float(token) + 0.0
    if not math.isfinite(weight):
        raise PromptSyntaxError(f"weight {token!r} at column {column} is infinite: give a number", column)
    if weight < MIN_WEIGHT:
        raise PromptSyntaxError(
            f"weight {token} at column {column} is negative: weights lie in [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}], "
            "and a weight below 1 weakens words",
            column,
        )
    if weight > MAX_WEIGHT:
        raise PromptSyntaxError(
            f"weight {token} at column {column} is above the maximum {MAX_WEIGHT:g}",
            column,
        )
    return weight


@dataclass
class _Group:
    """A marked construct while parsing: a bracket group or a suffixed word (mutable, parser-internal)."""

    opener: str  # "(", "[", "+", "-" (suffixed word), or "" for the whole prompt
    column: int  # 1-based column of the opener (of the suffix for a suffixed word)
    start: int  # first character in the raw plain text
    end: int = -1
    factor: float = 1.0  # the group's own weight; the effective weight multiplies the enclosing factors
    run_start: int = -1  # where the current run of plain text inside this group began (suffix words stop there)
    children: list[_Group] = field(default_factory=list)

    def __post_init__(self):
        self.run_start = self.start


class _Scanner:
    """Left-to-right scan of a prompt into raw plain characters, removal seams and a tree of groups."""

    def __init__(self, prompt: str):
        self.s = prompt
        self.out: list[str] = []  # plain characters, before whitespace clean-up
        self.seams: set[int] = set()  # positions in `out` where syntax was removed
        self.root = _Group("", 0, 0)
        self.stack = [self.root]
        self.after_word = False  # the previous raw character was a literal word character

    def error(self, message: str, column: int) -> PromptSyntaxError:
        return PromptSyntaxError(message, column)

    def emit(self, char: str, escaped: bool = False):
        self.out.append(char)
        self.after_word = not escaped and _is_word(char)

    def seam(self):
        self.seams.add(len(self.out))
        self.after_word = False

    def sign_run_end(self, i: int) -> int:
        j = i
        while j < len(self.s) and self.s[j] in "+-":
            j += 1
        return j

    def run(self):
        s = self.s
        i = 0
        while i < len(s):
            c = s[i]
            top = self.stack[-1]
            if c == "\\":
                if i + 1 < len(s) and s[i + 1] in ESCAPABLE:
                    self.emit(s[i + 1], escaped=True)
                    i += 2
                else:
                    self.emit(c, escaped=True)
                    i += 1
            elif c in "([":
                call = _COMPEL_CALL.search(s, 0, i) if c == "(" else None
                if call:
                    name = f".{call.group(1)}()" if call.group(1) else f"{call.group(2)}()"
                    raise self.error(
                        f"compel {name} at column {call.start() + 1} is not supported (emphasize reads weights, not "
                        "compel's functions); write '\\(' for a literal parenthesis",
                        call.start() + 1,
                    )
                if len(self.stack) > MAX_NESTING:
                    raise self.error(f"brackets nested deeper than {MAX_NESTING} at column {i + 1}", i + 1)
                self.seam()
                self.stack.append(_Group(c, i + 1, len(self.out)))
                i += 1
            elif c == ")":
                i = self.close_bare_paren(i)
            elif c == "]":
                group = self.close(i, "[", 1.0 / PAREN_FACTOR)
                i = self.reject_second_weight(i + 1, group, "[words]")
            elif c == ":" and top.opener == "(":
                i = self.close_weighted_paren(i)
            elif c == ":" and top.opener == "[":
                raise self.error(
                    f"prompt editing [from:to:when] (':' inside '[' at column {top.column}) is not supported, at "
                    f"column {i + 1}; write '\\:' for a literal colon",
                    i + 1,
                )
            elif c == "|" and top.opener == "[":
                raise self.error(
                    f"alternation [a|b] ('|' inside '[' at column {top.column}) is not supported, at column {i + 1};"
                    " write '\\|' for a literal bar",
                    i + 1,
                )
            elif c in "+-":
                j = self.sign_run_end(i)
                run = s[i:j]
                after = s[j] if j < len(s) else None
                if i > 0 and s[i - 1] == '"' and _is_suffix_run(run, after):
                    raise self.error(
                        f"compel's quoted weighting '\"...\"{run}' at column {i + 1} is not supported; write "
                        f"'(words){run}' instead, or '\\{run[0]}' for a literal sign",
                        i + 1,
                    )
                if self.after_word and _is_suffix_run(run, after):
                    self.suffix_word(run, i + 1)
                else:
                    for char in run:
                        self.emit(char)
                i = j
            else:
                self.emit(c)
                i += 1
        if len(self.stack) > 1:
            group = self.stack[-1]
            raise self.error(f"unbalanced '{group.opener}' at column {group.column}: it is never closed", group.column)

    def close(self, i: int, opener: str, factor: float) -> _Group:
        """Close the innermost group with the bracket at `i`; returns it."""
        closer = self.s[i]
        group = self.stack[-1]
        if group is self.root:
            raise self.error(f"unbalanced '{closer}' at column {i + 1}: no '{opener}' before it", i + 1)
        if group.opener != opener:
            raise self.error(
                f"'{closer}' at column {i + 1} does not close '{group.opener}' opened at column {group.column}", i + 1
            )
        if all(c.isspace() for c in self.out[group.start :]):
            raise self.error(
                f"empty group at column {group.column}: '{group.opener}' ... '{closer}' marks no words", group.column
            )
        self.stack.pop()
        group.end = len(self.out)
        group.factor = factor
        parent = self.stack[-1]
        parent.children.append(group)
        parent.run_start = group.end
        self.seam()
        return group

    def close_weighted_paren(self, i: int) -> int:
        """`:` at `i` inside `( )`: read the weight up to `)`; returns the index after the suffix."""
        s = self.s
        j = i + 1
        while j < len(s) and s[j] not in "()[]":
            j += 1
        group = self.stack[-1]
        if j == len(s):
            raise self.error(f"unbalanced '(' at column {group.column}: it is never closed", group.column)
        if s[j] != ")":
            raise self.error(
                f"':' at column {i + 1} starts a weight, but '{s[j]}' at column {j + 1} comes before the closing ')';"
                " write '\\:' for a literal colon",
                i + 1,
            )
        weight = _parse_weight(s[i + 1 : j], i + 2)
        group = self.close(j, "(", weight)
        return self.reject_second_weight(j + 1, group, "(words:w)")

    def close_bare_paren(self, i: int) -> int:
        """`)` at `i` of a group without `:w`: a compel suffix or number may follow; returns the next index."""
        s = self.s
        group = self.close(i, "(", PAREN_FACTOR)
        j = i + 1
        if j < len(s) and s[j] in "+-":
            k = self.sign_run_end(j)
            run = s[j:k]
            if run == "-" and _SUFFIX_NUMBER.match(s, k):
                raise self.error(
                    f"negative weight after ')' at column {j + 1}: weights lie in [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}]; "
                    "write '\\-' for a literal minus",
                    j + 1,
                )
            if _is_suffix_run(run, s[k] if k < len(s) else None):
                group.factor = (PAREN_FACTOR if run[0] == "+" else MINUS_FACTOR) ** len(run)
                return k
            return j
        number = _SUFFIX_NUMBER.match(s, j)
        if number:
            k = number.end()
            if k < len(s) and _is_word(s[k]):
                while k < len(s) and (_is_word(s[k]) or s[k] == "."):
                    k += 1
                raise self.error(f"weight {s[j:k]!r} after ')' at column {j + 1} is not a number", j + 1)
            group.factor = _parse_weight(number.group(), j + 1)
            return k
        for operator in _COMPEL_OPERATORS:
            if s.startswith(operator, j):
                raise self.error(f"compel {operator}) at column {j + 1} is not supported", j + 1)
        return j

    def reject_second_weight(self, j: int, group: _Group, form: str) -> int:
        """After `(words:w)` or `[words]` a `+`/`-` suffix would be a second weight: an error."""
        s = self.s
        if j < len(s) and s[j] in "+-":
            k = self.sign_run_end(j)
            if _is_suffix_run(s[j:k], s[k] if k < len(s) else None):
                raise self.error(
                    f"'{s[j:k]}' at column {j + 1} gives a second weight to the {form} group at column "
                    f"{group.column}; write '\\{s[j]}' for a literal '{s[j]}'",
                    j + 1,
                )
        return j

    def suffix_word(self, run: str, column: int):
        """A compel `word+`/`word-`: the word just emitted becomes a group of its own."""
        parent = self.stack[-1]
        end = len(self.out)
        start = end - 1
        while start > parent.run_start:
            before = self.out[start - 1]
            joined = before in _INNER_WORD_JOINERS and start - 2 >= parent.run_start and _is_word(self.out[start - 2])
            if not (_is_word(before) or joined):
                break
            start -= 1
        factor = (PAREN_FACTOR if run[0] == "+" else MINUS_FACTOR) ** len(run)
        word = _Group(run[0], column, start, end, factor)
        parent.children.append(word)
        parent.run_start = end
        self.seam()


def _drop_removal_whitespace(chars: list[str], seams: list[int]) -> tuple[str, list[int]]:
    """Drop whitespace that removing syntax made doubled, leading or trailing.

    Returns the clean text and `new_position[i]`, the clean-text index of raw index `i` (for i in 0..len).
    """
    n = len(chars)
    keep = [True] * n
    i = 0
    while i < n:
        if not chars[i].isspace():
            i += 1
            continue
        a = i
        while i < n and chars[i].isspace():
            i += 1
        b = i
        touching = seams[bisect.bisect_left(seams, a) : bisect.bisect_right(seams, b)]
        if not touching:
            continue
        if a == 0:  # leading: whitespace after the first removed syntax was not leading as typed
            drop = range(touching[0], b)
        elif b == n:  # trailing: whitespace before the last removed syntax was not trailing as typed
            drop = range(a, touching[-1])
        else:  # doubled: syntax removed from between two whitespace characters
            interior = [p for p in touching if a < p < b]
            drop = range(interior[0], b) if interior else range(0)
        for k in drop:
            keep[k] = False
    new_position = [0] * (n + 1)
    for k in range(n):
        new_position[k + 1] = new_position[k] + keep[k]
    return "".join(c for c, kept in zip(chars, keep, strict=True) if kept), new_position


def _collect_spans(group: _Group, outer_weight: float, text: str, new_position: list[int], spans: list[WeightedSpan]):
    """Append the spans of `group` (its own text pieces) and of its nested groups, with effective weights."""
    weight = _round_weight(outer_weight * group.factor)
    if not weight <= MAX_WEIGHT:
        raise PromptSyntaxError(
            f"effective weight {weight:g} of the group at column {group.column} is above the maximum "
            f"{MAX_WEIGHT:g} (nested weights multiply)",
            group.column,
        )

    def add_piece(raw_start: int, raw_end: int):
        start, end = new_position[raw_start], new_position[raw_end]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            spans.append(WeightedSpan(start, end, weight, text[start:end]))

    cursor = group.start
    for child in group.children:
        add_piece(cursor, child.start)
        _collect_spans(child, weight, text, new_position, spans)
        cursor = child.end
    add_piece(cursor, group.end)
