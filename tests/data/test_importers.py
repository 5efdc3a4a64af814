"""Importers: published layouts -> validated records, and every bad input named precisely."""

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_neko.data.importers import (
    IMPORTERS,
    ImportReport,
    import_coedit,
    import_hypotranslate,
    import_lhotse_cuts,
    import_pleias_ocr,
    import_records,
    known_formats,
)
from nemo_neko.data.importers.hypotranslate import parse_filename
from nemo_neko.data.records import RecordError, read_records, write_records

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
COEDIT = FIXTURES / "coedit_train.jsonl"
HYPO_ITEMS = FIXTURES / "test_fleurs_en_fr_st_large.json"
PLEIAS = FIXTURES / "pleias_english.jsonl"


def at(path, pos, field=None, unit="line"):
    """Regex for the start of a RecordError message: file, position and field."""
    where = f"{path}:{pos}" if unit == "line" else f"{path}:{unit} {pos}"
    return re.escape(where + (f": field '{field}'" if field else ""))


def roundtrip(records, tmp_path):
    """Write and read back through the schema's reader: every record must validate."""
    out = tmp_path / "out.jsonl"
    write_records(out, records)
    back = read_records(out)
    assert back == records
    return back


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_pt(path, items, with_tokens=True):
    """A HypoTranslate release file: torch.save of a list of dicts with int32 token tensors."""
    if with_tokens:
        items = [
            {
                **item,
                "input_ids": torch.arange(12, dtype=torch.int32),
                "input_ids_no_response": torch.arange(8, dtype=torch.int32),
                "labels": torch.tensor([-1] * 8 + [8, 9, 10, 11], dtype=torch.int32),
            }
            for item in items
        ]
    torch.save(items, path)
    return path


# --------------------------------------------------------------------------- HypoTranslate


def hypo_items():
    return json.loads(HYPO_ITEMS.read_text())


def test_hypotranslate_release_pt(tmp_path):
    path = write_pt(tmp_path / "test_fleurs_en_fr_st_large.pt", hypo_items())
    report = ImportReport()
    records = list(import_hypotranslate(path, dataset="fleurs_en_fr", report=report))
    assert [r.id for r in records] == [
        f"fleurs_en_fr-test_fleurs_en_fr_st_large-00000{i}" for i in range(3)
    ]
    first = records[0]
    assert (first.task, first.src_lang, first.tgt_lang) == ("st", "en", "fr")
    assert first.hypotheses[0] == "Le chat dort sur le canapé."
    assert first.hypotheses[4] == "Le chat dormait sur le canapé."  # stripped
    assert first.reference == "Le chat dort sur le canapé."
    assert first.meta == {
        "origin": "test_fleurs_en_fr_st_large.pt#0",
        "split": "test",
        "data_source": "fleurs",
    }
    assert records[2].reference == "Il fait très froid ce soir."
    assert report.records == 3 and not report.rejected
    roundtrip(records, tmp_path)


def test_hypotranslate_json_items_give_the_same_records(tmp_path):
    pt = write_pt(tmp_path / HYPO_ITEMS.with_suffix(".pt").name, hypo_items())
    from_pt = list(import_hypotranslate(pt, dataset="d", id_prefix="x"))
    from_json = list(import_hypotranslate(HYPO_ITEMS, dataset="d", id_prefix="x"))
    for a, b in zip(from_pt, from_json, strict=True):
        assert (a.id, a.hypotheses, a.reference, a.src_lang) == (
            b.id,
            b.hypotheses,
            b.reference,
            b.src_lang,
        )


def test_hypotranslate_file_names():
    assert parse_filename("x-en/train_covost2_fr_en_mt_large.pt") == dict(
        split="train",
        data_source="covost2",
        src_lang="fr",
        tgt_lang="en",
        task="mt",
        model_size="large",
    )
    assert parse_filename("test_fleurs_en_fr_st.pt")["model_size"] == ""  # first uploads
    assert parse_filename("nbest.pt") is None


def test_hypotranslate_task_and_languages(tmp_path):
    cascaded = write_pt(tmp_path / "dev_mustc_en_de_mt_large.pt", hypo_items()[:1])
    record = next(import_hypotranslate(cascaded, dataset="d", task="st"))
    assert record.task == "st" and record.meta["hypotranslate_task"] == "mt"
    plain = write_pt(tmp_path / "nbest.pt", hypo_items()[:1])
    with pytest.raises(ValueError, match="task None is not a HypoTranslate task.*known: st, mt"):
        import_hypotranslate(plain, dataset="d")
    with pytest.raises(ValueError, match="src_lang unknown"):
        import_hypotranslate(plain, dataset="d", task="mt")
    record = next(import_hypotranslate(plain, dataset="d", task="mt", src_lang="de", tgt_lang="en"))
    assert (record.task, record.src_lang, record.tgt_lang) == ("mt", "de", "en")
    with pytest.raises(ValueError, match="tgt_lang='es' contradicts the file name"):
        import_hypotranslate(cascaded, dataset="d", tgt_lang="es")


@pytest.mark.parametrize(
    "change, field, message",
    [
        (lambda i: i.pop("ground_truth"), "ground_truth", "missing required field"),
        (lambda i: i.update(input=[]), "input", "empty hypothesis list"),
        (lambda i: i.update(input="a\nb"), "input", "got one string"),
        (lambda i: i.update(input=["a", 3]), "input", "must be a list of strings"),
        (lambda i: i.update(ground_truth=7), "ground_truth", "must be a string"),
        (lambda i: i.update(ground_truth=" "), "ground_truth", "empty ground truth"),
        (lambda i: i.update(audio_path="x.wav"), "audio_path", "unknown HypoTranslate field"),
    ],
)
def test_hypotranslate_bad_items(tmp_path, change, field, message):
    items = hypo_items()
    change(items[1])
    path = write_pt(tmp_path / "test_fleurs_en_fr_st_large.pt", items)
    with pytest.raises(RecordError, match=at(path, 2, field, unit="item") + ".*" + message):
        list(import_hypotranslate(path, dataset="d"))


def test_hypotranslate_ignore_fields_and_skip_invalid(tmp_path):
    items = hypo_items()
    items[0]["audio_path"] = "a.wav"
    items[2]["input"] = []
    path = write_pt(tmp_path / "test_fleurs_en_fr_st_large.pt", items)
    report = ImportReport()
    records = list(
        import_hypotranslate(
            path, dataset="d", report=report, skip_invalid=True, ignore_fields=["audio_path"]
        )
    )
    assert len(records) == 2 and report.ignored_fields == {"audio_path": 1}
    assert report.num_rejected == 1 and report.rejected[0].field == "input"
    assert "rejected " + str(report.rejected[0]) in report.summary()


def test_hypotranslate_unreadable_files(tmp_path):
    garbage = tmp_path / "test_fleurs_en_fr_st_large.pt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(RecordError, match=at(garbage, 1) + ": not a loadable torch pickle"):
        list(import_hypotranslate(garbage, dataset="d"))
    lines = write_jsonl(
        tmp_path / "test_fleurs_en_fr_st_large.jsonl",
        [hypo_items()[0], '{"input": ["a"'],
    )
    with pytest.raises(RecordError, match=at(lines, 2) + ": malformed JSON"):
        list(import_hypotranslate(lines, dataset="d"))


# --------------------------------------------------------------------------- CoEdIT


def test_coedit_release_jsonl(tmp_path):
    report = ImportReport()
    records = list(import_coedit(COEDIT, dataset="coedit", report=report))
    assert [(r.id, r.task) for r in records] == [
        ("coedit-coedit_train-1", "tec_grammar"),
        ("coedit-coedit_train-3", "tec_coherence"),
        ("coedit-coedit_train-5", "tec_grammar"),
    ]
    first = records[0]
    assert first.source == "She go to school every days."
    assert first.reference == "She goes to school every day."
    assert first.meta == {
        "instruction": "Fix grammatical errors in this sentence",
        "coedit_task": "gec",
        "coedit_id": "1",
        "origin": "coedit_train.jsonl#1",
    }
    assert records[2].source == "Their is two reasons: time and money."  # split at the first ": "
    assert report.skipped == {
        "'paraphrase' records (not a NeKo task)": 2,
        "'clarity' records (not a NeKo task)": 1,
        "'neutralize' records (not a NeKo task)": 1,
        "'simplification' records (not a NeKo task)": 1,
    }
    assert "skipped 2 'paraphrase' records (not a NeKo task)" in report.summary()
    assert report.records == 3 and report.num_skipped == 5
    roundtrip(records, tmp_path)


def test_coedit_strict_tasks(tmp_path):
    with pytest.raises(RecordError, match=at(COEDIT, 2, "task") + ".*'paraphrase' is not a NeKo"):
        list(import_coedit(COEDIT, dataset="coedit", strict_tasks=True))


def coedit_row(**change):
    row = {"_id": "9", "task": "gec", "src": "Fix grammar: he go home.", "tgt": "He goes home."}
    row.update(change)
    return {k: v for k, v in row.items() if v is not None}


@pytest.mark.parametrize(
    "bad, field, message",
    [
        ('{"_id": "9", "task": "gec", "src": "Fix: a"', None, "malformed JSON"),
        (
            coedit_row(src="Fix grammar - he go home."),
            "src",
            "no ': ' between instruction and text",
        ),
        (coedit_row(src=": he go home."), "src", "empty instruction"),
        (coedit_row(tgt=None), "tgt", "missing required field"),
        (coedit_row(tgt=3), "tgt", "must be a string"),
        (coedit_row(_id=[1]), "_id", "must be a string or an integer"),
        (coedit_row(task="gecc"), "task", "unknown CoEdIT task 'gecc' .known: clarity, coherence,"),
        (coedit_row(lang="en"), "lang", "unknown CoEdIT field"),
        (coedit_row(_id="1"), "_id", r"duplicate id 'coedit-bad-1' \(first seen at line 1\)"),
    ],
)
def test_coedit_bad_lines(tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [coedit_row(_id="1"), bad])
    with pytest.raises(RecordError, match=at(path, 2, field) + ".*" + message):
        list(import_coedit(path, dataset="coedit"))


def test_coedit_skip_invalid_counts_rejected_lines(tmp_path):
    rows = [
        coedit_row(_id="1"),
        "{oops",
        coedit_row(_id="2", src="no separator"),
        coedit_row(_id="3"),
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    report = ImportReport()
    records = list(import_coedit(path, dataset="c", report=report, skip_invalid=True))
    assert [r.meta["coedit_id"] for r in records] == ["1", "3"]
    assert [(e.line, e.field) for e in report.rejected] == [(2, None), (3, "src")]
    assert report.summary().startswith("2 records imported, 2 rejected")
    with pytest.raises(ValueError, match="needs an ImportReport"):
        import_coedit(path, dataset="c", skip_invalid=True)


def test_coedit_json_array_and_numeric_ids(tmp_path):
    path = tmp_path / "validation.json"
    path.write_text(json.dumps([coedit_row(_id=1), coedit_row(_id=2, task="coherence", tgt=5)]))
    with pytest.raises(RecordError, match=at(path, 2, "tgt", unit="item")):
        list(import_coedit(path, dataset="coedit"))
    path.write_text(json.dumps([coedit_row(_id=1)]))
    assert next(import_coedit(path, dataset="coedit")).id == "coedit-validation-1"


def test_coedit_parquet_conversion(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [json.loads(line) for line in COEDIT.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "coedit_train.parquet")
    from_parquet = list(import_coedit(tmp_path / "coedit_train.parquet", dataset="coedit"))
    from_jsonl = list(import_coedit(COEDIT, dataset="coedit"))
    assert [(r.id, r.source, r.reference) for r in from_parquet] == [
        (r.id, r.source, r.reference) for r in from_jsonl
    ]


# --------------------------------------------------------------------------- PleIAs


def pleias_rows():
    return [json.loads(line) for line in PLEIAS.read_text().splitlines()]


def test_pleias_truncates_to_the_papers_1000_characters(tmp_path):
    report = ImportReport()
    records = list(import_pleias_ocr(PLEIAS, dataset="pleias_en", report=report, language="en"))
    rows = pleias_rows()
    long = records[0]
    assert long.task == "ocr" and long.id == "pleias_en-pleias_english-000000"
    assert long.source == rows[0]["text"][:1000] and len(long.source) == 1000
    assert long.reference == rows[0]["corrected_text"][:1000]
    assert long.meta["truncation"] == {
        "max_chars": 1000,
        "source_chars": len(rows[0]["text"]),
        "reference_chars": len(rows[0]["corrected_text"]),
        "source_truncated": True,
        "reference_truncated": True,
    }
    assert long.meta["language"] == "en" and long.meta["origin"] == "pleias_english.jsonl#0"
    short = records[1]
    assert short.source == rows[1]["text"] and short.reference == rows[1]["corrected_text"]
    assert short.meta["truncation"]["source_truncated"] is False
    assert report.truncated == {"source": 1, "reference": 1}
    assert "truncated 'source' in 1 records" in report.summary()
    roundtrip(records, tmp_path)


def test_pleias_whole_texts(tmp_path):
    records = list(import_pleias_ocr(PLEIAS, dataset="p", max_chars=None))
    assert records[0].source == pleias_rows()[0]["text"] and "truncation" not in records[0].meta
    with pytest.raises(ValueError, match="max_chars must be a positive integer"):
        import_pleias_ocr(PLEIAS, dataset="p", max_chars=0)


def test_pleias_parquet_release(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "ny_0.parquet"
    pq.write_table(pa.Table.from_pylist(pleias_rows()), path)
    from_parquet = list(import_pleias_ocr(path, dataset="p", id_prefix="p"))
    from_jsonl = list(import_pleias_ocr(PLEIAS, dataset="p", id_prefix="p"))
    assert [(r.id, r.source, r.reference) for r in from_parquet] == [
        (r.id, r.source, r.reference) for r in from_jsonl
    ]
    rows = pleias_rows()
    rows[1]["corrected_text"] = None
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError, match=at(path, 2, "corrected_text", unit="row")):
        list(import_pleias_ocr(path, dataset="p"))
    rows = [{**row, "scan": b"\x89PNG"} for row in pleias_rows()]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError, match=at(path, 1, "scan", unit="row") + ".*cannot be stored"):
        list(import_pleias_ocr(path, dataset="p"))


def test_pleias_parquet_without_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "ny_0.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        list(import_pleias_ocr(path, dataset="p"))


def test_pleias_language_columns_and_ids(tmp_path):
    rows = [
        {"text": "Tlie end.", "corrected_text": "The end.", "language": "en", "page": 3},
        {"text": "Tbe start.", "corrected_text": "The start.", "language": "fr", "page": 4},
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    records = list(import_pleias_ocr(path, dataset="p"))
    assert records[0].meta["language"] == "en" and records[0].meta["columns"] == {"page": 3}
    with pytest.raises(RecordError, match=at(path, 2, "language") + ".*'fr' contradicts"):
        list(import_pleias_ocr(path, dataset="p", language="en"))
    path = write_jsonl(tmp_path / "rows.jsonl", [{**r, "language": "en"} for r in rows])
    assert [r.id for r in import_pleias_ocr(path, dataset="p", id_field="page")] == [
        "p-rows-3",
        "p-rows-4",
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", [rows[0], {**rows[1], "page": 3}])
    with pytest.raises(RecordError, match=at(path, 2, "page") + ".*duplicate id 'p-rows-3'"):
        list(import_pleias_ocr(path, dataset="p", id_field="page"))


@pytest.mark.parametrize(
    "row, field, message",
    [
        ('{"text": "Tlie end.", ', None, "malformed JSON"),
        ({"corrected_text": "The end."}, "text", "missing required field"),
        ({"text": "  ", "corrected_text": "The end."}, "text", "must not be empty"),
        ({"text": "Tlie end.", "corrected_text": ""}, "corrected_text", "must not be empty"),
        ({"text": ["Tlie"], "corrected_text": "The"}, "text", "must be a string"),
    ],
)
def test_pleias_bad_rows(tmp_path, row, field, message):
    path = write_jsonl(tmp_path / "rows.jsonl", [pleias_rows()[1], row])
    with pytest.raises(RecordError, match=at(path, 2, field) + ".*" + message):
        list(import_pleias_ocr(path, dataset="p"))


# --------------------------------------------------------------------------- lhotse


def supervision(sup_id, rec_id, text, nbest, **custom):
    from lhotse import SupervisionSegment

    custom = {"nbest": nbest, **custom} if nbest is not None else custom
    return SupervisionSegment(
        id=sup_id,
        recording_id=rec_id,
        start=0.1,
        duration=0.4,
        text=text,
        language="en",
        custom=custom,
    )


def write_cuts(tmp_path, sups_per_cut):
    """A real CutSet manifest: one tiny wav per cut, saved with lhotse as .jsonl.gz."""
    import numpy as np
    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording

    cuts = []
    for i, sups in enumerate(sups_per_cut):
        wav = tmp_path / f"rec{i}.wav"
        sf.write(wav, np.zeros(8000, dtype="float32"), 16000)
        rec = Recording.from_file(wav, recording_id=f"rec{i}")
        cut = MonoCut(
            id=f"cut{i}", start=0.0, duration=0.5, channel=0, recording=rec, supervisions=sups
        )
        cuts.append(cut)
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_lhotse_cutset_with_nbest(tmp_path):
    pytest.importorskip("lhotse")
    path = write_cuts(
        tmp_path,
        [
            [
                supervision(
                    "u0",
                    "rec0",
                    "hello world",
                    ["hello world", "hello word"],
                    nbest_scores=[-1.5, -2.0],
                ),
                supervision("u1", "rec0", "good bye", ["good by"], speaker_hint="A"),
            ],
            [],
            [supervision("u2", "rec2", "thanks", ["thanks", "thank", "tanks"])],
        ],
    )
    with gzip.open(path, "rt") as fh:  # the manifest really carries the custom fields
        assert json.loads(fh.readline())["supervisions"][0]["custom"]["nbest"] == [
            "hello world",
            "hello word",
        ]
    report = ImportReport()
    records = list(import_lhotse_cuts(path, dataset="ls", report=report))
    assert [(r.id, r.task, r.dataset) for r in records] == [
        ("u0", "asr", "ls"),
        ("u1", "asr", "ls"),
        ("u2", "asr", "ls"),
    ]
    first = records[0]
    assert first.hypotheses == ["hello world", "hello word"] and first.reference == "hello world"
    assert first.meta == {
        "origin": "cuts.jsonl.gz#0",
        "cut_id": "cut0",
        "cut_start": 0.0,
        "recording_id": "rec0",
        "start": 0.1,
        "duration": 0.4,
        "language": "en",
        "nbest_scores": [-1.5, -2.0],
    }
    assert records[1].meta["custom"] == {"speaker_hint": "A"}
    assert report.skipped == {"cuts without supervisions (nothing to correct)": 1}
    roundtrip(records, tmp_path)
    by_cut = [r.id for r in import_lhotse_cuts(path, dataset="ls", id_from="cut")]
    assert by_cut == ["cut0-0", "cut0-1", "cut2-0"]


@pytest.mark.parametrize(
    "bad, field, message",
    [
        (
            dict(nbest=None),
            "supervisions[1].custom['nbest']",
            "cut 'cut1', supervision 1 .'bad'.: missing N-best",
        ),
        (dict(nbest=[]), "supervisions[1].custom['nbest']", "empty hypothesis list"),
        (dict(nbest="a b"), "supervisions[1].custom['nbest']", "must be a list of strings"),
        (
            dict(nbest=["a"], nbest_scores=[1.0, 2.0]),
            "supervisions[1].custom['nbest_scores']",
            "list of 1 numbers",
        ),
        (dict(nbest=["a"], text=None), "supervisions[1].text", "no reference text"),
        (
            dict(nbest=["a"], sup_id="u0"),
            "supervisions[1].id",
            "duplicate id 'u0' .first seen at line 1.",
        ),
    ],
)
def test_lhotse_bad_supervisions(tmp_path, bad, field, message):
    pytest.importorskip("lhotse")
    bad = dict(bad)
    sup_id, text = bad.pop("sup_id", "bad"), bad.pop("text", "ref")
    cuts = [
        [supervision("u0", "rec0", "ref", ["ref"])],
        [supervision("ok", "rec1", "ref", ["ref"]), supervision(sup_id, "rec1", text, **bad)],
    ]
    path = write_cuts(tmp_path, cuts)
    with pytest.raises(RecordError, match=at(path, 2, field) + ".*" + message):
        list(import_lhotse_cuts(path, dataset="ls"))
    report = ImportReport()
    kept = list(import_lhotse_cuts(path, dataset="ls", report=report, skip_invalid=True))
    assert [r.id for r in kept] == ["u0", "ok"] and report.rejected[0].field == field


def test_lhotse_translation_task_bad_manifest_and_missing_lhotse(tmp_path, monkeypatch):
    pytest.importorskip("lhotse")
    path = write_cuts(tmp_path, [[supervision("u0", "rec0", "hallo", ["hallo", "hallo?"])]])
    with pytest.raises(RecordError, match=at(path, 1, "src_lang") + ".*needs src_lang"):
        list(import_lhotse_cuts(path, dataset="st", task="st"))
    record = next(import_lhotse_cuts(path, dataset="st", task="st", src_lang="en", tgt_lang="de"))
    assert (record.src_lang, record.tgt_lang) == ("en", "de")
    with gzip.open(path, "rt") as fh:
        good = fh.read()
    with gzip.open(path, "wt") as fh:
        fh.write(good + '{"id": "cut1", \n')
    with pytest.raises(RecordError, match=at(path, 2) + ": lhotse could not read cut 2"):
        list(import_lhotse_cuts(path, dataset="ls"))
    monkeypatch.setitem(sys.modules, "lhotse", None)
    with pytest.raises(ImportError, match="pip install lhotse"):
        import_lhotse_cuts(path, dataset="ls")


# --------------------------------------------------------------------------- registry


def test_registry_formats_and_errors(tmp_path):
    assert known_formats() == ["coedit", "hyporadise", "hypotranslate", "lhotse", "pleias_ocr"]
    assert set(IMPORTERS) == set(known_formats())
    with pytest.raises(
        ValueError, match="unknown import format 'kaldi' .known: coedit, hyporadise"
    ):
        import_records("kaldi", COEDIT, dataset="x")
    with pytest.raises(ValueError, match="needs an ImportReport"):
        import_records("coedit", COEDIT, dataset="x", skip_invalid=True)
    report = ImportReport()
    records = list(import_records("pleias_ocr", PLEIAS, dataset="p", report=report, max_chars=50))
    assert len(records[0].source) == 50 and report.records == 3


def test_registry_import_is_light():
    code = (
        "import sys, nemo_neko.data.importers; "
        "print(sorted(m for m in ('torch', 'lhotse', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
