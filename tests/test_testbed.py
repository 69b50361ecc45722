"""The faithful-testbed pieces: grounding targets and losses of the recipe, free-position handling, and the two
measurements (word dependence, world grounding) on fixtures whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emphasize.bench.testbed import (
    map_grounding,
    position_classes,
    replace_positions,
    score_grounding,
    summarize_grounding,
    two_object_prompts,
    word_dependence,
)
from emphasize.models.tokenizer import load_clip_tokenizer
from emphasize.train.grounding import (
    GroundingTargets,
    free_position_invariance,
    free_positions,
    grounding_loss,
    replace_free_positions,
    world_grounding_targets,
)
from emphasize.world import CaptionSpec, ObjectSpec, Relation, format_caption, phrase_spans, render, sample_t2i

TOKENIZER = load_clip_tokenizer()
EOS = TOKENIZER.eos_token_id


@pytest.mark.parametrize(
    "spec, phrases",
    [
        (CaptionSpec((ObjectSpec("circle", "red"),)), [("red circle", (0,))]),
        (
            CaptionSpec((ObjectSpec("triangle", "green", "small"), ObjectSpec("star", "yellow", "large")),
                        Relation(0, "above", 1)),
            [("small green triangle", (0,)), ("large yellow star", (1,))],
        ),
        (
            CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("circle", "red"), ObjectSpec("square", "blue"))),
            [("red circles", (0, 1)), ("blue square", (2,))],
        ),
        (
            CaptionSpec((ObjectSpec("square", "orange"), ObjectSpec("square", "green"), ObjectSpec("heart", "red"))),
            [("orange square", (0,)), ("green square", (1,)), ("red heart", (2,))],
        ),
    ],
)  # fmt: skip
def test_phrase_spans_name_each_object_by_its_words(spec, phrases):
    text = format_caption(spec)
    assert [(text[a:b], objects) for a, b, objects in phrase_spans(spec)] == phrases


def test_phrase_spans_for_a_repeated_phrase_point_at_its_own_occurrence():
    spec = CaptionSpec(
        (ObjectSpec("circle", "red"), ObjectSpec("square", "blue"), ObjectSpec("circle", "red", "small"))
    )
    text = format_caption(spec)
    spans = phrase_spans(spec)
    assert text[spans[0][0] : spans[0][1]] == "red circle" and spans[0][0] < spans[1][0] < spans[2][0]


def test_grounding_targets_mark_the_phrase_tokens_and_the_objects_masks():
    items = [sample_t2i(seed, 32) for seed in range(6)]
    prompts = [it.caption for it in items[:-1]] + [""]  # the last caption dropped for CFG: no targets
    targets = world_grounding_targets(items, prompts, TOKENIZER, 77)
    assert not targets.valid[-1].any()
    for b, item in enumerate(items[:-1]):
        spans = phrase_spans(item.spec)
        assert int(targets.valid[b].sum()) == len(spans)
        ids = TOKENIZER(item.caption).input_ids
        for k, (start, end, _) in enumerate(spans):
            words = TOKENIZER.decode([ids[i] for i in targets.tokens[b, k].nonzero().flatten().tolist()])
            assert words.strip() == item.caption[start:end]
            assert targets.masks[b, k].sum() > 0


def _targets(mask: torch.Tensor, token: int = 2, tokens: int = 8) -> GroundingTargets:
    onehot = torch.zeros(1, 1, tokens)
    onehot[0, 0, token] = 1
    return GroundingTargets(onehot, mask[None, None].float(), torch.ones(1, 1, dtype=torch.bool))


def test_grounding_loss_is_lowest_when_the_phrase_owns_exactly_its_object():
    mask = torch.zeros(8, 8)
    mask[2:5, 3:6] = 1
    targets = _targets(mask)
    grounded = torch.full((1, 64, 8), 1e-4)
    grounded[0, mask.flatten() > 0, 2] = 1.0
    grounded[0, mask.flatten() == 0, 0] = 1.0
    grounded = grounded / grounded.sum(-1, keepdim=True)
    uniform = torch.full((1, 64, 8), 1 / 8)
    misplaced = torch.roll(grounded.view(1, 8, 8, 8), shifts=(4, 0), dims=(1, 2)).reshape(1, 64, 8)
    losses = [float(grounding_loss({8: a}, targets)) for a in (grounded, uniform, misplaced)]
    assert losses[0] < 0.01 < losses[1] < losses[2]
    # descending the loss moves attention onto the object
    logits = torch.zeros(1, 64, 8, requires_grad=True)
    grounding_loss({8: logits.softmax(-1)}, targets).backward()
    assert logits.grad[0, mask.flatten() > 0, 2].max() < 0 < logits.grad[0, mask.flatten() == 0, 2].min()


def test_grounding_loss_pools_image_masks_to_each_level():
    mask = torch.zeros(32, 32)
    mask[8:20, 8:20] = 1
    targets = _targets(mask)
    for side in (16, 8):
        small = torch.nn.functional.adaptive_avg_pool2d(mask[None, None], side).flatten()
        attention = torch.stack([1 - small, torch.zeros_like(small), small], -1)[None]  # (1, side^2, 3)
        attention = torch.cat([attention, torch.zeros(1, side * side, 5)], -1)
        assert float(grounding_loss({side: attention}, targets)) < 0.35


def test_free_positions_start_at_the_first_end_token():
    ids = TOKENIZER(["a red circle", ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    free = free_positions(ids, EOS)
    assert free[0].tolist() == [False] * 4 + [True] * 73
    assert free[1].tolist() == [False] + [True] * 76


def test_replacing_free_positions_keeps_the_words_and_invariance_is_zero_when_equal():
    states, empty = torch.randn(2, 77, 4), torch.randn(1, 77, 4)
    ids = TOKENIZER(["a red circle", "a blue square and a red star"], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids  # fmt: skip
    free = free_positions(ids, EOS)
    chosen = free & torch.tensor([True, False])[:, None]
    out = replace_free_positions(states, empty, chosen)
    assert torch.equal(out[0, :4], states[0, :4]) and torch.equal(out[0, 4:], empty[0, 4:])
    assert torch.equal(out[1], states[1])
    assert float(free_position_invariance(out[:1], empty, free[:1])) == 0.0
    assert float(free_position_invariance(states, empty, free)) > 0.0


def test_position_classes_partition_the_sequence():
    classes = position_classes(TOKENIZER, "a red circle and a blue square", 77)
    assert classes["sot"] == [0] and classes["words"] == list(range(1, 8)) and classes["eot"] == [8]
    assert classes["padding"] == list(range(9, 77))
    states, empty = torch.zeros(1, 77, 2), torch.ones(1, 77, 2)
    out = replace_positions(states, empty, classes["words"])
    assert out[0, 1:8].eq(1).all() and out[0, 8:].eq(0).all() and out[0, 0].eq(0).all()


class _FakePipe:
    """Only what the ablation reads: a tokenizer and a causal text encoder (each position's state is the running
    sum of the token ids so far, so the padding carries the whole caption as in a real causal encoder)."""

    def __init__(self):
        self.tokenizer = TOKENIZER

        class Encoder(torch.nn.Module):
            device = torch.device("cpu")

            def forward(self, ids):
                return (ids.double().cumsum(-1)[..., None].expand(*ids.shape, 4),)

        self.text_encoder = Encoder()


def _reads(where: str):
    """A sampler that renders the caption's objects only if the text states at `where` are the caption's own."""

    def sample(cond, uncond, seed):
        ids = TOKENIZER([_reads.caption], padding="max_length", max_length=77, return_tensors="pt").input_ids
        own = _FakePipe().text_encoder(ids)[0]
        classes = position_classes(TOKENIZER, _reads.caption, 77)
        positions = classes["words"] if where == "words" else classes["padding"]
        intact = torch.equal(cond[0, positions], own[0, positions])
        from emphasize.world import Scene, SceneObject

        objects = (
            SceneObject("circle", "red", "large", 0.3, 0.25, 0.5, 1, 0),
            SceneObject("square", "blue", "large", 0.3, 0.75, 0.5, 1, 2),
        )
        return render(Scene(objects if intact else ()), 64)

    return sample


@pytest.mark.parametrize("reads", ["words", "padding"])
def test_word_dependence_finds_where_a_fixture_model_reads_its_caption(reads):
    _reads.caption = "a red circle and a blue square"
    result = word_dependence(_FakePipe(), [_reads.caption], seeds=[0], steps=1, guidance_scale=1.0,
                             sampler=_reads(reads))  # fmt: skip
    assert result.found["normal"].mean == 1.0
    other = "padding" if reads == "words" else "words"
    assert result.found[reads].mean == 0.0 and result.found[other].mean == 1.0
    assert result.meets_bar() == (reads == "words")


def test_map_grounding_of_a_map_on_its_object_and_of_a_uniform_map():
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:32, 16:32] = True
    on = torch.zeros(16, 16)
    on[4:8, 4:8] = 1.0
    inside, other, chance, pointing = map_grounding(on, mask, [torch.ones(16, 16)])
    assert inside == pytest.approx(1.0) and other == pytest.approx(chance) and pointing == 1.0
    inside, _, chance, _ = map_grounding(torch.ones(8, 8), mask)
    assert inside == pytest.approx(chance) == pytest.approx(16 * 16 / 64**2)


def test_score_grounding_per_level_and_step_range():
    # two phrases, tokens 2 and 5; phrase 0's attention on the left half, phrase 1's on the right, every step
    maps = {}
    for side in (16, 8):
        a = torch.zeros(side, side, 77)
        a[:, : side // 2, 2] = 1.0
        a[:, side // 2 :, 5] = 1.0
        maps[side * side] = a.reshape(side * side, 77)
    per_step = [maps] * 6
    left = np.zeros((64, 64), dtype=bool)
    left[:, :32] = True
    values = score_grounding(per_step, [((0,), (2,)), ((1,), (5,))], {0: left}, 16)
    assert set(values) == {(lvl, r) for lvl in (16, 8, "all") for r in ("all", "early", "middle", "late")}
    grounding = summarize_grounding(values, matched=1, objects=2, token_mass={})
    for cell in grounding.cells.values():
        assert cell.mass_inside.mean == pytest.approx(1.0, abs=0.02) and cell.pointing.mean == 1.0
        assert cell.ratio == pytest.approx(2.0, abs=0.05) and cell.other_inside.mean < 0.05
    assert "16x16" in grounding.table() and "all levels" in grounding.table()


def test_two_object_prompts_are_fixed_and_disjoint_across_offsets():
    a, b = two_object_prompts(5), two_object_prompts(5, offset=5)
    assert a == two_object_prompts(5) and not set(a) & set(b)
    assert two_object_prompts(10)[5:] == b


@pytest.mark.slow
def test_world_grounding_runs_on_the_embedded_model():
    from emphasize.bench.testbed import world_grounding
    from emphasize.models.load import load_pipeline

    pipe = load_pipeline(None, "t2i")
    result = world_grounding(pipe, two_object_prompts(1), seeds=[0], steps=3, guidance_scale=5.0)
    assert result.objects == 2 and 0 <= result.matched <= 2
    assert abs(sum(result.token_mass.values()) - 1.0) < 1e-3


def test_edit_grounding_targets_mark_the_referring_words_and_the_referred_object():
    from emphasize.train.grounding import edit_phrase, world_edit_grounding_targets
    from emphasize.world import object_masks, sample_task

    items = [sample_task(family, seed, 32) for family in ("segment", "keypoint", "edit", "enhance") for seed in (1, 2)]
    prompts = [it.instruction for it in items]
    prompts[0] = ""  # a dropped instruction has no target
    targets = world_edit_grounding_targets(items, prompts, TOKENIZER, 77)
    assert not targets.valid[0].any() and not targets.valid[-1].any() and not targets.valid[-2].any()
    for b, item in enumerate(items[1:6], start=1):
        (start, end), mask = edit_phrase(item)
        ids = TOKENIZER(item.instruction).input_ids
        words = TOKENIZER.decode([ids[i] for i in targets.tokens[b, 0].nonzero().flatten().tolist()])
        scene = item.target_scene if item.edit.kind == "add" else item.scene
        assert words.strip() == item.instruction[start:end] and scene.objects[item.edit.target].shape in words
        assert torch.equal(targets.masks[b, 0] > 0, torch.from_numpy(object_masks(scene, 32)[item.edit.target]))
