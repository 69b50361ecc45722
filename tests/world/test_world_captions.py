"""Caption grammar: rendering, parsing, round trips, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emphasize.world import (
    CaptionSpec,
    ObjectSpec,
    Relation,
    SceneConfig,
    caption,
    format_caption,
    parse_caption,
    sample_scene,
    scene_spec,
)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_caption_parses_back_to_its_spec(seed):
    scene = sample_scene(seed)
    text = caption(scene)
    assert parse_caption(text) == scene_spec(scene)
    assert format_caption(parse_caption(text)) == text


def test_round_trip_on_many_seeds_covers_all_forms():
    forms = set()
    for seed in range(3000):
        scene = sample_scene(seed, config=SceneConfig(p_count=0.4))
        text = caption(scene)
        spec = parse_caption(text)
        assert spec == scene_spec(scene), text
        if spec.relation:
            forms.add("relation")
        elif len(set(spec.objects)) < len(spec.objects):
            forms.add(f"count{len(spec.objects)}")
        else:
            forms.add(f"list{len(spec.objects)}")
        if any(o.size for o in spec.objects):
            forms.add("size")
    assert forms == {"list1", "list2", "list3", "relation", "count2", "count3", "size"}


@pytest.mark.parametrize(
    "text, spec",
    [
        ("a red circle", CaptionSpec((ObjectSpec("circle", "red"),))),
        (
            "a red circle and a blue square",
            CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue"))),
        ),
        (
            "a small green triangle above a large yellow star",
            CaptionSpec(
                (ObjectSpec("triangle", "green", "small"), ObjectSpec("star", "yellow", "large")),
                Relation(0, "above", 1),
            ),
        ),
        ("two purple squares", CaptionSpec((ObjectSpec("square", "purple"),) * 2)),
        (
            "an orange heart, a blue cross and a small red star",
            CaptionSpec(
                (ObjectSpec("heart", "orange"), ObjectSpec("cross", "blue"), ObjectSpec("star", "red", "small"))
            ),
        ),
        (
            "two large blue crosses and an orange circle",
            CaptionSpec((ObjectSpec("cross", "blue", "large"),) * 2 + (ObjectSpec("circle", "orange"),)),
        ),
        ("three yellow hearts", CaptionSpec((ObjectSpec("heart", "yellow"),) * 3)),
        (
            "a red star to the left of a blue circle",
            CaptionSpec((ObjectSpec("star", "red"), ObjectSpec("circle", "blue")), Relation(0, "left of", 1)),
        ),
    ],
)
def test_examples(text, spec):
    assert parse_caption(text) == spec
    assert format_caption(spec) == text


def test_parser_is_lenient_on_case_spaces_and_period():
    assert parse_caption("  A Red   Circle LEFT OF a blue square. ") == CaptionSpec(
        (ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), Relation(0, "left of", 1)
    )


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("a pink circle", "unknown colour 'pink'"),
        ("a red blob", "unknown shape 'blob'"),
        ("a huge red circle", "unknown size 'huge'"),
        ("two red circle", "plural"),
        ("five red circles", "unexpected word 'five'"),
        ("two red circles above a blue square", "unexpected word 'two'"),
        ("two red circles and two blue squares", "4 objects"),
        ("a red circle, a blue square, a red star and a green heart", "too many"),
    ],
)
def test_parse_errors_name_the_problem(text, match):
    with pytest.raises(ValueError, match=match):
        parse_caption(text)


def test_format_rejects_bad_specs():
    with pytest.raises(ValueError, match="1..3"):
        format_caption(CaptionSpec(()))
    with pytest.raises(ValueError, match="exactly two"):
        format_caption(CaptionSpec((ObjectSpec("circle", "red"),), Relation(0, "above", 1)))
