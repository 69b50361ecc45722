"""Weighted-prompt syntax: A1111 and compel forms, errors with columns, whitespace, round trip, fuzzing."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emphasize.prompts import (
    MAX_WEIGHT,
    PromptSyntaxError,
    WeightedPrompt,
    WeightedSpan,
    format_weighted,
    parse_prompt,
    weighted_prompt_from_words,
)


def spans(prompt: str) -> list[tuple[str, float]]:
    return [(s.text, s.weight) for s in parse_prompt(prompt).spans]


# ---------------------------------------------------------------------------------------------------------------------
# A1111


@pytest.mark.parametrize(
    "prompt, text, expected",
    [
        ("a (cat:1.3)", "a cat", [("cat", 1.3)]),
        ("a (cat)", "a cat", [("cat", 1.1)]),
        ("a [cat]", "a cat", [("cat", 1 / 1.1)]),
        ("((cat))", "cat", [("cat", 1.21)]),
        ("[[cat]]", "cat", [("cat", 1 / 1.21)]),
        ("(a (b:1.5):1.2)", "a b", [("a", 1.2), ("b", 1.8)]),
        ("([cat])", "cat", [("cat", 1.0)]),
        ("(cat:1)", "cat", [("cat", 1.0)]),
        ("(cat:0)", "cat", [("cat", 0.0)]),
        ("(cat: 1.5 )", "cat", [("cat", 1.5)]),
        ("(cat:.5)", "cat", [("cat", 0.5)]),
        ("(cat:+2)", "cat", [("cat", 2.0)]),
        ("(cat:1e-3)", "cat", [("cat", 0.001)]),
        ("(cat:100)", "cat", [("cat", 100.0)]),
    ],
)
def test_a1111_weights(prompt, text, expected):
    parsed = parse_prompt(prompt)
    assert parsed.text == text
    assert [s.text for s in parsed.spans] == [t for t, _ in expected]
    assert [s.weight for s in parsed.spans] == pytest.approx([w for _, w in expected])


def test_phrase_is_one_span_and_punctuation_stays_outside():
    parsed = parse_prompt("encircle the man's (left shoulder:2), in red")
    assert parsed.text == "encircle the man's left shoulder, in red"
    (span,) = parsed.spans
    assert (span.start, span.end, span.weight, span.text) == (19, 32, 2.0, "left shoulder")


def test_outer_remainder_is_split_around_inner_group():
    parsed = parse_prompt("(a red (cat:2) on a mat:1.5) now")
    assert parsed.text == "a red cat on a mat now"
    assert [(s.text, s.weight) for s in parsed.spans] == [("a red", 1.5), ("cat", 3.0), ("on a mat", 1.5)]
    assert [(s.start, s.end) for s in parsed.spans] == [(0, 5), (6, 9), (10, 18)]


def test_outer_group_without_own_text_gives_no_span():
    assert spans("((cat:1.5))") == [("cat", 1.65)]
    assert spans("( (cat:2) )") == [("cat", 2.2)]


def test_effective_weights_are_rounded():
    assert spans("((((cat))))")[0][1] == 1.4641  # 1.1**4 would be 1.4641000000000004
    assert spans("(a (b:1.5):1.2)")[1][1] == 1.8


def test_escapes_are_literal():
    parsed = parse_prompt(r"a \(cat\) \[dog\] 10\:30 back\\slash (x\:y:2) \+\-")
    assert parsed.text == r"a (cat) [dog] 10:30 back\slash x:y +-"
    assert spans(r"a \(cat\) (x\:y:2)") == [("x:y", 2.0)]
    assert parse_prompt("C:\\path").text == "C:\\path"  # a backslash before a non-syntax character stays


def test_colon_outside_brackets_is_text():
    assert parse_prompt("photo: a cat").text == "photo: a cat"
    assert parse_prompt("a|b").text == "a|b"
    assert parse_prompt("(a|b)").text == "a|b"


# ---------------------------------------------------------------------------------------------------------------------
# compel


@pytest.mark.parametrize(
    "prompt, text, expected",
    [
        ("a cat+", "a cat", [("cat", 1.1)]),
        ("a cat++ sat", "a cat sat", [("cat", 1.21)]),
        ("a cat- sat", "a cat sat", [("cat", 0.9)]),
        ("a cat--, sat", "a cat, sat", [("cat", 0.81)]),
        ("a (red cat)1.3", "a red cat", [("red cat", 1.3)]),
        ("a (red cat)0.5.", "a red cat.", [("red cat", 0.5)]),
        ("a (red cat)+", "a red cat", [("red cat", 1.1)]),
        ("a (red cat)++ on", "a red cat on", [("red cat", 1.21)]),
        ("a (red cat)-", "a red cat", [("red cat", 0.9)]),
        ("(big cat+)", "big cat", [("big", 1.1), ("cat", 1.21)]),
        ("the man's+ hat", "the man's hat", [("man's", 1.1)]),
        ("a well-known- place", "a well-known place", [("well-known", 0.9)]),
        ("(big)cat+", "bigcat", [("big", 1.1), ("cat", 1.1)]),
    ],
)
def test_compel_weights(prompt, text, expected):
    parsed = parse_prompt(prompt)
    assert parsed.text == text
    assert [s.text for s in parsed.spans] == [t for t, _ in expected]
    assert [s.weight for s in parsed.spans] == pytest.approx([w for _, w in expected])


@pytest.mark.parametrize(
    "prompt",
    ["well-known", "x-ray", "a+b", "1-2", "- item", "a - b", "cat +1", "cat+-", "cat+-dog", "e-mail", "(cat) - x"],
)
def test_signs_that_are_not_suffixes_are_text(prompt):
    parsed = parse_prompt(prompt)
    assert parsed.text == prompt.replace("(", "").replace(")", "")
    assert all(s.weight == pytest.approx(1.1) for s in parsed.spans)


def test_escaped_signs_at_word_end_are_text():
    assert parse_prompt(r"C\+\+ code, cat\-").text == "C++ code, cat-"
    assert parse_prompt(r"C\+\+ code").spans == ()


def test_bare_group_after_number_or_sign_is_a1111_when_separated():
    assert spans("(cat) 2 dogs") == [("cat", 1.1)]
    assert parse_prompt("(cat) 2 dogs").text == "cat 2 dogs"
    assert spans("[cat]2") == [("cat", pytest.approx(1 / 1.1))]
    assert parse_prompt("[cat]2").text == "cat2"
    assert parse_prompt("(cat:2)3").text == "cat3"


# ---------------------------------------------------------------------------------------------------------------------
# whitespace


@pytest.mark.parametrize(
    "prompt, text",
    [
        ("a ( cat ) dog", "a cat dog"),
        ("( cat) dog", "cat dog"),
        ("cat (dog )", "cat dog"),
        ("cat ( (dog) )", "cat dog"),
        ("  a (cat)  ", "  a cat  "),  # typed leading/trailing whitespace stays
        ("a  (cat:1.2)  dog", "a  cat  dog"),  # typed doubled whitespace stays
        ("a\n(cat)\tdog", "a\ncat\tdog"),
        ("(red)car", "redcar"),  # nothing is inserted
    ],
)
def test_whitespace_only_collapses_what_removal_creates(prompt, text):
    assert parse_prompt(prompt).text == text


def test_span_offsets_after_whitespace_removal():
    parsed = parse_prompt("a ( big  cat ) sat")
    assert parsed.text == "a big  cat sat"
    (span,) = parsed.spans
    assert parsed.text[span.start : span.end] == span.text == "big  cat"


# ---------------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "prompt, column, words",
    [
        ("a (cat", 3, "unbalanced '('"),
        ("a cat)", 6, "unbalanced ')'"),
        ("a [cat", 3, "unbalanced '['"),
        ("a cat]", 6, "unbalanced ']'"),
        ("((cat)", 1, "unbalanced '('"),
        ("[cat)", 5, "does not close '['"),
        ("(cat]", 5, "does not close '('"),
        ("(cat:abc)", 6, "not a number"),
        ("(cat:1.2.3)", 6, "not a number"),
        ("(cat:  x)", 8, "not a number"),
        ("(cat:-1)", 6, "negative"),
        ("(cat:nan)", 6, "NaN"),
        ("(cat:inf)", 6, "infinite"),
        ("(cat:-Infinity)", 6, "infinite"),
        ("(cat:1e400)", 6, "infinite"),
        ("(cat:101)", 6, "above the maximum 100"),
        ("(cat:)", 6, "missing weight"),
        ("(cat:1.5", 1, "never closed"),
        ("(a:(b))", 3, "starts a weight"),
        ("a () b", 3, "empty group"),
        ("a ( ) b", 3, "empty group"),
        ("a [] b", 3, "empty group"),
        ("(:2)", 1, "empty group"),
        ("[a:b:0.5]", 3, "prompt editing"),
        ("[a:b]", 3, "prompt editing"),
        ("[a|b]", 3, "alternation"),
        ("(cat:1.5)+ dog", 10, "second weight"),
        ("[cat]- dog", 6, "second weight"),
        ("(cat)2nd", 6, "not a number"),
        ("(cat)-0.5", 6, "negative"),
        ("(cat)150", 6, "above the maximum"),
        ('("a", "b").blend(1, 0.8)', 11, ".blend()"),
        ("sun.swap(moon)", 4, ".swap()"),
        ('"flames"+', 9, "quoted weighting"),
        ('fire "flames"-- now', 14, "quoted weighting"),
        ('fire "flames".swap(trees)', 14, ".swap()"),
        ("flames.attend(+)", 7, ".attend()"),
        ("a cat playing with a ball in the flames.attend(0.5)", 40, ".attend()"),
        ('"a cat".and()', 8, ".and()"),
        ("a hairy man withLora(hairy, 0.5)", 13, "withLora()"),
        ("a cat.swap(dog, s_start=0.2)", 6, ".swap()"),
        ("((cat:50):50)", 2, "effective weight 2500"),
        ("cat" + "+" * 60, 4, "effective weight"),
        ("(" * 40 + "cat" + ")" * 40, 33, "nested deeper"),
    ],
)
def test_errors_name_problem_and_column(prompt, column, words):
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(prompt)
    assert info.value.column == column
    assert words in str(info.value)
    assert f"column {column}" in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_column_counts_characters_across_lines():
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt("a cat\n(dog")
    assert info.value.column == 7


def test_rejects_non_string():
    with pytest.raises(TypeError):
        parse_prompt(None)


# ---------------------------------------------------------------------------------------------------------------------
# dataclasses, format, words API


def test_dataclasses_validate():
    with pytest.raises(ValueError):
        WeightedSpan(2, 2, 1.0, "")
    with pytest.raises(ValueError):
        WeightedSpan(0, 3, float("nan"), "cat")
    with pytest.raises(ValueError):
        WeightedSpan(0, 3, MAX_WEIGHT + 1, "cat")
    with pytest.raises(ValueError):
        WeightedPrompt("a cat", (WeightedSpan(0, 3, 1.0, "dog"),))
    with pytest.raises(ValueError):
        WeightedPrompt("a cat", (WeightedSpan(0, 3, 1.0, "a c"), WeightedSpan(2, 5, 1.0, "cat")))
    prompt = WeightedPrompt("a cat", [WeightedSpan(2, 5, 2.0, "cat")])
    assert isinstance(prompt.spans, tuple)
    with pytest.raises(AttributeError):
        prompt.text = "x"


@pytest.mark.parametrize(
    "prompt, written",
    [
        ("a (cat:1.8) and a frog-", "a (cat:1.8) and a (frog:0.9)"),
        ("((cat))", "(cat:1.21)"),
        (r"\(x\) 10:30 (a\:b:2)", r"\(x\) 10:30 (a\:b:2)"),
        (r"C\+\+ code", r"C\+\+ code"),
        (r"(cat:2)\+ dog", r"(cat:2)\+ dog"),
        ("(cat+:2)", "(cat:2.2)"),
        (r"(cat\+:2)", r"(cat\+:2)"),
        (r"cat\+(dog:2)", r"cat\+(dog:2)"),
        ("a+b well-known", "a+b well-known"),
    ],
)
def test_format_weighted(prompt, written):
    assert format_weighted(parse_prompt(prompt)) == written
    assert parse_prompt(written) == parse_prompt(prompt)


def test_weighted_prompt_from_words():
    prompt = weighted_prompt_from_words("A cat and a cat, near the Left  Shoulder", {"cat": 2, "left shoulder": 1.5})
    assert [(s.text, s.start, s.weight) for s in prompt.spans] == [
        ("cat", 2, 2.0),
        ("cat", 12, 2.0),
        ("Left  Shoulder", 26, 1.5),
    ]
    assert weighted_prompt_from_words("a cat", {}).spans == ()
    assert parse_prompt(format_weighted(prompt)) == prompt


def test_weighted_prompt_from_words_matches_whole_words_only():
    with pytest.raises(ValueError, match="'cat' is not in the prompt"):
        weighted_prompt_from_words("a category of catalogs", {"cat": 2})
    assert [s.text for s in weighted_prompt_from_words("a cat's toy", {"cat": 2}).spans] == ["cat"]


@pytest.mark.parametrize(
    "weights, words",
    [
        ({"dog": 2}, "'dog' is not in the prompt"),
        ({" ": 2}, "empty phrase"),
        ({"cat": -1}, "[0, 100]"),
        ({"cat": float("inf")}, "[0, 100]"),
        ({"cat": "2"}, "must be a number"),
        ({"red cat": 2, "cat": 1.5}, "overlap"),
    ],
)
def test_weighted_prompt_from_words_errors(weights, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        weighted_prompt_from_words("a red cat", weights)


# ---------------------------------------------------------------------------------------------------------------------
# property tests

SYNTAX_HEAVY = st.text(alphabet=st.sampled_from(list("ab c:()[]\\+-|.1.5'é🐱\n")), max_size=40)


def check_consistent(prompt: WeightedPrompt):
    previous_end = 0
    for span in prompt.spans:
        assert previous_end <= span.start < span.end <= len(prompt.text)
        assert prompt.text[span.start : span.end] == span.text
        assert span.text == span.text.strip()
        assert 0 <= span.weight <= MAX_WEIGHT
        previous_end = span.end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), SYNTAX_HEAVY))
def test_fuzz_parses_or_raises_prompt_syntax_error(prompt):
    try:
        parsed = parse_prompt(prompt)
    except PromptSyntaxError as error:
        assert 1 <= error.column <= max(len(prompt), 1)
        return
    check_consistent(parsed)
    assert parse_prompt(format_weighted(parsed)) == parsed  # round trip on whatever parses


WORD = st.sampled_from(["cat", "red", "man's", "well-known", "x-ray", "a+b", "10:30", "(lit)", "[b]", "é", "🐱"])
WEIGHT = st.sampled_from(["0", "0.5", "1", "1.3", "2", ".75", "1e-2"])


@st.composite
def weighted_prompts(draw, depth=0):
    """Valid prompts from the grammar: words, escaped syntax, A1111 groups and compel suffixes."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        word = "".join("\\" + c if c in "()[]:" else c for c in draw(WORD))
        kind = draw(st.sampled_from(["plain", "plus", "minus", "group"] if depth < 3 else ["plain", "plus"]))
        if kind == "plus" and word[-1].isalnum():
            word += "+" * draw(st.integers(1, 2))
        elif kind == "minus" and word[-1].isalnum():
            word += "-" * draw(st.integers(1, 2))
        elif kind == "group":
            inner = draw(weighted_prompts(depth + 1))
            form = draw(st.sampled_from(["({}:{})", "({})", "[{}]", "({}){}", "({})+", "({})-"]))
            word = form.format(inner, draw(WEIGHT))
        parts.append(word)
    return draw(st.sampled_from([" ", ", ", "  "])).join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weighted_prompts())
def test_round_trip_on_generated_prompts(prompt):
    parsed = parse_prompt(prompt)
    check_consistent(parsed)
    written = format_weighted(parsed)
    assert parse_prompt(written) == parsed
    assert format_weighted(parse_prompt(written)) == written


def test_numpy_weights_are_accepted():
    np = pytest.importorskip("numpy")
    prompt = weighted_prompt_from_words("a cat", {"cat": np.float32(2.0)})
    assert prompt.spans[0].weight == 2.0 and type(prompt.spans[0].weight) is float


def test_prompts_module_imports_only_the_standard_library():
    import ast
    import sys

    import emphasize.prompts

    tree = ast.parse(open(emphasize.prompts.__file__, encoding="utf-8").read())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m.split(".")[0] for m in modules} <= set(sys.stdlib_module_names) | {"__future__"}
