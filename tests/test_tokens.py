"""Spans -> token groups with the real CLIP BPE tokenizer (offline): sub-words, repeats, punctuation, token limit."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emphasize.models.tokenizer import load_clip_tokenizer
from emphasize.prompts import WeightedPrompt, WeightedSpan, parse_prompt, weighted_prompt_from_words
from emphasize.tokens import (
    TokenGroup,
    TokenLimitError,
    align_spans,
    content_token_indices,
    describe_tokens,
    token_table,
    token_weight_vector,
)

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def groups(tokenizer, prompt: str) -> list[tuple[str, float, tuple[int, ...]]]:
    return [(g.text, g.weight, g.token_indices) for g in align_spans(tokenizer, prompt)]


def test_clip_ids_and_positions(tokenizer):
    assert tokenizer("a photo of a cat")["input_ids"] == [SOT, 320, 1125, 539, 320, 2368, EOT]
    assert tokenizer.model_max_length == 77
    assert groups(tokenizer, "a photo of a (cat:2)") == [("cat", 2.0, (5,))]  # SOT is 0, "a" is 1


def test_multi_token_words_form_one_group(tokenizer):
    assert groups(tokenizer, "a (polevaultyaa:1.5) dog") == [("polevaultyaa", 1.5, (2, 3, 4, 5))]  # pole vaul ty aa
    assert groups(tokenizer, "(encircle:1.5) the man's (left shoulder:2) in red") == [
        ("encircle", 1.5, (1, 2)),  # en circle
        ("left shoulder", 2.0, (6, 7)),
    ]


def test_repeated_word_maps_to_its_own_occurrence(tokenizer):
    assert groups(tokenizer, "a cat and a (cat:2)") == [("cat", 2.0, (5,))]
    assert groups(tokenizer, "a (cat:2) and a cat") == [("cat", 2.0, (2,))]
    prompt = weighted_prompt_from_words("a cat and a cat", {"cat": 1.5})
    assert [g.token_indices for g in align_spans(tokenizer, prompt)] == [(2,), (5,)]


def test_punctuation(tokenizer):
    # man 's -> both tokens; the comma after a phrase stays outside its group
    assert groups(tokenizer, "the (man's:1.5) hat") == [("man's", 1.5, (2, 3))]
    assert groups(tokenizer, "encircle the man's (left shoulder:2), in red") == [("left shoulder", 2.0, (6, 7))]
    assert groups(tokenizer, "a dog, (cat:2)!") == [("cat", 2.0, (4,))]
    assert groups(tokenizer, r"a \(cat\) and (dog:2)") == [("dog", 2.0, (6,))]  # a ( cat ) and dog


def test_uppercase_and_unicode(tokenizer):
    assert groups(tokenizer, "A Photo of a (CAT:2)") == [("CAT", 2.0, (5,))]
    assert groups(tokenizer, "a (🐱:2) cat") == [("🐱", 2.0, (2,))]
    assert groups(tokenizer, "(👨‍👩‍👧:1.5) family") == [("👨‍👩‍👧", 1.5, (1, 2, 3, 4))]  # one emoji, four byte tokens
    assert groups(tokenizer, "a (café:2) and a (naïve:0.5) cat") == [("café", 2.0, (2,)), ("naïve", 0.5, (5, 6, 7))]


def test_compel_suffix_words(tokenizer):
    assert groups(tokenizer, "a cat++ and a frog-") == [("cat", pytest.approx(1.21), (2,)), ("frog", 0.9, (5,))]


def test_phrase_within_limit_is_fine(tokenizer):
    prompt = "a " * 73 + "(red cat:2)"  # red, cat at 74, 75: the last content positions CLIP reads
    assert groups(tokenizer, prompt) == [("red cat", 2.0, (74, 75))]
    assert content_token_indices(tokenizer, parse_prompt(prompt).text) == list(range(1, 76))


@pytest.mark.parametrize("prefix, how", [("a " * 80, "wholly"), ("a " * 74, "partly")])
def test_phrase_cut_off_by_limit_raises(tokenizer, prefix, how):
    prompt = parse_prompt(prefix + "(red cat:2) outside")
    total = len(prefix.split()) + 3 + 2  # words + red cat outside + SOT/EOT
    with pytest.raises(TokenLimitError) as info:
        align_spans(tokenizer, prompt)
    message = str(info.value)
    assert "'red cat'" in message and how in message
    assert f"has {total} tokens" in message and "77" in message
    assert isinstance(info.value, ValueError)


def test_limit_follows_model_max_length():
    short = load_clip_tokenizer(max_length=8)  # SOT + 6 content tokens + EOT
    assert groups(short, "a b c d e (f:2)") == [("f", 2.0, (6,))]
    with pytest.raises(TokenLimitError, match="8-token limit"):
        align_spans(short, "a b c d e f (g:2)")
    unlimited = load_clip_tokenizer(max_length=int(1e30))  # transformers' "no limit" sentinel
    assert groups(unlimited, "a " * 100 + "(cat:2)") == [("cat", 2.0, (101,))]
    assert len(content_token_indices(unlimited, "a " * 100)) == 100


def test_unweighted_words_beyond_limit_are_fine(tokenizer):
    assert groups(tokenizer, "a (cat:2) " + "b " * 100) == [("cat", 2.0, (2,))]


def test_shared_token_and_tokenless_span_raise(tokenizer):
    with pytest.raises(ValueError, match="share the token"):
        align_spans(tokenizer, "(blue:2)(cat:0.5)")  # bluec at: one token in both phrases
    combining_accent = WeightedPrompt("e\u0301cole", (WeightedSpan(1, 2, 2.0, "\u0301"),))
    with pytest.raises(ValueError, match="no tokens"):
        align_spans(tokenizer, combining_accent)


def test_slow_tokenizer_is_rejected():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        align_spans(SlowTokenizer(), "a (cat:2)")


def test_token_weight_vector():
    weights = token_weight_vector([TokenGroup("red cat", 2.0, (2, 3)), TokenGroup("dog", 0.5, (5,))], 77)
    assert len(weights) == 77
    assert weights[:7] == [1.0, 1.0, 2.0, 2.0, 1.0, 0.5, 1.0]
    assert weights[7:] == [1.0] * 70
    with pytest.raises(ValueError, match="outside"):
        token_weight_vector([TokenGroup("cat", 2.0, (77,))], 77)
    with pytest.raises(ValueError, match="weight"):
        token_weight_vector([TokenGroup("cat", 2.0, (2,)), TokenGroup("cat", 3.0, (2,))], 77)
    with pytest.raises(ValueError):
        TokenGroup("cat", 2.0, ())


def test_content_token_indices(tokenizer):
    assert content_token_indices(tokenizer, "a photo of a cat") == [1, 2, 3, 4, 5]
    assert content_token_indices(tokenizer, "") == []
    assert content_token_indices(tokenizer, "a " * 100) == list(range(1, 76))


def test_token_table_maps_index_to_token(tokenizer):
    table = token_table(tokenizer, "a cat and a cat")
    assert table == {
        0: "<|startoftext|>",
        1: "a</w>",
        2: "cat</w>",
        3: "and</w>",
        4: "a</w>",
        5: "cat</w>",
        6: "<|endoftext|>",
    }
    long = token_table(tokenizer, "a " * 100)
    assert len(long) == 77 and long[76] == "<|endoftext|>"


def test_describe_tokens(tokenizer):
    table = describe_tokens(tokenizer, "a (polevaultyaa:1.5) dog")
    lines = table.splitlines()
    assert lines[0].split() == ["index", "token", "text", "weight"]
    assert lines[3].split() == ["2", "pole", "'pole'", "1.5"]
    assert lines[-1].split() == ["7", "<|endoftext|>"]
    assert "cut off" in describe_tokens(tokenizer, "a " * 80 + "(cat:2)")  # over-long prompts are shown, not raised


WORDS = st.sampled_from(["cat", "polevaultyaa", "man's", "Shoulder", "naïve", "🐱", "x-ray", "a", "red", "cat"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(WORDS, st.booleans()), min_size=1, max_size=12))
def test_groups_cover_exactly_their_words(tokenizer, words):
    """Property: a group's tokens spell its phrase (minus spaces), and groups follow the spans' order."""
    prompt = " ".join(f"({w}:2)" if marked else w for w, marked in words)
    parsed = parse_prompt(prompt)
    encoded = tokenizer(parsed.text, return_offsets_mapping=True)
    found = align_spans(tokenizer, parsed)
    assert [g.text for g in found] == [w for w, marked in words if marked]
    for group in found:
        covered = "".join(parsed.text[slice(*encoded["offset_mapping"][i])] for i in group.token_indices)
        assert covered.replace(" ", "") == group.text
    flat = [i for g in found for i in g.token_indices]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)
