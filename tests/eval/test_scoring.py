"""Leaderboard scoring: hand-computed WERs, dropped references, composite, RTFx, protocols."""

import pytest

from nemo_neko.eval.manifests import ManifestSource, expand_inputs, read_manifest
from nemo_neko.eval.protocols import PROTOCOLS, get_protocol
from nemo_neko.eval.scoring import composite_scores, score_rows, score_sources

from .helpers import manifest_rows

BOTH = list(PROTOCOLS)


def score_pairs(write, pairs, protocol, **kw):
    path = write("MODEL_m_DATASET_d_test.jsonl", manifest_rows(pairs, **kw))
    return score_rows(read_manifest(path), protocol, ManifestSource(str(path), "m", "d_test"))


@pytest.mark.parametrize("protocol", BOTH)
def test_hand_computed_wer_after_normalisation(write, protocol):
    pairs = [
        ("The cat sat on the mat.", "the cat sat on a mat"),  # 1 sub / 6
        ("Hello, World!", "hello world"),  # 0 / 2
        ("Good morning everyone", "good morning every one today"),  # 1 sub + 1 ins (+0) / 3
        ("Turn left here", ""),  # 3 del / 3
    ]
    # jiwer and kaldialign align "everyone" vs "every one" differently only with compounds:
    # kaldialign merges "every one" -> "everyone" (0 errors), jiwer: 1 sub + 1 ins
    score = score_pairs(write, pairs, protocol)
    extra = {"esb2024": 2, "oal2026": 0}[protocol]
    errors = 1 + 0 + extra + 1 + 3  # "today" is an insertion either way
    assert score.ref_words == 14 and score.utterances == 4
    assert score.substitutions + score.deletions + score.insertions == errors
    assert score.wer == round(100 * errors / 14, 2)  # 50.00 (esb2024), 35.71 (oal2026)


@pytest.mark.parametrize("protocol", BOTH)
def test_empty_and_ignored_references_are_dropped_and_counted(write, protocol):
    pairs = [
        ("the red car stopped", "the red car stops"),  # 1/4 (number words would become digits)
        ("", "noise words here"),  # empty reference: dropped, not 3 insertions
        ("(laughter)", "ha ha"),  # empty after normalising
        ("ignore_time_segment_in_scoring", "whatever"),
        ("ignore time segment in scoring", ""),
    ]
    score = score_pairs(write, pairs, protocol)
    assert (score.rows, score.utterances, score.dropped_empty, score.dropped_ignored) == (
        5,
        1,
        2,
        2,
    )
    assert score.wer == 25.0


def test_nothing_left_to_score_is_an_error(write):
    with pytest.raises(ValueError, match="nothing to score: all 2 references are empty"):
        score_pairs(write, [("", "a"), ("[noise]", "b")], "esb2024")


@pytest.mark.parametrize("protocol", BOTH)
def test_rtfx(write, protocol):
    score = score_pairs(write, [("a b", "a b"), ("c d", "c d")], protocol, duration=3.0, time=0.4)
    assert score.rtfx == 7.5 and score.audio_seconds == 6.0 and score.inference_seconds == 0.8
    rows = manifest_rows([("a", "a"), ("b", "b")], duration=2.0, time=0.5)
    rows[1]["time"] = None
    path = write("MODEL_m_DATASET_x_test.jsonl", rows)
    partial = score_rows(read_manifest(path), protocol, ManifestSource(str(path), "m", "x_test"))
    assert partial.rtfx is None and any(
        "RTFx not computed: 1 of 2 rows" in n for n in partial.notes
    )
    zero = score_pairs(write, [("a", "a")], protocol, duration=2.0, time=0.0)
    assert zero.rtfx is None  # the leaderboard needs every time non-zero
    none = score_pairs(write, [("a", "a")], protocol)
    assert none.rtfx is None and none.notes == []


def test_composite_is_unweighted_mean_of_rounded_wers_and_rtfx_pools_audio(write, tmp_path):
    # dataset A: 1 error in 3 words (33.33), 1 utterance, 10 s audio in 1 s
    # dataset B: 0 errors in 100 words, 1 utterance, 50 s audio in 10 s
    # dataset C: 1 error in 6 words (16.67)
    write("r/MODEL_m_DATASET_a_test.jsonl", manifest_rows([("x y z", "x y q")], 10.0, 1.0))
    write(
        "r/MODEL_m_DATASET_b_test.jsonl", manifest_rows([(" ".join(["w"] * 100),) * 2], 50.0, 10.0)
    )
    write("r/MODEL_m_DATASET_c_test.jsonl", manifest_rows([("a b c d e f", "a b c d e")], 4.0, 1.0))
    result = score_sources(expand_inputs([str(tmp_path / "r")]), "esb2024")
    assert [d.wer for d in result.datasets] == [33.33, 0.0, 16.67]
    (composite,) = result.composites
    assert composite.datasets == 3
    assert composite.wer == round((33.33 + 0.0 + 16.67) / 3, 2) == 16.67  # pooled would be 1.83
    assert composite.rtfx == pytest.approx(64.0 / 12.0)  # not the mean of 10, 5 and 4


def test_composite_per_model_and_missing_rtfx(write, tmp_path):
    write("r/MODEL_m1_DATASET_a_test.jsonl", manifest_rows([("a b", "a b")], 1.0, 1.0))
    write("r/MODEL_m1_DATASET_b_test.jsonl", manifest_rows([("a b", "a c")]))
    write("r/MODEL_m2_DATASET_a_test.jsonl", manifest_rows([("a b", "x y")], 2.0, 1.0))
    result = score_sources(expand_inputs([str(tmp_path / "r")]), "oal2026")
    by_model = {c.model: c for c in result.composites}
    assert by_model["m1"].wer == 25.0 and by_model["m1"].rtfx is None
    assert by_model["m2"].wer == 100.0 and by_model["m2"].rtfx == 2.0
    assert composite_scores([]) == []


def test_protocols_differ_on_compounds_and_normaliser(write):
    pairs = [("show me airflights to Boston", "show me air flights to boston"), ("ok", "okay")]
    esb = score_pairs(write, pairs, "esb2024")
    oal = score_pairs(write, pairs, "oal2026")
    # esb2024: airflights -> air (sub) + flights (ins); ok -> okay (sub): 3 errors / 6 words
    assert (esb.substitutions, esb.insertions, esb.deletions) == (2, 1, 0)
    assert esb.wer == 50.0
    # oal2026: compounds merge at zero cost and "ok" normalises to "okay"
    assert oal.wer == 0.0


def test_protocols_differ_on_chunked_predictions(write):
    text = "the quick brown fox jumps over the lazy dog"
    rows = [
        {"parent_id": "talk1", "chunk_index": 1, "text": text, "pred_text": "jumps over",
         "duration": 4.0, "time": 1.0},
        {"parent_id": "talk1", "chunk_index": 0, "text": text, "pred_text": "the quick brown fox",
         "duration": 4.0, "time": 1.0},
        {"parent_id": "talk1", "chunk_index": 2, "text": text, "pred_text": "the lazy cat",
         "duration": 2.0, "time": 1.0},
    ]  # fmt: skip
    path = write("MODEL_m_DATASET_talks_test.jsonl", rows)
    source = ManifestSource(str(path), "m", "talks_test")
    oal = score_rows(read_manifest(path), "oal2026", source)
    # one session: "the quick brown fox jumps over the lazy cat" vs the reference: 1 sub / 9
    assert (oal.rows, oal.utterances, oal.ref_words) == (3, 1, 9)
    assert oal.wer == 11.11 and oal.rtfx == round(10.0 / 3.0, 4)
    assert "3 chunks merged into 1 sessions" in oal.notes
    esb = score_rows(read_manifest(path), "esb2024", source)
    # each chunk against the whole reference, 27 words: "jumps over" 7 deletions, "the quick
    # brown fox" 5, "the lazy cat" 6 + dog -> cat
    assert (esb.utterances, esb.ref_words) == (3, 27)
    assert (esb.deletions, esb.substitutions, esb.insertions) == (18, 1, 0)
    assert esb.wer == round(100 * 19 / 27, 2) == 70.37
    assert any("scores them one by one" in n for n in esb.notes)


def test_unknown_protocol():
    with pytest.raises(KeyError, match="unknown protocol 'x'.*esb2024, oal2026"):
        get_protocol("x")


def test_the_public_sets_of_each_protocol_and_which_a_run_covers():
    from nemo_neko.eval.protocols import covered_sets, get_protocol

    now, paper = get_protocol("oal2026"), get_protocol("esb2024")
    assert len(now.public_sets) == 7 and "tedlium_test" not in now.public_sets
    assert "earnings22_cleaned_aa_chunked_test" in now.public_sets
    assert len(paper.public_sets) == 8 and "tedlium_test" in paper.public_sets
    files = ["hf-audio-open-asr-leaderboard_ami_cleaned_test", "librispeech_test.clean", "ami_test"]
    present, missing = covered_sets(now, files)
    assert present == ["ami_cleaned_test", "librispeech_test.clean"] and len(missing) == 5
    assert covered_sets(paper, files)[0] == ["ami_test", "librispeech_test.clean"]
    assert covered_sets(now, list(now.public_sets)) == (list(now.public_sets), [])
