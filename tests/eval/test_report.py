"""The correction report: hand-computed oracles, prediction joins, HyPoradise figures."""

import dataclasses

import pytest

from nemo_neko.data.records import CorrectionRecord, read_records
from nemo_neko.data.sample_data import sample_paths
from nemo_neko.eval.inputs import InputError
from nemo_neko.eval.metrics import fewest_edits
from nemo_neko.eval.predictions import PredictionMismatchError, read_predictions
from nemo_neko.eval.report import build_report, compositional_output


def asr(rid, ref, hyps, dataset="toy"):
    return CorrectionRecord(id=rid, task="asr", dataset=dataset, reference=ref, hypotheses=hyps)


TOY = [
    # baseline 1 sub; oracle: first of the 1-edit candidates; every reference word is offered
    asr("r1", "red green blue", ["red green glue", "red gray glue", "red green blue sky"]),
    # baseline 1, oracle 1, all words offered
    asr("r2", "a b c d", ["a x c d", "a b c y"]),
    # baseline 4 subs, oracle picks the 2nd (1 edit), "sea" is in no hypothesis
    asr("r3", "she sells sea shells", ["he sell see shell", "she sells see shells"]),
]
# 11 reference words: baseline 6 edits, N-best oracle 3, compositional oracle 1


def test_oracle_helpers():
    ref = "she sells sea shells".split()
    cands = [
        c.split() for c in ("he sell see shell", "she sells see shells", "she sells see shell")
    ]
    assert fewest_edits(ref, cands) == 1
    assert fewest_edits(["a"], [["b"], ["c"]]) == 0  # ties: the better-ranked one
    assert compositional_output(ref, cands) == ["she", "sells", "shells"]
    assert compositional_output(["a", "a", "b"], [["a"]]) == ["a", "a"]


def test_hand_computed_asr_report():
    report = build_report(TOY)
    (row,) = report.rows
    assert (row.dataset, row.task, row.metric, row.utterances) == ("toy", "asr", "wer", 3)
    assert row.baseline == pytest.approx(100 * 6 / 11)
    assert row.nbest_oracle == pytest.approx(100 * 3 / 11)
    assert row.compositional_oracle == pytest.approx(100 * 1 / 11)
    assert row.corrected is None and row.relative_improvement is None
    (mean,) = report.task_means
    assert mean.dataset == "mean of 1" and mean.baseline == row.baseline


def test_corrected_score_and_relative_improvement():
    predictions = {"r1": "red green blue", "r2": "a b c", "r3": "she sells sea shells"}
    (row,) = build_report(TOY, predictions).rows
    assert row.corrected == pytest.approx(100 * 1 / 11)  # one deletion in r2
    assert row.relative_improvement == pytest.approx(100 * (6 - 1) / 6)


def test_source_tasks_use_the_source_as_baseline_and_only_candidate():
    records = [
        CorrectionRecord("o1", "ocr", "scans", "the quick brown fox", source="teh quick brown fox"),
        CorrectionRecord(
            "o2", "ocr", "scans", "jumps over the lazy dog", source="jumps ovr the dog"
        ),
        CorrectionRecord("g1", "tec_grammar", "gec", "he goes to school", source="he go to school"),
    ]
    rows = {r.task: r for r in build_report(records).rows}
    # ocr: teh->the, ovr->over, lazy deleted: 3 edits / 9 words; the three words are missing
    # from the source, so no oracle can do better
    ocr = rows["ocr"]
    assert ocr.baseline == ocr.nbest_oracle == ocr.compositional_oracle == pytest.approx(100 / 3)
    gec = rows["tec_grammar"]
    assert gec.baseline == gec.compositional_oracle == 25.0


def test_empty_references_are_counted_not_scored():
    records = [*TOY, asr("r4", "", ["anything at all"])]
    (row,) = build_report(records).rows
    assert row.utterances == 3 and row.dropped_empty_reference == 1
    assert row.baseline == pytest.approx(100 * 6 / 11)
    assert any("1 record(s) with an empty reference" in n for n in build_report(records).notes)


def test_normalizer_option_applies_to_wer():
    records = [asr("n1", "Hello, World!", ["hello world"])]
    assert build_report(records).rows[0].baseline == 100.0  # as given: 2 substitutions
    assert build_report(records, normalizer="esb2024").rows[0].baseline == 0.0


def test_missing_and_extra_prediction_ids_are_listed():
    with pytest.raises(PredictionMismatchError) as info:
        build_report(TOY, {"r1": "x", "r2": "y", "zzz": "?"})
    message = str(info.value)
    assert "1 record id(s) have no prediction: 'r3'" in message
    assert "1 prediction id(s) match no record: 'zzz'" in message
    assert info.value.missing == ["r3"] and info.value.extra == ["zzz"]
    with pytest.raises(PredictionMismatchError, match="--missing-as-empty"):
        build_report(TOY, {"r1": "x"})
    # extra ids stay an error with missing_as_empty
    with pytest.raises(PredictionMismatchError, match="match no record: 'zzz'"):
        build_report(TOY, {"r1": "x", "r2": "y", "r3": "z", "zzz": "?"}, missing_as_empty=True)


def test_long_id_lists_are_shortened():
    many = [asr(f"u{i:03d}", "a", ["a"]) for i in range(50)]
    with pytest.raises(
        PredictionMismatchError, match=r"50 record id\(s\).*'u019' \.\.\. and 30 more"
    ):
        build_report(many, {})


def test_missing_as_empty_counts_missing_predictions_as_empty_output():
    report = build_report(TOY, {"r1": "red green blue", "r2": "a b c d"}, missing_as_empty=True)
    (row,) = report.rows
    assert row.missing_predictions == 1
    assert row.corrected == pytest.approx(100 * 4 / 11)  # r3: four deletions
    assert "1 record(s) without a prediction scored as empty output" in report.notes


def test_repeated_record_ids_cannot_be_joined():
    records = [*TOY, asr("r1", "again", ["again"], dataset="other")]
    with pytest.raises(ValueError, match="cannot be joined by id: 'r1'"):
        build_report(records, {"r1": "a", "r2": "b", "r3": "c"})


def test_prediction_file_errors_name_file_line_and_field(write):
    good = write("p.jsonl", [{"id": "a", "prediction": "x"}, {"id": "b", "prediction": ""}])
    assert read_predictions(good) == {"a": "x", "b": ""}
    cases = [
        (
            [{"id": "a", "prediction": "x"}, {"id": "a", "prediction": "y"}],
            2,
            "id",
            "duplicate id 'a'",
        ),
        ([{"id": "a"}], 1, "prediction", "missing required field"),
        ([{"id": "a", "prediction": None}], 1, "prediction", "must be a string"),
        ([{"prediction": "x"}], 1, "id", "missing required field"),
        ([{"id": "", "prediction": "x"}], 1, "id", "non-empty"),
        (['{"id": "a", "prediction": "x"', "{}"], 1, None, "malformed JSON"),
    ]
    for rows, line, field, message in cases:
        path = write("bad.jsonl", rows)
        with pytest.raises(InputError, match=message) as info:
            read_predictions(path)
        assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)
    second = write("q.jsonl", [{"id": "a", "prediction": "again"}])
    with pytest.raises(InputError, match=f"duplicate id 'a' \\(first seen at {good}:1\\)"):
        read_predictions([good, second])


# The table of ../shared/data/hyporadise/README.md: file, utterances, 1-best WER, N-best oracle WER.
HYPORADISE_README = [
    ("train_atis.json", 3964, 7.66, 5.06),
    ("test_atis.json", 809, 8.40, 5.31),
    ("test_cv.json", 2000, 15.44, 11.32),
    ("test_lrs2.json", 2259, 11.85, 6.80),
    ("test_ls_clean.json", 2620, 1.79, 0.89),
    ("test_ls_other.json", 2939, 3.67, 2.27),
    ("test_swbd.json", 2000, 15.86, 12.57),
    ("test_td3.json", 1155, 4.44, 3.16),
]


def test_hyporadise_oracles_match_the_published_table():
    """The vendored sample, regrouped by original file (meta.origin), gives the README figures."""
    records = [
        dataclasses.replace(r, dataset=r.meta["origin"].split("#")[0])
        for split in ("train", "test")
        for r in read_records(sample_paths(split))
    ]
    rows = {row.dataset: row for row in build_report(records, normalizer="none").rows}
    assert set(rows) == {name for name, *_ in HYPORADISE_README}
    for name, utterances, one_best, oracle in HYPORADISE_README:
        row = rows[name]
        assert row.utterances == utterances, name
        assert round(row.baseline, 2) == one_best, name
        assert round(row.nbest_oracle, 2) == oracle, name
        assert row.compositional_oracle <= row.nbest_oracle, name
