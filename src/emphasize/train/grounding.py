"""What makes the embedded text-to-image model a faithful testbed: grounded cross-attention, and a caption that
reaches the UNet through its word tokens.

Two training-time terms, both off in the original recipe:

- **Grounding (TokenCompose-style).** Per object phrase of the caption (`[size] colour shape`, its token group g)
  and the object's exact mask M at each chosen cross-attention level, with A_g(x) the group's summed post-softmax
  attention at pixel x (mean over layers and heads):
      token loss  (1 - sum_x A_g(x) M(x) / sum_x A_g(x))^2      the phrase's attention mass lies on its object
      pixel loss  BCE(A_g(x), M(x)) averaged over x              the object's pixels attend to their phrase
  (Wang et al., *TokenCompose*, CVPR 2024, apply the same two losses to noun tokens with segmentation masks.)
- **Free positions carry no caption.** The text encoder is causal, so every position from the first EOT on sees the
  whole caption; a UNet trained jointly with it learns to read the caption there (a summary at 75 positions) and
  ignores the words. With `pad_dropout` the UNet sees the empty prompt's states at those positions instead, and
  `pad_invariance` pulls the encoder's own states there towards the empty prompt's, so that at inference (where
  diffusers' pipelines pass the encoder's states unchanged) they carry nothing either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-6


@dataclass(frozen=True)
class GroundingTargets:
    """Per item, up to K phrases: their tokens and their objects' masks (padded with invalid entries)."""

    tokens: torch.Tensor  # (B, K, T) 1 at the phrase's token positions
    masks: torch.Tensor  # (B, K, S, S) in [0, 1]: the union of the phrase's objects' masks at image size S
    valid: torch.Tensor  # (B, K) bool: a real phrase (dropped captions and padding entries are False)


def phrase_tokens(tokenizer, text: str, spans: Sequence[tuple[int, int]], length: int) -> list[list[int]]:
    """Token positions (SOT at 0) whose characters overlap each character span of `text`.

    Args:
        tokenizer: a fast tokenizer (character offsets).
        text: the caption.
        spans: `(start, end)` character ranges.
        length: the padded sequence length; positions at or past it are dropped.
    """
    encoded = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=length)
    offsets = encoded["offset_mapping"]
    return [
        [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start and i < length]
        for start, end in spans
    ]


def world_grounding_targets(items, prompts: Sequence[str], tokenizer, length: int) -> GroundingTargets:
    """Grounding targets of world text-to-image items (an item whose prompt was dropped to "" has none).

    Args:
        items: `emphasize.world.T2IItem`s.
        prompts: the prompts the UNet sees (the caption, or "" after caption dropout).
        tokenizer: the pipeline's fast tokenizer.
        length: padded sequence length (77).
    """
    import numpy as np

    from emphasize.world import object_masks, phrase_spans

    k_max = max(len(it.scene.objects) for it in items)
    size = items[0].size
    tokens = torch.zeros(len(items), k_max, length)
    masks = torch.zeros(len(items), k_max, size, size)
    valid = torch.zeros(len(items), k_max, dtype=torch.bool)
    for b, (item, prompt) in enumerate(zip(items, prompts, strict=True)):
        if prompt != item.caption:
            continue
        spans = phrase_spans(item.spec)
        object_mask = object_masks(item.scene, size)  # (n, S, S) bool
        positions = phrase_tokens(tokenizer, item.caption, [(a, e) for a, e, _ in spans], length)
        for k, ((_, _, objects), where) in enumerate(zip(spans, positions, strict=True)):
            if not where:
                continue
            tokens[b, k, where] = 1.0
            masks[b, k] = torch.from_numpy(np.any(object_mask[list(objects)], axis=0).astype(np.float32))
            valid[b, k] = True
    return GroundingTargets(tokens, masks, valid)


def edit_phrase(item) -> tuple[tuple[int, int], object] | None:
    """The referring phrase of a world instruction and the mask it names, or None (enhance tasks).

    The phrase is the reference without its article (`left circle` in `place a blue mask on the left circle`);
    its mask is the referred object in the input scene, or for `add` the new object's words (`yellow circle`)
    and its mask in the edited scene. Character offsets are into `item.instruction`.
    """
    from emphasize.world import object_masks
    from emphasize.world.refer import reference_text

    edit = item.edit
    if edit.kind == "add":
        words = " ".join(w for w in (edit.size, edit.colour, edit.shape) if w)
        mask = object_masks(item.target_scene, item.size)[edit.target]
    elif edit.reference is not None and edit.target is not None:
        words = reference_text(edit.reference).removeprefix("the ")
        mask = object_masks(item.scene, item.size)[edit.target]
    else:
        return None
    start = item.instruction.find(words)
    return ((start, start + len(words)), mask) if start >= 0 else None


def world_edit_grounding_targets(
    items, prompts: Sequence[str], tokenizer, length: int, *, words: bool = False
) -> GroundingTargets:
    """Grounding targets of world instruction tasks: per item its referring phrase (and with `words` each word of
    it as a phrase of its own, all on the same mask); none for enhance tasks and dropped instructions.

    Grounding the words one by one asks the discriminating word (`left` in `the left circle`) to attend to the
    referred object rather than to every object its noun names, which the phrase's summed attention does not.

    Args:
        items: `emphasize.world.TaskItem`s.
        prompts: the instructions the UNet sees ("" where dropped).
        tokenizer: the pipeline's fast tokenizer.
        length: padded sequence length (77).
        words: add one phrase per word of the referring phrase.
    """
    size = items[0].size
    found = [
        edit_phrase(item) if prompt == item.instruction else None for item, prompt in zip(items, prompts, strict=True)
    ]
    spans = []  # per item: the character spans to ground (the phrase first, then its words)
    for item, phrase in zip(items, found, strict=True):
        if phrase is None:
            spans.append([])
            continue
        (start, end), _ = phrase
        parts = [(start, end)]
        if words and " " in item.instruction[start:end]:
            offset = start
            for word in item.instruction[start:end].split(" "):
                parts.append((offset, offset + len(word)))
                offset += len(word) + 1
        spans.append(parts)
    k_max = max(1, max(len(p) for p in spans))
    tokens = torch.zeros(len(items), k_max, length)
    masks = torch.zeros(len(items), k_max, size, size)
    valid = torch.zeros(len(items), k_max, dtype=torch.bool)
    for b, (item, phrase, parts) in enumerate(zip(items, found, spans, strict=True)):
        if not parts:
            continue
        mask = torch.from_numpy(phrase[1].astype("float32"))
        for k, where in enumerate(phrase_tokens(tokenizer, item.instruction, parts, length)):
            if where:
                tokens[b, k, where] = 1.0
                masks[b, k] = mask
                valid[b, k] = True
    return GroundingTargets(tokens, masks, valid)


def grounding_loss(maps: dict[int, torch.Tensor], targets: GroundingTargets) -> torch.Tensor:
    """Token + pixel grounding loss, averaged over the given levels and the valid phrases.

    Args:
        maps: side -> `(B, side*side, T)` cross-attention probabilities at that level (mean over layers, heads),
            pixels row-major as diffusers flattens them.
        targets: the phrases' tokens and masks.
    """
    valid = targets.valid.float()
    count = valid.sum().clamp_min(1.0)
    total = 0.0
    for side, attention in maps.items():
        group = torch.einsum("bpt,bkt->bkp", attention, targets.tokens.to(attention))  # (B, K, P)
        mask = F.adaptive_avg_pool2d(targets.masks.to(attention), side).flatten(2)  # (B, K, P)
        inside = (group * mask).sum(-1) / group.sum(-1).clamp_min(EPS)  # (B, K)
        token = ((1 - inside) ** 2 * valid).sum() / count
        bce = F.binary_cross_entropy(group.clamp(EPS, 1 - EPS), mask, reduction="none").mean(-1)  # (B, K)
        pixel = (bce * valid).sum() / count
        total = total + token + pixel
    return total / max(len(maps), 1)


def free_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """`(B, T)` bool: positions from the first EOT on (EOT and the padding after it).

    Args:
        input_ids: `(B, T)` padded token ids.
        eos_token_id: the tokenizer's end-of-text id (CLIP pads with it).
    """
    is_eos = input_ids == eos_token_id
    first = torch.where(
        is_eos.any(-1), is_eos.float().argmax(-1), torch.full_like(input_ids[:, 0], input_ids.shape[1])
    )
    return torch.arange(input_ids.shape[1], device=input_ids.device)[None] >= first[:, None]


def replace_free_positions(states: torch.Tensor, empty: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """The text states with the empty prompt's states at the free positions of the chosen rows.

    Args:
        states: `(B, T, D)` encoder states of the prompts.
        empty: `(1, T, D)` encoder states of "".
        free: `(B, T)` bool, positions to replace (rows not chosen are all False).
    """
    return torch.where(free[..., None], empty.expand_as(states), states)


def free_position_invariance(states: torch.Tensor, empty: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the free positions' states from the empty prompt's (its states detached).

    Args:
        states: `(B, T, D)` encoder states of the prompts.
        empty: `(1, T, D)` encoder states of "".
        free: `(B, T)` bool.
    """
    diff = (states - empty.detach()).pow(2).mean(-1)  # (B, T)
    return (diff * free).sum() / free.sum().clamp_min(1)
