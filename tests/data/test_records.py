"""Records: validation on read, every bad-input case named by file, line and field."""

import gzip
import json

import pytest

from nemo_neko.data.records import (
    CorrectionRecord,
    ReadReport,
    RecordError,
    read_records,
    write_records,
)

GOOD = {
    "id": "u1",
    "task": "asr",
    "dataset": "atis",
    "hypotheses": ["a b", "a c"],
    "reference": "a b",
}


def write_lines(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_plain_and_gzip(tmp_path):
    records = [
        CorrectionRecord(**GOOD),
        CorrectionRecord(
            id="o1", task="ocr", dataset="pleias", source="Tbe cat", reference="The cat"
        ),
        CorrectionRecord(
            id="s1",
            task="st",
            dataset="covost",
            hypotheses=["Hallo"],
            reference="Hallo",
            src_lang="en",
            tgt_lang="de",
            meta={"score": [1.0]},
        ),
    ]
    for name in ("r.jsonl", "r.jsonl.gz"):
        assert write_records(tmp_path / name, records) == 3
        assert read_records(tmp_path / name) == records
    with gzip.open(tmp_path / "r.jsonl.gz", "rt") as fh:
        assert json.loads(fh.readline())["id"] == "u1"


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"id": "u1", "task": "asr"', r"data.jsonl:2: malformed JSON"),
        ("[1, 2]", r"data.jsonl:2: expected a JSON object"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "reference"} | {"id": "x"}),
            r"data.jsonl:2: field 'reference': missing required field",
        ),
        (
            json.dumps(GOOD | {"id": "x", "hypotheses": []}),
            r"data.jsonl:2: field 'hypotheses': task 'asr' needs a non-empty hypothesis list",
        ),
        (
            json.dumps(GOOD | {"id": "x", "task": "asr2"}),
            r"data.jsonl:2: field 'task': unknown task 'asr2' \(known tasks: asr, mt, ocr, st, tec_coherence, tec_grammar\)",
        ),
        (json.dumps(GOOD), r"data.jsonl:2: field 'id': duplicate id 'u1' \(first seen on line 1\)"),
        (
            json.dumps(GOOD | {"id": "x", "hypotheses": ["a", 3]}),
            r"field 'hypotheses': item 1 must be a string",
        ),
        (json.dumps(GOOD | {"id": "x", "nbest": []}), r"field 'nbest': unknown field"),
        (json.dumps(GOOD | {"id": ""}), r"field 'id': must be a non-empty string"),
        (json.dumps(GOOD | {"id": "x", "reference": None}), r"field 'reference': must be a string"),
        (
            json.dumps({"id": "x", "task": "ocr", "dataset": "d", "reference": "r"}),
            r"field 'source': task 'ocr' needs a non-empty source text",
        ),
        (
            json.dumps(
                {
                    "id": "x",
                    "task": "mt",
                    "dataset": "d",
                    "reference": "r",
                    "hypotheses": ["h"],
                    "src_lang": "en",
                }
            ),
            r"field 'tgt_lang': task 'mt' needs tgt_lang",
        ),
        (json.dumps(GOOD | {"id": "x", "meta": [1]}), r"field 'meta': must be a JSON object"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, message):
    path = write_lines(tmp_path, [json.dumps(GOOD), line])
    with pytest.raises(RecordError, match=message) as err:
        read_records(path)
    assert err.value.line == 2 and err.value.path == str(path)


def test_skip_invalid_counts_and_reports_every_rejected_line(tmp_path):
    lines = [json.dumps(GOOD), "not json", json.dumps(GOOD | {"id": "u2"}), json.dumps(GOOD)]
    path = write_lines(tmp_path, lines)
    report = ReadReport()
    records = read_records(path, skip_invalid=True, report=report)
    assert [r.id for r in records] == ["u1", "u2"]
    assert report.records == 2 and report.num_rejected == 2
    assert [e.line for e in report.rejected] == [2, 4]
    assert "2 rejected" in report.summary() and "duplicate id 'u1'" in report.summary()
    with pytest.raises(ValueError, match="needs a ReadReport"):
        read_records(path, skip_invalid=True)


def test_blank_lines_are_not_records(tmp_path):
    path = write_lines(tmp_path, [json.dumps(GOOD), "", "   ", json.dumps(GOOD | {"id": "u2"})])
    assert len(read_records(path)) == 2
