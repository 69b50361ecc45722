"""Which words of a free-form prompt a method emphasizes: a small rule-based content-noun tagger (no NLP model).

The rule, in the spirit of Attend-and-Excite's subject tokens: a *noun phrase* starts after a determiner (a, an,
the, a number, a possessive) and runs over the following content words up to a function word, a verb-like word,
punctuation or a word followed by a determiner (`the man paints a picture`); its *head* is the phrase's last word
(`a red (car)`, `the (man)'s left shoulder`, `two (cats)`). Place nouns (left, top, ...) are never heads. The
first `max_words` heads are emphasized; a prompt with no determiner gets its last content word (`bond`).

It is right on the template sets (Attend-and-Excite, the world captions) and reasonable on DrawBench or
PartiPrompts; it is not a parser: `a photo of a cat` gives `photo` and `cat`, as a reader of the rule expects.
"""

from __future__ import annotations

import re

DETERMINERS = frozenset(
    "a an the this that these those his her its their my your our some two three four five six seven eight nine ten "
    "one several many".split()
)
FUNCTION_WORDS = frozenset(
    """and or but nor of in on at to with without from by for into onto over under above below behind beside between
    near next through across along around against about as than like while is are was were be been being has have
    had do does did not no it he she they we you i me him them us which who whom whose what where when why how
    there here then very so too also just only all each every both either neither more most less least underneath
    beneath inside outside upon toward towards stands sits holds looks walks runs flies eats drinks plays wears
    reads""".split()
)
PLACE_NOUNS = frozenset("left right top bottom front back side middle center centre edge".split())  # not subjects
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _is_verb_like(word: str, following: str | None) -> bool:
    """A gerund or participle ends a noun phrase (`a dog (running) in`) unless a content word follows it, where it
    reads as an adjective or a noun (`a red colored car`, `an Egyptian painting depicting ...`)."""
    if not (len(word) > 4 and (word.endswith("ing") or word.endswith("ed"))):
        return False
    return following is None or following in FUNCTION_WORDS or following in DETERMINERS


def content_nouns(prompt: str, max_words: int = 2) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the prompt's content nouns, at most `max_words`, in prompt order.

    Args:
        prompt: plain prompt text (no weighting syntax).
        max_words: how many heads to return.
    """
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(prompt)]
    heads: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        if words[i][2] in DETERMINERS:
            j = i + 1
            run = []
            while j < len(words) and words[j][2] not in FUNCTION_WORDS | DETERMINERS:
                following = words[j + 1][2] if j + 1 < len(words) else None
                if following is not None and prompt[words[j][1] : words[j + 1][0]].strip():
                    following = None  # punctuation after the word ends the phrase there
                if _is_verb_like(words[j][2], following):
                    break
                if run and following in DETERMINERS:  # `the man (paints) a picture`: a verb before an object
                    break
                gap = prompt[words[j - 1][1] : words[j][0]] if run else " "
                if run and gap.strip() not in ("", "-"):  # punctuation between words ends the phrase
                    break
                run.append(words[j])
                j += 1
            if run and run[-1][2] not in PLACE_NOUNS:
                start, end, text = run[-1]
                if text.endswith("'s"):  # `the man's` -> `man`
                    end -= 2
                heads.append((start, end))
            i = j
        else:
            i += 1
    if not heads:
        content = [w for w in words if w[2] not in FUNCTION_WORDS | DETERMINERS]
        if content:
            heads.append(content[-1][:2])
    return heads[:max_words]
