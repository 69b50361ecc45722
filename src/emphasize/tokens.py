"""Weighted character spans -> token groups with the model's own tokenizer. Strings stop here.

A span of the plain prompt maps to the tokens whose character ranges (`offset_mapping` of a fast tokenizer)
overlap it. That groups every BPE sub-word of a word (`polevaultyaa` -> `pole vaul ty aa`), picks the span's own
occurrence of a repeated word (positions, never a token->index lookup), keeps punctuation outside the group and
works for lower-casing tokenizers. Text is never split on spaces.

Indices are positions in the tokenizer's padded sequence as the text encoder sees it: for CLIP the start token
<|startoftext|> is at 0, so the first word token is 1, and the prompt's content tokens are 1..n.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emphasize.prompts import WeightedPrompt, parse_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NO_LIMIT = 10**6  # `model_max_length` above this is transformers' "no limit" sentinel (int(1e30))


class TokenLimitError(ValueError):
    """A weighted phrase lies (partly) beyond the tokenizer's context length, where the model never reads it."""


@dataclass(frozen=True)
class TokenGroup:
    """The tokens of one weighted span: positions in the encoded sequence (SOT at 0) and the span's weight."""

    text: str  # the span's characters, for messages and tables
    weight: float  # effective weight of the span; 1.0 means "leave alone"
    token_indices: tuple[int, ...]  # sequence positions, ascending

    def __post_init__(self):
        object.__setattr__(self, "token_indices", tuple(self.token_indices))
        if not self.token_indices:
            raise ValueError(f"token group {self.text!r} has no token indices")


@dataclass(frozen=True)
class _Encoding:
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    limit: int | None  # context length, None when the tokenizer has none

    @property
    def content_positions(self) -> list[int]:
        return [i for i, special in enumerate(self.special) if not special]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> _Encoding:
    """Encode without truncation, with offsets and the special-token mask."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} has no character offsets: use a fast (Rust) tokenizer, e.g. "
            "CLIPTokenizerFast or AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    encoded = tokenizer(
        text,
        add_special_tokens=True,
        truncation=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,  # over-long prompts are reported by align_spans, not by a transformers warning
    )
    limit = tokenizer.model_max_length
    return _Encoding(
        input_ids=list(encoded["input_ids"]),
        offsets=[tuple(o) for o in encoded["offset_mapping"]],
        special=[bool(m) for m in encoded["special_tokens_mask"]],
        limit=limit if limit is not None and limit < NO_LIMIT else None,
    )


def _kept_content_positions(tokenizer: PreTrainedTokenizerBase, encoding: _Encoding) -> list[int]:
    """Content positions that survive right-truncation to the context length."""
    positions = encoding.content_positions
    if encoding.limit is None:
        return positions
    return positions[: max(encoding.limit - tokenizer.num_special_tokens_to_add(pair=False), 0)]


def align_spans(tokenizer: PreTrainedTokenizerBase, prompt: WeightedPrompt | str) -> list[TokenGroup]:
    """Map each weighted span of a prompt to its token group.

    A token belongs to a span when its character range overlaps the span, so all BPE sub-words of a word join the
    word's group, punctuation after a word does not, and a repeated word maps to the span's own occurrence.

    Args:
        tokenizer: the pipeline's fast tokenizer (`pipe.tokenizer`), with `model_max_length` set (77 for CLIP).
        prompt: a parsed `WeightedPrompt`, or a string in weight syntax that is parsed with `parse_prompt`.

    Returns:
        One `TokenGroup` per span, in span order, with indices into the encoded sequence (SOT at 0).

    Raises:
        TokenLimitError: a span's tokens are (partly) cut off by the context length.
        ValueError: a span that the tokenizer turns into no tokens, or two spans that share a token.
    """
    if isinstance(prompt, str):
        prompt = parse_prompt(prompt)
    encoding = _encode(tokenizer, prompt.text)
    kept = set(_kept_content_positions(tokenizer, encoding))
    content = [(i, *encoding.offsets[i]) for i in encoding.content_positions]
    owner: dict[int, str] = {}
    groups = []
    for span in prompt.spans:
        indices = [
            i
            for i, start, end in content
            if (start < span.end and end > span.start) or (start == end and span.start <= start < span.end)
        ]
        if not indices:
            raise ValueError(f"the tokenizer turns the weighted phrase {span.text!r} into no tokens")
        if any(i not in kept for i in indices):
            how = "partly" if any(i in kept for i in indices) else "wholly"
            raise TokenLimitError(
                f"the weighted phrase {span.text!r} is {how} cut off by the {encoding.limit}-token limit: the prompt "
                f"has {len(encoding.input_ids)} tokens (counting start and end tokens) and the model reads only "
                f"{encoding.limit}; shorten the prompt or move the phrase earlier"
            )
        for i in indices:
            if i in owner:
                raise ValueError(
                    f"the weighted phrases {owner[i]!r} and {span.text!r} share the token at index {i}; "
                    "separate them with a space"
                )
            owner[i] = span.text
        groups.append(TokenGroup(span.text, span.weight, tuple(indices)))
    return groups


def truncation_message(tokenizer: PreTrainedTokenizerBase, text: str) -> str | None:
    """A one-line note when the prompt is longer than the model reads (None when it fits).

    Args:
        tokenizer: the pipeline's fast tokenizer.
        text: the plain prompt.
    """
    encoding = _encode(tokenizer, text)
    if encoding.limit is None or len(encoding.input_ids) <= encoding.limit:
        return None
    kept = _kept_content_positions(tokenizer, encoding)
    cut = encoding.offsets[kept[-1]][1] if kept else 0
    lost = " ".join(text[cut:].split())
    lost = lost if len(lost) <= 40 else lost[:37] + "..."
    return (
        f"the prompt has {len(encoding.input_ids)} tokens (start and end tokens included) and the model reads "
        f"{encoding.limit}: the rest is ignored ({lost!r})"
    )


def content_token_indices(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Positions of the prompt's non-special tokens that the model reads (1..n for CLIP, n <= 75).

    Args:
        tokenizer: the pipeline's fast tokenizer.
        text: the plain prompt (syntax already removed, e.g. `WeightedPrompt.text`).
    """
    return _kept_content_positions(tokenizer, _encode(tokenizer, text))


def token_weight_vector(groups: Sequence[TokenGroup], length: int) -> list[float]:
    """Per-position weights: 1.0 everywhere, each group's weight at its token indices.

    Args:
        groups: token groups, e.g. from `align_spans`.
        length: sequence length (77 for CLIP).

    Raises:
        ValueError: an index outside `[0, length)`, or one index given two different weights.
    """
    weights = [1.0] * length
    assigned: dict[int, TokenGroup] = {}
    for group in groups:
        for i in group.token_indices:
            if not 0 <= i < length:
                raise ValueError(f"token index {i} of {group.text!r} is outside [0, {length})")
            if i in assigned and assigned[i].weight != group.weight:
                raise ValueError(
                    f"token index {i} has weight {assigned[i].weight} from {assigned[i].text!r} and "
                    f"{group.weight} from {group.text!r}"
                )
            assigned[i] = group
            weights[i] = group.weight
    return weights


def token_table(tokenizer: PreTrainedTokenizerBase, text: str) -> dict[int, str]:
    """`{index: token}` of the encoded prompt, special tokens included, like Attend-and-Excite's `get_indices`.

    Keyed by index (a repeated word appears once per position), cut at the context length as the model reads it.

    Args:
        tokenizer: the pipeline's tokenizer.
        text: the plain prompt.
    """
    limit = tokenizer.model_max_length
    if limit is not None and limit < NO_LIMIT:
        input_ids = tokenizer(text, truncation=True, max_length=limit)["input_ids"]
    else:
        input_ids = tokenizer(text)["input_ids"]
    return dict(enumerate(tokenizer.convert_ids_to_tokens(input_ids)))


def describe_tokens(tokenizer: PreTrainedTokenizerBase, prompt: WeightedPrompt | str) -> str:
    """A printable table of every token: index, vocabulary token, the characters it covers, and its weight.

    Tokens past the context length are listed below a marker line instead of raising, so an over-long prompt
    can be inspected.

    Args:
        tokenizer: the pipeline's fast tokenizer.
        prompt: a `WeightedPrompt` or a string in weight syntax.
    """
    if isinstance(prompt, str):
        prompt = parse_prompt(prompt)
    encoding = _encode(tokenizer, prompt.text)
    tokens = tokenizer.convert_ids_to_tokens(encoding.input_ids)
    kept = _kept_content_positions(tokenizer, encoding)
    weights: dict[int, float] = {}
    for span in prompt.spans:
        for i in encoding.content_positions:
            start, end = encoding.offsets[i]
            if start < span.end and end > span.start:
                weights[i] = span.weight
    width = max(len(t) for t in tokens)
    lines = [f"{'index':>5}  {'token':<{width}}  {'text':<12}  weight"]
    cut_at = kept[-1] + 1 if kept and len(kept) < len(encoding.content_positions) else None
    for i, token in enumerate(tokens):
        if i == cut_at:
            lines.append(f"----- the model reads {encoding.limit} tokens; the rest is cut off -----")
        start, end = encoding.offsets[i]
        chars = "" if encoding.special[i] else prompt.text[start:end]
        weight = f"{weights[i]:g}" if i in weights else ""
        shown = repr(chars) if chars else ""
        lines.append(f"{i:>5}  {token:<{width}}  {shown:<12}  {weight}".rstrip())
    return "\n".join(lines)
