"""HyPoradise: every key layout of the release imports (real items), ids are unique per file,
extra fields are kept and counted, and the release's CSV files are refused with their columns."""

import gzip
import json
import re
from pathlib import Path

import pytest

from nemo_neko.data.cli import main
from nemo_neko.data.importers import ImportReport, import_records
from nemo_neko.data.records import RecordError, read_records

RELEASE = Path(__file__).parent / "fixtures" / "importers" / "hyporadise"


def items(name):
    return json.loads((RELEASE / name).read_text())


def import_file(tmp_path, capsys, name, dataset):
    out = tmp_path / f"{Path(name).stem}.jsonl.gz"
    status = main(["import", "hyporadise", str(RELEASE / name), str(out), "--dataset", dataset])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return read_records(out), captured.out


def test_atis_layout_keeps_release_ids_and_scores(tmp_path, capsys):
    published = items("test_atis.json")
    records, printed = import_file(tmp_path, capsys, "test_atis.json", "atis")
    assert [r.id for r in records] == [item["id"] for item in published]
    for record, item in zip(records, published):
        assert record.hypotheses == item["input"] and record.reference == item["output"]
        assert record.meta["am_score"] == item["am_score"] and "extra" not in record.meta
    assert "3 records imported, 0 rejected" in printed and "warning" not in printed


def test_input1_input2_layout_drops_only_the_renderings(tmp_path, capsys):
    published = items("test_cv.json")
    assert any("<UNK>" in item["input"] for item in published)  # rendered "<unk>" in input2
    records, printed = import_file(tmp_path, capsys, "test_cv.json", "cv")
    assert [r.id for r in records] == [f"cv-test_cv-{i:06d}" for i in range(3)]
    assert [r.hypotheses for r in records] == [item["input"] for item in published]
    assert all(set(r.meta) == {"origin"} for r in records)
    assert "note: 'input1' not imported (a rendering of 'input') (3 items)" in printed
    assert "note: 'input2' not imported (a rendering of 'input') (3 items)" in printed
    assert "the literal hypothesis '<UNK>'" in printed and "(1 item)" in printed


def test_instruction_layout_with_an_empty_hypothesis(tmp_path, capsys):
    records, printed = import_file(tmp_path, capsys, "test_ls_clean.json", "ls_clean")
    assert "" in records[1].hypotheses and len(records[1].hypotheses) == 5
    assert records[1].meta == {"origin": "test_ls_clean.json#1"}
    assert "note: 'instruction' not imported (the task renders its own prompt) (3 items)" in printed


def test_score_layout_gives_am_score(tmp_path, capsys):
    published = items("test_wsj_score.json")
    records, _ = import_file(tmp_path, capsys, "test_wsj_score.json", "wsj")
    assert [r.meta["am_score"] for r in records] == [item["score"] for item in published]


def test_generated_ids_do_not_collide_across_files_of_one_dataset(tmp_path, capsys):
    cv = items("test_cv.json")
    for split in ("train", "test"):
        (tmp_path / f"{split}_cv.json").write_text(json.dumps(cv))
        out = tmp_path / f"{split}.jsonl"
        assert (
            main(
                ["import", "hyporadise", str(tmp_path / f"{split}_cv.json"), str(out)]
                + [
                    "--dataset",
                    "cv",
                ]
            )
            == 0
        )
    records = read_records([tmp_path / "train.jsonl", tmp_path / "test.jsonl"])
    ids = [r.id for r in records]
    assert len(set(ids)) == 6 and ids[0] == "cv-train_cv-000000" and ids[3] == "cv-test_cv-000000"
    capsys.readouterr()


def test_unknown_fields_and_odd_renderings_are_kept_in_meta_with_a_warning(tmp_path, capsys):
    cv = items("test_cv.json")
    cv[0]["speaker"] = "spk-17"
    cv[2]["speaker"] = "spk-3"
    cv[1]["input1"] = "something else."
    path = tmp_path / "test_cv.json"
    path.write_text(json.dumps(cv))
    out = tmp_path / "cv.jsonl"
    assert main(["import", "hyporadise", str(path), str(out), "--dataset", "cv"]) == 0
    printed = capsys.readouterr().out
    records = read_records(out)
    assert [r.meta.get("extra") for r in records] == [
        {"speaker": "spk-17"},
        {"input1": "something else."},
        {"speaker": "spk-3"},
    ]
    assert "warning: unknown HyPoradise field 'speaker' kept in meta.extra (2 items)" in printed
    assert (
        "warning: 'input1' is not the rendering of 'input': kept in meta.extra (1 item)" in printed
    )


def test_release_csv_is_refused_naming_its_columns(tmp_path, capsys):
    out = tmp_path / "cv.jsonl"
    status = main(
        ["import", "hyporadise", str(RELEASE / "test_cv.csv"), str(out), "--dataset", "cv"]
    )
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "test_cv.csv: a CSV file (columns source, target, best_hypo)" in err
    assert "import the .json file of the same set instead" in err and not out.exists()


def test_git_lfs_pointer_and_empty_release_files(tmp_path, capsys):
    pointer = tmp_path / "train_cv.json"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:8a47b1\nsize 36115424\n"
    )
    empty = tmp_path / "train_chime4.json"
    empty.write_bytes(b"")
    for path, message in ((pointer, "the file is a Git LFS pointer"), (empty, "the file is empty")):
        assert (
            main(["import", "hyporadise", str(path), str(tmp_path / "o.jsonl"), "--dataset", "x"])
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}:1: {message}") and len(err.splitlines()) == 1
    assert set(tmp_path.iterdir()) == {pointer, empty}  # nothing written, nothing left behind


def at(path, pos, field=None):
    return re.escape(f"{path}:item {pos}" + (f": field '{field}'" if field else ""))


@pytest.mark.parametrize(
    "item,field,message",
    [
        ({"input": [], "output": "x"}, "input", "empty hypothesis list"),
        ({"input": ["a", 1], "output": "x"}, "input", "must be a list of strings"),
        ({"input": ["a"]}, "output", "missing required field"),
        (
            {"input": ["a", "b"], "output": "x", "am_score": [1.0]},
            "am_score",
            "must be a list of 2 numbers",
        ),
        (
            {"input": ["a"], "output": "x", "score": ["high"]},
            "score",
            "must be a list of 1 numbers",
        ),
        ({"input": ["a"], "output": "x", "score": [1], "am_score": [1]}, "score", "both"),
        ({"input": ["a"], "output": 3}, "output", "must be a string"),
    ],
)
def test_bad_items_are_named(tmp_path, item, field, message):
    path = tmp_path / "test_cv.json"
    path.write_text(json.dumps([{"input": ["ok"], "output": "ok"}, item]))
    with pytest.raises(RecordError, match=at(path, 2, field) + ".*" + message):
        list(import_records("hyporadise", path, dataset="cv"))
    report = ImportReport()
    kept = list(import_records("hyporadise", path, dataset="cv", report=report, skip_invalid=True))
    assert len(kept) == 1 and report.num_rejected == 1


def test_duplicate_release_ids_are_named(tmp_path):
    atis = items("test_atis.json")
    path = tmp_path / "test_atis.json"
    path.write_text(json.dumps([*atis, dict(atis[0])]))
    with pytest.raises(RecordError, match=at(path, 4, "id") + ".*duplicate id"):
        list(import_records("hyporadise", path, dataset="atis"))


def test_damaged_gzip_and_non_utf8_items(tmp_path, capsys):
    raw = json.dumps(items("test_cv.json") * 40, indent=1).encode()
    truncated = tmp_path / "test_cv.json.gz"
    compressed = gzip.compress(raw)
    truncated.write_bytes(compressed[: len(compressed) // 2])
    status = main(
        ["import", "hyporadise", str(truncated), str(tmp_path / "o.jsonl"), "--dataset", "cv"]
    )
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1
    assert re.match(
        rf"error: {re.escape(str(truncated))}:\d+: the file ends early or is damaged", err
    )
    bad = tmp_path / "test_td3.json"
    bad.write_bytes(raw.replace(b"floyd", b"fl\xffyd", 1))
    out = tmp_path / "td3.jsonl"
    assert main(["import", "hyporadise", str(bad), str(out), "--dataset", "td3"]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}:item 1: field 'input': not UTF-8 text (byte 0xff)" in err
    assert not out.exists()
    args = ["import", "hyporadise", str(bad), str(out), "--dataset", "td3", "--skip-invalid"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "119 records imported, 1 rejected" in printed and len(read_records(out)) == 119
    assert f"rejected {bad}:item 1: field 'input': not UTF-8 text" in printed
