"""Word error counting, checked against hand-counted alignments."""

import math

import pytest

from nemo_neko.eval.wer import ErrorCounts, jiwer_counts, kaldialign_counts, word_edits

COUNTERS = [jiwer_counts, kaldialign_counts]


@pytest.mark.parametrize("count", COUNTERS)
@pytest.mark.parametrize(
    "ref,hyp,expected",
    [
        # one substitution (cat -> bat) over 3 words
        ("the cat sat", "the bat sat", ErrorCounts(1, 0, 0, 3)),
        # one deletion
        ("the cat sat", "the sat", ErrorCounts(0, 1, 0, 3)),
        # one insertion
        ("the cat sat", "the cat sat down", ErrorCounts(0, 0, 1, 3)),
        # substitution + insertion: a b c d -> a x c d e
        ("a b c d", "a x c d e", ErrorCounts(1, 0, 1, 4)),
        # empty prediction: every reference word deleted
        ("one two three", "", ErrorCounts(0, 3, 0, 3)),
        # identical
        ("same words here", "same words here", ErrorCounts(0, 0, 0, 3)),
    ],
)
def test_single_pair(count, ref, hyp, expected):
    assert count([ref], [hyp]) == expected


@pytest.mark.parametrize("count", COUNTERS)
def test_corpus_level_not_mean_of_utterances(count):
    # 1 error in a 1-word utterance, 0 in a 4-word one: 1/5 = 20%, not mean(100%, 0%) = 50%
    counts = count(["a", "b c d e"], ["x", "b c d e"])
    assert counts.errors == 1 and counts.ref_words == 5
    assert counts.wer == pytest.approx(0.2)


def test_merge_compounds_is_what_separates_the_counters():
    # jiwer: air -> airflights (substitution) + flights deleted
    assert jiwer_counts(["air flights"], ["airflights"]) == ErrorCounts(1, 1, 0, 2)
    assert kaldialign_counts(["air flights"], ["airflights"]) == ErrorCounts(0, 0, 0, 2)
    # the other direction: one substitution + one insertion against a 1-word reference
    assert jiwer_counts(["airflights"], ["air flights"]).wer == pytest.approx(2.0)
    assert kaldialign_counts(["airflights"], ["air flights"]).wer == 0.0
    # without merging, kaldialign counts like jiwer
    assert kaldialign_counts(["air flights"], ["airflights"], merge_compounds=False).errors == 2


def test_error_counts_arithmetic_and_edge_cases():
    total = ErrorCounts(1, 2, 3, 10) + ErrorCounts(1, 0, 0, 5)
    assert total == ErrorCounts(2, 2, 3, 15) and total.errors == 7
    assert ErrorCounts().wer == 0.0
    assert math.isinf(ErrorCounts(0, 0, 2, 0).wer)
    assert jiwer_counts([], []) == ErrorCounts()
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        jiwer_counts(["a", "b"], ["a"])


@pytest.mark.parametrize(
    "ref,hyp,edits",
    [
        (["a", "b", "c"], ["a", "b", "c"], 0),
        (["a", "b", "c"], ["a", "c"], 1),
        (["a", "b", "c"], ["x", "y"], 3),
        (["kitten"], ["sitting"], 1),  # tokens, not characters
        ([], ["a", "b"], 2),
    ],
)
def test_word_edits(ref, hyp, edits):
    assert word_edits(ref, hyp) == edits
