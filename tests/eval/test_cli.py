"""``python -m nemo_neko.eval``: subcommands, output files, exit codes, light ``--help``."""

import json
import struct
import subprocess
import sys

import pytest

from nemo_neko.data.records import CorrectionRecord, write_records
from nemo_neko.eval.__main__ import main

from .helpers import manifest_rows, write_jsonl


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "nemo_neko.eval", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["report", "--help"]])
def test_help_imports_no_torch_megatron_or_scoring_libraries(args):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['nemo_neko.eval', *{args!r}]\n"
        "try:\n    runpy.run_module('nemo_neko.eval', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'megatron', 'numpy', 'jiwer', 'kaldialign', 'sacrebleu', 'matplotlib'})\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: python -m nemo_neko.eval" in out.stdout
    assert out.stdout.strip().endswith("HEAVY []")


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    write_jsonl(
        folder / "MODEL_acme-asr-1_DATASET_esb_ami_test.jsonl",
        manifest_rows([("Hello there.", "hello there"), ("Good bye", "good buy")], 2.0, 0.5),
    )
    write_jsonl(
        folder / "MODEL_acme-asr-1_DATASET_esb_tedlium_test.jsonl",
        manifest_rows(
            [("one thing", "one thing"), ("ignore_time_segment_in_scoring", "x")], 1.0, 0.5
        ),
    )
    return folder


@pytest.mark.parametrize("protocol", ["esb2024", "oal2026"])
def test_score_writes_table_json_and_markdown(results, tmp_path, protocol):
    out = run_cli(
        "score",
        results,
        "--protocol",
        protocol,
        "--json",
        tmp_path / "s.json",
        "--markdown",
        tmp_path / "s.md",
    )
    assert out.returncode == 0, out.stderr
    assert f"protocol {protocol}" in out.stdout and "composite WER %" in out.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["protocol"] == protocol
    ami, ted = data["datasets"]
    assert (ami["dataset"], ami["wer"], ami["rtfx"]) == ("esb_ami_test", 25.0, 4.0)
    assert (ted["wer"], ted["dropped_ignored"], ted["utterances"]) == (0.0, 1, 1)
    assert data["composites"] == [{"model": "acme-asr-1", "datasets": 2, "wer": 12.5, "rtfx": 3.0}]
    markdown = (tmp_path / "s.md").read_text()
    assert "| acme-asr-1 | esb_ami_test | 2 | 0 | 4 | 25.00 | 4.00 |" in markdown
    assert "dropped 0 empty and 1 'ignore time segment in scoring'" in markdown


def test_score_bad_manifest_exits_2_naming_file_line_and_field(tmp_path):
    bad = write_jsonl(
        tmp_path / "MODEL_m_DATASET_d_test.jsonl", [{"text": "a", "pred_text": "a"}, {"text": "b"}]
    )
    out = run_cli("score", bad)
    assert out.returncode == 2
    assert f"error: {bad}:2: field 'pred_text': missing required field" in out.stderr
    named = run_cli("score", tmp_path / "not-leaderboard.jsonl")
    assert named.returncode == 2 and "no such file" in named.stderr


@pytest.fixture
def records_file(tmp_path):
    nbest = ["list all flight", "list all flights"]
    records = [
        CorrectionRecord("a1", "asr", "atis", "list all flights", hypotheses=nbest),
        CorrectionRecord("a2", "asr", "atis", "show fares", hypotheses=["show fairs"]),
        CorrectionRecord(
            "m1", "mt", "wmt", "Das ist gut.", hypotheses=["Das ist gut.", "Dies ist gut."],
            src_lang="en", tgt_lang="de",
        ),
    ]  # fmt: skip
    path = tmp_path / "records.jsonl.gz"
    write_records(path, records)
    return path


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_with_predictions_writes_json_markdown_and_png(records_file, tmp_path):
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [
            {"id": "a1", "prediction": "list all flights"},
            {"id": "a2", "prediction": "show fares"},
            {"id": "m1", "prediction": "Das ist gut."},
        ],
    )
    out = run_cli(
        "report",
        records_file,
        "--predictions",
        preds,
        "--json",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
        "--png",
        tmp_path / "r.png",
    )
    assert out.returncode == 0, out.stderr
    assert "N-best oracle" in out.stdout and "mean of 1" in out.stdout
    rows = {r["dataset"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    # atis: 1-best 2 substitutions / 5 words; oracle 1; corrected 0
    assert rows["atis"]["baseline"] == 40.0 and rows["atis"]["nbest_oracle"] == 20.0
    assert rows["atis"]["corrected"] == 0.0 and rows["atis"]["relative_improvement"] == 100.0
    assert rows["wmt"]["metric"] == "bleu" and rows["wmt"]["corrected"] == pytest.approx(100.0)
    assert "| atis | asr | - | WER | 2 | 40.00 | 20.00 |" in (tmp_path / "r.md").read_text()
    width, height = png_size(tmp_path / "r.png")
    assert width > 100 and height > 100 and (tmp_path / "r.png").stat().st_size > 1000


def test_report_prediction_mismatch_and_missing_as_empty(records_file, tmp_path):
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [{"id": "a1", "prediction": "list all flights"}, {"id": "zz9", "prediction": "?"}],
    )
    out = run_cli("report", records_file, "--predictions", preds)
    assert out.returncode == 2
    assert "2 record id(s) have no prediction: 'a2', 'm1'" in out.stderr
    assert "1 prediction id(s) match no record: 'zz9'" in out.stderr
    only_known = write_jsonl(
        tmp_path / "known.jsonl", [{"id": "a1", "prediction": "list all flights"}]
    )
    assert main(["report", str(records_file), "--predictions", str(only_known)]) == 2
    assert (
        main(["report", str(records_file), "--predictions", str(only_known), "--missing-as-empty"])
        == 0
    )


def test_report_duplicate_prediction_ids(records_file, tmp_path, capsys):
    preds = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "a1", "prediction": "x"}, {"id": "a1", "prediction": "y"}]
    )
    assert main(["report", str(records_file), "--predictions", str(preds)]) == 2
    assert f"{preds}:2: field 'id': duplicate id 'a1'" in capsys.readouterr().err


def test_missing_as_empty_needs_predictions(records_file, capsys):
    assert main(["report", str(records_file), "--missing-as-empty"]) == 2
    assert "--missing-as-empty needs --predictions" in capsys.readouterr().err


def test_chart_without_matplotlib_says_how_to_install(records_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # as if absent
    assert main(["report", str(records_file), "--png", str(tmp_path / "r.png")]) == 2
    assert "needs matplotlib: pip install" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()
