"""Faults a user hits with ``python -m nemo_neko.data``: files that break mid-read, empty
results, over-long samples, failed imports; one line each, nothing left behind."""

import gzip
import json
import re

from nemo_neko.data.cli import main
from nemo_neko.data.records import read_records, write_records
from nemo_neko.data.sample_data import sample_paths


def run(capsys, *args):
    """``python -m nemo_neko.data ARGS``: (status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def td3(tmp_path, count=40, name="td3.jsonl"):
    path = tmp_path / name
    write_records(path, read_records(sample_paths("test", ("td3",))[0])[:count])
    return path


def test_truncated_gzip_names_file_and_line_even_when_skipping(tmp_path, capsys):
    whole = (td3(tmp_path, 289)).read_bytes()
    compressed = gzip.compress(whole)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])
    for extra in ([], ["--skip-invalid"]):
        status, out, err = run(capsys, "stats", cut, *extra)
        assert status == 2 and out == ""  # no table of the part that could be read
        assert re.fullmatch(
            rf"error: {re.escape(str(cut))}:\d+: the file ends early or is damaged after line "
            r"\d+ \(EOFError: .*\); nothing after it can be read\n",
            err,
        )


def test_non_utf8_line_is_named_and_skipped_on_request(tmp_path, capsys):
    lines = td3(tmp_path, 5).read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"the", b"th\xff", 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines))
    status, _, err = run(capsys, "stats", bad)
    assert status == 2 and re.fullmatch(
        rf"error: {re.escape(str(bad))}:3: not UTF-8 text \(byte 0xff at column \d+\)\n", err
    )
    status, out, err = run(capsys, "stats", bad, "--skip-invalid")
    assert status == 0 and "4 records read, 1 rejected" in err and f"{bad}:3: not UTF-8" in err
    assert re.search(r"td3\s+4\s", out)
    coedit = tmp_path / "train.jsonl"  # an importer reading JSONL: the same rule
    row = {"_id": "1", "task": "gec", "src": "Fix grammar: he go home", "tgt": "He goes home."}
    coedit.write_bytes(
        json.dumps(row).encode()
        + b"\n"
        + json.dumps({**row, "_id": "2"}).encode()[:-3]
        + b'\xfe"}\n'
    )
    out_file = tmp_path / "coedit.jsonl"
    status, _, err = run(capsys, "import", "coedit", coedit, out_file, "--dataset", "c")
    assert status == 2 and f"error: {coedit}:2: not UTF-8 text (byte 0xfe" in err
    status, out, _ = run(
        capsys, "import", "coedit", coedit, out_file, "--dataset", "c", "--skip-invalid"
    )
    assert status == 0 and "1 records imported, 1 rejected" in out
    assert len(read_records(out_file)) == 1


def test_empty_inputs_and_results_are_errors_unless_asked_for(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    status, out, err = run(capsys, "stats", empty)
    assert (status, out) == (2, "")
    assert err == f"error: {empty}: no records (empty; --allow-empty accepts it)\n"
    assert run(capsys, "stats", empty, "--allow-empty")[0] == 0
    array = tmp_path / "test_cv.json"
    array.write_text("[]")
    out_file = tmp_path / "new" / "cv.jsonl"
    status, _, err = run(capsys, "import", "hyporadise", array, out_file, "--dataset", "cv")
    assert status == 2 and err == (
        f"error: {array}: no records to import (0 rejected, 0 skipped); nothing written to "
        f"{out_file} (--allow-empty writes an empty file)\n"
    )
    assert not (tmp_path / "new").exists()  # neither the file nor the folder it would be in
    args = ("import", "hyporadise", array, out_file, "--dataset", "cv", "--allow-empty")
    assert run(capsys, *args)[0] == 0 and out_file.read_bytes() == b""
    rejected = tmp_path / "test_td3.json"
    rejected.write_text(json.dumps([{"input": [], "output": "x"}]))
    args = ("import", "hyporadise", rejected, tmp_path / "td3.jsonl", "--dataset", "td3")
    status, _, err = run(capsys, *args, "--skip-invalid")
    assert status == 2 and "rejected " in err and "no records to import (1 rejected" in err
    assert not (tmp_path / "td3.jsonl").exists()


def test_pack_measures_what_it_says_and_refuses_an_empty_dataset(tmp_path, capsys, caplog):
    data = td3(tmp_path, 40)
    common = (f"td3={data}", "--train-tokenizer", "400")
    status, out, err = run(capsys, "pack", *common, "--seq-length", "24")
    assert status == 2 and out == ""
    match = re.fullmatch(
        r"error: dataset 'td3': every one of its 40 records left out: even with the input cut "
        r"to nothing their samples need up to (\d+) tokens, more than the 24 allowed \((.*)\); "
        r"raise the sequence length .* to at least \1; ids \[.*\]\n",
        err,
    )
    assert match, err
    needed = int(match.group(1))
    status, out, _ = run(capsys, "pack", *common, "--seq-length", needed - 1)
    assert status == 0 and re.search(r"too_long: [1-9]", out)
    assert f"samples need up to {needed} tokens, more than the {needed - 1}" in caplog.text
    caplog.clear()
    status, out, _ = run(capsys, "pack", *common, "--seq-length", needed)
    assert status == 0 and "too_long: 0" in out and "left out" not in caplog.text
    assert "samples: 40" in out


def test_pack_with_three_word_targets_blames_the_prompt_not_the_target(tmp_path, capsys):
    records = read_records(td3(tmp_path, 40))
    for record in records:
        record.reference = "yes we can"
    short = tmp_path / "short.jsonl"
    write_records(short, records)
    status, _, err = run(
        capsys, "pack", f"td3={short}", "--train-tokenizer", "400", "--seq-length", "32"
    )
    assert (
        status == 2 and "no target alone is too long" in err and "target alone exceeds" not in err
    )


def test_a_failed_import_leaves_nothing_behind(tmp_path, capsys):
    items = [{"input": ["a b"], "output": "a b"}] * 3 + [{"input": "not a list", "output": "x"}]
    source = tmp_path / "test_cv.json"
    source.write_text(json.dumps(items))
    target = tmp_path / "out" / "deeper" / "cv.jsonl.gz"
    status, _, err = run(capsys, "import", "hyporadise", source, target, "--dataset", "cv")
    assert status == 2 and f"{source}:item 4: field 'input': must be a list of strings" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["test_cv.json"]
    previous = tmp_path / "cv.jsonl"
    previous.write_text("kept\n")  # a failed import leaves an existing file as it was
    assert run(capsys, "import", "hyporadise", source, previous, "--dataset", "cv")[0] == 2
    assert previous.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cv.jsonl", "test_cv.json"]
